"""Celery tasks and the per-process resident model.

The model is loaded once per worker process at `worker_process_init` (prefork children; Celery 5's solo
pool sends it too) and reused by every task the process runs; `get_backend()` loads it lazily where
the signal never came (the threads pool of the in-process testing worker, a task called directly).

Every run of `elpis.run_task` carries Celery time limits derived from the task's wall budget
(`enqueue_run_task`): the loop checks its budget only between turns, so a hung generation or tool would
otherwise hold a worker process for ever.

A worker told to shut down (SIGTERM to its main process) does not wait out its agent tasks: each stops
after the step it is in, gives its task back and sends it again (elpis_worker/shutdown.py)."""

from __future__ import annotations

import logging
import threading
import time

from celery import signals
from celery.exceptions import SoftTimeLimitExceeded
from celery.utils.log import get_task_logger

from configs import get_settings
from configs.servers import resolve_database_url
from configs.settings import Settings
from elpis_worker.backend import ModelBackend, load_backend
from elpis_worker.celery_app import app
from elpis_worker.metrics import observe_publish
from elpis_worker.prompts import WARMUP_MESSAGES
from elpis_worker.shutdown import WorkerShuttingDown
from elpis_worker.store import LostClaim, TaskStore
from models import TaskStatus

log = get_task_logger(__name__)

_backend: ModelBackend | None = None
_worker_process_id: int | None = None
_lock = threading.Lock()


def _load() -> ModelBackend:
    global _backend, _worker_process_id
    settings = get_settings()
    started = time.perf_counter()
    backend = load_backend(settings.model)
    load_seconds = time.perf_counter() - started
    warmup_seconds = None
    if settings.model.warmup:
        # The first generation of a fresh process is several times slower than the rest; pay it now, on
        # the system prompt, which then stays in the KV cache for the first task's prompt.
        started = time.perf_counter()
        backend.chat(WARMUP_MESSAGES, schema=None, temperature=0.0, top_p=1.0, max_tokens=4)
        warmup_seconds = time.perf_counter() - started
    store = TaskStore(resolve_database_url())
    _worker_process_id = store.record_model_load(
        backend.name, backend.model_path, load_seconds, warmup_seconds
    )
    logging.getLogger(__name__).info(
        "model loaded once for this process: %s (%s) in %.2f s, warm-up %.2f s",
        backend.model_path,
        backend.name,
        load_seconds,
        warmup_seconds or 0.0,
    )
    _backend = backend
    return backend


def get_backend() -> ModelBackend:
    with _lock:
        return _backend if _backend is not None else _load()


@signals.worker_init.connect
def _require_sandbox(**_: object) -> None:
    """A worker runs model-written commands: it refuses to start where they could not be sandboxed
    (no bubblewrap, no user namespaces), unless the config says `tools.sandbox: none` explicitly."""
    from elpis_worker.sandbox import Sandbox

    check = Sandbox.from_settings(get_settings()).check()
    logger = logging.getLogger(__name__)
    if not check.ok:
        logger.critical("refusing to start: %s", check.detail)
        # SystemExit, not an exception: Celery logs and ignores exceptions raised by signal handlers.
        raise SystemExit(f"elpis worker: refusing to start: {check.detail}")
    for warning in check.warnings:
        logger.warning("sandbox: %s", warning)
    if check.kind == "none":
        logger.warning("sandbox: %s", check.detail)
    else:
        logger.info("sandbox: %s", check.detail)


@signals.worker_process_init.connect
def _load_model_in_child(**_: object) -> None:
    from sqlalchemy.orm import close_all_sessions

    from models.db import get_engine

    # Connections inherited from the parent must not be shared with it.
    close_all_sessions()
    get_engine.cache_clear()
    get_backend()


# Seconds between Celery's soft time limit on a run and its hard limit (the process is killed).
HARD_LIMIT_AFTER_SOFT_S = 30.0


def run_time_limits(max_seconds: float, settings: Settings) -> dict[str, float]:
    """Celery's limits for one run of a task whose wall budget is `max_seconds`: the soft limit comes
    `worker.time_limit_margin` seconds after the budget (room for the turn in progress and the final
    test run) and makes the run fail the task with the reason; the hard limit kills a process that did
    not stop (its message comes back, and the next run finds the budget spent)."""
    soft = max_seconds + settings.worker.time_limit_margin
    return {"soft_time_limit": soft, "time_limit": soft + HARD_LIMIT_AFTER_SOFT_S}


def enqueue_run_task(task_id: int, database_url: str | None = None) -> None:
    """Send `elpis.run_task` for a task, with the time limits of its own wall budget (read from its row).
    Raises when the broker refuses the message; the task stays queued for the reconciler."""
    settings = get_settings()
    store = TaskStore(database_url or resolve_database_url())
    limits = run_time_limits(store.wall_budget(task_id, settings.budget.max_seconds), settings)
    run_task.apply_async(args=[task_id], queue=settings.worker.queue, **limits)


def enqueue_publish(task_id: int) -> None:
    """Send `elpis.publish_result` for a finished webhook task. On the agent queue: the workers there
    hold the forge credentials and, usually, the task's workspace."""
    publish_result.apply_async(args=[task_id], queue=get_settings().worker.queue)


def _publish_later(task_id: int) -> None:
    try:
        enqueue_publish(task_id)
    except Exception as exc:  # noqa: BLE001 - the outcome is stored; the reconciler enqueues it later
        log.warning("task %s: could not enqueue publishing (%s); the reconciler will", task_id, exc)


@app.task(name="elpis.run_task", bind=True, acks_late=True, reject_on_worker_lost=True)
def run_task(self, task_id: int) -> str | None:
    """Claim the task row, then run (or resume) the agent loop on it. A delivery is not a claim.

    A webhook task's result is published by its own task, `elpis.publish_result`, enqueued once the
    outcome is stored, and again whenever a delivery finds the task finished but its result not
    published (the worker died in between, or the broker refused the message)."""
    from elpis_worker import results
    from elpis_worker.agent import run_agent

    settings = get_settings()
    store = TaskStore(resolve_database_url())
    claim = store.claim(task_id, stale_after=settings.worker.stale_after)
    if claim is None:
        if results.unpublished(store.url, task_id):
            log.info("task %s is finished but its result is not published; publishing it", task_id)
            _publish_later(task_id)
        else:
            log.info(
                "task %s is not claimable (finished, cancelled or held by a live worker); dropped", task_id
            )
        return None
    log.info(
        "task %s claimed by %s (attempt %s%s)",
        task_id,
        claim.worker_id,
        claim.attempt,
        ", resuming" if claim.resumed else "",
    )
    backend = get_backend()
    if _worker_process_id is not None:
        store.count_task_run(_worker_process_id)
    try:
        # A PR comment learns its head branch first (a no-op for REST tasks).
        status = results.prepare_source(store, settings, task_id) or run_agent(
            store, backend, settings, task_id
        )
    except SoftTimeLimitExceeded:
        status = _stop_at_time_limit(store, task_id, self.request.timelimit)
    except WorkerShuttingDown as stopped:
        status = _release_for_shutdown(store, task_id, str(stopped))
    if status is not None and results.unpublished(store.url, task_id):
        _publish_later(task_id)
    return status.value if status is not None else None


def _stop_at_time_limit(store: TaskStore, task_id: int, timelimit: tuple | None) -> TaskStatus | None:
    """Celery's soft time limit fired: the run outlived its wall budget by worker.time_limit_margin (a
    hung generation or tool). The task is failed with that reason rather than left running; its steps
    and last diff stay. None when another worker holds it by now."""
    soft = timelimit[1] if timelimit else None
    limit = f" of {soft:g} s (the wall budget plus worker.time_limit_margin)" if soft else ""
    reason = f"stopped by the worker's time limit{limit}: a generation or tool did not return"
    log.warning("task %s: %s", task_id, reason)
    try:
        return store.finish(task_id, TaskStatus.failed, reason=reason)
    except LostClaim:
        return None


def _release_for_shutdown(store: TaskStore, task_id: int, why: str) -> TaskStatus | None:
    """The worker is shutting down and the loop stopped between two steps: give the task back and send
    it again at once, so another worker resumes it from its persisted steps. This run's own message is
    then acknowledged (or, if the worker's broker connection is already gone, handed out again: a
    second delivery is harmless). When the message cannot be sent, the task stays `queued` and the
    reconciler sends it after `worker.queued_grace`. None when the task went back to the queue (or
    another worker holds it by now); `cancelled` when a cancel was requested meanwhile."""
    try:
        status = store.release(task_id)
    except LostClaim as exc:
        log.warning("%s; not releasing it", exc)
        return None
    if status.finished:
        log.info("task %s: %s; it was cancelled meanwhile, so it is stored as %s", task_id, why, status)
        return status
    steps = len(store.load_steps(task_id))
    log.info(
        "task %s: worker shutting down, task released after %s steps; sending it again for another worker",
        task_id,
        steps,
        extra={"task_id": task_id, "reason": why},
    )
    try:
        enqueue_run_task(task_id, store.url)
    except Exception as exc:  # noqa: BLE001 - the task is queued in Postgres: the reconciler sends it
        log.warning(
            "task %s: could not send it again (%s); the reconciler will after worker.queued_grace",
            task_id,
            exc,
        )
    return None


@app.task(
    name="elpis.publish_result", bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None
)
def publish_result(self, task_id: int) -> str:
    """Push a finished webhook task's change and comment back (elpis_worker/results.py), one try per
    run; a transient failure is tried again after a backoff. Idempotent, so a redelivery, a retry and
    the reconciler's message are harmless. Retries are bounded by the tries recorded on the task's
    source row (worker.publish_max_retries), not by Celery's count, which a new message starts again."""
    from elpis_worker import results

    outcome = results.publish_result(resolve_database_url(), get_settings(), task_id)
    log.info("task %s: publishing try: %s", task_id, outcome.state)
    observe_publish(outcome.state)
    if outcome.retry_in is not None:
        raise self.retry(countdown=outcome.retry_in)
    return outcome.state


@app.task(name="elpis.reconcile")
def reconcile() -> dict[str, list[int]]:
    """Beat, every worker.reconcile_interval: send again what a fault left behind (see
    elpis_worker/reconcile.py)."""
    from elpis_worker.reconcile import reconcile as sweep

    database_url = resolve_database_url()
    report = sweep(
        database_url,
        get_settings(),
        enqueue_run=lambda task_id: enqueue_run_task(task_id, database_url),
        enqueue_publish=enqueue_publish,
    )
    return report.as_dict()


@app.task(name="elpis.consolidate_memories")
def consolidate_memories() -> dict:
    """Beat (and on demand): finished tasks' steps become long-term memories; see elpis_worker/memory.py.
    Safe to run twice at once and idempotent, so a redelivered or overlapping run is harmless."""
    from elpis_worker.memory import consolidate_memories as consolidate

    return consolidate(resolve_database_url()).as_dict()
