"""Look before thinking: what a good engineer reads before touching a repository.

Agentless showed that a small model does far better when localisation is done for it: the repository's
map, the failing test's traceback and the source of the files it names are put in front of the model
before its first step, instead of being left for it to discover with a budget of tool calls.
"""

from __future__ import annotations

import ast
import importlib
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from models.records import ObserveDetail

if TYPE_CHECKING:
    from elpis_worker.tools import ToolResult

__all__ = [
    "ObservationPlan",
    "Observed",
    "observe",
    "sources_shown",
    "tests_shown",
    "failure_hints",
    "failing_assertion",
    "failing_definitions",
    "failing_places",
    "own_test_hint",
    "is_test_file",
    "mentioned_files",
    "render_source",
    "repo_map",
    "traceback_files",
    "top_level_definitions",
    "tracked_files",
    "trim_test_output",
    "untouched_named_files",
]

MAP_CAP = 3000
TEST_OUTPUT_LINES = 45
SOURCE_FILES_MAX = 3
SOURCE_LINES_MAX = 120
SOURCE_CHARS_MAX = 7000

_PYTEST_LOC = re.compile(r"^([\w./-]+\.py):(\d+)(?::|$)")
_PY_TRACEBACK_LOC = re.compile(r'File "([^"]+\.py)", line (\d+)')
_PATHLIKE = re.compile(r"[\w./-]+\.\w+")
# pytest marks the line that failed in each frame of its long traceback with `>`.
_FAILING_LINE = re.compile(r"^>\s+(.*\S)\s*$", re.MULTILINE)
_IDENTIFIER = re.compile(r"\b[A-Za-z_]\w*\b")
DEFINITIONS_SHOWN = 2
DEFINITION_LINES_MAX = 25


class ObservationPlan:
    """The observation steps of a task, in order. Each is recorded as one `observe` step, so a resumed
    task redoes only the ones that are missing."""

    REPO_MAP = "repo_map"
    TESTS = "run_tests"
    SOURCES = "read_sources"
    # Not part of a task's opening: recorded in a turn when the agent replans (see Agent._fresh_look).
    FRESH_LOOK = "fresh_look"

    @classmethod
    def for_task(cls, test_command: str | None) -> list[str]:
        return [cls.REPO_MAP, cls.TESTS, cls.SOURCES] if test_command else [cls.REPO_MAP, cls.SOURCES]


@dataclass
class Observed:
    """One observation, as its `observe` step records it."""

    content: str  # what the prompt shows
    output: str  # the raw output behind it (the step's tool_result)
    detail: ObserveDetail
    exit_code: int | None = None
    tests: ToolResult | None = None  # the test run this observation made, if it made one


def observe(
    name: str,
    root: Path,
    instruction: str,
    test_command: str | None,
    run_tests: Callable[[], ToolResult],
    tests_output: str,
) -> Observed:
    """Observation `name` of the workspace at `root`: the repository map, the task's tests run once
    (`run_tests`; the failure trimmed to its traceback, with hints), or the source of the files that the
    test output (`tests_output`, the earlier observation's) or the instruction names."""
    if name == ObservationPlan.REPO_MAP:
        output = repo_map(root)
        return Observed(f"Repository map:\n{output}", output, ObserveDetail())
    if name == ObservationPlan.TESTS:
        result = run_tests()
        detail = ObserveDetail(
            ok=result.ok,
            tests_run=True,
            tests_passed=result.tests_passed,
            failures=result.failures,
            error_kind=result.error_kind,
        )
        content = tests_shown(result.tests_passed, test_command, result.output, root)
        return Observed(content, result.output, detail, exit_code=result.exit_code, tests=result)
    files, output = sources_shown(tests_output, instruction, root)
    content = (
        f"Source of the files involved:\n{output}"
        if files
        else "No workspace file is named in the test output or the task."
    )
    return Observed(content, output, ObserveDetail(files=files))


def tests_shown(passed: bool | None, test_command: str | None, output: str, root: Path) -> str:
    """A run of the task's tests as the model reads it: the verdict and the command, the output trimmed
    to the failure, then the hints the failure gives."""
    verdict = "pass" if passed else "fail"
    hints = "".join(f"\n{h}" for h in failure_hints(output, root))
    return f"The tests {verdict} now ({test_command}):\n{trim_test_output(output)}{hints}"


def sources_shown(
    output: str, instruction: str, root: Path, first: list[str] | None = None
) -> tuple[list[str], str]:
    """The files worth showing (`files_involved`) and their source with line numbers, as one text."""
    named = files_involved(output, instruction, root, first=first)
    return list(named), "\n\n".join(render_source(root, f, named[f]) for f in named)


def tracked_files(root: Path) -> list[str]:
    """Files of the workspace, listed by the worker's private repository (never the workspace's own
    `.git`, which commands can write): tracked ones plus new ones not ignored."""
    from elpis_worker.workspace import private_git_dir, run_git

    git_dir = private_git_dir(root)
    if git_dir.is_dir():
        proc = run_git(
            ["ls-files", "-z", "--cached", "--others", "--exclude-standard"], git_dir=git_dir, work_tree=root
        )
        if proc.returncode == 0:
            return sorted(name for name in proc.stdout.decode("utf-8", "replace").split("\0") if name)
    return sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and ".git" not in p.parts
    )


def _outline(source: str) -> list[str]:
    """Top-level classes and functions (with their methods) of a Python file, as signatures."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return ["(does not parse)"]
    out = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            out.append(f"def {node.name}({ast.unparse(node.args)})")
        elif isinstance(node, ast.ClassDef):
            out.append(f"class {node.name}")
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    out.append(f"    def {item.name}({ast.unparse(item.args)})")
    return out


def repo_map(root: Path, cap: int = MAP_CAP) -> str:
    """Tracked files; for Python files their top-level classes and functions."""
    lines: list[str] = []
    for name in tracked_files(root):
        lines.append(name)
        path = root / name
        if name.endswith(".py") and path.is_file() and path.stat().st_size < 200_000:
            lines.extend(f"    {item}" for item in _outline(path.read_text("utf-8", "replace")))
    text = "\n".join(lines) or "(no files)"
    if len(text) > cap:
        text = text[:cap].rsplit("\n", 1)[0] + "\n[... map cut ...]"
    return text


def trim_test_output(output: str, max_lines: int = TEST_OUTPUT_LINES) -> str:
    """The failure without the noise: pytest's FAILURES/ERRORS section (traceback and assertion) and its
    summary line; otherwise the last lines (where a plain Python traceback ends)."""
    lines = output.splitlines()
    start = next(
        (i for i, ln in enumerate(lines) if re.match(r"^=+ (FAILURES|ERRORS) =+$", ln.strip())), None
    )
    if start is not None:
        end = next(
            (i for i in range(start + 1, len(lines)) if "short test summary info" in lines[i]), len(lines)
        )
        body = [ln for ln in lines[start + 1 : end] if ln.strip()]
        summary = [ln for ln in lines[end:] if ln.strip()][-4:]
        if len(body) > max_lines:
            half = max_lines // 2
            body = body[:half] + ["[...]"] + body[-half:]
        return "\n".join(body + summary)
    kept = [ln for ln in lines if ln.strip()]
    if len(kept) > max_lines:
        kept = ["[...]"] + kept[-max_lines:]
    return "\n".join(kept)


def _inside(root: Path, name: str) -> str | None:
    path = Path(name)
    candidate = path if path.is_absolute() else root / path
    try:
        resolved = candidate.resolve()
        relative = resolved.relative_to(root.resolve())
    except (OSError, ValueError):
        return None
    if ".git" in relative.parts or not resolved.is_file():
        return None
    return relative.as_posix()


def traceback_files(output: str, root: Path) -> dict[str, list[int]]:
    """Workspace files named in a traceback, with the line numbers named, in order of appearance; source
    files before test files (the bug is usually in the code under test)."""
    found: dict[str, list[int]] = {}
    for line in output.splitlines():
        stripped = line.strip()
        match = _PYTEST_LOC.match(stripped) or _PY_TRACEBACK_LOC.search(stripped)
        if not match:
            continue
        relative = _inside(root, match.group(1))
        if relative is None or relative.endswith("conftest.py"):
            continue
        found.setdefault(relative, []).append(int(match.group(2)))
    for relative in [name for name in found if is_test_file(name)]:
        for module in imported_files(root, relative):
            found.setdefault(module, [])
    return dict(sorted(found.items(), key=lambda item: is_test_file(item[0])))


def imported_files(root: Path, relative: str) -> list[str]:
    """Workspace modules a Python file imports (`from calc.ops import x` -> calc/ops.py): a failing
    assertion's traceback names only the test, while the bug is in the code it imports."""
    try:
        tree = ast.parse((root / relative).read_text("utf-8", "replace"))
    except (OSError, SyntaxError, ValueError):
        return []
    modules: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.append(node.module)
            modules.extend(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            modules.extend(alias.name for alias in node.names)
    found = []
    for module in modules:
        base = module.replace(".", "/")
        for candidate in (f"{base}.py", f"src/{base}.py", f"{base}/__init__.py"):
            resolved = _inside(root, candidate)
            if resolved is not None and resolved != relative and resolved not in found:
                if not resolved.endswith("__init__.py") or (root / resolved).stat().st_size > 0:
                    found.append(resolved)
                break
    return found


def is_test_file(relative: str) -> bool:
    name = relative.rsplit("/", 1)[-1]
    return name.startswith("test_") or name.endswith("_test.py") or "/tests/" in f"/{relative}"


def mentioned_files(text: str, root: Path) -> list[str]:
    """Workspace files named in the task's instruction (e.g. "calc/ops.py")."""
    out = []
    for match in _PATHLIKE.findall(text):
        relative = _inside(root, match.strip("./") if match.startswith("./") else match)
        if relative is not None and relative not in out:
            out.append(relative)
    return out


def untouched_named_files(instruction: str, root: Path, diff: str) -> list[str]:
    """Source files the task's text names that the change so far leaves alone (tests aside). Seen in the
    eval: "pears are missing from the price list in grocer/prices.py, and the discount in grocer/order.py
    ..." fixed in order.py alone, for eight turns, with prices.py shown from the start."""
    changed = set(diff_files(diff))
    if all(is_test_file(f) for f in changed):
        return []  # adding a test: the source files the task names are what the tests are about
    alone = {m.strip("./") for m in _LEAVE_ALONE.findall(instruction)}
    return [
        f
        for f in mentioned_files(instruction, root)
        if f not in changed and f not in alone and not is_test_file(f)
    ]


# "Do not change bank/savings.py", "without touching x.py": a file the task names to leave as it is.
_LEAVE_ALONE = re.compile(
    r"(?:do not|don't|never|without)\s+(?:change|changing|modify|modifying|edit|editing|touch|touching)"
    r"\s+([\w./-]+\w)",
    re.IGNORECASE,
)


def diff_files(diff: str) -> list[str]:
    """The paths a `git diff` changes, in its order."""
    return [m.group(1) for m in re.finditer(r"^diff --git a/(.+?) b/", diff, re.MULTILINE)]


def files_involved(
    output: str, instruction: str, root: Path, first: list[str] | None = None
) -> dict[str, list[int]]:
    """The workspace files worth showing, each with its lines of interest: `first` (the files changed so
    far, say), those a test failure's traceback runs through, then those the task's text names; at most
    SOURCE_FILES_MAX, only files that exist."""
    named: dict[str, list[int]] = {path: [] for path in first or []}
    named.update(traceback_files(output, root) if output else {})
    for path in mentioned_files(instruction, root):
        named.setdefault(path, [])
    return dict([(f, at) for f, at in named.items() if (root / f).is_file()][:SOURCE_FILES_MAX])


def render_source(root: Path, relative: str, lines_of_interest: list[int] | None = None) -> str:
    """A file with line numbers; a long file shows a window around the lines of interest."""
    text = (root / relative).read_text("utf-8", "replace")
    lines = text.splitlines()
    first, last = 1, len(lines)
    if len(lines) > SOURCE_LINES_MAX:
        centre = min(lines_of_interest) if lines_of_interest else 1
        first = max(1, centre - SOURCE_LINES_MAX // 3)
        last = min(len(lines), first + SOURCE_LINES_MAX - 1)
    body = "\n".join(f"{n:>4}| {lines[n - 1]}" for n in range(first, last + 1))
    if len(body) > SOURCE_CHARS_MAX:
        body = body[:SOURCE_CHARS_MAX].rsplit("\n", 1)[0] + "\n[... cut ...]"
    header = f"--- {relative}"
    if first > 1 or last < len(lines):
        header += f" (lines {first}-{last} of {len(lines)})"
    return f"{header}\n{body}" if body else f"{header}\n(empty file)"


_NAME_ERROR = re.compile(r"NameError: name '(\w+)' is not defined")
# pytest's long traceback ends a frame with `E   NameError: ...` then `path.py:LINE: NameError`.
_NAME_ERROR_AT = re.compile(
    r"NameError: name '(\w+)' is not defined\s*\n\s*([\w./-]+\.py):\d+: NameError", re.MULTILINE
)
_IMPORT_NAME = re.compile(r"ImportError: cannot import name '(\w+)' from '([\w.]+)'")
_MISSING_FIXTURE = re.compile(r"fixture '(\w+)' not found")
_MISSING_TEST_FILE = re.compile(r"ERROR: file or directory not found: (\S+)")
_NO_TESTS = re.compile(r"^no tests ran\b", re.MULTILINE)
# pytest's frame of `counts[key] += n` raising KeyError: the `>` line, then its `E   KeyError: ...` line
# (a `^^^` marker line may sit between them).
_KEY_ERROR_AUGMENTED = re.compile(
    r"^>\s+(?P<target>[\w.]+)\[(?P<key>[^\]\n]+)\]\s*(?P<op>[+-])=\s*(?P<value>[^\n]+?)\s*\n"
    r"(?:[ \t]*\^+[ \t]*\n)?E\s+KeyError: (?P<missing>[^\n]+)",
    re.MULTILINE,
)
# Standard-library modules whose names a small model most often uses without importing them.
_STDLIB_HOMES = (
    "datetime",
    "math",
    "collections",
    "pathlib",
    "itertools",
    "functools",
    "dataclasses",
    "decimal",
    "fractions",
    "statistics",
    "string",
    "typing",
)


def _stdlib_import(name: str) -> str | None:
    """The import that brings standard-library `name` into scope (`import json`, `from math import pi`),
    or None when it is not a standard module nor a name of one of _STDLIB_HOMES."""
    if name.startswith("_"):
        return None
    if name in sys.stdlib_module_names:
        return f"import {name}"
    home = next((m for m in _STDLIB_HOMES if hasattr(importlib.import_module(m), name)), None)
    return f"from {home} import {name}" if home else None


def _defined_in(root: Path, name: str, tests: bool = False) -> list[str]:
    """Workspace Python files (test files only with `tests`) that define `name` at top level."""
    return list(
        dict.fromkeys(relative for relative, _node in top_level_definitions(root, tests).get(name, []))
    )


def _tested_import(root: Path, test_path: str) -> str | None:
    """The import a new test file `tests/test_NAME.py` most likely needs: from the module NAME.py, or
    the module that defines a class or function called NAME (any case), its public top-level names."""
    stem = Path(test_path).stem.removeprefix("test_")
    sources = [p for p in tracked_files(root) if p.endswith(".py") and not is_test_file(p)]
    chosen = [p for p in sources if Path(p).stem == stem]
    if not chosen:
        chosen = [
            p for p in sources if any(n.lower() == stem.replace("_", "") for n in _public_names(root / p))
        ]
    if len(chosen) != 1:
        return None
    names = _public_names(root / chosen[0])
    module = chosen[0].removesuffix(".py").removesuffix("/__init__").replace("/", ".")
    return f"from {module} import {', '.join(names[:4])}" if names else None


def _public_names(file: Path) -> list[str]:
    try:
        tree = ast.parse(file.read_text("utf-8", "replace"))
    except (OSError, SyntaxError, ValueError):
        return []
    return [
        n.name
        for n in tree.body
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and not n.name.startswith("_")
    ]


def failure_hints(output: str, root: Path) -> list[str]:
    """What a linter would say about the commonest failures of a small model's change: a name used but
    never imported (from the repository or the standard library), a name imported from a module that
    does not define it, a test function given parameters pytest cannot fill, a test file the test
    command names that does not exist yet, or one that holds no test, and `d[key] += n` raising
    KeyError for a key not in `d` yet."""
    hints: list[str] = []
    raised_in = {name: path for name, path in _NAME_ERROR_AT.findall(output) if (root / path).is_file()}
    for name in dict.fromkeys(_NAME_ERROR.findall(output)):
        where = _defined_in(root, name)
        if where:
            module = where[0].removesuffix(".py").removesuffix("/__init__").replace("/", ".")
            statement = f"from {module} import {name}"
            origin = f"is defined in {where[0]} but"
        elif found := _stdlib_import(name):
            statement, origin = found, "comes from Python's standard library but"
        else:
            continue
        if name in raised_in:
            # The exact call: a small model given the file and the line makes the change in one turn.
            call = json.dumps({"path": raised_in[name], "content": statement + "\n"})
            hints.append(
                f"hint: {name} {origin} is not imported in {raised_in[name]}: add `{statement}` to it "
                f"with write_file {call} (import lines alone are added to the file's imports)."
            )
        else:
            hints.append(
                f"hint: {name} {origin} is not imported where it is used: add `{statement}` at the top "
                "of that file."
            )
    for path in dict.fromkeys(_MISSING_TEST_FILE.findall(output)):
        if not (root / path).exists():
            tested = _tested_import(root, path)
            example = f" (here `{tested}`)" if tested else ""
            hints.append(
                f"hint: {path} does not exist yet, so no test ran: create it with write_file (path "
                f"{path}) holding the tests the task asks for. It imports what it tests{example}; each "
                "test is a function with no parameters, `def test_...():`, that asserts a result."
            )
    if _NO_TESTS.search(output) and not _MISSING_TEST_FILE.search(output):
        hints.append(
            "hint: pytest found no test to run: a test is a function named test_... in a file named "
            "test_*.py, which imports what it tests and asserts its results (e.g. "
            "`from pkg.mod import f` then `def test_f():` and `assert f(2) == 4`)."
        )
    for name in dict.fromkeys(_MISSING_FIXTURE.findall(output)):
        hints.append(
            f"hint: pytest passes a test function's parameters as fixtures, and there is no fixture "
            f"'{name}': write the test with no parameters (`def test_something():`) and build the "
            "values inside it."
        )
    # Seen in the eval: `self.stock[item] += quantity` for "restocking adds to the stock" raised KeyError
    # for an item not stocked yet; the change was undone, and the model's next tries moved further away.
    lines: dict[tuple[str, ...], re.Match[str]] = {}
    for match in _KEY_ERROR_AUGMENTED.finditer(output):
        lines.setdefault(match.group("target", "key", "op", "value"), match)  # the first test's key
    for found in lines.values():
        target, key, op, value = found["target"], found["key"], found["op"], found["value"]
        hints.append(
            f"hint: `{target}[{key}] {op}= {value}` raises KeyError ({found['missing']}) when {target} has "
            f"no {key} yet: `{target}[{key}] = {target}.get({key}, 0) {op} {value}` starts a missing key "
            "at 0."
        )
    for name, module in dict.fromkeys(_IMPORT_NAME.findall(output)):
        target = module.replace(".", "/") + ".py"
        where = [w for w in _defined_in(root, name, tests=True) if w != target]
        elsewhere = f" (only {', '.join(where)} defines it)" if where else ""
        hints.append(f"hint: {target} does not define {name}{elsewhere}: define {name} in {target}.")
    return hints


def _used_names(line: str) -> list[str]:
    """Names a line of code uses, in order: variables, called functions, attributes (`config.UNIT`
    gives config and UNIT). A line cut from a longer statement falls back to its identifiers."""
    try:
        tree = ast.parse(line.strip())
    except (SyntaxError, ValueError):
        return list(dict.fromkeys(_IDENTIFIER.findall(line)))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            found.append((node.col_offset, node.id))
        elif isinstance(node, ast.Attribute):
            found.append((node.end_col_offset or 0, node.attr))
    return list(dict.fromkeys(name for _at, name in sorted(found)))


def top_level_definitions(root: Path, tests: bool = False) -> dict[str, list[tuple[str, ast.stmt]]]:
    """name -> (file, node) of every top-level function, class and constant of the workspace's Python
    files (test files only with `tests`)."""
    found: dict[str, list[tuple[str, ast.stmt]]] = {}
    for relative in tracked_files(root):
        if not relative.endswith(".py") or (is_test_file(relative) and not tests):
            continue
        try:
            tree = ast.parse((root / relative).read_text("utf-8", "replace"))
        except (OSError, SyntaxError, ValueError):
            continue
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names = [node.name]
            elif isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names = [t.id for t in targets if isinstance(t, ast.Name)]
            else:
                continue
            for name in names:
                found.setdefault(name, []).append((relative, node))
    return found


@dataclass(frozen=True)
class FailingPlace:
    """A workspace definition a failing line uses: its name, its file and its numbered source."""

    name: str
    path: str
    source: str

    def shown(self) -> str:
        return f"The failing line uses {self.name}; {self.path} has now:\n{self.source}"


def failing_definitions(output: str, root: Path, limit: int = DEFINITIONS_SHOWN) -> list[str]:
    """The workspace definitions that pytest's failing lines use, as the files are now, with line
    numbers: after an edit, the model sees the code the failure actually runs through (the function
    the assertion calls, the setting it reads), which is often not the one it just changed."""
    return [place.shown() for place in failing_places(output, root, limit)]


def failing_places(output: str, root: Path, limit: int = DEFINITIONS_SHOWN) -> list[FailingPlace]:
    """`failing_definitions` as records."""
    definitions = top_level_definitions(root)
    shown: list[FailingPlace] = []
    seen: set[str] = set()
    for line in dict.fromkeys(_FAILING_LINE.findall(output)):
        for name in _used_names(line):
            places = [p for p in definitions.get(name, []) if not p[0].endswith("conftest.py")]
            if len(places) != 1 or name in seen:
                continue
            seen.add(name)
            relative, node = places[0]
            lines = (root / relative).read_text("utf-8", "replace").splitlines()
            decorators = [d.lineno for d in getattr(node, "decorator_list", [])]
            first, last = min([node.lineno, *decorators]), node.end_lineno or node.lineno
            cut = last - first + 1 > DEFINITION_LINES_MAX
            last = min(last, first + DEFINITION_LINES_MAX - 1)
            body = "\n".join(f"{n:>4}| {lines[n - 1]}" for n in range(first, last + 1))
            more = "\n[... cut ...]" if cut else ""
            shown.append(FailingPlace(name, relative, f"{body}{more}"))
            if len(shown) >= limit:
                return shown
    return shown


def own_test_hint(output: str, path: str) -> str | None:
    """After a test file the agent just wrote fails on its own assertions: where the code under test
    is not to change (an "add tests" task), the expected values are what is wrong. Seen in the eval:
    the model asserted a balance of 100.05 after depositing 100, then tried to change the code."""
    from elpis_worker.tools import failing_tests

    if not is_test_file(path):
        return None
    failing = failing_tests(output)
    if not failing or any(f.split("::")[0] != path for f in failing) or "AssertionError" not in output:
        return None
    return (
        f"hint: the tests that fail are the ones you wrote in {path}, on their own assertions. Where "
        "the code under test is not to change, the expected values are wrong: assert what the code "
        "returns (pytest shows it on the left of `==`, e.g. `assert 100.0 == 100.05` means it returned "
        "100.0), and rewrite the test file with write_file."
    )


def failing_assertion(output: str, max_lines: int = 8) -> str:
    """The first failure of a pytest run in a few lines: the line that failed (`>`) and what pytest
    says about it (`E`). Empty when the output has neither."""
    out: list[str] = []
    for line in output.splitlines():
        if line.startswith(">") or line.startswith("E "):
            if line.startswith(">") and any(o.startswith("E ") for o in out):
                break  # the next frame or failure
            out.append(line.rstrip())
            if len(out) >= max_lines:
                break
    return "\n".join(out)
