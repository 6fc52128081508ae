"""Celery tasks and the per-process resident model.

The model is loaded once per worker process at `worker_process_init` (prefork children) and reused by
every task the process runs; `get_backend()` loads it lazily for pools without that signal (solo)."""

from __future__ import annotations

import logging
import threading
import time

from celery import signals
from celery.utils.log import get_task_logger

from configs import get_settings
from elpis_api.stack import resolve_database_url
from elpis_worker.backend import ModelBackend, load_backend
from elpis_worker.celery_app import app
from elpis_worker.store import TaskStore

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
        # The first generation of a fresh process is several times slower than the rest; pay it now.
        started = time.perf_counter()
        backend.chat(
            [{"role": "user", "content": "Say OK."}], schema=None, temperature=0.0, top_p=1.0, max_tokens=4
        )
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


@app.task(name="elpis.run_task", bind=True, acks_late=True, reject_on_worker_lost=True)
def run_task(self, task_id: int) -> str | None:
    """Claim the task row, then run (or resume) the agent loop on it. A delivery is not a claim."""
    from elpis_worker.agent import run_agent

    settings = get_settings()
    store = TaskStore(resolve_database_url())
    claim = store.claim(task_id, stale_after=settings.worker.stale_after)
    if claim is None:
        log.info("task %s is not claimable (finished, cancelled or held by a live worker); dropped", task_id)
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
    from elpis_worker import results

    # Webhook tasks (those with a task_source row): a PR comment learns its head branch first, and the
    # outcome goes back to the repository after; both are no-ops for REST tasks.
    status = results.prepare_source(store, settings, task_id) or run_agent(store, backend, settings, task_id)
    if status is not None:
        results.publish_result(store.url, settings, task_id)
    return status.value if status is not None else None


@app.task(name="elpis.recover_tasks")
def recover_tasks() -> list[int]:
    """Beat: enqueue again the running tasks whose worker stopped heart-beating (a dead host)."""
    settings = get_settings()
    store = TaskStore(resolve_database_url())
    ids = store.orphaned_task_ids(settings.worker.stale_after)
    for task_id in ids:
        run_task.apply_async(args=[task_id], queue=settings.worker.queue)
    if ids:
        log.info("re-enqueued orphaned tasks %s", ids)
    return ids


@app.task(name="elpis.consolidate_memories")
def consolidate_memories() -> dict:
    """Beat (and on demand): finished tasks' steps become long-term memories; see elpis_worker/memory.py.
    Safe to run twice at once and idempotent, so a redelivered or overlapping run is harmless."""
    from elpis_worker.memory import consolidate_memories as consolidate

    return consolidate(resolve_database_url()).as_dict()
