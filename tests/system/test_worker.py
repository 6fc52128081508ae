"""Real `celery worker` processes (prefork) on the real broker: model residency, crash and resume, cancel."""

from __future__ import annotations

import os
import signal

from helpers import (
    FIXED_OPS,
    SAMPLES,
    create_tasks,
    has_called,
    scripted_env,
    steps_of,
    task_row,
    wait_finished,
    wait_for,
)
from sqlalchemy import select

from models import StepKind, TaskStatus, WorkerProcess, session_scope


def test_two_tasks_in_one_process_load_the_model_once(api, db_url, start_worker):
    worker = start_worker(**scripted_env(SAMPLES / "fix_script.json"))
    first, second = create_tasks(api, 2)
    worker.send(first)
    worker.send(second)
    for task_id in (first, second):
        assert wait_finished(db_url, task_id).status == TaskStatus.succeeded

    holders = {task_row(db_url, t).worker_id for t in (first, second)}
    assert len(holders) == 1, holders  # concurrency 1: the same child process ran both
    (holder,) = holders
    with session_scope(db_url) as s:
        loads = list(s.scalars(select(WorkerProcess).where(WorkerProcess.worker_id == holder)))
        assert len(loads) == 1, "the model was loaded more than once in one process"
        assert loads[0].tasks_run == 2
        assert loads[0].backend == "scripted"
    log = worker.log_text()
    assert log.count('msg="model loaded once') == 1  # the chat model, at process start
    assert log.count('msg="embedding model loaded once') == 1  # the embedding model, at first use


def test_killed_worker_is_resumed_without_duplicate_steps(api, db_url, start_worker, scripted):
    script = scripted(
        [
            {"thought": "look", "tool": "list_dir", "args": {"path": "."}},
            {"thought": "slow step", "tool": "run", "args": {"command": "sleep 4; echo slept"}},
            {"thought": "fix", "tool": "write_file", "args": {"path": "calc/ops.py", "content": FIXED_OPS}},
            {"thought": "try it", "tool": "python", "args": {"code": "assert subtract(7, 2) == 5"}},
            {"thought": "done", "tool": "finish", "args": {"summary": "fixed subtract"}},
        ]
    )
    worker = start_worker(**scripted_env(script))
    (task_id,) = create_tasks(api, 1)
    worker.send(task_id)

    # Kill the child process that holds the task while it runs the slow command.
    wait_for(lambda: has_called(db_url, task_id, "run"), timeout=60, what="the slow tool call")
    holder = task_row(db_url, task_id).worker_id
    pid = int(holder.rsplit(":", 1)[1])
    os.kill(pid, signal.SIGKILL)

    task = wait_finished(db_url, task_id, timeout=120)
    assert task.status == TaskStatus.succeeded, task.failure_reason
    assert task.attempts == 2
    assert task.worker_id != holder
    steps = steps_of(db_url, task_id)
    assert [s.seq for s in steps] == list(range(len(steps)))  # no gap, no duplicate
    kinds = [s.kind.value for s in steps]
    assert (
        kinds
        == ["observe"] * 3
        + ["memory"]
        + ["think", "tool_call", "tool_result", "emotion"]
        + ["reflect", "think", "tool_call", "tool_result", "emotion"] * 4
    )
    tools = [s.tool_name for s in steps if s.kind == StepKind.tool_call]
    assert tools == ["list_dir", "run", "write_file", "python", "finish"]
    assert {s.worker_id for s in steps[:11]} == {holder}  # first worker wrote up to the run's tool_call
    assert steps[11].worker_id != holder
    assert "+    return a - b" in task.workspace_diff


def test_cancel_running_task(api, db_url, start_worker, scripted):
    script = scripted([{"thought": "wait", "tool": "run", "args": {"command": "sleep 1"}}] * 30)
    worker = start_worker(**scripted_env(script))
    (task_id,) = create_tasks(api, 1, budget={"max_steps": 30})
    worker.send(task_id)
    wait_for(lambda: len(steps_of(db_url, task_id)) >= 5, timeout=60, what="first turn")
    response = api.post(f"/v1/tasks/{task_id}/cancel")
    assert response.status_code == 202
    task = wait_finished(db_url, task_id, timeout=60)
    assert task.status == TaskStatus.cancelled
    assert len(steps_of(db_url, task_id)) < 30 * 5
    # A second delivery of a finished task is dropped: no new steps, status unchanged.
    before = len(steps_of(db_url, task_id))
    worker.send(task_id)
    wait_for(lambda: f"task {task_id} is not claimable" in worker.log_text(), timeout=30, what="drop")
    assert len(steps_of(db_url, task_id)) == before


def test_a_run_past_its_time_limit_is_stopped_and_fails_with_the_reason(
    api, db_url, start_worker, scripted, monkeypatch
):
    """Celery's soft time limit (the task's wall budget plus worker.time_limit_margin, sent with the
    message) stops a run stuck in a command; the task is failed with the reason, not left running."""
    import time

    from configs import get_settings
    from elpis_worker.tasks import enqueue_run_task

    worker = start_worker(**scripted_env(SAMPLES / "fix_script.json"))
    # The tests the worker runs once before the first think hang (command_timeout is 60 s).
    (task_id,) = create_tasks(api, 1, test_command="sleep 60", budget={"max_seconds": 1})
    monkeypatch.setenv("ELPIS_WORKER__QUEUE", worker.queue)
    monkeypatch.setenv("ELPIS_WORKER__TIME_LIMIT_MARGIN", "4")
    get_settings.cache_clear()
    try:
        enqueue_run_task(task_id, db_url)
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    sent = time.monotonic()

    task = wait_finished(db_url, task_id, timeout=60)
    assert task.status == TaskStatus.failed, worker.log_text()[-3000:]
    assert task.failure_reason.startswith("stopped by the worker's time limit of 5 s")
    assert time.monotonic() - sent < 30  # not the command's own timeout, nor the hard limit (35 s)
    assert task.attempts == 1 and "Hard time limit" not in worker.log_text()


def test_a_delivery_is_not_a_claim(api, db_url, start_worker):
    """A second delivery of a task held by a live worker elsewhere is dropped; once that worker's
    heartbeat goes stale (a dead host), the next delivery takes the task over and finishes it."""
    from datetime import UTC, datetime, timedelta

    from models import Task

    worker = start_worker(**scripted_env(SAMPLES / "fix_script.json"))
    (task_id,) = create_tasks(api, 1)
    with session_scope(db_url) as s:
        task = s.get(Task, task_id)
        task.status, task.worker_id, task.attempts = TaskStatus.running, "other-host:4242", 1
        task.heartbeat_at = datetime.now(UTC)
    worker.send(task_id)
    wait_for(lambda: f"task {task_id} is not claimable" in worker.log_text(), timeout=60, what="drop")
    assert task_row(db_url, task_id).worker_id == "other-host:4242" and steps_of(db_url, task_id) == []

    with session_scope(db_url) as s:
        s.get(Task, task_id).heartbeat_at = datetime.now(UTC) - timedelta(hours=1)
    from elpis_worker.store import TaskStore

    assert task_id in TaskStore(db_url).orphaned_task_ids(stale_after=6)  # what beat re-enqueues
    worker.send(task_id)
    task = wait_finished(db_url, task_id)
    assert task.status == TaskStatus.succeeded and task.attempts == 2
    assert task.worker_id != "other-host:4242"
