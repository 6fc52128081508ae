"""Merging a snippet of Python into a file: each whole function, class, method, constant or import
the snippet holds replaces the one of the same name (or is added), so a small model that rewrites one
function, or writes a def line and its docstring alone, changes that function and nothing else.
`edit_file` and `write_file` (elpis_worker/tools.py) use it when their text is such a snippet.

Pure: source text in, source text out; nothing here reads or writes a file.
"""

from __future__ import annotations

import ast
import difflib
import re
import textwrap


def same_program(old: bytes | None, new: bytes | None) -> bool:
    """Whether two versions of a Python file are the same program: both parse, to the same syntax tree
    (quotes, spacing, line breaks inside brackets and comments do not count; a docstring does), and
    they are not the same bytes."""
    if old is None or new is None or old == new:
        return False
    try:
        trees = [ast.parse(text.decode("utf-8")) for text in (old, new)]
    except (SyntaxError, ValueError):
        return False
    return ast.dump(trees[0]) == ast.dump(trees[1])


def definition_names(source: str) -> list[str]:
    """The top-level names (functions, classes, one-name constants) and methods (as Class.method) of
    `source`; none where it does not parse."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    names = []
    for node in tree.body:
        if (name := _top_level_name(node)) is not None:
            names.append(name)
        if isinstance(node, ast.ClassDef):
            names.extend(f"{node.name}.{item.name}" for item in node.body if isinstance(item, FUNCTIONS))
    return names


def _defined_counts(source: str) -> dict[str, int] | None:
    """How many times each top-level function or class, and each method of a class (Class.method), is
    defined in `source`; None where it does not parse."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    counts: dict[str, int] = {}

    def count(name: str, node: ast.AST) -> None:
        # `@value.setter`, `@f.register` and `@overload` define a name again on purpose.
        decorators = getattr(node, "decorator_list", [])
        again = any(isinstance(d, ast.Attribute) or getattr(d, "id", "") == "overload" for d in decorators)
        counts[name] = counts.get(name, 0) + (0 if again else 1)

    for node in tree.body:
        if isinstance(node, _DEFINITIONS):
            count(node.name, node)
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, FUNCTIONS):
                    count(f"{node.name}.{item.name}", item)
    return counts


def redefined_names(old: str, new: str) -> list[str]:
    """The functions, classes and methods `new` defines more than once where `old` did not (F811)."""
    before, after = _defined_counts(old) or {}, _defined_counts(new) or {}
    return [name for name, n in after.items() if n > 1 and before.get(name, 0) < n]


def _definition_spans(tree: ast.Module) -> dict[str, list[tuple[int, int, int]]]:
    """name -> (first line, last line, indent) of each top-level definition and each method."""
    spans: dict[str, list[tuple[int, int, int]]] = {}
    for node in tree.body:
        if (name := _top_level_name(node)) is not None:
            spans.setdefault(name, []).append((_first_line(node), node.end_lineno or node.lineno, 0))
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    end = item.end_lineno or item.lineno
                    spans.setdefault(item.name, []).append((_first_line(item), end, item.col_offset))
    return spans


def _first_line(node: ast.AST) -> int:
    decorators = getattr(node, "decorator_list", [])
    return min([node.lineno, *(d.lineno for d in decorators)])  # type: ignore[attr-defined]


_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def constant_names(snippet: str) -> list[str]:
    """The one-name constants (`NAME = ...`) a snippet assigns at its top level, read as
    `merge_definitions` reads the snippet (dedented); none where it does not parse."""
    try:
        tree = ast.parse(textwrap.dedent(snippet).strip("\n") + "\n")
    except (SyntaxError, ValueError):
        return []
    return [
        name
        for node in tree.body
        if isinstance(node, ast.Assign | ast.AnnAssign) and (name := _top_level_name(node)) is not None
    ]


def _top_level_name(node: ast.AST) -> str | None:
    """The name a top-level statement defines: a function or class, or a constant assigned to one name
    (`PRICES = {...}`, `UNIT: str = "C"`); None for anything else."""
    if isinstance(node, _DEFINITIONS):
        return node.name
    if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
        return node.targets[0].id
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
        return node.target.id
    return None


def merge_definitions(old: str, snippet: str) -> tuple[str, list[str], list[str]] | None:
    """Apply a snippet of whole functions or classes, constants (`NAME = ...`) and imports to a Python
    file: each definition replaces the one of the same name (a method inside its class), a new function
    or class is added at the end, a new constant before the first function or class, new imports go to
    the top, a module docstring replaces the file's. A small model fixing one function writes that
    function, not the whole file. None when the snippet is not that (other statements, a name that is
    ambiguous, code that does not parse)."""
    # A method copied with its class's indentation reads as the class's (an indented new def goes there).
    indented = snippet.lstrip("\n")[:1] in (" ", "\t")
    snippet = textwrap.dedent(snippet).strip("\n") + "\n"
    try:
        new_tree, old_tree = ast.parse(snippet), ast.parse(old)
    except (SyntaxError, ValueError):
        return None
    docstring = _module_docstring(new_tree)
    body = new_tree.body[1:] if docstring else new_tree.body
    definitions = [n for n in body if _top_level_name(n) is not None]
    imports = [n for n in body if isinstance(n, ast.Import | ast.ImportFrom)]
    items = [n for n in body if _dict_item(n) is not None]
    # Imports alone are a snippet too: "add `import math` to this file" is what a model means by them;
    # so is a module docstring alone: "put this docstring at the top".
    if not (definitions or imports or items or docstring) or len(definitions) + len(imports) + len(
        items
    ) != len(body):
        return None
    spans = _definition_spans(old_tree)
    snippet_lines = snippet.splitlines(keepends=True)
    changes: list[tuple[int, int, str]] = []
    replaced, added, new_methods = [], [], []
    merged: set[str] = set()
    for node in definitions:
        partial = _partial_class(node, old_tree)
        if partial is not None:
            # A class written with only some of its methods: those methods are merged into it.
            changes.extend(_merge_methods(partial, node, snippet_lines, replaced, new_methods, old))
            merged.add(node.name)
            continue
        source = "".join(snippet_lines[_first_line(node) - 1 : node.end_lineno])
        name = _top_level_name(node) or ""
        found = spans.get(name, [])
        constant = not isinstance(node, _DEFINITIONS)
        # A constant replaces only a top-level name, never a method of that name.
        candidates = [span for span in found if span[2] == 0] or ([] if constant else found)
        if len(candidates) > 1:
            return None
        if candidates:
            first, last, indent = candidates[0]
            previous = _definition_at(old_tree, name, first)
            source, kept_body = _with_old_body(source, node, previous, old)
            source, kept = _with_old_docstring(source, node, previous, old)
            changes.append((first, last, textwrap.indent(source, " " * indent)))
            replaced.append(name + (KEPT_BODY if kept_body else KEPT_DOCSTRING if kept else ""))
        elif constant and (first_definition := _first_definition_line(old_tree)):
            # Before the code that may use it at import time.
            changes.append((first_definition, first_definition - 1, source.rstrip("\n") + "\n\n\n"))
        elif (home := _method_home(node, old_tree, indented)) is not None:
            # `    def peek(self): ...` for a file with one class: a new method of that class (added at
            # module level it left the class without it, and the model saw the same AttributeError).
            end = home.end_lineno or home.lineno
            indent = " " * (home.body[0].col_offset if home.body else 4)
            changes.append((end + 1, end, "\n" + textwrap.indent(source, indent)))
            new_methods.append(f"{home.name}.{name}")
            merged.add(name)
        else:
            added.append(source.rstrip("\n"))
    item_changes = _dict_item_changes(old, old_tree, snippet, items)
    if item_changes is None:
        return None
    for first, last, text, (changed, new_entries) in item_changes:
        if any(first <= c_last and c_first <= last for c_first, c_last, _ in changes):
            return None  # the same constant rewritten whole and by item: ambiguous
        changes.append((first, last, text))
        replaced.extend(changed)
        new_methods.extend(new_entries)
    lines = old.splitlines(keepends=True)
    for first, last, text in sorted(changes, reverse=True):
        lines[first - 1 : last] = [text]
    result = "".join(lines)
    if added:
        result = result.rstrip() + "\n\n\n" + "\n\n\n".join(added) + "\n"
    existing = {ln.strip() for ln in old.splitlines()}
    new_imports = [ast.get_source_segment(snippet, n) or "" for n in imports]
    new_imports = [line for line in new_imports if line and line.strip() not in existing]
    if new_imports:
        # After the module's docstring and imports, where a reader looks for them.
        head = [n for n in old_tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
        if not head and old_tree.body and isinstance(old_tree.body[0], ast.Expr):
            head = [old_tree.body[0]]
        at = max((n.end_lineno or n.lineno for n in head), default=0)
        out = result.splitlines(keepends=True)
        block = "\n".join(new_imports) + "\n"
        after_docstring = bool(head) and isinstance(head[0], ast.Expr)
        result = "".join(out[:at]) + ("\n" if after_docstring else "") + block + "".join(out[at:])
    names = [_top_level_name(n) or "" for n in definitions]
    done = {bare_name(name) for name in replaced}
    names = [name for name in names if name not in done and name not in merged]
    if docstring:
        result, which = _with_module_docstring(result, ast.get_source_segment(snippet, docstring) or "")
        (replaced if which == "replaced" else names).append("the module docstring")
    return result, replaced, [*names, *new_methods, *new_imports]


def _method_home(node: ast.AST, old_tree: ast.Module, indented: bool) -> ast.ClassDef | None:
    """The class a new function of a snippet belongs to: the file's only class, when the function was
    written indented (copied from inside a class) or takes `self` or `cls` first."""
    if not isinstance(node, FUNCTIONS):
        return None
    params = node.args.posonlyargs + node.args.args
    if not indented and not (params and params[0].arg in ("self", "cls")):
        return None
    classes = [n for n in old_tree.body if isinstance(n, ast.ClassDef)]
    return classes[0] if len(classes) == 1 else None


def _dict_item(node: ast.AST) -> tuple[str, ast.expr, ast.expr] | None:
    """(NAME, key, value) of a statement `NAME[key] = value`; None for anything else."""
    if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
        return None
    target = node.targets[0]
    if (
        isinstance(target, ast.Subscript)
        and isinstance(target.value, ast.Name)
        and not isinstance(target.slice, ast.Slice)
    ):
        return target.value.id, target.slice, node.value
    return None


def _dict_item_changes(
    old: str, old_tree: ast.Module, snippet: str, items: list[ast.AST]
) -> list[tuple[int, int, str, tuple[list[str], list[str]]]] | None:
    """Line changes that put `NAME[key] = value` statements into the file's `NAME = {...}` literal (a
    small model adds a price to a price list that way): the key's value is replaced, or the entry added
    before the closing brace. None when NAME is not a top-level dict literal of the file."""
    wanted: dict[str, list[tuple[str, str]]] = {}
    for node in items:
        name, key, value = _dict_item(node)  # type: ignore[misc]
        segments = ast.get_source_segment(snippet, key), ast.get_source_segment(snippet, value)
        if None in segments:
            return None
        wanted.setdefault(name, []).append(segments)  # type: ignore[arg-type]
    lines = old.splitlines(keepends=True)
    out = []
    for name, updates in wanted.items():
        found = [
            n
            for n in old_tree.body
            if _top_level_name(n) == name and isinstance(getattr(n, "value", None), ast.Dict)
        ]
        if len(found) != 1:
            return None
        statement = found[0]
        literal: ast.Dict = statement.value  # type: ignore[attr-defined, assignment]
        if any(k is None for k in literal.keys):
            return None  # a `**spread` entry: not a plain literal
        entries = [
            (ast.get_source_segment(old, k), ast.get_source_segment(old, v))  # type: ignore[arg-type]
            for k, v in zip(literal.keys, literal.values, strict=True)
        ]
        changed: list[str] = []
        new_entries: list[str] = []
        for key, value in updates:
            same = [i for i, (k, _v) in enumerate(entries) if k is not None and _same_key(k, key)]
            if same:
                entries[same[0]] = (entries[same[0]][0], value)
                changed.append(f"{name}[{key}]")
            else:
                entries.append((key, value))
                new_entries.append(f"{name}[{key}]")
        first, last = statement.lineno, statement.end_lineno or statement.lineno
        prefix = lines[first - 1][: literal.col_offset]
        suffix = lines[last - 1][literal.end_col_offset or 0 :]
        if literal.lineno == (literal.end_lineno or literal.lineno):
            body = "{" + ", ".join(f"{k}: {v}" for k, v in entries) + "}"
        else:
            indent = " " * (literal.keys[0].col_offset if literal.keys else 4)  # type: ignore[union-attr]
            body = "{\n" + "".join(f"{indent}{k}: {v},\n" for k, v in entries) + "}"
        out.append((first, last, prefix + body + suffix, (changed, new_entries)))
    return out


def _same_key(a: str, b: str) -> bool:
    try:
        return ast.literal_eval(a) == ast.literal_eval(b)
    except (ValueError, SyntaxError):
        return a.strip() == b.strip()


def _first_definition_line(tree: ast.Module) -> int | None:
    first = next((n for n in tree.body if isinstance(n, _DEFINITIONS)), None)
    return _first_line(first) if first is not None else None


def _module_docstring(tree: ast.Module) -> ast.Expr | None:
    first = tree.body[0] if tree.body else None
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
        return first if isinstance(first.value.value, str) else None
    return None


def _with_module_docstring(source: str, docstring: str) -> tuple[str, str]:
    """`source` with `docstring` (as written) as its module docstring: in place of the one it has
    ("replaced"), else at the top ("added")."""
    lines = source.splitlines(keepends=True)
    try:
        old = _module_docstring(ast.parse(source))
    except (SyntaxError, ValueError):
        old = None
    if old is not None:
        lines[old.lineno - 1 : old.end_lineno] = [docstring + "\n"]
        return "".join(lines), "replaced"
    return docstring + "\n\n" + source.lstrip("\n"), "added"


FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)


def _partial_class(node: ast.AST, old_tree: ast.Module) -> ast.ClassDef | None:
    """The file's class that snippet class `node` rewrites with only some of its methods (and nothing
    but methods, a docstring aside); None when `node` is a whole class to replace or add."""
    if not isinstance(node, ast.ClassDef):
        return None
    body = node.body[1:] if node.body and isinstance(node.body[0], ast.Expr) else node.body
    if not body or not all(isinstance(item, FUNCTIONS) for item in body):
        return None
    olds = [n for n in old_tree.body if isinstance(n, ast.ClassDef) and n.name == node.name]
    if len(olds) != 1:
        return None
    kept = {item.name for item in body}  # type: ignore[attr-defined]
    missing = [i for i in olds[0].body if isinstance(i, FUNCTIONS) and i.name not in kept]
    return olds[0] if missing else None


# Said of a replaced definition whose docstring was kept (see _with_old_docstring), or of a function
# given only a docstring, whose body was kept (see _with_old_body).
KEPT_DOCSTRING = " (its docstring kept)"
KEPT_BODY = " (docstring set, its code kept)"


def bare_name(name: str) -> str:
    """A replaced definition's name without the note on what was kept."""
    return name.removesuffix(KEPT_DOCSTRING).removesuffix(KEPT_BODY)


def _with_old_body(source: str, new: ast.AST, old: ast.AST | None, old_text: str) -> tuple[str, bool]:
    """A function rewritten as its def line and a docstring alone keeps its code: what the model means
    is "give it this docstring". Seen in the eval: asked for a docstring on celsius_to_fahrenheit, the
    model wrote the def line and the docstring, the merge replaced the whole function, and it returned
    None. Returns the source (the old code under the new docstring) and whether that happened."""
    if not isinstance(new, FUNCTIONS) or not isinstance(old, FUNCTIONS) or len(new.body) != 1:
        return source, False
    if ast.get_docstring(new, clean=False) is None:
        return source, False
    code = old.body[1:] if ast.get_docstring(old, clean=False) is not None else old.body
    if not code or code[0].lineno == old.lineno:
        return source, False  # the old function had no code of its own line to keep
    lines = source.splitlines(keepends=True)
    head = "".join(lines[: (new.body[0].end_lineno or new.body[0].lineno) - _first_line(new) + 1])
    kept = textwrap.dedent("\n".join(old_text.splitlines()[code[0].lineno - 1 : old.end_lineno]))
    return head + textwrap.indent(kept, " " * (new.body[0].col_offset - new.col_offset)) + "\n", True


def _definition_at(tree: ast.Module, name: str, first: int) -> ast.AST | None:
    """The function or class `name` of `tree` whose first line (decorators included) is `first`."""
    return next(
        (
            n
            for n in ast.walk(tree)
            if isinstance(n, _DEFINITIONS) and n.name == name and _first_line(n) == first
        ),
        None,
    )


def _with_old_docstring(source: str, new: ast.AST, old: ast.AST | None, old_text: str) -> tuple[str, bool]:
    """A function or class rewritten without a docstring keeps the one it had, and so does each method
    of a rewritten class. A small model fixing a function writes its code and leaves the docstring out
    (20 of 33 diffs in one eval run deleted one), so a fix would delete documentation nobody asked to
    delete. `source` is `new`'s text from its first line (decorators included), `new` at its own
    column; returns it and whether a docstring went in. A definition written with a docstring, even a
    different one, is taken as written."""
    if not isinstance(new, _DEFINITIONS) or not isinstance(old, _DEFINITIONS):
        return source, False
    pairs = [(new, old)]
    if isinstance(new, ast.ClassDef) and isinstance(old, ast.ClassDef):
        methods = {m.name: m for m in old.body if isinstance(m, FUNCTIONS)}
        pairs += [(m, methods[m.name]) for m in new.body if isinstance(m, FUNCTIONS) and m.name in methods]
    old_lines = old_text.splitlines()
    inserts: list[tuple[int, str]] = []
    for n, o in pairs:
        if (
            not n.body
            or ast.get_docstring(n, clean=False) is not None
            or ast.get_docstring(o, clean=False) is None
        ):
            continue
        body = n.body[0]
        if body.lineno == n.lineno:
            continue  # `def f(): return 1`: no line of its own to put a docstring on
        written = textwrap.dedent("\n".join(old_lines[o.body[0].lineno - 1 : o.body[0].end_lineno]))
        inserts.append(
            (
                body.lineno - _first_line(new),
                textwrap.indent(written, " " * (body.col_offset - new.col_offset)),
            )
        )
    lines = source.splitlines(keepends=True)
    # A class's docstring is followed by a blank line, as formatters write it.
    body_of_class = (
        new.body[0].lineno - _first_line(new) if isinstance(new, ast.ClassDef) and new.body else -1
    )
    for at, docstring in sorted(inserts, reverse=True):
        gap = "\n" if at == body_of_class and lines[at].strip() else ""
        lines[at:at] = [docstring + "\n" + gap]
    return "".join(lines), bool(inserts)


def _merge_methods(
    old_class: ast.ClassDef,
    node: ast.ClassDef,
    snippet_lines: list[str],
    replaced: list[str],
    added: list[str],
    old_source: str,
) -> list[tuple[int, int, str]]:
    """Line changes that put `node`'s methods into `old_class`: each replaces the method of the same
    name, a new one goes at the end of the class. Names are noted as Class.method."""
    indent = " " * (old_class.body[0].col_offset if old_class.body else 4)
    end = old_class.end_lineno or old_class.lineno
    changes: list[tuple[int, int, str]] = []
    for item in node.body:
        if not isinstance(item, FUNCTIONS):
            continue
        source = textwrap.dedent("".join(snippet_lines[_first_line(item) - 1 : item.end_lineno]))
        name = f"{old_class.name}.{item.name}"
        same = [i for i in old_class.body if isinstance(i, FUNCTIONS) and i.name == item.name]
        if same:
            first, last = _first_line(same[0]), same[0].end_lineno or same[0].lineno
            source, kept_body = _with_old_body(source, item, same[0], old_source)
            source, kept = _with_old_docstring(source, item, same[0], old_source)
            changes.append((first, last, textwrap.indent(source, " " * same[0].col_offset)))
            replaced.append(name + (KEPT_BODY if kept_body else KEPT_DOCSTRING if kept else ""))
        else:
            changes.append((end + 1, end, "\n" + textwrap.indent(source, indent)))
            added.append(name)
    return changes


DEF_LINE = re.compile(r"^\s*(?:async\s+def|def|class)\s+(\w+)\b.*:\s*(#.*)?$")
DOCSTRING_NOTE = " (a docstring whose quotes did not close was put back as a docstring)"


def _docstrings(source: str) -> dict[str, str]:
    """name -> the docstring of each function and class of `source` as written there (dedented)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return {}
    lines = source.splitlines()
    found: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, _DEFINITIONS) and node.body and isinstance(node.body[0], ast.Expr):
            value = node.body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                written = lines[node.body[0].lineno - 1 : node.body[0].end_lineno]
                found.setdefault(node.name, textwrap.dedent("\n".join(written)))
    return found


def repair_docstrings(content: str, old: str) -> str | None:
    """`content` with each broken one-line docstring fixed: the line after a `def`/`class` line that
    starts with a quote but is not a string (`"Docs."...`, `"Docs".`, `"Docs. ` unterminated: a
    `\"\"\"` the model wrote into its JSON as one quote) becomes that definition's docstring from `old`
    when it has one, else a triple-quoted docstring of the same words. None when nothing was broken."""
    lines = content.splitlines()
    originals = _docstrings(old)
    out: list[str] = []
    changed = False
    for i, line in enumerate(lines):
        previous = DEF_LINE.match(lines[i - 1]) if i else None
        text = line.strip()
        if previous and text[:1] in "\"'" and not text.startswith(('"""', "'''")) and not _parses(text):
            indent = line[: len(line) - len(line.lstrip())]
            words = text.strip("\"'. ").replace('"""', "")
            docstring = originals.get(previous.group(1)) or f'"""{words}."""'
            out.extend(textwrap.indent(docstring, indent).splitlines())
            changed = True
        else:
            out.append(line)
    return "\n".join(out) + ("\n" if content.endswith("\n") else "") if changed else None


_CLOSER = {"(": ")", "[": "]", "{": "}"}
_OPENING = re.compile(r"opening parenthesis '([(\[{])'")
# How many bracket faults at line ends one repair fixes.
BRACKET_FIXES = 3


def repair_line_end_brackets(content: str) -> tuple[str, list[str]] | None:
    """`content` with the brackets that end its lines balanced, and what was done, when that is all
    that keeps it from parsing: a closer missing at a line's end is added (`range(0, 7)` for `range(0,
    7)]`), one too many is dropped (`range(0, 7)]]`, `range(0, 7)]}}`), a wrong one is made the right one.
    Seen in the eval: the 1.5B model wrote week_of's one-line fix three turns running, each time with the
    comprehension's last brackets wrong, and each was refused as not valid Python. Only the brackets
    after the line's last other character are touched; None when that does not make the content parse."""
    text, fixes = content, []
    for _ in range(BRACKET_FIXES + 1):
        try:
            compile(text, "<content>", "exec", dont_inherit=True)
        except SyntaxError as exc:
            fixed = _fix_line_end(text, exc) if len(fixes) < BRACKET_FIXES else None
            if fixed is None:
                return None
            text, fix = fixed
            fixes.append(fix)
        except ValueError:
            return None
        else:
            return (text, fixes) if fixes else None
    return None


def _fix_line_end(text: str, exc: SyntaxError) -> tuple[str, str] | None:
    lines = text.splitlines(keepends=True)
    if not exc.lineno or not exc.offset or not 1 <= exc.lineno <= len(lines):
        return None
    line = lines[exc.lineno - 1]
    body = line.rstrip("\r\n")
    ending, col = line[len(body) :], exc.offset - 1
    if not 0 <= col < len(body) or "#" in body or '"""' in body or "'''" in body:
        return None
    if exc.msg.endswith("was never closed"):
        unclosed = _unclosed(body[col:])
        # A line that ends in a comma or an operator goes on below: its closer belongs further down.
        if not unclosed or unclosed[0] != body[col] or body.rstrip()[-1] in ",([{+-*/%=<>&|\\":
            return None
        added = "".join(_CLOSER[c] for c in reversed(unclosed))
        new, fix = body.rstrip() + added, f"{added!r} added at the end of line {exc.lineno}"
    elif body[col] in ")]}" and set(body[col:].rstrip()) <= set(")]}"):
        opening = _OPENING.search(exc.msg)
        if opening:
            right = _CLOSER[opening.group(1)]
            new = body[:col] + right + body[col + 1 :]
            fix = f"{body[col]!r} made {right!r} on line {exc.lineno}"
        elif exc.msg.startswith("unmatched"):
            new, fix = body[:col] + body[col + 1 :], f"{body[col]!r} dropped from line {exc.lineno}"
        else:
            return None
    else:
        return None
    lines[exc.lineno - 1] = new + ending
    return "".join(lines), fix


def _unclosed(code: str) -> list[str] | None:
    """The brackets `code` (one line, no comment) opens and does not close, outermost first; None when
    it closes one it did not open."""
    stack: list[str] = []
    quote, escaped = "", False
    for char in code:
        if quote:
            escaped, quote = (not escaped and char == "\\"), ("" if char == quote and not escaped else quote)
            continue
        if char in "\"'":
            quote = char
        elif char in _CLOSER:
            stack.append(char)
        elif char in ")]}":
            if not stack or _CLOSER[stack[-1]] != char:
                return None
            stack.pop()
    return stack


def dead_code_in(source: str, name: str) -> bool:
    """Whether a function `name` of `source` has statements after a return or raise of its body."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return False
    for node in ast.walk(tree):
        if isinstance(node, FUNCTIONS) and node.name == name:
            ends = [i for i, stmt in enumerate(node.body) if isinstance(stmt, ast.Return | ast.Raise)]
            if ends and ends[0] < len(node.body) - 1:
                return True
    return False


def _parses(source: str) -> bool:
    try:
        ast.parse(source)
    except (SyntaxError, ValueError):
        return False
    return True


def merged_at(text: str, names: list[str]) -> int:
    """Where the first of merge_definitions' replaced or added names (a definition, or an import
    statement) now is in `text`."""
    for name in names:
        short = bare_name(name).rsplit(".", 1)[-1]
        if name.startswith(("import ", "from ")):
            found = re.search(rf"^{re.escape(name)}$", text, re.MULTILINE)
        else:
            found = re.search(rf"(def|class) {re.escape(short)}\b", text)
        if found:
            return found.start()
    return 0


def snippet_only(content: str) -> bool:
    """Python source of functions, classes and imports (after a module docstring) and nothing else."""
    try:
        body = ast.parse(textwrap.dedent(content)).body
    except (SyntaxError, ValueError):
        return False
    docstring = bool(body) and _module_docstring(ast.Module(body=body, type_ignores=[])) is not None
    rest = body[1:] if docstring else body
    return (docstring or bool(rest)) and all(
        isinstance(n, ast.Import | ast.ImportFrom)
        or _top_level_name(n) is not None
        or _dict_item(n) is not None
        for n in rest
    )


def merge_note(replaced: list[str], added: list[str]) -> str:
    """What a merge did, as the tool result says it: the names replaced and added."""
    parts = []
    if replaced:
        parts.append(f"replaced {', '.join(replaced)}")
    if added:
        parts.append(f"added {', '.join(added)}")
    return f" ({'; '.join(parts)}; the rest of the file is unchanged)"


# How alike (difflib's ratio, whitespace aside) the statements a fragment replaces must be to it, and by
# how much the best run must beat the next one: a fragment that fits two places equally is refused.
FRAGMENT_LIKENESS = 0.5
FRAGMENT_MARGIN = 0.15
FRAGMENT_WRAPPER = "def __fragment__():\n"


def _statement_lists(tree: ast.AST) -> list[tuple[str, list[ast.stmt]]]:
    """Every block of statements inside a function or method (its body and each nested block), with
    the function's name (Class.method for a method)."""
    out: list[tuple[str, list[ast.stmt]]] = []

    def blocks(node: ast.AST) -> list[list[ast.stmt]]:
        found = []
        for field in ("body", "orelse", "finalbody"):
            block = getattr(node, field, None)
            if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                found.append(block)
        found.extend(h.body for h in getattr(node, "handlers", []))
        found.extend(c.body for c in getattr(node, "cases", []))
        return found

    def visit(node: ast.AST, owner: str) -> None:
        for block in blocks(node):
            if owner:
                out.append((owner, block))
            for child in block:
                if isinstance(child, FUNCTIONS):
                    visit(child, f"{owner}.{child.name}" if owner else child.name)
                elif isinstance(child, ast.ClassDef):
                    visit(child, child.name)
                else:
                    visit(child, owner)

    visit(tree, "")
    return out


def _squeezed(text: str) -> str:
    return "\n".join(line.strip() for line in text.splitlines() if line.strip())


def merge_statements(old: str, fragment: str) -> tuple[str, str, tuple[int, int]] | None:
    """Apply a fragment of statements from inside a function (`if quantity > LIMIT: ...`, a `return`
    line) to the file: it replaces the run of statements of the same kinds, in one function, that is
    most like it, re-indented to where that run is. A small model fixing a line often writes just that
    line or block to write_file, which as a file body would delete the module or not even parse (a
    `return` outside a function); the eval's fruit_order_total lost four turns that way. Returns the
    new source, the function's name and the replaced lines (first, last); None where the fragment is
    not statements, or no run is alike enough, or two are about as alike."""
    body = textwrap.dedent(fragment).strip("\n")
    try:
        old_tree = ast.parse(old)
        wrapped = ast.parse(FRAGMENT_WRAPPER + textwrap.indent(body, "    ") + "\n")
    except (SyntaxError, ValueError):
        return None
    statements = wrapped.body[0].body  # type: ignore[attr-defined]
    if any(isinstance(n, (*_DEFINITIONS, ast.Import, ast.ImportFrom)) for n in statements):
        return None
    kinds = [type(n) for n in statements]
    lines = old.splitlines(keepends=True)
    scored: list[tuple[float, str, int, int, int]] = []
    for owner, block in _statement_lists(old_tree):
        for i in range(len(block) - len(kinds) + 1):
            run = block[i : i + len(kinds)]
            if [type(n) for n in run] != kinds:
                continue
            first, last = run[0].lineno, run[-1].end_lineno or run[-1].lineno
            text = "".join(lines[first - 1 : last])
            ratio = difflib.SequenceMatcher(None, _squeezed(text), _squeezed(body)).ratio()
            scored.append((ratio, owner, first, last, run[0].col_offset))
    if not scored:
        return None
    scored.sort(key=lambda s: s[0], reverse=True)
    ratio, owner, first, last, indent = scored[0]
    if ratio < FRAGMENT_LIKENESS or (len(scored) > 1 and scored[1][0] > ratio - FRAGMENT_MARGIN):
        return None
    lines[first - 1 : last] = [textwrap.indent(body, " " * indent) + "\n"]
    result = "".join(lines)
    return (result, owner, (first, last)) if _parses(result) else None
