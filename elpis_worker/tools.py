"""The agent's tools. Each one works inside the task's workspace and never raises for the agent's own
mistakes: a bad argument, an unknown tool or a path outside the workspace comes back as a ToolResult with
ok=False and an output the model can read and act on.
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import fnmatch
import os
import re
import shlex
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, ClassVar
from xml.etree import ElementTree

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from elpis_worker.merge import (
    DEF_LINE,
    DOCSTRING_NOTE,
    FUNCTIONS,
    bare_name,
    constant_names,
    dead_code_in,
    definition_names,
    merge_definitions,
    merge_note,
    merge_statements,
    merged_at,
    redefined_names,
    repair_docstrings,
    repair_line_end_brackets,
    snippet_only,
)
from elpis_worker.observe import top_level_definitions
from elpis_worker.probe import probe_program
from elpis_worker.sandbox import SANDBOX_PATH, Sandbox, SandboxError, SandboxProcess
from elpis_worker.workspace import WorkspaceError, WorkspaceEscapeError, resolve_inside, workspace_diff


class ProtectedPathError(WorkspaceError):
    """A write to a path the task declared protected."""


@dataclass
class ToolResult:
    """What one tool call did. `error_kind` is one of "escape", "not_found", "bad_args", "timeout",
    "nonzero_exit", "unknown_tool", "protected", "syntax_error", "tests_failing", "repeated",
    "os_error" (the host refused, e.g. disk full), "regression" (an edit that broke tests, undone),
    "no_change" (an edit of the file to what it already holds, set by the loop), "revisited" (an edit
    back to files the tests were seen failing with, undone by the loop), or None when ok."""

    ok: bool
    output: str
    exit_code: int | None = None
    error_kind: str | None = None
    tests_run: bool = False
    tests_passed: bool | None = None
    failures: int | None = None
    finished: bool = False
    summary: str | None = None
    changed_files: bool = False
    # An edit_file refused because its `search` occurs this many times (the runner may try each place).
    occurrences: int = 0
    # An edit that made the tests worse and was undone: the workspace is as it was before the call.
    reverted: bool = False
    # The whole output of a test run made as part of the call (the check after an edit), uncut.
    test_output: str | None = None
    # A `python` check whose error was raised inside the code under check, or an edit after which the
    # tests pass but the agent's last failed check still fails.
    check_failed: bool = False
    # That edit's check still fails with an error raised inside the code under check, not with an assert.
    check_crashed: bool = False


# Characters of a finish summary (the grammar stops it there).
SUMMARY_CHARS = 300
# Characters of the python tool's code (the grammar stops it there; a line it cuts is left out).
PYTHON_CODE_CHARS = 500


class ToolArgs(BaseModel):
    """The arguments of one tool. Each subclass is the single place where a tool's name, description,
    JSON schema (which becomes the think grammar) and argument validation live."""

    model_config = ConfigDict(extra="forbid", strict=True)
    tool: ClassVar[str]
    help: ClassVar[str]

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """A compact schema for the grammar: plain types, required first, no titles or nulls."""
        properties: dict[str, Any] = {}
        required: list[str] = []
        for name, field in cls.model_fields.items():
            kind = "integer" if field.annotation in (int, int | None) else "string"
            properties[name] = {"type": kind, "description": field.description or ""}
            limit = next((m.max_length for m in field.metadata if hasattr(m, "max_length")), None)
            if limit is not None:
                properties[name]["maxLength"] = limit
            if field.is_required():
                required.append(name)
        return {
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": False,
        }


class ListDirArgs(ToolArgs):
    tool: ClassVar[str] = "list_dir"
    help: ClassVar[str] = "list_dir(path='.'): list the files and directories in a directory."
    path: str = Field(".", description="directory relative to the workspace root")


class ReadFileArgs(ToolArgs):
    tool: ClassVar[str] = "read_file"
    help: ClassVar[str] = (
        "read_file(path, start_line?, end_line?): show a file with line numbers (optionally a range)."
    )
    path: str = Field(..., description="file relative to the workspace root")
    start_line: int | None = Field(None, ge=1, description="first line to show (1-based)")
    end_line: int | None = Field(None, ge=1, description="last line to show")


class EditFileArgs(ToolArgs):
    tool: ClassVar[str] = "edit_file"
    help: ClassVar[str] = (
        "edit_file(path, search, replace): replace the exact lines `search` (copied from the file, "
        "without line numbers) with `replace`; an empty `search` appends `replace` to the end of the file."
    )
    path: str = Field(..., description="file relative to the workspace root")
    search: str = Field(..., description="exact lines to replace, copied from the file; empty = append")
    replace: str = Field(..., description="the new lines")


class WriteFileArgs(ToolArgs):
    tool: ClassVar[str] = "write_file"
    help: ClassVar[str] = (
        "write_file(path, content): write a file. For an existing Python file, content that holds only "
        "some functions or classes replaces those definitions and keeps the rest of the file."
    )
    path: str = Field(..., description="file relative to the workspace root")
    content: str = Field(..., description="the complete content of the file")


class SearchArgs(ToolArgs):
    tool: ClassVar[str] = "search"
    help: ClassVar[str] = (
        "search(pattern, path='.'): find lines matching a regular expression, as file:line:text."
    )
    pattern: str = Field(..., description="regular expression to look for")
    path: str = Field(".", description="file or directory to search")


class RunArgs(ToolArgs):
    tool: ClassVar[str] = "run"
    help: ClassVar[str] = "run(command): run a shell command in the workspace root and show its output."
    command: str = Field(..., description="shell command, run in the workspace root")


class PythonArgs(ToolArgs):
    tool: ClassVar[str] = "python"
    help: ClassVar[str] = (
        "python(code): run Python code in the workspace root (the project's modules import) and show what "
        "it prints or the error; asserts of the results the task asks for try a change on new inputs."
    )
    # Capped: told to write asserts, the 1.5B model can repeat one line until max_tokens cuts the reply
    # (seen in the eval: `assert f(x)` ninety times, three turns running); the grammar closes it here.
    code: str = Field(..., max_length=PYTHON_CODE_CHARS, description="Python statements, one per line")


class RunTestsArgs(ToolArgs):
    tool: ClassVar[str] = "run_tests"
    help: ClassVar[str] = "run_tests(): run the task's tests and show the result."


class FinishArgs(ToolArgs):
    tool: ClassVar[str] = "finish"
    help: ClassVar[str] = "finish(summary): stop when the change is made and the tests pass."
    # Capped: a small model's summary can run on, repeating itself, until max_tokens cuts the reply.
    summary: str = Field(
        ..., max_length=SUMMARY_CHARS, description="what was done and whether the tests pass"
    )


TOOL_ARGS: dict[str, type[ToolArgs]] = {
    cls.tool: cls
    for cls in (
        ListDirArgs,
        ReadFileArgs,
        WriteFileArgs,
        EditFileArgs,
        SearchArgs,
        RunArgs,
        PythonArgs,
        RunTestsArgs,
        FinishArgs,
    )
}
TOOL_SCHEMAS: dict[str, dict[str, Any]] = {name: cls.json_schema() for name, cls in TOOL_ARGS.items()}
TOOL_DESCRIPTIONS: dict[str, str] = {name: cls.help for name, cls in TOOL_ARGS.items()}

_READ_CHUNK = 65536
_READ_FILE_CAP = 1_000_000
_LINE_CAP = 300
_SEARCH_FILE_CAP = 2_000_000
_SUMMARY_COUNT_RE = re.compile(
    r"\b(\d+) (failed|passed|errors?|skipped|xfailed|xpassed|deselected|warnings?)\b"
)
_SUMMARY_TIME_RE = re.compile(r"\bin \d+(?:\.\d+)?s\b")
_UNITTEST_FAILED_RE = re.compile(r"^FAILED \(([^)]*)\)\s*$")
_UNITTEST_COUNT_RE = re.compile(r"\b(failures|errors)=(\d+)")


class _HeadTail:
    """Keeps the first and last bytes of a stream that may be far too big to hold: the start of an
    output usually says what ran and the end says how it ended."""

    def __init__(self, cap: int) -> None:
        self.head_cap = max(cap, 0) // 2
        self.tail_cap = max(cap, 0) - self.head_cap
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.head_cap - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        self.tail += chunk
        if len(self.tail) > self.tail_cap:
            del self.tail[: len(self.tail) - self.tail_cap]

    def text(self) -> str:
        cut = self.total - len(self.head) - len(self.tail)
        if cut <= 0:
            return (bytes(self.head) + bytes(self.tail)).decode("utf-8", "replace")
        head = self.head.decode("utf-8", "replace")
        tail = self.tail.decode("utf-8", "replace")
        return f"{head}\n[... {cut} bytes cut ...]\n{tail}"


def cap_output(data: bytes, cap: int) -> str:
    """`data` as text, at most about `cap` bytes of it: head and tail kept, the middle marked as cut."""
    buffer = _HeadTail(cap)
    buffer.feed(data)
    return buffer.text()


# Where a pytest run of the task's tests writes its JUnit XML report (PYTEST_ADDOPTS asks for it, so the
# test command is not rewritten: `make test`, `cd sub && pytest` and `python -m pytest` all pick it up).
# Inside the workspace's .git: writable in the sandbox, never part of the task's diff.
JUNIT_REPORT = ".git/elpis-junit.xml"
# A report bigger than this is not read (the test command is the agent's code too); the regex counts.
_JUNIT_CAP = 5_000_000


def junit_failures(report: Path) -> int | None:
    """Failing tests (failures plus errors, collection errors included) by pytest's JUnit XML report
    `report`; None where there is none, it is too big, or it does not parse as one."""
    try:
        if report.stat().st_size > _JUNIT_CAP:
            return None
        root = ElementTree.parse(report).getroot()
    except (OSError, ElementTree.ParseError):
        return None
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    if root.tag not in ("testsuite", "testsuites") or not suites:
        return None
    try:
        return sum(int(s.get("failures", "0")) + int(s.get("errors", "0")) for s in suites)
    except ValueError:
        return None


def parse_test_failures(output: str) -> int | None:
    """Failing tests according to the last pytest or unittest summary in `output`; None if there is none."""
    for line in reversed(output.splitlines()):
        stripped = line.strip().strip("=").strip()
        unittest_failed = _UNITTEST_FAILED_RE.match(stripped)
        if unittest_failed:
            return sum(int(n) for _, n in _UNITTEST_COUNT_RE.findall(unittest_failed.group(1)))
        if stripped == "OK" or stripped.startswith("OK ("):
            return 0
        if _SUMMARY_TIME_RE.search(stripped) and (
            _SUMMARY_COUNT_RE.search(stripped) or stripped.startswith("no tests ran")
        ):
            counts = _SUMMARY_COUNT_RE.findall(stripped)
            return sum(int(n) for n, kind in counts if kind in ("failed", "error", "errors"))
    return None


_PYTEST_FAILED_RE = re.compile(r"^(?:FAILED|ERROR) ([^\s(]\S*)")


_PASSED_RE = re.compile(r"\b[1-9]\d* passed\b|^OK\b", re.MULTILINE)


def failing_tests(output: str) -> set[str] | None:
    """The ids pytest's short summary lists as failing or erroring (`tests/x.py::test_y`, or just the
    file for a collection error); an empty set when tests ran and passed; None when the output says
    neither (another runner, no summary, or no test ran at all, e.g. a test file that does not exist
    yet: no baseline to compare with)."""
    ids = {m.group(1) for line in output.splitlines() if (m := _PYTEST_FAILED_RE.match(line.strip()))}
    if ids:
        return ids
    return set() if parse_test_failures(output) == 0 and _PASSED_RE.search(output) else None


def regression_between(before: str, after: str, new_files: Collection[str] = ()) -> str | None:
    """Why the test run `after` an edit is worse than the run `before` it, or None when it is not: a test
    that passed (or was not reached) before fails now, or, where the ids are unknown, more tests fail.
    A test of a file that could not even be collected before, or of one of `new_files` (created by the
    edit), is new, not broken."""
    old, new = failing_tests(before), failing_tests(after)
    if old is not None and new is not None:
        fresh = set(old) | set(new_files)
        broken = sorted(t for t in new - old if t.split("::")[0] not in fresh)
        if broken:
            shown = ", ".join(broken[:3]) + (f" and {len(broken) - 3} more" if len(broken) > 3 else "")
            return f"it broke {len(broken)} test(s) that did not fail before: {shown}"
        return None
    was, now = parse_test_failures(before), parse_test_failures(after)
    if was == 0 and not _PASSED_RE.search(before):
        return None  # no test ran before: nothing to compare with
    if was is not None and now is not None and now > was:
        return f"failing tests went from {was} to {now}"
    return None


def _command_env(root: Path, *, sandboxed: bool = True, junit: Path | None = None) -> dict[str, str]:
    """A minimal environment: the worker's secrets (database URL, tokens) stay out of the agent's
    commands, and the Elpis venv's python/pytest come first on PATH so test commands find them. In the
    sandbox PATH holds only directories the sandbox shows. With `junit`, a pytest run writes its JUnit
    XML report there."""
    addopts = "-p no:cacheprovider"
    if junit is not None:
        addopts += f" --junitxml={shlex.quote(str(junit))}"
    venv_bin = str(Path(sys.executable).parent)
    system_path = SANDBOX_PATH if sandboxed else os.environ.get("PATH") or os.defpath
    return {
        "PATH": os.pathsep.join([venv_bin, system_path]),
        "HOME": str(root),
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "GIT_TERMINAL_PROMPT": "0",
        "PYTHONUNBUFFERED": "1",
        # Caches would otherwise show up as new files in the task's diff.
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTEST_ADDOPTS": addopts,
    }


def _drain(stream: IO[bytes], buffer: _HeadTail) -> None:
    read = getattr(stream, "read1", stream.read)
    while chunk := read(_READ_CHUNK):
        buffer.feed(chunk)


def _kill_group(process: SandboxProcess) -> None:
    """Everything the command started: the sandbox's whole PID namespace (or, unsandboxed, its
    process group), so background children (`sleep 100 &`, `setsid ...`) do not outlive the call."""
    process.kill()


class Toolbox:
    """The tools of one task, bound to its workspace.

    File tools are confined by path: every path goes through resolve_inside. `run` and `run_tests` run
    in `sandbox` (elpis_worker/sandbox.py; by default the one the config describes, bubblewrap): only
    the workspace writable, no host processes, secrets, other workspaces or network, rlimits, and
    nothing left running afterwards.
    """

    def __init__(
        self,
        root: Path,
        test_command: str | None,
        command_timeout: float,
        output_cap: int,
        read_cap: int,
        protected: list[str] | None = None,
        *,
        sandbox: Sandbox | None = None,
    ) -> None:
        self.root = Path(os.path.realpath(root))
        if sandbox is None:
            from configs import get_settings

            sandbox = Sandbox.from_settings(get_settings())
        self.sandbox = sandbox
        self.test_command = test_command
        self.command_timeout = command_timeout
        self.output_cap = output_cap
        self.read_cap = read_cap
        self.protected = list(protected or [])
        self._handlers: dict[str, Callable[..., ToolResult]] = {
            "list_dir": self.list_dir,
            "read_file": self.read_file,
            "edit_file": self.edit_file,
            "write_file": self.write_file,
            "search": self.search,
            "run": self.run,
            "python": self.python,
            "run_tests": self.run_tests,
            "finish": self.finish,
        }

    def snapshot(self, path: str) -> bytes | None:
        """The bytes of workspace file `path` now, None where there is none, so an edit can be undone.
        Raises WorkspaceError for a path the tools would refuse anyway."""
        target = resolve_inside(self.root, path)
        return target.read_bytes() if target.is_file() else None

    def relative(self, path: str) -> str:
        """`path` as the tests name its file: relative to the workspace, normalised (`./a/../b.py` is
        `b.py`). Raises WorkspaceError for a path the tools would refuse."""
        return self._display(resolve_inside(self.root, path))

    def restore(self, path: str, data: bytes | None) -> None:
        """Put `path` back as `snapshot` saw it (removed where it did not exist)."""
        target = resolve_inside(self.root, path)
        if data is None:
            target.unlink(missing_ok=True)
        else:
            target.write_bytes(data)

    def call(self, name: str, args: dict[str, Any]) -> ToolResult:
        """Run tool `name` with `args`; the agent's mistakes come back as ok=False, never as exceptions.
        The workspace may be made after the toolbox, but must be there by the first call."""
        if not self.root.is_dir():
            return ToolResult(
                ok=False, output=f"workspace {self.root} is not a directory", error_kind="os_error"
            )
        handler = self._handlers.get(name)
        if handler is None:
            return ToolResult(
                ok=False,
                output=f"unknown tool '{name}'; available tools: {', '.join(self._handlers)}",
                error_kind="unknown_tool",
            )
        problem = _check_args(name, args)
        if problem is not None:
            return ToolResult(ok=False, output=f"bad arguments for {name}: {problem}", error_kind="bad_args")
        return self._guarded(name, lambda: handler(**{k: v for k, v in args.items() if v is not None}))

    def edit_occurrence(self, path: str, search: str, replace: str, index: int) -> ToolResult:
        """`edit_file` at the `index`-th (from 0) of the places where `search` occurs more than once: not
        a tool of the model's, the runner's way to try each place of an ambiguous edit."""
        return self._guarded("edit_file", lambda: self.edit_file(path, search, replace, occurrence=index))

    def _guarded(self, name: str, run: Callable[[], ToolResult]) -> ToolResult:
        try:
            return run()
        except ProtectedPathError as exc:
            return ToolResult(ok=False, output=f"refused: {exc}", error_kind="protected")
        except WorkspaceEscapeError as exc:
            return ToolResult(ok=False, output=f"refused: {exc}", error_kind="escape")
        except WorkspaceError as exc:
            return ToolResult(ok=False, output=str(exc), error_kind="bad_args")
        except (IsADirectoryError, NotADirectoryError, FileExistsError) as exc:
            return ToolResult(ok=False, output=f"{name} failed: {_os_message(exc)}", error_kind="bad_args")
        except (UnicodeError, ValueError) as exc:  # e.g. a lone surrogate or a NUL byte in the input
            return ToolResult(ok=False, output=f"{name} failed: {exc}", error_kind="bad_args")
        except OSError as exc:
            return ToolResult(ok=False, output=f"{name} failed: {_os_message(exc)}", error_kind="os_error")

    def _display(self, path: Path) -> str:
        relative = path.relative_to(self.root).as_posix()
        return relative if relative != "." else "."

    def list_dir(self, path: str = ".") -> ToolResult:
        target = resolve_inside(self.root, path or ".")
        if not target.exists():
            return _not_found(path)
        if not target.is_dir():
            return ToolResult(ok=False, output=f"'{path}' is a file, not a directory", error_kind="bad_args")
        lines = []
        for entry in sorted(target.iterdir(), key=lambda p: p.name):
            if entry.name == ".git":
                continue
            lines.append(entry.name + ("/" if entry.is_dir() else ""))
        text = "\n".join(lines) if lines else "(empty directory)"
        return ToolResult(ok=True, output=cap_output(text.encode(), self.output_cap))

    def read_file(self, path: str, start_line: int | None = None, end_line: int | None = None) -> ToolResult:
        """The file with line numbers, so an edit can name what it changes. A file larger than read_cap
        shows as many lines as fit and says how to see the rest."""
        target = resolve_inside(self.root, path)
        if not target.exists():
            return _not_found(path)
        if target.is_dir():
            return ToolResult(
                ok=False, output=f"'{path}' is a directory; use list_dir to see it", error_kind="bad_args"
            )
        if not target.is_file():  # a FIFO or device would block or never end
            return ToolResult(ok=False, output=f"'{path}' is not a regular file", error_kind="bad_args")
        size = target.stat().st_size
        with target.open("rb") as f:
            data = f.read(_READ_FILE_CAP)
        if b"\x00" in data[:8192]:
            return ToolResult(ok=True, output=f"'{path}' is a binary file ({size} bytes); not shown")
        lines = data.decode("utf-8", "replace").splitlines()
        if not lines:
            return ToolResult(ok=True, output=f"('{path}' is empty)")
        total = len(lines) if size <= _READ_FILE_CAP else None
        first = max(1, start_line or 1)
        last = min(len(lines), end_line or len(lines))
        if first > len(lines) or last < first:
            return ToolResult(
                ok=False,
                output=f"'{path}' has {len(lines)} lines; lines {first}-{end_line or first} do not exist",
                error_kind="bad_args",
            )
        shown, used = [], 0
        for number in range(first, last + 1):
            text = lines[number - 1]
            if len(text) > _LINE_CAP:
                text = text[:_LINE_CAP] + " [...]"
            entry = f"{number:>4}| {text}"
            used += len(entry) + 1
            if used > self.read_cap and shown:
                break
            shown.append(entry)
            last_shown = number
        out = "\n".join(shown)
        if last_shown < (total or len(lines)) and (last_shown < last or end_line is None):
            out += (
                f"\n[lines {last_shown + 1}-{total or 'end'} not shown; "
                f"read_file with start_line={last_shown + 1} to see more]"
            )
        return ToolResult(ok=True, output=out)

    def write_file(self, path: str, content: str) -> ToolResult:
        target = resolve_inside(self.root, path)
        self._refuse_protected(target)
        if target == self.root or target.is_dir():
            return ToolResult(ok=False, output=f"'{path}' is a directory, not a file", error_kind="bad_args")
        if target.exists() and not target.is_file():
            return ToolResult(ok=False, output=f"'{path}' is not a regular file", error_kind="bad_args")
        problem = _python_syntax_error(target, content)
        repair = ""
        if problem is not None:
            old = target.read_text("utf-8", "replace") if target.is_file() else ""
            # A method copied out of its class keeps the class's indentation: read it as written there.
            # A docstring's triple quotes are what a small model most often mangles inside a JSON string.
            dedented = textwrap.dedent(content)
            bracketed = repair_line_end_brackets(dedented)
            for candidate, how in [
                (dedented, ""),
                (repair_docstrings(content, old), DOCSTRING_NOTE),
                (repair_docstrings(dedented, old), DOCSTRING_NOTE),
                (bracketed[0] if bracketed else None, _brackets_note(bracketed)),
            ]:
                if candidate and candidate != content and _python_syntax_error(target, candidate) is None:
                    content, problem, repair = candidate, None, how
                    break
        if problem is not None:
            if (fragment := self._write_fragment(target, path, content)) is not None:
                return fragment
            return ToolResult(
                ok=False, output=f"not written: {problem}; the file is unchanged", error_kind="syntax_error"
            )
        lost = _lost_definitions(target, content)
        note = ""
        # Definitions and imports alone, for an existing module, are merged into it: the module's other
        # imports, constants and docstring stay (a model rewriting its functions leaves them out).
        if lost or (target.suffix == ".py" and target.is_file() and snippet_only(content)):
            merged = merge_definitions(target.read_text("utf-8", "replace"), content)
            if merged is None and not lost:
                return ToolResult(
                    ok=False,
                    output=f"not written: {self._display(target)} does not parse as Python, so these "
                    "imports cannot be added to it; fix the file with edit_file first",
                    error_kind="syntax_error",
                )
            if merged is None and (fragment := self._write_fragment(target, path, content)) is not None:
                return fragment
            if merged is None:
                return ToolResult(
                    ok=False,
                    output=f"not written: the new content would delete {', '.join(lost)} from "
                    f"{self._display(target)}. Give the whole file, or only the functions, classes or "
                    "constants to replace or add.",
                    error_kind="bad_args",
                )
            content, replaced, added = merged
            if content == target.read_text("utf-8", "replace"):
                return ToolResult(ok=True, output=f"no change: {path} already holds exactly this")
            note = merge_note(replaced, added)
        data = content.encode("utf-8")
        existing = target.read_bytes() if target.is_file() else None
        if existing == data:
            return ToolResult(ok=True, output=f"no change: {path} already holds exactly this")
        old_text = existing.decode("utf-8", "replace") if existing is not None else ""
        if (refused := self._bad_change(target, old_text, content)) is not None:
            return refused
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as f:
            f.write(data)
        return ToolResult(
            ok=True,
            output=f"wrote {len(data)} bytes to {self._display(target)}{note}{repair}",
            changed_files=True,
        )

    def _write_fragment(self, target: Path, path: str, content: str) -> ToolResult | None:
        """write_file's content read as statements from inside a function (merge_statements): written
        over the run of statements most like it, in an existing Python file; None where it is not that."""
        if target.suffix != ".py" or not target.is_file():
            return None
        old = target.read_text("utf-8", "replace")
        merged = merge_statements(old, content)
        if merged is None:
            return None
        text, owner, (first, last) = merged
        if text == old:
            return ToolResult(ok=True, output=f"no change: {path} already holds exactly this")
        if (refused := self._bad_change(target, old, text)) is not None:
            return refused
        target.write_bytes(text.encode("utf-8"))
        shown, window = _numbered_window(text, first, first + content.strip("\n").count("\n") + 1)
        return ToolResult(
            ok=True,
            output=f"wrote {self._display(target)}: these lines are statements, not a whole file, so they "
            f"replaced lines {first}-{last} of {owner}, the statements most like them (the rest of the "
            f"file is unchanged); lines {shown}:\n{window}",
            changed_files=True,
        )

    def edit_file(self, path: str, search: str, replace: str, *, occurrence: int | None = None) -> ToolResult:
        """Exact search/replace. When `search` is not in the file, the answer shows the closest lines so
        the model can copy them; text that differs only in indentation is matched and re-indented. A
        `search` that occurs more than once is refused unless `occurrence` says which (edit_occurrence)."""
        target = resolve_inside(self.root, path)
        self._refuse_protected(target)
        if not target.exists() and not target.is_symlink():
            # Editing a file that does not exist yet means writing it: what a model means by it.
            created = self.write_file(path, replace.strip("\n") + "\n")
            if created.ok:
                created.output = f"{path} did not exist: created it with `replace` as its content"
            return created
        if not target.is_file():
            return ToolResult(ok=False, output=f"'{path}' is not a regular file", error_kind="bad_args")
        text = target.read_bytes().decode("utf-8", "replace")
        note = ""
        if search == replace:
            return ToolResult(
                ok=False,
                output="edit not applied: 'search' and 'replace' are the same text, so nothing would "
                "change; 'replace' must hold the corrected lines",
                error_kind="bad_args",
            )
        search = _with_line_indent(text, search, replace)
        if not search.strip():  # append after the last non-blank character
            new_text, at, replace = _appended(text, replace)
        elif (count := text.count(search)) > 1 and occurrence is None:
            return ToolResult(
                ok=False,
                output=f"'search' occurs {count} times in {path}; include a neighbouring line (such as "
                f"the def line) so it matches once:\n{_occurrences(text, search)}",
                error_kind="bad_args",
                occurrences=count,
            )
        elif count > 1:
            at = -1
            for _ in range((occurrence or 0) + 1):
                at = text.find(search, at + 1)
            if at < 0:
                return ToolResult(ok=False, output=f"'search' occurs {count} times", error_kind="bad_args")
            new_text = text[:at] + replace + text[at + len(search) :]
            line = text.count("\n", 0, at) + 1
            note = f" (at line {line}, one of the {count} places where 'search' occurs)"
        elif count == 1 and (whole := _whole_definition(text, search, replace, target)) is not None:
            # `search` is a def line alone and `replace` that whole function: replacing the line alone
            # would leave the old body under the new one (seen in the eval: two bodies, two returns).
            new_text, replaced, added = whole
            at, note = (
                merged_at(new_text, replaced + added),
                f" (as a whole definition){merge_note(replaced, added)}",
            )
        elif count == 1:
            new_text, at = text.replace(search, replace, 1), text.index(search)
        elif (
            replace.strip().startswith(search.strip())
            and len(replace.strip()) > len(search.strip())
            and _DEFINITION_LINE.match(search.strip())
        ):
            # "Replace the missing `def power(a, b)` with `def power(a, b): ...`": the model is adding
            # new code, so it goes at the end, and the answer says so. Only for a definition's head: a
            # statement that `replace` extends (`return '/x/' + t` -> `... + t.lower()`) is an edit of
            # that statement, matched below (the eval appended such a `return` after the function).
            new_text, at, replace = _appended(text, replace)
            note = " ('search' is not in the file but starts 'replace': appended at the end)"
        else:
            found = _match_ignoring_indent(text, search, replace)
            if found is None and (found := _match_other_quotes(text, search, replace)):
                note = " (matched with the file's quotes)"
            merged = merge_definitions(text, replace) if found is None and target.suffix == ".py" else None
            if merged is not None and set(merged[2]) & set(constant_names(replace)):
                # A line meant for inside a function (`total = sum(...)`, search not found) would become a
                # new module-level name (seen in the eval: `count = len(self.lines)` added at the top
                # level, a NameError on import): not what the model means, so the search is not found.
                merged = None
            if merged is not None:
                # `replace` is a whole function or class: what the model means is that definition.
                found = (merged[0], merged_at(merged[0], merged[1] + merged[2]))
                note = f" ('search' was not found){merge_note(merged[1], merged[2])}"
            if found is None:
                return ToolResult(
                    ok=False,
                    output=f"'search' not found in {path}. Closest lines:\n{_closest_lines(text, search)}\n"
                    "Copy the lines exactly (read_file shows them numbered; leave the numbers out).",
                    error_kind="not_found",
                )
            new_text, at = found
            note = note or " (matched ignoring indentation)"
        if new_text == text:
            return ToolResult(ok=True, output=f"no change: {path} already holds exactly this")
        problem = _python_syntax_error(target, new_text)
        repaired = repair_docstrings(new_text, text) if problem else None
        if repaired and _python_syntax_error(target, repaired) is None:
            new_text, problem, note = repaired, None, note + DOCSTRING_NOTE
        bracketed = repair_line_end_brackets(new_text) if problem else None
        if bracketed:
            new_text, problem, note = bracketed[0], None, note + _brackets_note(bracketed)
        shifted = _indented_like_search(text, search, replace) if problem else None
        if shifted is not None and _python_syntax_error(target, shifted) is None:
            # `def pay(self, amount):` found in a class, and lines to go under it written as if the def
            # were at column 0: what the model means is those lines at the method's indentation (seen in
            # the eval: the merge below took them for the whole method and dropped its body).
            new_text, problem, note = shifted, None, note + " (its lines indented as the search's line)"
        merged = merge_definitions(text, replace) if problem and target.suffix == ".py" else None
        if merged is not None and merged[0] == text:
            # `search` named a function whose whole definition `replace` is, and it already reads so.
            return ToolResult(
                ok=True,
                output=f"no change: {path} already holds exactly this {', '.join(merged[1]) or 'code'}",
            )
        if merged is not None:
            # `search` named a function (e.g. just its name) and `replace` is that whole function: the
            # literal replacement breaks the file, the definition merge is what was meant.
            new_text, problem = merged[0], None
            at = merged_at(new_text, merged[1] + merged[2])
            note = f" (as a whole definition){merge_note(merged[1], merged[2])}"
        if problem is not None:
            return ToolResult(
                ok=False,
                output=f"edit not applied: {problem}; the file is unchanged",
                error_kind="syntax_error",
            )
        if (refused := self._bad_change(target, text, new_text)) is not None:
            return refused
        target.write_bytes(new_text.encode("utf-8"))
        first = text.count("\n", 0, at) + 1
        shown, window = _numbered_window(new_text, first, first + replace.count("\n") + 2)
        return ToolResult(
            ok=True,
            output=f"edited {self._display(target)}{note}; lines {shown}:\n{window}",
            changed_files=True,
        )

    def _bad_change(self, target: Path, old: str, new: str) -> ToolResult | None:
        """The refusal of a Python change that imports the module into itself or defines a name twice."""
        return self._imports_itself(target, old, new) or self._defines_twice(target, old, new)

    def _defines_twice(self, target: Path, old: str, new: str) -> ToolResult | None:
        """The refusal of a change after which a function or class (or a method of one class) is defined
        twice where it was once: the second silently replaces the first (flake8's F811). Seen in the eval:
        an edit_file whose search was not found appended `def format_duration(seconds):` with a broken
        body after the real one, and every call got None from then on."""
        if target.suffix != ".py":
            return None
        twice = redefined_names(old, new)
        if not twice:
            return None
        return ToolResult(
            ok=False,
            output=f"not written: {self._display(target)} would define {', '.join(twice)} a second time, "
            "and the second definition would replace the first. To change a function, write_file it whole "
            "(it replaces the old one) or edit_file the lines to change; the file is unchanged",
            error_kind="bad_args",
        )

    def _imports_itself(self, target: Path, old: str, new: str) -> ToolResult | None:
        """The refusal of a change that makes a Python module import itself (see `_self_import`)."""
        if target.suffix != ".py":
            return None
        relative = target.relative_to(self.root).with_suffix("")
        parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
        line = _self_import(".".join(parts), old, new)
        if line is None:
            return None
        return ToolResult(
            ok=False,
            output=f"not written: {self._display(target)} would import from itself ({line}); a module "
            "has its own names without importing them. Put the import at the top of the file that uses "
            "the name (the file the NameError's traceback points to); the file is unchanged",
            error_kind="bad_args",
        )

    def _refuse_protected(self, target: Path) -> None:
        relative = target.relative_to(self.root).as_posix() if target != self.root else "."
        glob = protected_match(relative, self.protected)
        if glob is not None:
            raise ProtectedPathError(f"'{relative}' is protected by the task ({glob}); change other files")

    def _protected_files(self) -> dict[str, bytes]:
        if not self.protected:
            return {}
        files = {}
        for file in _files_under(self.root):
            relative = file.relative_to(self.root).as_posix()
            if protected_match(relative, self.protected) is not None:
                with contextlib.suppress(OSError):
                    files[relative] = file.read_bytes()
        return files

    def _restore_protected(self, before: dict[str, bytes], result: ToolResult) -> ToolResult:
        """A command may not change protected files either: whatever it changed is put back."""
        if not self.protected:
            return result
        after = self._protected_files()
        changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
        if not changed:
            return result
        for relative in changed:
            target = self.root / relative
            if relative in before:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(before[relative])
            else:
                target.unlink(missing_ok=True)
        result.output += (
            f"\n[refused: the command changed protected file(s) {', '.join(changed)}; they were restored]"
        )
        result.ok, result.error_kind = False, "protected"
        return result

    def search(self, pattern: str, path: str = ".") -> ToolResult:
        target = resolve_inside(self.root, path or ".")
        if not target.exists():
            return _not_found(path)
        note = ""
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            regex = re.compile(re.escape(pattern))
            note = f"(not a valid regular expression: {exc}; searched for the literal text)\n"
        result = self._search(target, regex, note, pattern, path)
        if result.output.startswith(note + "no matches") and re.escape(pattern) != pattern and not note:
            # `self.total += x` as a regular expression matches `self.total = x`, not itself: a model
            # searching for code it read means the text.
            literal = self._search(
                target,
                re.compile(re.escape(pattern)),
                "(no match as a regular expression; as text:)\n",
                pattern,
                path,
            )
            if not literal.output.startswith("(no match as a regular expression; as text:)\nno matches"):
                return literal
        return result

    def _search(self, target: Path, regex: re.Pattern[str], note: str, pattern: str, path: str) -> ToolResult:
        matches: list[str] = []
        size = len(note)
        truncated = False
        for file in _files_under(target):
            for number, line in _text_lines(file):
                if not regex.search(line):
                    continue
                shown = line if len(line) <= _LINE_CAP else line[:_LINE_CAP] + " [...]"
                entry = f"{self._display(file)}:{number}:{shown}"
                size += len(entry) + 1
                if size > self.output_cap:
                    truncated = True
                    break
                matches.append(entry)
            if truncated:
                break
        if not matches:
            return ToolResult(ok=True, output=f"{note}no matches for '{pattern}' in {path}")
        text = note + "\n".join(matches)
        if truncated:
            text += "\n[more matches not shown; search a narrower path or pattern]"
        return ToolResult(ok=True, output=text)

    def run(self, command: str) -> ToolResult:
        """Run a shell command in the workspace. Confined by cwd, environment and timeout only (see the
        class docstring); leftover background processes are killed when the command returns."""
        if not command.strip():
            return ToolResult(
                ok=False, output="bad arguments for run: 'command' is empty", error_kind="bad_args"
            )
        before = self._protected_files()
        return self._restore_protected(before, self._shell(command))

    def python(self, code: str) -> ToolResult:
        """Run Python code in the workspace, in the sandbox `run` uses: the model's way to try its change
        on inputs the tests do not use (the review turn asks for it). The public names of the modules
        the change touched are imported first (seen in the eval: `assert transpose([]) == []` with no
        import, a NameError instead of a check); the code keeps its own line numbers."""
        if not code.strip():
            return ToolResult(
                ok=False, output="bad arguments for python: 'code' is empty", error_kind="bad_args"
            )
        if is_command_line(code):
            # `python -m pytest -q` sent as Python code (seen in the eval: four turns running, each a
            # SyntaxError and a slightly different command): what it asks for is clear, so it is run.
            result = self.run(code)
            result.output = (
                "(this is a shell command, not Python code: it was run as `run` runs commands)\n"
                + result.output
            )
            return result
        prelude = "".join(
            f"try:\n    from {m} import *\nexcept Exception as _e:\n    print('could not import {m}:', _e)\n"
            for m in self._changed_modules()
        )
        # A check's usual helpers, used without their import (seen in the eval: `pytest.approx` in
        # a NameError, the review's one check spent on it), are imported too.
        prelude += "".join(
            f"try:\n    import {m}\nexcept ImportError:\n    pass\n"
            for m in CHECK_MODULES
            if re.search(rf"\b{m}\.", code) and not re.search(rf"^\s*(import|from)\s+{m}\b", code, re.M)
        )
        code, cut = _without_cut_line(_rejoined_strings(code))
        program = prelude + _PYTHON_RUNNER.replace("EXIT", str(ASSERT_FAILED)).replace("CODE", repr(code))
        before = self._protected_files()
        result = self._restore_protected(before, self._shell(f"python -c {shlex.quote(program)}"))
        if result.ok and result.output == "(no output)":
            held = ", every assert held" if is_check(code) else ""
            result.output = f"(no output: the code ran without an error{held})"
        elif result.exit_code == ASSERT_FAILED:
            result.output += (
                "\nEither the code or the value an assert expects is wrong: check both against the task."
            )
        elif result.exit_code and (raised := self._raised_in(result.output)):
            where, on_purpose = raised
            if on_purpose:
                # Not a crash: the code refused the input with a raise of its own. Seen in the eval: a
                # right overdraft fix checked with `Wallet(5).pay(8) == '...'` raised InsufficientFunds;
                # told "the code fails for this input", the model took the raise out.
                result.output += f"\nThe code raised this on purpose, with a raise statement in {where}. " + (
                    "If the task says this input must raise it, the code is right and the check is wrong "
                    "(expect the error with try/except); if not, fix the code."
                )
            else:
                result.check_failed = True
                result.output += f"\nThe error was raised in {where}, not in the check's own code: " + (
                    "the code fails for this input."
                )
        elif result.exit_code and (own := _check_line_raising(result.output, code)):
            # Seen in the eval: `Cart().add('apple', 2, quantity=3).total()` (add returns None) gave a bare
            # AttributeError; the model took it for a fault of the right code it had just checked, and
            # rewrote that code until the tests broke. Where it was raised is a fact; which side is wrong
            # is not (a task may ask `add` to return the cart), so the note says no more.
            number, line = own
            result.output += (
                f"\nThe error was raised by line {number} of the check itself (`{line}`), not inside the "
                "code under check."
            )
        if redefined := self._redefined_in_files(code):
            names, files = ", ".join(redefined), ", ".join(sorted(set(redefined.values())))
            result.output += (
                f"\nDefining {names} here only ran it in a scratch interpreter: {files} did not change. "
                "To change a file, call edit_file or write_file."
            )
        if cut:
            result.output = (
                f"(the last line was cut off at {PYTHON_CODE_CHARS} characters and left out)\n"
                + (result.output)
            )
        return result

    def probe(self) -> str:
        """What the changed code gives for the visible tests' calls and variations of them, one
        `call -> result` per line (elpis_worker.probe), run in the sandbox `python` uses; empty when the
        change defines no function the tests call, or the run failed."""
        try:
            program = probe_program(self.root, workspace_diff(self.root))
        except (WorkspaceError, OSError, subprocess.SubprocessError):
            return ""
        if program is None:
            return ""
        before = self._protected_files()
        result = self._restore_protected(before, self._shell(f"python -c {shlex.quote(program)}"))
        return result.output if result.ok and result.output != "(no output)" else ""

    def _raised_in(self, output: str) -> tuple[str, bool] | None:
        """`path (in function)` of a traceback's last frame where that is a workspace file: the error came
        from the code under check, not the check (the eval: transpose([]) raised IndexError in
        linalg/matrix.py and the model, told "if the check's own code is wrong, call finish", finished);
        with whether that frame's line is a `raise` statement, the code refusing its input on purpose
        rather than failing on it."""
        frames = _TRACEBACK_FRAME.findall(output)
        if not frames:
            return None
        path, _, function, source = frames[-1]
        try:
            relative = Path(path).resolve().relative_to(self.root.resolve()).as_posix()
        except (ValueError, OSError):
            return None
        return f"{relative} (in {function})", bool(_RAISE.search(source.strip()))

    def _redefined_in_files(self, code: str) -> dict[str, str]:
        """The functions and classes `code` defines that a source file of the workspace defines too
        (tests left out), each with that file. Seen in the eval: format_price rewritten in `python`
        three turns running, its "ran without an error" taken for a change to shop/receipt.py."""
        wanted = [name for name in definition_names(code) if "." not in name]
        if not wanted:
            return {}
        defined = top_level_definitions(self.root)
        return {name: defined[name][0][0] for name in wanted if name in defined}

    def _changed_modules(self) -> list[str]:
        """The importable modules among the files changed so far, tests left out: `calc/ops.py` is
        `calc.ops`, a package's `__init__.py` the package."""
        try:
            diff = workspace_diff(self.root)
        except (WorkspaceError, OSError, subprocess.SubprocessError):
            return []  # a directory that is not a prepared workspace (the tools' own tests)
        modules = []
        for path in _DIFF_FILE.findall(diff):
            file = PurePosixPath(path)
            if (
                file.suffix != ".py"
                or file.name == "conftest.py"
                or any(p.startswith("test") for p in file.parts)
            ):
                continue
            parts = list(file.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            if parts and all(p.isidentifier() for p in parts):
                modules.append(".".join(parts))
        return modules

    def run_tests(self) -> ToolResult:
        if not self.test_command:
            return ToolResult(ok=False, output="no test command for this task", error_kind="not_found")
        before = self._protected_files()
        report = self.root / JUNIT_REPORT if (self.root / ".git").is_dir() else None
        if report is not None:
            report.unlink(missing_ok=True)  # a report left by an earlier run must not count for this one
        result = self._restore_protected(before, self._shell(self.test_command, junit=report))
        result.tests_run = True
        result.tests_passed = result.ok
        if result.ok:
            result.failures = 0
        elif result.error_kind != "timeout":
            # pytest's own count where it wrote a report; the summary line of any runner otherwise.
            counted = junit_failures(report) if report is not None else None
            result.failures = counted if counted is not None else parse_test_failures(result.output)
        return result

    def finish(self, summary: str) -> ToolResult:
        return ToolResult(ok=True, output="finished", finished=True, summary=summary)

    def _shell(self, command: str, *, junit: Path | None = None) -> ToolResult:
        buffer = _HeadTail(self.output_cap)
        env = _command_env(self.root, sandboxed=self.sandbox.kind != "none", junit=junit)
        try:
            sandboxed = self.sandbox.spawn(self.root, command, env)
        except SandboxError as exc:
            return ToolResult(ok=False, output=f"could not start the command: {exc}", error_kind="os_error")
        proc = sandboxed.proc
        assert proc.stdout is not None
        # Read in a thread so a command printing more than a pipe holds never blocks on us.
        reader = threading.Thread(target=_drain, args=(proc.stdout, buffer), daemon=True)
        reader.start()
        timed_out = False
        try:
            proc.wait(timeout=self.command_timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            _kill_group(sandboxed)
            proc.wait()
        reader.join(timeout=5)
        if not reader.is_alive():
            proc.stdout.close()
        output = buffer.text().rstrip("\n")
        if timed_out:
            marker = f"[killed after {self.command_timeout:.1f} s timeout]"
            return ToolResult(
                ok=False,
                output=f"{output}\n{marker}" if output else marker,
                error_kind="timeout",
                changed_files=True,
            )
        code = proc.returncode
        if code != 0:
            marker = f"[exit code {code}]"
            return ToolResult(
                ok=False,
                output=f"{output}\n{marker}" if output else marker,
                exit_code=code,
                error_kind="nonzero_exit",
                changed_files=True,
            )
        return ToolResult(ok=True, output=output or "(no output)", exit_code=0, changed_files=True)


_ASSERT_LINE_RE = re.compile(r"^\s*assert\b", re.MULTILINE)


def is_check(code: str) -> bool:
    """Whether `python` code asserts something: only then is it a check of a change. Code that defines
    or prints without an assert proves nothing (seen in the eval: capitalize_words's review turn only
    redefined the function, and finish opened after it). Code that does not parse is read line by line."""
    try:
        tree = ast.parse(_rejoined_strings(code))
    except (SyntaxError, ValueError):
        return bool(_ASSERT_LINE_RE.search(code))
    return any(isinstance(node, ast.Assert) for node in ast.walk(tree))


# Programs whose command line a model sends to the python tool as if it were Python.
_COMMANDS = frozenset({"python", "python3", "pytest", "pip", "pip3"})


def is_command_line(code: str) -> bool:
    """Whether `code` is a shell command line (`python -m pytest -q`, `pytest tests; pytest -s`) rather than
    Python: its first word is a program a model runs its tests with, and an option follows it or the line
    does not compile (`pytest -q` compiles, as a subtraction)."""
    words = code.strip().split(maxsplit=2)
    if not words or words[0] not in _COMMANDS:
        return False
    if len(words) > 1 and words[1].startswith("-") and words[1][1:2].isalpha():
        return True
    try:
        compile(code, "<code>", "exec")
    except (SyntaxError, ValueError):
        return True
    return False


def _rejoined_strings(code: str) -> str:
    """`code` with each string literal that a newline split in two joined again by a `\\n` escape: the
    model means `'a\\nb'` and writes `\\n` in its JSON, which decodes to a real newline (seen in the
    eval: `assert count_words('the  quick\\nbrown') == 2`, an unterminated string). Unchanged when it
    compiles, or when joining does not make it compile."""
    lines = code.split("\n")
    for _ in range(len(lines)):
        try:
            compile("\n".join(lines), "<code>", "exec")
            return "\n".join(lines)
        except SyntaxError as exc:
            at = (exc.lineno or 0) - 1
            if "unterminated string literal" not in (exc.msg or "") or not 0 <= at < len(lines) - 1:
                return code
            lines[at : at + 2] = [lines[at] + "\\n" + lines[at + 1]]
        except ValueError:
            return code
    return code


def _without_cut_line(code: str) -> tuple[str, bool]:
    """`code` without its last line when it reached the grammar's length cap and only that line keeps it
    from compiling: the cap cut it. Returns the code and whether a line was left out."""
    if len(code) < PYTHON_CODE_CHARS:
        return code, False
    try:
        compile(code, "<code>", "exec")
        return code, False
    except (SyntaxError, ValueError):
        head = code.rstrip("\n").rpartition("\n")[0]
    try:
        compile(head, "<code>", "exec")
    except (SyntaxError, ValueError):
        return code, False
    return (head, True) if head.strip() else (code, False)


def _check_args(name: str, args: Any) -> str | None:
    """Why `args` does not fit the tool's pydantic model, or None when it does."""
    model = TOOL_ARGS[name]
    names = ", ".join(model.model_fields)
    expected = f"{name} takes {{{names}}}" if names else f"{name} takes no arguments"
    if not isinstance(args, dict):
        return f"arguments must be a JSON object; {expected}"
    try:
        model.model_validate(args)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"]) or "arguments"
            if error["type"] == "extra_forbidden":
                problems.append(f"unknown argument {where}")
            elif error["type"] == "missing":
                problems.append(f"missing {where}")
            else:
                problems.append(f"'{where}' {error['msg'].lower()}")
        return f"{'; '.join(problems)}; {expected}"
    return None


def protected_match(relative: str, globs: list[str]) -> str | None:
    """The first glob of `globs` that covers workspace path `relative` (a directory covers its contents)."""
    for glob in globs:
        stripped = glob.rstrip("/")
        if fnmatch.fnmatchcase(relative, glob) or relative == stripped or relative.startswith(stripped + "/"):
            return glob
    return None


def _whole_definition(
    text: str, search: str, replace: str, target: Path
) -> tuple[str, list[str], list[str]] | None:
    """The merge a def-line-only `search` with a whole-definition `replace` means, or None."""
    line = DEF_LINE.match(search.strip("\n"))
    if target.suffix != ".py" or "\n" in search.strip("\n") or line is None:
        return None
    body = textwrap.dedent(replace).strip("\n")
    if "\n" not in body or not body.startswith(search.strip()):
        return None
    # Lines inserted under the def line are a literal edit; a new body ending in return before the old
    # one (dead code after it) is a whole definition.
    if not dead_code_in(text.replace(search, replace, 1), line.group(1)):
        return None
    merged = merge_definitions(text, replace)
    if merged is None or line.group(1) not in {bare_name(name) for name in merged[1]}:
        return None
    return merged


def _with_line_indent(text: str, search: str, replace: str) -> str:
    """`search` with the indentation of its line put in front, where `search` (found once) starts after
    that indentation and `replace` starts with it: the model wrote `replace` as whole lines, so the
    indentation must not come twice (seen in the eval: `def available(self, item):` replaced by
    `    def available(...)` and its body, which nested the method inside the one above it)."""
    if not search.strip() or search[0].isspace() or text.count(search) != 1:
        return search
    indent = _indent_before(text, text.index(search))
    if indent and replace.startswith(indent) and not replace[len(indent) : len(indent) + 1].isspace():
        return indent + search
    return search


def _indent_before(text: str, at: int) -> str:
    """The whitespace between the start of `at`'s line and `at`; empty where anything else is there."""
    before = text[text.rfind("\n", 0, at) + 1 : at]
    return "" if before.strip() else before


def _indented_like_search(text: str, search: str, replace: str) -> str | None:
    """`text` with `search` (one line, found once, after the indentation of its line) replaced by a
    several-line `replace` whose later lines are moved in by that indentation: the model wrote them
    relative to its own unindented `search`. None where that does not apply."""
    line = search.strip("\n")
    if "\n" in line or "\n" not in replace.strip("\n") or text.count(search) != 1:
        return None
    at = text.index(search)
    indent = _indent_before(text, at)
    if not indent:
        return None
    first, *rest = replace.split("\n")
    moved = [indent + r if r.strip() else r for r in rest]
    docstring_end = _docstring_end(text, text.count("\n", 0, at) + 1)
    if docstring_end is None or first.strip() != line.strip():
        return text.replace(search, "\n".join([first, *moved]), 1)
    # Under a def line with a docstring: the new lines go after the docstring, which stays first.
    lines = text.split("\n")
    kept = [m for m in moved if m.strip()]
    return "\n".join(lines[:docstring_end] + kept + lines[docstring_end:])


def _docstring_end(text: str, def_line: int) -> int | None:
    """The last line of the docstring of the function or class whose def is at line `def_line` of
    `text`; None where it has none (or `text` does not parse)."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return None
    for node in ast.walk(tree):
        if isinstance(node, (*FUNCTIONS, ast.ClassDef)) and node.lineno == def_line and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                return first.end_lineno if isinstance(first.value.value, str) else None
    return None


def _numbered_window(text: str, first: int, last: int) -> tuple[str, str]:
    """Lines `first` - 2 to `last` of `text` (within the file) as numbered lines, and their range."""
    lines = text.splitlines()
    start, end = max(1, first - 2), min(len(lines), last)
    return f"{start}-{end}", "\n".join(f"{n:>4}| {lines[n - 1]}" for n in range(start, end + 1))


def _lost_definitions(target: Path, content: str) -> list[str]:
    """Top-level functions, classes and methods (as Class.method) an existing .py file has and `content`
    would drop: a small model asked to fix one function often rewrites the file (or the class) with
    only that function."""
    if target.suffix != ".py" or not target.is_file():
        return []
    kept = set(definition_names(content))
    lost = [name for name in definition_names(target.read_text("utf-8", "replace")) if name not in kept]
    # A lost class says it all: its methods are not listed again.
    return [name for name in lost if name.split(".")[0] == name or name.split(".")[0] not in lost]


def _self_import(module: str, old: str, new: str) -> str | None:
    """An import statement `new` adds that imports the file's own module (`module`, dotted): seen in the
    eval, told to import `slugify` where it is used, the 1.5B model wrote `from blog.utils import
    slugify` into blog/utils.py, the file that defines it. The statement as written, or None."""
    try:
        tree = ast.parse(new)
    except (SyntaxError, ValueError):
        return None
    package = module.rsplit(".", 1)[0] if "." in module else ""
    existing = {line.strip() for line in old.splitlines()}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".") if package else []
            if node.level:
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            hits = target == module
        elif isinstance(node, ast.Import):
            hits = any(alias.name == module for alias in node.names)
        else:
            continue
        line = ast.get_source_segment(new, node) or ""
        if hits and line.strip() not in existing:
            return line
    return None


def _brackets_note(repair: tuple[str, list[str]] | None) -> str:
    return f" (the brackets at a line's end did not balance: {'; '.join(repair[1])})" if repair else ""


def _python_syntax_error(target: Path, content: str) -> str | None:
    """The lint check after an edit: new content of a .py file must still parse."""
    if target.suffix != ".py":
        return None
    try:
        compile(content, target.name, "exec", dont_inherit=True)
    except SyntaxError as exc:
        # The offending line as written, so the model sees what to change (a `...` it elided, a quote).
        line = (exc.text or "").rstrip("\n")
        shown = f"; that line is: {line.strip()[:160]}" if line.strip() else ""
        return f"the result would not be valid Python (line {exc.lineno}: {exc.msg}{shown})"
    except ValueError as exc:  # NUL bytes
        return f"the result would not be valid Python ({exc})"
    return None


# Modules a `python` check may use without importing them.
CHECK_MODULES = ("pytest", "math", "re", "json")
# Exit status of the python tool's code when an assert failed (a traceback of its own is 1).
ASSERT_FAILED = 3
# How the python tool runs the model's code (CODE: its repr; EXIT: ASSERT_FAILED): a failed one-line
# `assert x == y` shows the line and both sides' values, as pytest does; seen in the eval: a bare
# "AssertionError" for `assert capitalize_words('aBcDeF') == 'AbcDeF'` told the model nothing about
# which side was wrong. Every top-level assert runs, not only up to the first that fails: a check whose
# second line expected a wrong value never reached its third, `capitalize_words('  hello   world ')`,
# which would have shown the bug, and the model finished on the wrong value alone. Likewise a check of
# one-line statements with one broken line (an unclosed quote) runs its other lines.
_PYTHON_RUNNER = """
import ast as _ast, sys as _sys, traceback as _tb
_code = CODE
_lines = _code.splitlines()
def _report(_error, _number):
    _text = _lines[_number - 1].strip() if 0 < _number <= len(_lines) else ""
    _said = f"AssertionError: {_error}" if str(_error) else "AssertionError"
    print(f"line {_number}: {_text}" if _text else "", flush=True)
    try:
        _test = _ast.parse(_text).body[0].test
        assert isinstance(_test, _ast.Compare) and len(_test.comparators) == 1
        _left = eval(compile(_ast.Expression(_test.left), "<code>", "eval"))
        _right = eval(compile(_ast.Expression(_test.comparators[0]), "<code>", "eval"))
        _where = _difference(_left, _right)
        print(f"{_said}: the left side is {_left!r}, the right side {_right!r}{_where}", flush=True)
    except Exception:
        print(_said, flush=True)
def _difference(_left, _right):
    # Where two lists (or two strings too long to compare at a glance) part: week_of's check showed two
    # lists of seven dates, every one off by a day, and the model cut the list to six.
    if type(_left) is not type(_right) or not isinstance(_left, (list, tuple, str)) or len(_left) < 2:
        return ""
    if isinstance(_left, str) and max(len(_left), len(_right)) <= 12:
        return ""
    _unit = "characters" if isinstance(_left, str) else "items"
    _sizes = ""
    if len(_left) != len(_right):
        _sizes = f"; the left has {len(_left)} {_unit}, the right {len(_right)}"
    for _i, (_a, _b) in enumerate(zip(_left, _right)):
        if _a != _b:
            return f"{_sizes}; they first differ at index {_i}: {_a!r} on the left, {_b!r} on the right"
    return _sizes
_skipped = 0
try:
    _statements = _ast.parse(_code, "<code>").body
except SyntaxError:
    _statements = None
    if all(not _line[:1].isspace() for _line in _lines):
        # One statement a line (a check's asserts): a line that does not parse is skipped and said so,
        # and the others still run.
        _statements = []
        for _number, _line in enumerate(_lines, 1):
            try:
                _tree = _ast.parse(_line, "<code>")
            except SyntaxError as _error:
                _skipped += 1
                print(f"line {_number}: {_line.strip()}", flush=True)
                _msg = _error.msg.split(" (detected at line")[0]
                print(f"SyntaxError: {_msg}; this line was skipped", flush=True)
                continue
            _ast.increment_lineno(_tree, _number - 1)
            _statements.extend(_tree.body)
_failed = _asserts = 0
try:
    if _statements is None:
        exec(compile(_code, "<code>", "exec"))
    for _node in _statements or []:
        _asserts += isinstance(_node, _ast.Assert)
        try:
            exec(compile(_ast.Module(body=[_node], type_ignores=[]), "<code>", "exec"))
        except AssertionError as _error:
            if not isinstance(_node, _ast.Assert):
                raise
            _failed += 1
            _report(_error, _node.lineno)
except AssertionError as _error:
    _frames = [f for f in _tb.extract_tb(_error.__traceback__) if f.filename == "<code>"]
    _report(_error, _frames[-1].lineno if _frames else 0)
    _sys.exit(EXIT)
if _failed:
    if _asserts > 1:
        _rest = "; the others held." if _failed < _asserts else "."
        print(f"{_failed} of {_asserts} asserts failed{_rest}")
    _sys.exit(EXIT)
if _skipped:
    _sys.exit(1)
"""
_DIFF_FILE = re.compile(r"^diff --git a/(\S+) b/", re.MULTILINE)
_DEFINITION_LINE = re.compile(r"(?:async\s+def|def|class)\s+\w+|@")


def _match_ignoring_indent(text: str, search: str, replace: str) -> tuple[str, int] | None:
    """Find `search` line by line ignoring leading whitespace; when it matches exactly once, replace
    those lines with `replace` re-indented by the difference. Returns (new text, offset) or None."""
    lines = text.splitlines(keepends=True)
    wanted = [ln.strip() for ln in search.strip("\n").splitlines()]
    if not wanted or not any(wanted):
        return None
    hits = [
        i
        for i in range(len(lines) - len(wanted) + 1)
        if all(lines[i + k].strip() == wanted[k] for k in range(len(wanted)))
    ]
    if len(hits) != 1:
        return None
    start = hits[0]
    first_line = next(ln for ln in search.strip("\n").splitlines() if ln.strip())
    actual = next(lines[start + k] for k in range(len(wanted)) if wanted[k])
    have = len(actual) - len(actual.lstrip())
    gave = len(first_line) - len(first_line.lstrip())
    shift = have - gave
    new_lines = []
    for line in replace.strip("\n").splitlines():
        if shift > 0 and line.strip():
            line = " " * shift + line
        elif shift < 0 and line.strip():
            line = line[min(-shift, len(line) - len(line.lstrip())) :]
        new_lines.append(line + "\n")
    offset = sum(len(ln) for ln in lines[:start])
    return "".join(lines[:start] + new_lines + lines[start + len(wanted) :]), offset


def _match_other_quotes(text: str, search: str, replace: str) -> tuple[str, int] | None:
    """`search` written with the other kind of quotes than the file uses (`UNIT = 'F'` for
    `UNIT = "F"`): when that matches exactly once, `replace` goes in with the file's quotes."""
    for ours, theirs in (("'", '"'), ('"', "'")):
        if ours not in search:
            continue
        swapped = search.replace(ours, theirs)
        if text.count(swapped) == 1:
            at = text.index(swapped)
            return text.replace(swapped, replace.replace(ours, theirs), 1), at
    return None


def _appended(text: str, addition: str) -> tuple[str, int, str]:
    """`addition` after the last non-blank character of `text`, two blank lines between: the new text,
    where the addition starts, and the addition as inserted (for the numbered view of the edit)."""
    head = text.rstrip()
    inserted = ("\n\n\n" if head else "") + addition.strip("\n")
    return head + inserted + "\n", len(head), inserted


def _occurrences(text: str, search: str, limit: int = 4) -> str:
    """Each place `search` occurs, with the line before it, numbered, and the function it is in. Seen
    in the eval: told `self.balance += amount` occurs twice, the model could not tell the search which
    one it meant, five turns running."""
    lines = text.splitlines()
    functions = _functions_by_line(text)
    shown, start = [], 0
    while len(shown) < limit and (at := text.find(search, start)) >= 0:
        first = text.count("\n", 0, at) + 1
        last = first + search.count("\n")
        lo = max(1, first - 1)
        where = functions.get(first)
        head = f"in {where} (line {first}):\n" if where else ""
        shown.append(
            head + "\n".join(f"{n:>4}| {lines[n - 1]}" for n in range(lo, min(last, len(lines)) + 1))
        )
        start = at + 1
    named = [functions[n] for n in sorted(functions) if functions[n]]
    advice = ""
    if named:
        advice = (
            "\nTo change the one in a function, give that whole function (or method) with write_file: "
            "it replaces that definition only."
        )
    return "\n...\n".join(shown) + advice


def _functions_by_line(text: str) -> dict[int, str]:
    """line -> the innermost function or method (as Class.method) that holds it, for a Python text."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return {}
    out: dict[int, str] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (*FUNCTIONS, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if isinstance(child, FUNCTIONS):
                    for line in range(child.lineno, (child.end_lineno or child.lineno) + 1):
                        out[line] = name
                visit(child, f"{name}.")

    visit(tree, "")
    return out


def _closest_lines(text: str, search: str, context: int = 2) -> str:
    """The window of the file most similar to `search`, with line numbers."""
    lines = text.splitlines()
    size = max(1, len(search.strip("\n").splitlines()))
    best, best_ratio = 0, -1.0
    for i in range(max(1, len(lines) - size + 1)):
        ratio = difflib.SequenceMatcher(None, "\n".join(lines[i : i + size]), search).ratio()
        if ratio > best_ratio:
            best, best_ratio = i, ratio
    lo, hi = max(0, best - context), min(len(lines), best + size + context)
    return "\n".join(f"{n + 1:>4}| {lines[n]}" for n in range(lo, hi)) or "(the file is empty)"


def _not_found(path: str) -> ToolResult:
    return ToolResult(ok=False, output=f"not found: '{path}'", error_kind="not_found")


def _os_message(exc: OSError) -> str:
    where = f": '{exc.filename}'" if exc.filename else ""
    return f"{exc.strerror or exc}{where}"


def _files_under(target: Path) -> list[Path]:
    """Regular files to search, .git skipped and symlinks not followed (one could point outside)."""
    if target.is_file():
        return [target]
    files: list[Path] = []
    for directory, dirnames, filenames in os.walk(target, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if d != ".git")
        for filename in sorted(filenames):
            file = Path(directory, filename)
            if not file.is_symlink() and file.is_file():
                files.append(file)
    return files


# A traceback frame's header, and the source line Python prints under it where it has one.
def _check_line_raising(output: str, code: str) -> tuple[int, str] | None:
    """The line number and text of `code` (a `python` check) where its traceback ends, when its last frame
    is the check's own code, not a file's; None otherwise."""
    frames = _TRACEBACK_FRAME.findall(output)
    if not frames or frames[-1][0] != "<code>":
        return None
    number = int(frames[-1][1])
    lines = code.splitlines()
    if not 1 <= number <= len(lines):
        return None
    line = lines[number - 1].strip()
    return number, line if len(line) <= 120 else line[:117] + "..."


# A traceback frame: its file, line number, function and (where shown) source line.
_TRACEBACK_FRAME = re.compile(r'^  File "([^"]+)", line (\d+), in (\S+)$(?:\n    (.*)$)?', re.MULTILINE)
_RAISE = re.compile(r"(^|[:;]\s*)raise\b")


def _text_lines(file: Path) -> list[tuple[int, str]]:
    try:
        if file.stat().st_size > _SEARCH_FILE_CAP:
            return []
        data = file.read_bytes()
    except OSError:
        return []
    if b"\x00" in data[:8192]:
        return []
    return list(enumerate(data.decode("utf-8", "replace").splitlines(), start=1))
