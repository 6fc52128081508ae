"""Everything the worker writes to Postgres. The task row is the lock: a worker claims it atomically
and every later write is fenced on that claim, so a worker that lost its task cannot write into it."""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update

from elpis_worker.metrics import observe_finish, observe_step
from models import Step, StepKind, Task, TaskStatus, WorkerProcess, session_scope
from models.webhooks import TaskSource

log = logging.getLogger(__name__)


class LostClaim(Exception):
    """Another worker took the task over (our heartbeat went stale); stop without writing."""


class Cancelled(Exception):
    """The task was cancelled while it ran."""


def current_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _holder_is_dead(worker_id: str | None) -> bool:
    """True when the holder ran on this host and its process is gone (a killed Celery child). A holder
    on another host is judged by its heartbeat alone."""
    if not worker_id or ":" not in worker_id:
        return False
    host, _, pid = worker_id.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@dataclass(frozen=True)
class Claim:
    task_id: int
    worker_id: str
    attempt: int
    resumed: bool


class TaskStore:
    def __init__(self, database_url: str, worker_id: str | None = None) -> None:
        self.url = database_url
        self.worker_id = worker_id or current_worker_id()

    # --- the claim ---------------------------------------------------------------------------
    def claim(self, task_id: int, stale_after: float) -> Claim | None:
        """Take the task if it is queued, or running under a dead worker (stale heartbeat, or a process
        on this host that no longer exists). None when it is finished, unknown or held by a live worker."""
        with session_scope(self.url) as s:
            task = s.get(Task, task_id)
            if task is None:
                log.warning("task %s does not exist; dropping the message", task_id)
                return None
            holder = task.worker_id
            if task.status == TaskStatus.running and holder == self.worker_id:
                # Our own process got the same message again (redelivery): we are the holder.
                takeover_ok = True
            else:
                takeover_ok = _holder_is_dead(holder)
            stale_before = datetime.now(UTC) - timedelta(seconds=stale_after)
            free = [Task.heartbeat_at.is_(None), Task.heartbeat_at < stale_before]
            if takeover_ok:
                free.append(Task.worker_id == holder)
            running_free = and_(Task.status == TaskStatus.running, or_(*free))
            row = s.execute(
                update(Task)
                .where(
                    Task.id == task_id,
                    Task.cancel_requested.is_(False),
                    or_(Task.status == TaskStatus.queued, running_free),
                )
                .values(
                    status=TaskStatus.running,
                    worker_id=self.worker_id,
                    heartbeat_at=func.now(),
                    attempts=Task.attempts + 1,
                    started_at=func.coalesce(Task.started_at, func.now()),
                )
                .returning(Task.attempts)
            ).first()
            if row is None:
                if task.cancel_requested and not task.status.finished:
                    task.status = TaskStatus.cancelled
                    task.failure_reason = task.failure_reason or "cancelled before it started"
                    task.finished_at = datetime.now(UTC)
                return None
            has_steps = s.scalar(select(func.count()).select_from(Step).where(Step.task_id == task_id))
            return Claim(task_id, self.worker_id, row.attempts, resumed=bool(has_steps))

    def heartbeat(self, task_id: int) -> bool:
        with session_scope(self.url) as s:
            result = s.execute(
                update(Task)
                .where(
                    Task.id == task_id, Task.worker_id == self.worker_id, Task.status == TaskStatus.running
                )
                .values(heartbeat_at=func.now())
            )
            return result.rowcount == 1

    # --- reads --------------------------------------------------------------------------------
    def load_task(self, task_id: int) -> Task:
        with session_scope(self.url) as s:
            task = s.get(Task, task_id)
            if task is None:
                raise LookupError(f"task {task_id} not found")
            s.expunge(task)
            return task

    def load_steps(self, task_id: int) -> list[Step]:
        with session_scope(self.url) as s:
            steps = list(s.scalars(select(Step).where(Step.task_id == task_id).order_by(Step.seq)))
            for step in steps:
                s.expunge(step)
            return steps

    # --- fenced writes ------------------------------------------------------------------------
    def _locked_task(self, s: Any, task_id: int, *, allow_cancelled: bool = False) -> Task:
        task = s.execute(select(Task).where(Task.id == task_id).with_for_update()).scalar_one()
        if task.worker_id != self.worker_id or task.status != TaskStatus.running:
            raise LostClaim(f"task {task_id} is no longer held by {self.worker_id}")
        if task.cancel_requested and not allow_cancelled:
            raise Cancelled(f"task {task_id} was cancelled")
        return task

    def append_step(
        self, task_id: int, kind: StepKind, turn: int, *, workspace_diff: str | None = None, **fields: Any
    ) -> Step:
        """Write one step as it happens, numbered under the task's row lock so `seq` never repeats."""
        with session_scope(self.url) as s:
            task = self._locked_task(s, task_id)
            last = s.scalar(select(func.max(Step.seq)).where(Step.task_id == task_id))
            step = Step(
                task_id=task_id,
                seq=0 if last is None else last + 1,
                turn=turn,
                kind=kind,
                worker_id=self.worker_id,
                **fields,
            )
            s.add(step)
            task.heartbeat_at = datetime.now(UTC)
            task.prompt_tokens += fields.get("prompt_tokens") or 0
            task.completion_tokens += fields.get("completion_tokens") or 0
            if workspace_diff is not None:
                task.workspace_diff = workspace_diff
            if kind == StepKind.emotion and fields.get("emotion"):
                task.emotion = fields["emotion"].get("after", fields["emotion"])
            s.flush()
            s.expunge(step)
        observe_step(kind, fields)  # after the commit: only stored steps count
        return step

    def record_tests(self, task_id: int, passed: bool | None, exit_code: int | None, output: str) -> None:
        with session_scope(self.url) as s:
            task = self._locked_task(s, task_id, allow_cancelled=True)
            task.test_passed, task.test_exit_code, task.test_output = passed, exit_code, output

    def finish(
        self,
        task_id: int,
        status: TaskStatus,
        *,
        reason: str | None = None,
        summary: str | None = None,
        workspace_diff: str | None = None,
    ) -> TaskStatus:
        """Store the outcome and return the status stored. A cancel requested before this (during the
        final test run, say) wins over the outcome: the task is stored as cancelled, so its result is
        not published."""
        with session_scope(self.url) as s:
            task = self._locked_task(s, task_id, allow_cancelled=True)
            if task.cancel_requested and status != TaskStatus.cancelled:
                log.info("task %s was cancelled before it could be stored as %s", task_id, status.value)
                status, reason = TaskStatus.cancelled, "cancelled by request"
            task.status = status
            task.failure_reason = reason
            task.summary = summary
            if workspace_diff is not None:
                task.workspace_diff = workspace_diff
            task.finished_at = datetime.now(UTC)
            task.heartbeat_at = datetime.now(UTC)
            started_at = task.started_at
        observe_finish(status, started_at)
        return status

    def release(self, task_id: int) -> TaskStatus:
        """Give a task we hold back (our worker is shutting down): `queued` again with no holder, its
        steps and diff kept, so the next claim resumes it. `requeued_at` is set, so the reconciler sends
        it again only if no message brings it to a worker within `worker.queued_grace`. A cancel
        requested meanwhile wins: the task is stored as cancelled instead. Returns the status stored;
        raises LostClaim when another worker holds the task by now."""
        with session_scope(self.url) as s:
            task = self._locked_task(s, task_id, allow_cancelled=True)
            if task.cancel_requested:
                task.status, task.failure_reason = TaskStatus.cancelled, "cancelled by request"
                task.finished_at = datetime.now(UTC)
            else:
                task.status, task.worker_id, task.heartbeat_at = TaskStatus.queued, None, None
                task.requeued_at = datetime.now(UTC)
            status, started_at = task.status, task.started_at
        if status.finished:
            observe_finish(status, started_at)
        return status

    # --- worker processes ---------------------------------------------------------------------
    def record_model_load(
        self, backend: str, model_path: str, load_seconds: float, warmup_seconds: float | None
    ) -> int:
        host, _, pid = self.worker_id.rpartition(":")
        with session_scope(self.url) as s:
            row = WorkerProcess(
                worker_id=self.worker_id,
                hostname=host,
                pid=int(pid),
                backend=backend,
                model_path=model_path,
                load_seconds=load_seconds,
                warmup_seconds=warmup_seconds,
            )
            s.add(row)
            s.flush()
            return row.id

    def count_task_run(self, worker_process_id: int) -> None:
        with session_scope(self.url) as s:
            s.execute(
                update(WorkerProcess)
                .where(WorkerProcess.id == worker_process_id)
                .values(tasks_run=WorkerProcess.tasks_run + 1)
            )

    # --- recovery (the reconciler, elpis_worker/reconcile.py) -----------------------------------
    def wall_budget(self, task_id: int, default: float) -> float:
        """The task's wall-clock budget in seconds (its own, merged over the config's when it was made)."""
        with session_scope(self.url) as s:
            budget = s.scalar(select(Task.budget).where(Task.id == task_id))
        return float((budget or {}).get("max_seconds") or default)

    def orphaned_task_ids(self, stale_after: float) -> list[int]:
        """Running tasks whose holder stopped heart-beating (its host died, say), not sent again within
        `stale_after`: candidates to enqueue again. A second delivery is harmless: the claim lets only
        one worker run a task."""
        stale_before = datetime.now(UTC) - timedelta(seconds=stale_after)
        with session_scope(self.url) as s:
            return list(
                s.scalars(
                    select(Task.id)
                    .where(
                        Task.status == TaskStatus.running,
                        Task.heartbeat_at < stale_before,
                        or_(Task.requeued_at.is_(None), Task.requeued_at < stale_before),
                    )
                    .order_by(Task.id)
                )
            )

    def waiting_task_ids(self, grace: float) -> list[int]:
        """Queued tasks made (or last sent again) more than `grace` seconds ago: their message may never
        have reached the broker (it was down, or the process died between commit and send)."""
        before = datetime.now(UTC) - timedelta(seconds=grace)
        with session_scope(self.url) as s:
            return list(
                s.scalars(
                    select(Task.id)
                    .where(
                        Task.status == TaskStatus.queued,
                        Task.cancel_requested.is_(False),
                        func.coalesce(Task.requeued_at, Task.created_at) < before,
                    )
                    .order_by(Task.id)
                )
            )

    def unpublished_task_ids(self, grace: float) -> list[int]:
        """Finished webhook tasks whose result is not published, finished more than `grace` seconds ago
        and with no try of publishing due (a retry waiting out its backoff is left alone)."""
        before = datetime.now(UTC) - timedelta(seconds=grace)
        with session_scope(self.url) as s:
            return list(
                s.scalars(
                    select(Task.id)
                    .join(TaskSource, TaskSource.task_id == Task.id)
                    .where(
                        Task.status.in_([status for status in TaskStatus if status.finished]),
                        Task.finished_at < before,
                        TaskSource.published_at.is_(None),
                        or_(TaskSource.publish_retry_at.is_(None), TaskSource.publish_retry_at < before),
                    )
                    .order_by(Task.id)
                )
            )

    def mark_requeued(self, task_id: int) -> None:
        with session_scope(self.url) as s:
            s.execute(update(Task).where(Task.id == task_id).values(requeued_at=func.now()))

    def mark_publish_due(self, task_id: int) -> None:
        """A try of publishing was just sent: the next sweep leaves the task alone for a grace period."""
        with session_scope(self.url) as s:
            s.execute(
                update(TaskSource).where(TaskSource.task_id == task_id).values(publish_retry_at=func.now())
            )

    def overdue_tasks(self, margin: float, default_budget: float) -> list[tuple[int, float]]:
        """Running tasks started more than their wall budget plus `margin` seconds ago, with that
        budget: their run outlived every limit (a hung holder, or a task resumed again and again)."""
        now = datetime.now(UTC)
        with session_scope(self.url) as s:
            rows = s.execute(
                select(Task.id, Task.started_at, Task.budget)
                .where(Task.status == TaskStatus.running, Task.started_at.is_not(None))
                .order_by(Task.id)
            ).all()
        overdue = []
        for task_id, started_at, budget in rows:
            seconds = float((budget or {}).get("max_seconds") or default_budget)
            if now - started_at > timedelta(seconds=seconds + margin):
                overdue.append((task_id, seconds))
        return overdue

    def fail_running(self, task_id: int, reason: str) -> TaskStatus | None:
        """Finish a running task that no claim of ours holds (the reconciler's stop): failed with
        `reason`, or cancelled when a cancel was requested. Its holder, if alive, loses its claim at its
        next write. None when the task is no longer running."""
        with session_scope(self.url) as s:
            task = s.execute(select(Task).where(Task.id == task_id).with_for_update()).scalar_one_or_none()
            if task is None or task.status != TaskStatus.running:
                return None
            if task.cancel_requested:
                task.status, task.failure_reason = TaskStatus.cancelled, "cancelled by request"
            else:
                task.status, task.failure_reason = TaskStatus.failed, reason
            task.finished_at = datetime.now(UTC)
            status, started_at = task.status, task.started_at
        observe_finish(status, started_at)
        return status
