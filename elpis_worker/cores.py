"""The host's cores, shared among the worker processes that are generating at the moment.

Each worker process keeps `model.threads` llama.cpp threads (1 on this 2-core machine: two processes with
one thread each decode 1.23x faster together than one with two). But a process generating alone leaves
the other cores idle: the last task of a batch, a lone webhook task, the other process running a tool.
With `model.share_idle_cores`, a process takes `cores // processes generating now` threads (never fewer
than `model.threads`), checked before each prompt evaluation and every few decoded tokens, so a second
process starting to generate takes its core back within a few tokens.

Which processes are generating is a directory of lock files, one per generating process, named by its
pid and held with `flock` for the generation (a process that dies drops its lock with it). The
directory is per user and per host (the temporary directory), not per Elpis home: two stacks on one
machine share its cores too.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Decoded tokens between two looks at how many processes are generating: a look costs tens of
# microseconds, a token tens of milliseconds.
CHECK_EVERY = 8


def host_cores() -> int:
    """The cores this process may run on (its CPU affinity, which a container's cpuset narrows)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_directory() -> Path:
    return Path(tempfile.gettempdir()) / f"elpis-generating-{os.getuid()}"


class CoreShare:
    """How many threads this process's generation may use now; `fit` sets them on the model."""

    def __init__(self, floor: int, cores: int | None = None, directory: Path | None = None) -> None:
        self.floor = max(1, floor)
        self.cores = cores or host_cores()
        self.directory = directory or default_directory()
        self.current: int | None = None  # the thread count last set on the model
        self.disabled = False  # the lock directory could not be used: `floor` threads

    @contextlib.contextmanager
    def generating(self) -> Iterator[CoreShare]:
        """Mark this process as generating (its lock file held) for the block. Where the directory cannot
        be used, the process keeps `floor` threads from then on (logged once): sharing is an
        optimisation, never a reason for a generation to fail."""
        path = self.directory / str(os.getpid())
        fd = None
        if not self.disabled:
            try:
                self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as exc:
                if fd is not None:
                    os.close(fd)
                    fd = None
                self.disabled = True
                log.warning(
                    "model.share_idle_cores: cannot use %s (%s); keeping %d thread(s)", path, exc, self.floor
                )
        try:
            yield self
        finally:
            if fd is not None:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                os.close(fd)  # drops the lock

    def generating_now(self) -> int:
        """Processes generating now, this one included (at least 1): the lock files someone holds. A file
        left by a process that died is removed."""
        own = str(os.getpid())
        count = 1
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return count
        for entry in entries:
            if entry.name == own:
                continue
            try:
                fd = os.open(entry.path, os.O_RDONLY)
            except FileNotFoundError:
                continue  # its generation just ended
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    count += 1
                    continue
                raise
            else:
                fcntl.flock(fd, fcntl.LOCK_UN)
                if entry.name.isdigit() and not _alive(int(entry.name)):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
            finally:
                os.close(fd)
        return count

    def threads(self) -> int:
        if self.disabled:
            return self.floor
        return max(self.floor, self.cores // self.generating_now())

    def fit(self, llm: Any) -> int:
        """Set the model's decode and batch threads to `threads()` where they differ; returns them."""
        import llama_cpp

        n = self.threads()
        if n != self.current:
            llama_cpp.llama_set_n_threads(llm.ctx, n, n)
            self.current = n
        return n


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True
