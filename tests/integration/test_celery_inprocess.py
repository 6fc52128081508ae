"""Elpis's Celery app (elpis_worker/celery_app.py) with an in-process worker, on the session's real valkey
and Postgres: the maintenance tasks beat sends (`elpis.consolidate_memories`, `elpis.reconcile`) go
through the broker to a worker thread of this process, which runs them against the database.

The worker is Celery's own testing worker (`celery.contrib.testing.worker.start_worker`, the one behind
`celery.contrib.pytest`'s `celery_worker` fixture). These tasks need no model, no prefork child and no
crash; the tests that do (SIGKILL mid-task, prefork children, the resident model) start real
`celery worker` processes (conftest.py's `start_worker`). The pool is `threads`: the solo pool sends
`worker_process_init`, at which Elpis loads its model (elpis_worker/tasks.py); the thread pool sends
nothing of the kind, so no model is loaded here (the tests check it).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from celery import signals
from celery.contrib.testing.worker import start_worker
from helpers import ago, task_as_left, task_row, wait_for
from sqlalchemy import select
from test_memory import drafts_by_task, markers, memories_by_task, snapshot, succeeded_and_failed

from configs import get_settings
from elpis_api.migrate import upgrade
from elpis_worker import tasks
from elpis_worker.celery_app import app
from models import TaskStatus, session_scope
from models.memory import Memory, MemoryKind


@dataclass
class InProcessWorker:
    queue: str  # the only queue it consumes
    agent_queue: str  # where run_task messages go (ELPIS_WORKER__QUEUE); nothing consumes it
    database_url: str  # the tasks' database (ELPIS_DATABASE_URL)
    outcomes: dict[str, tuple[str, Any]] = field(default_factory=dict)  # Celery id -> (state, retval)
    model_requests: list[str] = field(default_factory=list)

    def run(self, task: Any) -> Any:
        """Send `task` through the broker to this worker; what it returned once it ran (there is no
        result backend: the worker's task_postrun signal tells)."""
        sent = task.apply_async(queue=self.queue)
        state, retval = wait_for(
            lambda: self.outcomes.get(sent.id), timeout=120, what=f"the worker to run {task.name}"
        )
        assert state == "SUCCESS", f"{task.name}: {state}: {retval!r}"
        return retval

    def take_agent_messages(self) -> list[tuple[str, list, Any]]:
        """(task name, args, time limits) of the messages waiting on the agent queue, taken off it."""
        taken = []
        with (
            app.connection_for_read() as conn,
            conn.SimpleQueue(self.agent_queue, no_ack=True, accept=["json"]) as queue,
        ):
            while True:
                try:
                    message = queue.get_nowait()
                except queue.Empty:
                    return taken
                args, _kwargs, _embed = message.decode()
                taken.append((message.headers["task"], args, message.headers.get("timelimit")))


@pytest.fixture
def worker(fresh_database: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[InProcessWorker]:
    """An in-process worker on a queue of its own, its tasks on a database of their own (the reconciler
    and consolidation sweep every task there is)."""
    upgrade(fresh_database)
    # The app reads its configuration once, on first use: read it before the settings change below, so
    # the session's app keeps the session's queues.
    app.conf.finalize()
    handle = InProcessWorker(
        queue=f"maintenance-{uuid.uuid4().hex[:8]}",
        agent_queue=f"agent-{uuid.uuid4().hex[:8]}",
        database_url=fresh_database,
    )
    monkeypatch.setenv("ELPIS_DATABASE_URL", fresh_database)
    monkeypatch.setenv("ELPIS_WORKER__QUEUE", handle.agent_queue)
    # conftest's 6 s would make a live heartbeat stale on a slow machine between the test's write and
    # the sweep.
    monkeypatch.setenv("ELPIS_WORKER__STALE_AFTER", "600")
    get_settings.cache_clear()
    # Whatever asks for the model in this process is recorded instead of loading it.
    monkeypatch.setattr(tasks, "get_backend", lambda: handle.model_requests.append("get_backend"))
    # Starting the worker writes these for pool children into this process's environment; the undo
    # takes them out again, so the processes later tests start do not inherit them.
    for name in ("CELERY_LOG_LEVEL", "CELERY_LOG_FILE"):
        monkeypatch.setenv(name, "")

    def record(task_id: str | None = None, state: str | None = None, retval: Any = None, **_: Any) -> None:
        if task_id is not None:
            handle.outcomes[task_id] = (state or "", retval)

    signals.task_postrun.connect(record, weak=False)
    try:
        with start_worker(
            app, pool="threads", concurrency=1, perform_ping_check=False, queues=[handle.queue]
        ):
            yield handle
    finally:
        signals.task_postrun.disconnect(record)
        monkeypatch.undo()
        get_settings.cache_clear()
    assert handle.model_requests == [], "the in-process worker asked for the model"


def test_the_worker_consolidates_finished_tasks_into_memories(worker):
    db = worker.database_url
    done = succeeded_and_failed(db)
    # A task still running: remembered once it finishes, not before.
    task_as_left(db, status=TaskStatus.running, worker_id="busy:7", heartbeat_at=ago(0), started_at=ago(5))

    report = worker.run(tasks.consolidate_memories)
    assert report["ran"] and report["task_ids"] == done and report["tasks_consolidated"] == 2
    assert markers(db) == done
    # Every memory the finished tasks' steps make is stored, each in exactly one memory row.
    assert memories_by_task(db) == drafts_by_task(db, done)
    with session_scope(db) as s:
        kinds = set(s.scalars(select(Memory.kind)))
    assert {MemoryKind.episodic, MemoryKind.procedural} <= kinds

    # Sent again (beat's next tick, a redelivery): nothing more to do, nothing changed.
    before = snapshot(db)
    again = worker.run(tasks.consolidate_memories)
    assert again["ran"] and again["task_ids"] == [] and again["tasks_consolidated"] == 0
    assert snapshot(db) == before


def test_the_worker_sweeps_what_a_fault_left_behind(worker):
    db = worker.database_url
    running = {"status": TaskStatus.running, "started_at": ago(60)}
    never_sent = task_as_left(db, created_at=ago(3600))
    just_queued = task_as_left(db)
    orphaned = task_as_left(db, worker_id="gone-host:4242", heartbeat_at=ago(3600), **running)
    live = task_as_left(db, worker_id="busy-host:7", heartbeat_at=ago(0), **running)
    budget = {**get_settings().budget.model_dump(), "max_seconds": 10}
    hung = task_as_left(
        db,
        status=TaskStatus.running,
        worker_id="hung-host:1",
        heartbeat_at=ago(0),
        started_at=ago(3600),
        budget=budget,
    )

    report = worker.run(tasks.reconcile)
    assert report == {"requeued": [never_sent], "resumed": [orphaned], "published": [], "failed": [hung]}

    # In Postgres: sent again once per grace, the overdue one failed with the reason, the rest as they were.
    assert task_row(db, never_sent).requeued_at is not None
    assert task_row(db, orphaned).requeued_at is not None
    assert task_row(db, just_queued).requeued_at is None
    assert task_row(db, live).status == TaskStatus.running and task_row(db, live).requeued_at is None
    failed = task_row(db, hung)
    assert failed.status == TaskStatus.failed and failed.finished_at is not None
    assert "stopped by the reconciler" in failed.failure_reason

    # On the broker: the worker sent run_task for the two tasks, each with its wall budget's time limits.
    settings = get_settings()
    limits = tasks.run_time_limits(settings.budget.max_seconds, settings)
    expected_limits = [limits["time_limit"], limits["soft_time_limit"]]
    sent = worker.take_agent_messages()
    assert sorted(sent) == sorted(
        [("elpis.run_task", [never_sent], expected_limits), ("elpis.run_task", [orphaned], expected_limits)]
    )
