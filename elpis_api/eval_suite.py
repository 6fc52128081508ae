"""An evaluation suite (`evals/suite.yaml`), its loader, and the judge that decides each task.

The judge is independent of the agent: it prepares a fresh workspace from the suite's own copy of the
task's repository the way a worker does, applies the diff the task stored, lays the suite's hidden files
over it (tests the agent never saw, as SWE-bench's FAIL_TO_PASS) and runs the suite's own check command.
Exit status 0 is solved.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, get_args

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from configs.errors import ElpisError
from elpis_worker.workspace import WorkspaceError, prepare_workspace, workspace_diff

__all__ = [
    "KINDS",
    "EvalSuite",
    "EvalTask",
    "Judgement",
    "SuiteError",
    "TaskKind",
    "judge",
    "load_suite",
    "run_command",
    "solution_diff",
]

SUITE_FILE = "suite.yaml"
OUTPUT_TAIL = 4000
_RESTORE_FAILED = "could not restore the task's changes"
"""prepare_workspace's message when the diff does not apply (anything else: the repo itself failed)."""

TaskKind = Literal[
    "one_line_bug",
    "off_by_one",
    "wrong_operator",
    "missing_function",
    "missing_import",
    "exception_handling",
    "string_formatting",
    "two_files",
    "add_test",
    "documentation",
]
KINDS: tuple[str, ...] = get_args(TaskKind)
BudgetKey = Literal["max_steps", "max_tokens", "max_seconds"]


def _positive(budget: dict[str, int | float] | None) -> dict[str, int | float] | None:
    for key, amount in (budget or {}).items():
        if amount <= 0:
            raise ValueError(f"{key} must be positive")
    return budget


# A task's budget, or the suite's (every task's where the task's own does not name a key).
Budget = Annotated[dict[BudgetKey, int | float] | None, AfterValidator(_positive)]


class SuiteError(ElpisError, ValueError):
    """The suite file is unreadable or invalid; the one-line message names the file and the field."""


class EvalTask(BaseModel):
    """One task. Folders are relative to the suite's folder in YAML and absolute once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$", max_length=80)
    kind: TaskKind
    repo: Path
    instruction: str = Field(min_length=1)
    test_command: str = Field(min_length=1, description="what the agent sees and runs")
    check: str = Field(min_length=1, description="the judge's command; may run tests the agent never saw")
    hidden: Path | None = Field(None, description="files laid over the judged workspace before `check`")
    solution: Path | None = Field(None, description="files that, laid over the repo, solve it (tests only)")
    protected: list[str] = Field(default_factory=list, description="globs the agent's tools may not change")
    budget: Budget = None

    @field_validator("protected")
    @classmethod
    def _relative_globs(cls, value: list[str]) -> list[str]:
        for glob in value:
            if not glob or glob.startswith("/") or ".." in Path(glob).parts:
                raise ValueError(f"'{glob}' is not a path glob relative to the repository")
        return value


class EvalSuite(BaseModel):
    """A named list of tasks, as read from `suite.yaml`. The suite's `budget` is every task's, where the
    task's own budget does not name that key (load_suite merges them)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    description: str = ""
    budget: Budget = None
    tasks: list[EvalTask] = Field(min_length=1)


@dataclass(frozen=True)
class Judgement:
    """The verdict on one diff: whether it applied to a fresh copy and whether the check then passed."""

    solved: bool
    applied: bool
    exit_code: int | None
    output: str
    reason: str | None = None


def _location(loc: tuple[int | str, ...]) -> str:
    """`tasks[3].budget.max_turns`, the way the YAML reads, rather than pydantic's `tasks.3.budget`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def load_suite(path: str | os.PathLike[str]) -> EvalSuite:
    """Read a suite from its YAML file, or from a folder holding `suite.yaml`. Folders named in it are
    resolved against the suite's folder and must exist; task ids must be unique; each task's budget is
    the suite's with the task's own keys over it."""
    file = Path(path).expanduser()
    if file.is_dir():
        file = file / SUITE_FILE
    if not file.is_file():
        raise SuiteError(f"{file}: no such suite file")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        detail = " ".join(str(exc).split())
        raise SuiteError(f"{file}: cannot read the suite: {detail}") from exc
    if not isinstance(data, dict):
        raise SuiteError(f"{file}: the suite must be a mapping with name, description and tasks")
    try:
        suite = EvalSuite.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise SuiteError(f"{file}: {_location(tuple(first['loc']))}: {first['msg']}") from None

    base = file.parent.resolve()
    seen: set[str] = set()
    tasks: list[EvalTask] = []
    for index, task in enumerate(suite.tasks):
        if task.id in seen:
            raise SuiteError(f"{file}: tasks[{index}].id: duplicate id {task.id!r}")
        seen.add(task.id)
        folders: dict[str, Path] = {}
        for field in ("repo", "hidden", "solution"):
            value: Path | None = getattr(task, field)
            if value is None:
                continue
            resolved = (base / value).resolve()
            if not resolved.is_dir():
                raise SuiteError(f"{file}: tasks[{index}].{field}: {value} is not a folder")
            folders[field] = resolved
        budget = {**(suite.budget or {}), **(task.budget or {})} or None
        tasks.append(task.model_copy(update={**folders, "budget": budget}))
    return suite.model_copy(update={"tasks": tasks})


def _clean_env(home: Path) -> dict[str, str]:
    """Nothing of the caller's environment: `python` is this interpreter (the venv's), caches are off."""
    path = os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"])
    return {
        "PATH": path,
        "HOME": str(home),
        "TMPDIR": str(home),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTEST_ADDOPTS": "-p no:cacheprovider",
        # Only pytest's own plugins: whatever else Elpis's venv has installed (celery, hypothesis, ...)
        # plays no part in a task's verdict, and not importing it makes each check ~1 s faster.
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
    }


def _tail(text: str) -> str:
    return text if len(text) <= OUTPUT_TAIL else "…" + text[-OUTPUT_TAIL:]


def run_command(command: str, cwd: Path, *, timeout: float = 120) -> tuple[int | None, str]:
    """Run a shell command as the judge does: clean environment, own process group (killed whole at the
    timeout). Returns the exit status (None on timeout) and the tail of stdout and stderr together."""
    home = Path(tempfile.mkdtemp(prefix="elpis-judge-home-"))
    try:
        proc = subprocess.Popen(
            command,
            shell=True,
            cwd=cwd,
            env=_clean_env(home),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            return None, _tail(out.decode("utf-8", "replace") + f"\n[timed out after {timeout:g} s]")
        return proc.returncode, _tail(out.decode("utf-8", "replace"))
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _overlay(source: Path, dest: Path) -> None:
    # copyfile, not copy2: a file keeping its source's mtime and size would look unchanged to git's index.
    shutil.copytree(
        source,
        dest,
        dirs_exist_ok=True,
        copy_function=shutil.copyfile,
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )


def judge(task: EvalTask, diff: str, *, timeout: float = 120) -> Judgement:
    """Solved when the task's check passes on a fresh copy of its repository with `diff` applied and the
    hidden files laid over it. The agent's own verdict plays no part."""
    scratch = Path(tempfile.mkdtemp(prefix="elpis-judge-"))
    try:
        root = scratch / "workspace"
        try:
            prepare_workspace(str(task.repo), None, root, diff=diff or None)
        except WorkspaceError as exc:
            what = "the diff does not apply" if _RESTORE_FAILED in str(exc) else "cannot prepare the repo"
            return Judgement(False, False, None, "", f"{what}: {exc}")
        if task.hidden is not None:
            _overlay(task.hidden, root)
        exit_code, output = run_command(task.check, root, timeout=timeout)
        if exit_code is None:
            return Judgement(False, True, None, output, f"the check timed out after {timeout:g} s")
        reason = None if exit_code == 0 else f"check exited with status {exit_code}"
        return Judgement(exit_code == 0, True, exit_code, output, reason)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def solution_diff(task: EvalTask) -> str:
    """The diff that turns the repository into repository + solution overlay, in the format a worker
    stores (workspace_diff of a prepared workspace)."""
    if task.solution is None:
        raise SuiteError(f"task {task.id} has no solution folder")
    scratch = Path(tempfile.mkdtemp(prefix="elpis-solution-"))
    try:
        root = prepare_workspace(str(task.repo), None, scratch / "workspace")
        _overlay(task.solution, root)
        return workspace_diff(root)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
