"""Warm shutdown that reaches the pool processes: a worker told to stop (SIGTERM to its main process)
stops its agent tasks after the step each is in, instead of after the whole task.

Celery's warm shutdown stops taking messages and waits for the running tasks to return. An agent task
runs up to its wall budget (minutes), far past any deploy's grace period, after which the process is
killed and its task waits for a takeover. So the main process raises a flag when the shutdown begins
(`worker_shutting_down`, sent only in the main process), and the agent loop looks at it between steps:
it raises `WorkerShuttingDown`, and `run_task` gives the task back (queued again, no holder, its steps
kept) and sends it again, so another worker resumes it from its persisted steps.

The flag is one byte of anonymous shared memory mapped in the main process at `worker_init`, before the
prefork pool forks its children, so every pool process (and any it starts later in place of one that
died) shares it. Setting and reading a byte takes no lock, so it is safe in a signal handler; with the
solo or threads pool it is the same process's memory. Where the pool does not fork (billiard's spawn or
forkserver start methods) the children never see the flag: they finish their tasks, as Celery would.

A SIGTERM sent straight to a pool process (to the whole process group, as systemd's default
`KillMode=control-group` does) still kills it as before; its task is resumed by the next worker like
any killed one's. Send SIGTERM to the main process only (docker, Kubernetes and `KillMode=mixed` do).
"""

from __future__ import annotations

import logging
import mmap

from celery import signals

__all__ = ["WorkerShuttingDown", "prepare", "request_stop", "stop_requested"]

log = logging.getLogger(__name__)

_flag: mmap.mmap | None = None


class WorkerShuttingDown(Exception):
    """The worker is shutting down: the loop stopped between two steps and the task is to be released."""


def prepare() -> None:
    """Map the shared flag (cleared); in the worker's main process, before the pool starts."""
    global _flag
    if _flag is None:
        _flag = mmap.mmap(-1, 1)  # MAP_SHARED | MAP_ANONYMOUS: forked children share the page
    _flag[0] = 0


def request_stop() -> None:
    """Ask every agent task of this worker (every pool process) to stop after its current step."""
    if _flag is not None:
        _flag[0] = 1


def stop_requested() -> bool:
    """Whether this process's worker is shutting down. Always False outside a worker (tests, the CLI)."""
    return _flag is not None and _flag[0] == 1


@signals.worker_init.connect
def _prepare_flag(**_: object) -> None:
    prepare()


@signals.worker_shutting_down.connect
def _raise_flag(sig: str | None = None, how: str | None = None, **_: object) -> None:
    # Runs inside the main process's signal handler: set the byte, then only a log line.
    request_stop()
    log.info("%s shutdown (%s): agent tasks stop after their current step and are released", how, sig)
