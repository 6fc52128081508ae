"""The in-repo evaluation suite is well-formed: every task fails as shipped, its reference solution is judged
solved, and the loader and judge refuse what they must. No database or broker is involved."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from elpis_api.eval_suite import (
    KINDS,
    EvalTask,
    SuiteError,
    judge,
    load_suite,
    run_command,
    solution_diff,
)
from elpis_worker.workspace import prepare_workspace

ROOT = Path(__file__).resolve().parents[2]
EVALS = ROOT / "evals"
SUITE = load_suite(EVALS)


def test_suite_covers_every_kind() -> None:
    assert len(SUITE.tasks) >= 32
    for kind in KINDS:
        assert sum(task.kind == kind for task in SUITE.tasks) >= 3, kind
    assert len({task.id for task in SUITE.tasks}) == len(SUITE.tasks)


def test_task_files_are_small_and_clean() -> None:
    for task in SUITE.tasks:
        for folder in (task.repo, task.hidden, task.solution):
            if folder is None:
                continue
            assert folder.is_absolute() and folder.is_relative_to(EVALS)
            assert not list(folder.rglob("__pycache__")), f"{folder} holds __pycache__"
        assert (task.repo / "conftest.py").is_file(), task.id
        for source in task.repo.rglob("*.py"):
            assert len(source.read_text().splitlines()) <= 40, source


@pytest.mark.parametrize("task", SUITE.tasks, ids=[task.id for task in SUITE.tasks])
def test_task_fails_as_shipped_and_its_solution_is_solved(task: EvalTask, tmp_path: Path) -> None:
    root = prepare_workspace(str(task.repo), None, tmp_path / "visible")
    exit_code, output = run_command(task.test_command, root, timeout=60)
    assert exit_code not in (0, None), f"{task.id}: the visible test command passes unmodified:\n{output}"

    unsolved = judge(task, "", timeout=60)
    assert unsolved.applied and not unsolved.solved, f"{task.id}: the check passes unmodified"
    assert unsolved.exit_code not in (0, None)

    diff = solution_diff(task)
    assert diff.startswith("diff --git ")
    solved = judge(task, diff, timeout=60)
    assert solved.applied, solved.reason
    assert solved.solved, f"{task.id}: the solution is not solved:\n{solved.output}"
    assert solved.exit_code == 0 and solved.reason is None


def test_judge_reports_a_diff_that_does_not_apply() -> None:
    task = SUITE.tasks[0]
    bogus = (
        "diff --git a/missing.py b/missing.py\n"
        "--- a/missing.py\n+++ b/missing.py\n@@ -1 +1 @@\n-old line\n+new line\n"
    )
    verdict = judge(task, bogus)
    assert not verdict.applied and not verdict.solved
    assert verdict.exit_code is None
    assert verdict.reason and "does not apply" in verdict.reason


def test_judge_times_out_a_hanging_check() -> None:
    task = SUITE.tasks[0].model_copy(update={"check": "sleep 30"})
    verdict = judge(task, "", timeout=1)
    assert verdict.applied and not verdict.solved and verdict.exit_code is None
    assert verdict.reason and "timed out" in verdict.reason


def _copy_suite(tmp_path: Path, edit: dict[str, object] | None = None, *, duplicate: bool = False) -> Path:
    """A one-task suite in tmp_path built from the first task of the real suite."""
    first = SUITE.tasks[0]
    folder = tmp_path / "suite"
    for name in ("repo", "hidden", "solution"):
        shutil.copytree(getattr(first, name), folder / name)
    task: dict[str, object] = {
        "id": "one",
        "kind": first.kind,
        "repo": "repo",
        "instruction": first.instruction,
        "test_command": first.test_command,
        "check": first.check,
        "hidden": "hidden",
        "solution": "solution",
        "protected": ["tests/**"],
        "budget": {"max_steps": 8},
    }
    task.update(edit or {})
    tasks = [task, dict(task)] if duplicate else [task]
    (folder / "suite.yaml").write_text(yaml.safe_dump({"name": "t", "description": "d", "tasks": tasks}))
    return folder


def test_the_suites_budget_is_each_tasks_where_the_task_does_not_say(tmp_path: Path) -> None:
    """A suite-level budget fills the keys a task's own budget leaves out; the task's own keys win. The
    shipped suite gives every task a wall-time budget well over what a task takes on this machine, so a
    slow machine's runs end on turns, as a fast one's do."""
    folder = _copy_suite(tmp_path)
    data = yaml.safe_load((folder / "suite.yaml").read_text())
    data["budget"] = {"max_seconds": 1800, "max_steps": 20}
    data["tasks"].append({**data["tasks"][0], "id": "two", "budget": None})
    (folder / "suite.yaml").write_text(yaml.safe_dump(data))
    own, bare = load_suite(folder).tasks
    assert own.budget == {"max_seconds": 1800, "max_steps": 8}
    assert bare.budget == {"max_seconds": 1800, "max_steps": 20}
    data["budget"] = {"max_seconds": 0}
    (folder / "suite.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(SuiteError, match="suite.yaml: budget: Value error, max_seconds must be positive"):
        load_suite(folder)
    assert all(task.budget and task.budget.get("max_seconds") == 1800 for task in SUITE.tasks)


def test_load_suite_resolves_paths(tmp_path: Path) -> None:
    folder = _copy_suite(tmp_path)
    for path in (folder, folder / "suite.yaml"):
        suite = load_suite(path)
        (task,) = suite.tasks
        assert task.repo == (folder / "repo").resolve()
        assert task.hidden == (folder / "hidden").resolve()
        assert task.budget == {"max_steps": 8}


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ({"colour": "red"}, "tasks[0].colour"),
        ({"kind": "rewrite_everything"}, "tasks[0].kind"),
        ({"repo": "nowhere"}, "tasks[0].repo"),
        ({"hidden": "missing-hidden"}, "tasks[0].hidden"),
        ({"budget": {"max_turns": 3}}, "tasks[0].budget"),
        ({"protected": ["/etc/**"]}, "tasks[0].protected"),
    ],
)
def test_load_suite_errors_name_the_file_and_field(
    tmp_path: Path, edit: dict[str, object], expected: str
) -> None:
    folder = _copy_suite(tmp_path, edit)
    with pytest.raises(SuiteError) as caught:
        load_suite(folder)
    message = str(caught.value)
    assert "\n" not in message
    assert str(folder / "suite.yaml") in message and expected in message


def test_load_suite_refuses_duplicate_ids(tmp_path: Path) -> None:
    folder = _copy_suite(tmp_path, duplicate=True)
    with pytest.raises(SuiteError, match=r"tasks\[1\]\.id: duplicate id 'one'"):
        load_suite(folder)


def test_load_suite_refuses_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match="no such suite file"):
        load_suite(tmp_path)
    (tmp_path / "suite.yaml").write_text("- just a list\n")
    with pytest.raises(SuiteError, match="must be a mapping"):
        load_suite(tmp_path / "suite.yaml")
