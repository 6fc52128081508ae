"""Warm shutdown (elpis_worker/shutdown.py): SIGTERM to a worker stops its agent task after the step in
progress, gives the task back and sends it again; the next worker resumes it from its persisted steps."""

from __future__ import annotations

import os
import signal

import pytest
from helpers import (
    FIXED_OPS,
    create_tasks,
    has_called,
    scripted_env,
    steps_of,
    task_row,
    wait_finished,
    wait_for,
)

from configs import get_settings
from elpis_worker.store import LostClaim, TaskStore
from models import StepKind, Task, TaskStatus, session_scope

# A command that blocks until the test opens its gate (a file in the task's workspace, which the
# sandbox binds in), bounded so a broken test cannot hang; it removes the file so the diff stays clean.
GATE = (
    "i=0; while [ ! -e .gate ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; rm -f .gate; echo gate open"
)
SCRIPT = [
    {"thought": "look", "tool": "list_dir", "args": {"path": "."}},
    {"thought": "wait at the gate", "tool": "run", "args": {"command": GATE}},
    {"thought": "slow 1", "tool": "run", "args": {"command": "sleep 1; echo one"}},
    {"thought": "slow 2", "tool": "run", "args": {"command": "sleep 1; echo two"}},
    {"thought": "fix", "tool": "write_file", "args": {"path": "calc/ops.py", "content": FIXED_OPS}},
    {"thought": "try it", "tool": "python", "args": {"code": "assert subtract(7, 2) == 5"}},
    {"thought": "done", "tool": "finish", "args": {"summary": "fixed subtract"}},
]


def test_sigterm_stops_after_the_step_in_progress_and_the_next_worker_resumes(
    api, db_url, start_worker, scripted
):
    first = start_worker(**scripted_env(scripted(SCRIPT)))
    (task_id,) = create_tasks(api, 1)
    first.send(task_id)

    # The task is in its second turn's command, which waits at the gate.
    wait_for(lambda: has_called(db_url, task_id, "run"), timeout=90, what="the gated command")
    holder = task_row(db_url, task_id).worker_id
    # SIGTERM to the worker's main process only, as docker and Kubernetes send it.
    os.kill(first.process.pid, signal.SIGTERM)
    wait_for(
        lambda: "agent tasks stop after their current step" in first.log_text(),
        timeout=30,
        what="the worker to start its warm shutdown",
    )
    assert task_row(db_url, task_id).status == TaskStatus.running  # the step is still in progress
    (get_settings().workspace_root / f"task-{task_id}" / ".gate").touch()

    # The worker finishes the command, starts no other step and exits: it does not wait out the task
    # (four more turns, two of them slow commands).
    try:
        first.process.wait(timeout=60)
    except Exception:
        pytest.fail(f"the worker did not exit after SIGTERM:\n{first.log_text()[-3000:]}")
    log = first.log_text()
    assert f"task {task_id}: worker shutting down, task released" in log, log[-3000:]

    task = task_row(db_url, task_id)
    assert task.status == TaskStatus.queued, (task.status, task.failure_reason)
    assert task.worker_id is None and task.failure_reason is None
    cut = steps_of(db_url, task_id)
    assert [s.seq for s in cut] == list(range(len(cut)))
    assert {s.worker_id for s in cut} == {holder}
    # The step in progress was finished (the command's result is stored), and no other step started.
    assert cut[-1].kind == StepKind.tool_result and cut[-1].tool_name == "run"
    assert "gate open" in cut[-1].tool_result
    assert [s.tool_name for s in cut if s.kind == StepKind.tool_call] == ["list_dir", "run"]

    # The task was sent again at once: a second worker on the same queue takes it and resumes it.
    second = start_worker(queue=first.queue, **scripted_env(scripted(SCRIPT)))
    task = wait_finished(db_url, task_id, timeout=120)
    assert task.status == TaskStatus.succeeded, task.failure_reason
    assert task.attempts == 2
    assert task.worker_id != holder
    steps = steps_of(db_url, task_id)
    assert [s.seq for s in steps] == list(range(len(steps)))  # no gap, no duplicate
    assert [(s.seq, s.kind, s.worker_id) for s in steps[: len(cut)]] == [
        (s.seq, s.kind, s.worker_id) for s in cut
    ]
    # The second worker continued from the interrupted turn's next phase (its emotion update).
    resumed = steps[len(cut)]
    assert resumed.worker_id == task.worker_id and resumed.kind == StepKind.emotion
    assert {s.worker_id for s in steps[len(cut) :]} == {task.worker_id}
    tools = [s.tool_name for s in steps if s.kind == StepKind.tool_call]
    assert tools == [turn["tool"] for turn in SCRIPT]  # no turn repeated or skipped
    assert "+    return a - b" in task.workspace_diff
    assert "resuming" in second.log_text()


def _claimed_task(api, store: TaskStore) -> int:
    (task_id,) = create_tasks(api, 1)
    assert store.claim(task_id, stale_after=60) is not None
    return task_id


def test_release_puts_the_task_back_unless_it_was_cancelled_or_taken_over(api, db_url):
    store = TaskStore(db_url, worker_id="host-a:1")

    task_id = _claimed_task(api, store)
    assert store.release(task_id) == TaskStatus.queued
    task = task_row(db_url, task_id)
    assert (task.status, task.worker_id, task.heartbeat_at) == (TaskStatus.queued, None, None)
    assert task.requeued_at is not None  # the reconciler waits out its grace before sending it again
    # The next worker claims it, as a resume.
    claim = TaskStore(db_url, worker_id="host-b:2").claim(task_id, stale_after=60)
    assert claim is not None and claim.attempt == 2

    # A cancel requested while it ran wins: it is not queued again.
    task_id = _claimed_task(api, store)
    with session_scope(db_url) as s:
        s.get(Task, task_id).cancel_requested = True
    assert store.release(task_id) == TaskStatus.cancelled
    task = task_row(db_url, task_id)
    assert task.status == TaskStatus.cancelled and task.finished_at is not None

    # A task another worker took over is not ours to release.
    task_id = _claimed_task(api, store)
    with session_scope(db_url) as s:
        s.get(Task, task_id).worker_id = "host-c:3"
    with pytest.raises(LostClaim):
        store.release(task_id)
    assert task_row(db_url, task_id).status == TaskStatus.running
