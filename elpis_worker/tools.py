"""The agent's tools. Each one works inside the task's workspace and never raises for the agent's own
mistakes: a bad argument, an unknown tool or a path outside the workspace comes back as a ToolResult with
ok=False and an output the model can read and act on.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from elpis_worker.workspace import WorkspaceError, WorkspaceEscapeError, resolve_inside


@dataclass
class ToolResult:
    """What one tool call did. `error_kind` is one of "escape", "not_found", "bad_args", "timeout",
    "nonzero_exit", "unknown_tool", "os_error" (the host refused, e.g. disk full), or None when ok."""

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


def _object_schema(properties: dict[str, str], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {name: {"type": "string", "description": text} for name, text in properties.items()},
        "required": required,
        "additionalProperties": False,
    }


TOOL_SCHEMAS: dict[str, dict[str, Any]] = {
    "list_dir": _object_schema({"path": "directory relative to the workspace root (default '.')"}, []),
    "read_file": _object_schema({"path": "file relative to the workspace root"}, ["path"]),
    "write_file": _object_schema(
        {"path": "file relative to the workspace root", "content": "the complete new content of the file"},
        ["path", "content"],
    ),
    "search": _object_schema(
        {"pattern": "regular expression to look for", "path": "file or directory to search (default '.')"},
        ["pattern"],
    ),
    "run": _object_schema({"command": "shell command, run in the workspace root"}, ["command"]),
    "run_tests": _object_schema({}, []),
    "finish": _object_schema({"summary": "what was done and whether the tests pass"}, ["summary"]),
}

TOOL_DESCRIPTIONS: dict[str, str] = {
    "list_dir": "list_dir(path='.'): list the files and directories in a directory of the workspace.",
    "read_file": "read_file(path): show the content of a file.",
    "write_file": "write_file(path, content): replace a file with the given content (creates it if needed).",
    "search": "search(pattern, path='.'): find lines matching a regular expression, as file:line:text.",
    "run": "run(command): run a shell command in the workspace root and show its output.",
    "run_tests": "run_tests(): run the task's tests and show the result.",
    "finish": "finish(summary): stop working and report what was done.",
}

_READ_CHUNK = 65536
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


def _command_env(root: Path) -> dict[str, str]:
    """A minimal environment: the worker's secrets (database URL, tokens) stay out of the agent's
    commands, and the Elpis venv's python/pytest come first on PATH so test commands find them."""
    venv_bin = str(Path(sys.executable).parent)
    return {
        "PATH": os.pathsep.join([venv_bin, os.environ.get("PATH") or os.defpath]),
        "HOME": str(root),
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "GIT_TERMINAL_PROMPT": "0",
        "PYTHONUNBUFFERED": "1",
        # Caches would otherwise show up as new files in the task's diff.
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTEST_ADDOPTS": "-p no:cacheprovider",
    }


def _drain(stream: IO[bytes], buffer: _HeadTail) -> None:
    read = getattr(stream, "read1", stream.read)
    while chunk := read(_READ_CHUNK):
        buffer.feed(chunk)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


class Toolbox:
    """The tools of one task, bound to its workspace.

    File tools are confined by path: every path goes through resolve_inside. `run` and `run_tests` are
    confined only by cwd, a scrubbed environment, a timeout and killing their process group; they are
    not an OS sandbox, so a command can still reach the host's files if it names them.
    """

    def __init__(
        self,
        root: Path,
        test_command: str | None,
        command_timeout: float,
        output_cap: int,
        read_cap: int,
    ) -> None:
        self.root = Path(os.path.realpath(root))
        if not self.root.is_dir():
            raise WorkspaceError(f"workspace {root} is not a directory")
        self.test_command = test_command
        self.command_timeout = command_timeout
        self.output_cap = output_cap
        self.read_cap = read_cap
        self._handlers: dict[str, Callable[..., ToolResult]] = {
            "list_dir": self.list_dir,
            "read_file": self.read_file,
            "write_file": self.write_file,
            "search": self.search,
            "run": self.run,
            "run_tests": self.run_tests,
            "finish": self.finish,
        }

    def call(self, name: str, args: dict[str, Any]) -> ToolResult:
        """Run tool `name` with `args`; the agent's mistakes come back as ok=False, never as exceptions."""
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
        try:
            return handler(**args)
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

    def read_file(self, path: str) -> ToolResult:
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
        buffer = _HeadTail(self.read_cap)
        with target.open("rb") as f:
            if size <= self.read_cap:
                buffer.feed(f.read(self.read_cap + 1))
            else:  # never load a huge file just to show its ends
                buffer.feed(f.read(buffer.head_cap))
                f.seek(max(size - buffer.tail_cap, buffer.head_cap))
                buffer.total = size - buffer.tail_cap
                buffer.feed(f.read(buffer.tail_cap))
        if b"\x00" in buffer.head[:8192]:
            return ToolResult(ok=True, output=f"'{path}' is a binary file ({size} bytes); not shown")
        text = buffer.text()
        return ToolResult(ok=True, output=text if text else f"('{path}' is empty)")

    def write_file(self, path: str, content: str) -> ToolResult:
        target = resolve_inside(self.root, path)
        if target == self.root or target.is_dir():
            return ToolResult(ok=False, output=f"'{path}' is a directory, not a file", error_kind="bad_args")
        if target.exists() and not target.is_file():
            return ToolResult(ok=False, output=f"'{path}' is not a regular file", error_kind="bad_args")
        data = content.encode("utf-8")
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as f:
            f.write(data)
        return ToolResult(
            ok=True, output=f"wrote {len(data)} bytes to {self._display(target)}", changed_files=True
        )

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
        return self._shell(command)

    def run_tests(self) -> ToolResult:
        if not self.test_command:
            return ToolResult(ok=False, output="no test command for this task", error_kind="not_found")
        result = self._shell(self.test_command)
        result.tests_run = True
        result.tests_passed = result.ok
        if result.ok:
            result.failures = 0
        elif result.error_kind != "timeout":
            result.failures = parse_test_failures(result.output)
        return result

    def finish(self, summary: str) -> ToolResult:
        return ToolResult(ok=True, output="finished", finished=True, summary=summary)

    def _shell(self, command: str) -> ToolResult:
        buffer = _HeadTail(self.output_cap)
        proc = subprocess.Popen(
            command,
            shell=True,
            cwd=self.root,
            env=_command_env(self.root),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
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
            # The whole group: background children (`sleep 100 &`) must not outlive the call.
            _kill_group(proc.pid)
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


def _check_args(name: str, args: Any) -> str | None:
    """Why `args` does not fit the tool's schema, or None when it does."""
    schema = TOOL_SCHEMAS[name]
    properties: dict[str, Any] = schema["properties"]
    expected = f"{name} takes {{{', '.join(properties)}}}" if properties else f"{name} takes no arguments"
    if not isinstance(args, dict):
        return f"arguments must be a JSON object; {expected}"
    unknown = sorted(str(key) for key in args if key not in properties)
    if unknown:
        return f"unknown argument(s) {', '.join(unknown)}; {expected}"
    missing = [key for key in schema["required"] if key not in args]
    if missing:
        return f"missing {', '.join(missing)}; {expected}"
    for key, value in args.items():
        if properties[key]["type"] == "string" and not isinstance(value, str):
            return f"'{key}' must be a string"
    return None


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
