"""The reconciler (elpis_worker/reconcile.py) against the real database: what it sends again, what it
leaves alone, what it fails, and what /metrics counts. The sweep is called with the enqueue callables
injected (the database is shared by the whole session, so the tests look only at their own tasks)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from helpers import SAMPLES, ago, steps_of, task_as_left, task_row, wait_finished, wait_for
from test_observability import samples, value

from configs import get_settings
from configs.settings import Settings
from elpis_worker.reconcile import ReconcileReport, reconcile
from elpis_worker.store import LostClaim, TaskStore
from models import StepKind, Task, TaskStatus, session_scope

FIX_TASK = {
    "repo": str(SAMPLES / "calc"),
    "instruction": "Fix the failing test",
    "test_command": "python -m pytest -q",
}


def config(**worker: Any) -> Settings:
    settings = get_settings()
    return settings.model_copy(update={"worker": settings.worker.model_copy(update=worker)})


def sweep(db_url: str, settings: Settings) -> tuple[ReconcileReport, list[int], list[int]]:
    runs: list[int] = []
    publishes: list[int] = []
    report = reconcile(db_url, settings, enqueue_run=runs.append, enqueue_publish=publishes.append)
    return report, runs, publishes


def test_a_queued_task_past_the_grace_is_sent_again_once_per_grace(db_url):
    old = task_as_left(db_url, created_at=ago(600))
    fresh = task_as_left(db_url)
    settings = config(queued_grace=300)

    report, runs, _ = sweep(db_url, settings)
    assert old in report.requeued and old in runs
    assert fresh not in runs
    assert task_row(db_url, old).requeued_at is not None and task_row(db_url, old).status == TaskStatus.queued

    # Its new message may still be waiting behind others: not sent again within the grace...
    _, runs, _ = sweep(db_url, settings)
    assert old not in runs
    # ...but once more after it.
    with session_scope(db_url) as s:
        s.get(Task, old).requeued_at = ago(600)
    assert old in sweep(db_url, settings)[1]


def test_a_running_task_with_a_stale_heartbeat_is_sent_again(db_url):
    stale = task_as_left(
        db_url,
        status=TaskStatus.running,
        worker_id="gone-host:4242",
        heartbeat_at=ago(3600),
        started_at=ago(60),
    )
    live = task_as_left(
        db_url, status=TaskStatus.running, worker_id="busy-host:7", heartbeat_at=ago(1), started_at=ago(60)
    )
    settings = config(stale_after=60)

    report, runs, _ = sweep(db_url, settings)
    assert stale in report.resumed and stale in runs
    assert live not in runs and stale not in report.failed
    assert stale not in sweep(db_url, settings)[1]  # not again within stale_after


def test_a_finished_webhook_task_without_its_result_gets_its_publishing(db_url):
    finished = {"status": TaskStatus.succeeded, "finished_at": ago(600)}
    lost = task_as_left(db_url, webhook=True, **finished)
    published = task_as_left(db_url, webhook=True, source={"published_at": ago(500)}, **finished)
    retry_due_later = task_as_left(
        db_url,
        webhook=True,
        source={"publish_retry_at": datetime.now(UTC) + timedelta(seconds=60)},
        **finished,
    )
    just_finished = task_as_left(db_url, webhook=True, status=TaskStatus.failed, finished_at=ago(1))
    rest_task = task_as_left(db_url, **finished)
    settings = config(queued_grace=300)

    report, runs, publishes = sweep(db_url, settings)
    assert lost in report.published and lost in publishes
    for other in (published, retry_due_later, just_finished, rest_task):
        assert other not in publishes
    assert lost not in runs
    assert lost not in sweep(db_url, settings)[2]  # its try was just sent: not again within the grace


def test_a_task_past_its_wall_budget_is_failed_with_the_reason(db_url):
    running = {"status": TaskStatus.running, "worker_id": "hung-host:1", "heartbeat_at": ago(0)}
    budget = {**get_settings().budget.model_dump(), "max_seconds": 10}
    # Budget 10 s, margin 1 s: overdue 12 s after its start.
    overdue = task_as_left(db_url, started_at=ago(20), budget=budget, **running)
    in_time = task_as_left(db_url, started_at=ago(5), budget=budget, **running)
    cancelled = task_as_left(db_url, started_at=ago(20), budget=budget, cancel_requested=True, **running)
    webhook = task_as_left(db_url, webhook=True, started_at=ago(20), budget=budget, **running)

    report, runs, publishes = sweep(db_url, config(time_limit_margin=1))
    task = task_row(db_url, overdue)
    assert task.status == TaskStatus.failed and task.finished_at is not None
    assert "2 s past its wall budget of 10 s" in task.failure_reason
    assert "stopped by the reconciler" in task.failure_reason
    assert task_row(db_url, in_time).status == TaskStatus.running
    assert task_row(db_url, cancelled).status == TaskStatus.cancelled  # a cancel wins
    assert {overdue, cancelled, webhook} <= set(report.failed) and in_time not in report.failed
    assert webhook in publishes and overdue not in publishes  # the webhook task's result goes out now
    assert overdue not in runs
    # The hung holder, should it wake up, writes nothing more.
    with pytest.raises(LostClaim):
        TaskStore(db_url, worker_id="hung-host:1").append_step(overdue, StepKind.think, 1, content="late")


def test_every_action_is_counted_in_metrics(api, db_url):
    task_as_left(db_url, created_at=ago(600))
    task_as_left(
        db_url, status=TaskStatus.running, worker_id="gone:1", heartbeat_at=ago(3600), started_at=ago(60)
    )
    task_as_left(db_url, webhook=True, status=TaskStatus.succeeded, finished_at=ago(600))
    task_as_left(
        db_url,
        status=TaskStatus.running,
        worker_id="hung:1",
        heartbeat_at=ago(0),
        started_at=ago(60),
        budget={"max_seconds": 1},
    )
    actions = ("requeue_queued", "resume_stale", "publish", "fail_overdue")
    before = samples(api.get("/metrics").text)
    sweep(db_url, config(queued_grace=300, stale_after=60, time_limit_margin=1))
    after = samples(api.get("/metrics").text)
    for action in actions:
        moved = value(after, "elpis_reconciler_actions_total", action=action) - value(
            before, "elpis_reconciler_actions_total", action=action
        )
        assert moved >= 1, action


def test_a_task_the_broker_refuses_is_left_for_the_next_sweep(db_url):
    old = task_as_left(db_url, created_at=ago(600))

    def down(task_id: int) -> None:
        raise ConnectionError("broker down")

    report = reconcile(db_url, config(queued_grace=300), enqueue_run=down, enqueue_publish=down)
    assert old not in report.requeued
    assert task_row(db_url, old).requeued_at is None  # the next sweep sends it
    assert old in sweep(db_url, config(queued_grace=300))[1]


def test_a_task_submitted_while_the_broker_was_down_is_worked_once(api, db_url, start_worker):
    """The API keeps the task queued (201); the reconciler sends it once the broker is back, and a
    second message for it (a delivery is not a claim) is dropped: the task runs once."""

    def down(task_id: int) -> None:
        raise ConnectionError("broker down")

    api.app.state.enqueue = down
    response = api.post("/v1/batches", json={"tasks": [FIX_TASK]})
    assert response.status_code == 201, response.text
    [task_id] = [t["id"] for t in response.json()["tasks"]]
    with session_scope(db_url) as s:
        s.get(Task, task_id).created_at = ago(600)

    worker = start_worker(
        ELPIS_MODEL__BACKEND="scripted", ELPIS_MODEL__SCRIPT=str(SAMPLES / "fix_script.json")
    )

    def send_ours(sent_id: int) -> None:
        # Other tests' old queued tasks are in the same database: only this one goes to the worker.
        if sent_id == task_id:
            worker.send(sent_id)

    report = reconcile(
        db_url, config(queued_grace=300), enqueue_run=send_ours, enqueue_publish=lambda _: None
    )
    assert task_id in report.requeued
    worker.send(task_id)  # a second message for the same queued task

    task = wait_finished(db_url, task_id)
    assert task.status == TaskStatus.succeeded, (task.failure_reason, worker.log_text()[-3000:])
    assert task.attempts == 1
    wait_for(lambda: f"task {task_id} is not claimable" in worker.log_text(), timeout=30, what="the drop")
    steps = steps_of(db_url, task_id)
    assert [s.seq for s in steps] == list(range(len(steps)))  # one run: no duplicate seq


def test_beat_runs_the_sweep_on_the_maintenance_queue(db_url, monkeypatch):
    from elpis_worker import tasks
    from elpis_worker.celery_app import MAINTENANCE_QUEUE, app

    entry = app.conf.beat_schedule["reconcile"]
    assert (
        entry["task"] == "elpis.reconcile" and entry["schedule"] == get_settings().worker.reconcile_interval
    )
    assert app.conf.task_routes["elpis.reconcile"] == {"queue": MAINTENANCE_QUEUE}

    old = task_as_left(db_url, created_at=ago(3600))
    sent: list[tuple[int, str | None]] = []
    monkeypatch.setattr(tasks, "enqueue_run_task", lambda task_id, url=None: sent.append((task_id, url)))
    monkeypatch.setattr(tasks, "enqueue_publish", lambda task_id: None)
    report = tasks.reconcile.apply().get()
    assert old in report["requeued"] and (old, db_url) in sent
