"""The review turn's probe: the visible tests' calls of the functions a change touched, and variations of
them. The eval's commonest wrong success passes the visible test only: `page_items` fixed for page 1 alone,
`week_of` shifted to end on the right day but no longer starting on `start`, `transpose([])` raising. The
1.5B model's own checks rarely tried such inputs (its asserts repeated the test or tested other
functions). With the check on the review turn lists these calls for the model's asserts
(`page_items(list(range(10)), 2, 3)` beside "the first page is 1"); without it, it shows what the code
gives for them. Pure: `probe_program` builds the program the toolbox runs in the sandbox."""

from __future__ import annotations

import ast
import copy
import json
import re
from pathlib import Path

from elpis_worker.observe import is_test_file, tracked_files

_HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)")

# At most this many calls are tried, the tests' own first; each may run this many seconds.
PROBE_CALLS = 8
PROBE_ORIGINALS = 3
PROBE_SECONDS = 2
# Characters of one result shown: a longer one keeps its first two thirds and its last third (a list's end
# matters as much as its start: week_of's `+ [0]` was cut off).
PROBE_RESULT_CHARS = 180

_RUNNER = """
import signal as _signal, sys as _sys
_sys.path.insert(0, '.')
def _alarm(*_):
    raise TimeoutError('took over SECONDS s')
_signal.signal(_signal.SIGALRM, _alarm)
for _setup, _expr in PROBES:
    _space = {}
    _signal.alarm(SECONDS)
    try:
        exec(_setup, _space)
        _value = repr(eval(_expr, _space))
    except BaseException as _exc:
        _value = 'raises ' + type(_exc).__name__ + (': ' + str(_exc) if str(_exc) else '')
    finally:
        _signal.alarm(0)
    if len(_value) > CHARS:
        _value = _value[:CHARS * 2 // 3] + ' [...] ' + _value[-(CHARS // 3):]
    print(_expr, '->', _value)
"""


def probe_program(root: Path, diff: str) -> str | None:
    """The Python program that prints `call -> result` for each probe, or None when the change defines
    no function the visible tests call (a new test, a docstring, a change to a class's methods)."""
    probes = probe_calls(root, diff)
    if not probes:
        return None
    return f"PROBES = {json.dumps(probes)}\n" + _RUNNER.replace("SECONDS", str(PROBE_SECONDS)).replace(
        "CHARS", str(PROBE_RESULT_CHARS)
    )


def probe_calls(root: Path, diff: str) -> list[tuple[str, str]]:
    """(setup, expression) for each call to try: a visible test's call of a function the changed
    source files define, with the test's local names put in (`items` is `list('abcdefg')`), then the
    same calls with one argument varied at a time."""
    functions = _changed_functions(root, diff)
    if not functions:
        return []
    originals: list[tuple[str, ast.Call]] = []
    for relative in _test_files(root):
        try:
            tree = ast.parse((root / relative).read_text("utf-8", "replace"))
        except (SyntaxError, ValueError, OSError):
            continue
        imports = "\n".join(ast.unparse(n) for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom))
        for test in tree.body:
            if isinstance(test, ast.FunctionDef) and test.name.startswith("test"):
                originals.extend((imports, call) for call in _calls_in(test, functions))
    originals = originals[:PROBE_ORIGINALS]
    seen: set[str] = set()
    probes: list[tuple[str, str]] = []
    for setup, call in originals + [(s, v) for s, c in originals for v in _variations(c)]:
        expr = ast.unparse(call)
        if expr not in seen:
            seen.add(expr)
            probes.append((setup, expr))
    return probes[:PROBE_CALLS]


def _changed_functions(root: Path, diff: str) -> set[str]:
    """The top-level functions of the changed source files whose lines the diff adds or changes."""
    names: set[str] = set()
    for relative, lines in _changed_lines(diff).items():
        if not relative.endswith(".py") or is_test_file(relative) or not (root / relative).is_file():
            continue
        try:
            tree = ast.parse((root / relative).read_text("utf-8", "replace"))
        except (SyntaxError, ValueError):
            continue
        for node in tree.body:
            span = range(node.lineno, (getattr(node, "end_lineno", None) or node.lineno) + 1)
            if isinstance(node, ast.FunctionDef) and not lines.isdisjoint(span):
                names.add(node.name)
    return names


def _changed_lines(diff: str) -> dict[str, set[int]]:
    """Each changed file's added lines, and the lines next to a removal, numbered in the new file."""
    changed: dict[str, set[int]] = {}
    lines: set[int] = set()
    at, header = 0, False
    for line in diff.splitlines():
        if line.startswith("diff --git "):
            header = True
        elif header and line.startswith("+++ "):
            lines = changed.setdefault(line[6:] if line.startswith("+++ b/") else "", set())
        elif hunk := _HUNK.match(line):
            at, header = int(hunk.group(1)), False
        elif header:
            continue
        elif line.startswith("+"):
            lines.add(at)
            at += 1
        elif line.startswith("-"):
            lines.update((at - 1, at))
        elif line.startswith(" "):
            at += 1
    return changed


def _test_files(root: Path) -> list[str]:
    return [p for p in tracked_files(root) if p.endswith(".py") and is_test_file(p)]


def _calls_in(test: ast.FunctionDef, functions: set[str]) -> list[ast.Call]:
    """The test's calls of `functions`, each with the names the test assigned once put in; a call that
    still uses another local name (a loop variable, a fixture) is left out."""
    assigned: dict[str, list[ast.expr]] = {}
    for node in ast.walk(test):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            assigned.setdefault(node.targets[0].id, []).append(node.value)
    local = {a.arg for a in test.args.args} | {
        n.id for n in ast.walk(test) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
    }
    calls = []
    for node in ast.walk(test):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in functions):
            continue
        call = _Inline(assigned).visit(copy.deepcopy(node))
        if not any(isinstance(n, ast.Name) and n.id in local for n in ast.walk(call)):
            calls.append(call)
    return calls


class _Inline(ast.NodeTransformer):
    """A local name assigned once in the test becomes its value (which uses no local name itself)."""

    def __init__(self, assigned: dict[str, list[ast.expr]]) -> None:
        self.assigned = assigned

    def visit_Name(self, node: ast.Name) -> ast.expr:
        values = self.assigned.get(node.id, [])
        if len(values) == 1 and not any(
            isinstance(n, ast.Name) and n.id in self.assigned for n in ast.walk(values[0])
        ):
            return copy.deepcopy(values[0])
        return node


def _variations(call: ast.Call) -> list[ast.Call]:
    """The call with one argument changed: a whole number one more, a fraction made whole, a string in
    upper case and with extra spaces, a list or string empty."""
    out = []
    for index, arg in enumerate(call.args):
        for value in _varied(arg):
            varied = copy.deepcopy(call)
            varied.args[index] = value
            out.append(varied)
    return out


def _varied(arg: ast.expr) -> list[ast.expr]:
    if isinstance(arg, ast.Constant) and type(arg.value) is int:
        return [ast.Constant(arg.value + 1)]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, float):
        return [ast.Constant(int(arg.value) + 1)]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value.strip():
        spaced = "  " + arg.value.replace(" ", "   ") + " "
        return [ast.Constant(arg.value.upper()), ast.Constant(spaced), ast.Constant("")]
    if isinstance(arg, ast.List | ast.Tuple) and arg.elts:
        return [type(arg)(elts=[], ctx=ast.Load())]
    return []
