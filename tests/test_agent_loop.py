"""The loop's logic, driven by the scripted backend in-process, on a real sample repo and real Postgres."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import SAMPLES, steps_of, task_row

from configs.settings import load_settings
from elpis_worker.agent import run_agent
from elpis_worker.backend import ScriptedBackend
from elpis_worker.store import TaskStore
from models import StepKind, TaskStatus

PHASES = ["think", "tool_call", "tool_result", "reflect", "emotion"]


def submit(api, **task) -> int:
    task.setdefault("repo", str(SAMPLES / "calc"))
    task.setdefault("test_command", "python -m pytest -q")
    api.app.state.enqueue = lambda task_id: None  # this test drives the loop itself
    response = api.post("/v1/batches", json={"tasks": [task]})
    assert response.status_code == 201, response.text
    return response.json()["tasks"][0]["id"]


def run_scripted(db_url: str, task_id: int, script: Path, **overrides) -> TaskStatus | None:
    settings = load_settings(**overrides)
    backend = ScriptedBackend(
        settings.model.model_copy(update={"backend": "scripted", "script": str(script)})
    )
    store = TaskStore(db_url)
    assert store.claim(task_id, stale_after=60) is not None
    return run_agent(store, backend, settings, task_id)


def test_scripted_loop_fixes_the_failing_test(api, db_url):
    task_id = submit(api, instruction="Fix the failing test in tests/test_ops.py")
    status = run_scripted(db_url, task_id, SAMPLES / "fix_script.json")

    assert status == TaskStatus.succeeded
    task = task_row(db_url, task_id)
    assert task.status == TaskStatus.succeeded and task.test_passed is True
    assert "-    return a + b" not in task.workspace_diff or "+    return a - b" in task.workspace_diff
    assert "+    return a - b" in task.workspace_diff
    assert task.summary.startswith("Fixed subtract")

    steps = steps_of(db_url, task_id)
    assert [s.seq for s in steps] == list(range(len(steps)))
    script = json.loads((SAMPLES / "fix_script.json").read_text())
    assert [s.kind.value for s in steps] == ["memory"] + PHASES * len(script)
    assert [s.tool_name for s in steps if s.kind == StepKind.tool_call] == [a["tool"] for a in script]
    results = [s for s in steps if s.kind == StepKind.tool_result]
    first_tests, second_tests = (r for r in results if r.tool_name == "run_tests")
    assert first_tests.detail["tests_passed"] is False and first_tests.detail["failures"] == 1
    assert second_tests.detail["tests_passed"] is True
    # Every think step records the sampling it used and the emotion it was taken in.
    for think in (s for s in steps if s.kind == StepKind.think):
        assert 0 < think.sampling["temperature"] <= 2 and think.emotion["mood"]
    # The emotion step moved with what happened: failing tests hurt, passing tests help.
    emotions = [s.emotion for s in steps if s.kind == StepKind.emotion]
    assert emotions[0]["after"]["valence"] < emotions[0]["before"]["valence"]
    assert emotions[3]["after"]["valence"] > emotions[3]["before"]["valence"]
    assert task.emotion == emotions[-1]["after"]


def test_budget_exhaustion_fails_with_reason(api, db_url, scripted):
    script = scripted([{"thought": "look", "tool": "list_dir", "args": {"path": "."}}] * 5)
    task_id = submit(api, instruction="Fix it", budget={"max_steps": 2})
    status = run_scripted(db_url, task_id, script)
    task = task_row(db_url, task_id)
    assert status == TaskStatus.failed
    assert "budget exhausted: 2 steps" in task.failure_reason
    assert task.test_passed is False  # the final verification ran the task's tests
    assert len(steps_of(db_url, task_id)) == 1 + 2 * len(PHASES)


def test_escape_attempt_is_refused_and_recorded(api, db_url, scripted):
    script = scripted(
        [
            {"thought": "peek", "tool": "read_file", "args": {"path": "../../etc/passwd"}},
            {"thought": "peek", "tool": "read_file", "args": {"path": "/etc/passwd"}},
            {"thought": "done", "tool": "finish", "args": {"summary": "nothing"}},
        ]
    )
    task_id = submit(api, instruction="Read files", test_command=None)
    run_scripted(db_url, task_id, script)
    results = [s for s in steps_of(db_url, task_id) if s.kind == StepKind.tool_result]
    for refused in results[:2]:
        assert refused.detail["ok"] is False and refused.detail["error_kind"] == "escape"
        assert "outside the workspace" in refused.tool_result
        assert "root:" not in refused.tool_result
    assert task_row(db_url, task_id).status == TaskStatus.succeeded


def test_invalid_model_output_becomes_an_observation(api, db_url, scripted):
    script = scripted(
        [
            {"raw": '{"thought": "a reply cut short by max_tok'},
            {"thought": "done", "tool": "finish", "args": {"summary": "ok"}},
        ]
    )
    task_id = submit(api, instruction="Anything", test_command=None)
    run_scripted(db_url, task_id, script)
    first = [s for s in steps_of(db_url, task_id) if s.kind == StepKind.tool_result][0]
    assert first.detail["ok"] is False and first.detail["error_kind"] == "bad_args"
    assert "not a valid tool call" in first.tool_result


def test_unreachable_repository_fails_cleanly(api, db_url, scripted):
    task_id = submit(api, repo="file:///nonexistent/elpis/repo.git", instruction="x")
    status = run_scripted(db_url, task_id, scripted([]))
    task = task_row(db_url, task_id)
    assert status == TaskStatus.failed
    assert task.failure_reason.startswith("workspace: could not clone")
    assert steps_of(db_url, task_id) == []
