"""The reconciler: beat's sweep (task `elpis.reconcile`, every `worker.reconcile_interval`) that puts
back whatever a fault left behind, so no committed task is lost without a hand.

Postgres is the truth and the broker only carries ids, so anything the database says is pending but
no message will bring to a worker is found here and sent again (the transactional-outbox pattern):

- a `queued` task made more than `worker.queued_grace` seconds ago (the broker was down at submit, or
  the process died between commit and send);
- a `running` task whose heartbeat is older than `worker.stale_after` (its worker died);
- a finished webhook task whose result was never published (its worker died in between);

and a `running` task still running twice `worker.time_limit_margin` past its wall budget (its run
outlived Celery's time limits: a hung holder, or a task that is killed and resumed again and again) is
failed with that reason.

Sending a task twice is harmless: a delivery is not a claim, and `run_task` claims the row, so only
one worker runs it (tests/system/test_reconcile.py). A task is sent again at most once per grace period
(`task.requeued_at`), so a long queue is not flooded with copies. Each action is logged and counted
in `elpis_reconciler_actions_total{action}`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from configs.settings import Settings
from elpis_worker.metrics import observe_reconcile
from elpis_worker.results import unpublished
from elpis_worker.store import TaskStore

log = logging.getLogger(__name__)

__all__ = ["ReconcileReport", "reconcile"]


@dataclass
class ReconcileReport:
    """The task ids each action touched in one sweep."""

    requeued: list[int] = field(default_factory=list)  # queued, never picked up: sent again
    resumed: list[int] = field(default_factory=list)  # running under a dead worker: sent again
    published: list[int] = field(default_factory=list)  # finished, result unpublished: publishing sent
    failed: list[int] = field(default_factory=list)  # past their wall budget: failed

    def as_dict(self) -> dict[str, list[int]]:
        return asdict(self)


def reconcile(
    database_url: str,
    settings: Settings,
    *,
    enqueue_run: Callable[[int], None],
    enqueue_publish: Callable[[int], None],
) -> ReconcileReport:
    """One sweep. `enqueue_run` / `enqueue_publish` send a task id to the broker (raising when it refuses);
    a task whose message could not be sent is left as it was, for the next sweep."""
    store = TaskStore(database_url)
    worker = settings.worker
    report = ReconcileReport()

    # First: an overdue task is failed, not sent again.
    margin = 2 * worker.time_limit_margin
    for task_id, budget in store.overdue_tasks(margin, settings.budget.max_seconds):
        reason = (
            f"still running {margin:g} s past its wall budget of {budget:g} s (twice "
            "worker.time_limit_margin): stopped by the reconciler"
        )
        status = store.fail_running(task_id, reason)
        if status is None:
            continue
        report.failed.append(task_id)
        _count("fail_overdue", task_id, f"{status.value}: {reason}")

    for task_id in store.orphaned_task_ids(worker.stale_after):
        if _send(enqueue_run, task_id, "resume_stale"):
            store.mark_requeued(task_id)
            report.resumed.append(task_id)

    for task_id in store.waiting_task_ids(worker.queued_grace):
        if _send(enqueue_run, task_id, "requeue_queued"):
            store.mark_requeued(task_id)
            report.requeued.append(task_id)

    # The failed overdue tasks' results go out now; the rest wait out the grace period, in which the
    # worker that finished them sends their publishing itself.
    overdue = [task_id for task_id in report.failed if unpublished(database_url, task_id)]
    for task_id in sorted(set(store.unpublished_task_ids(worker.queued_grace)) | set(overdue)):
        if _send(enqueue_publish, task_id, "publish"):
            store.mark_publish_due(task_id)
            report.published.append(task_id)
    return report


def _send(enqueue: Callable[[int], None], task_id: int, action: str) -> bool:
    try:
        enqueue(task_id)
    except Exception as exc:  # noqa: BLE001 - the broker is down: the next sweep tries again
        log.warning("reconciler: could not %s task %s: %s", action.replace("_", " "), task_id, exc)
        return False
    _count(action, task_id)
    return True


def _count(action: str, task_id: int, detail: str = "") -> None:
    log.info("reconciler: %s task %s%s", action, task_id, f" ({detail})" if detail else "")
    observe_reconcile(action)
