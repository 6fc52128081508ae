"""Sharing the host's cores among generating worker processes (elpis_worker.cores), with real processes
holding real lock files: no model."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

from elpis_worker.cores import CoreShare


def _generate_until_told(directory: str, started, stop) -> None:
    with CoreShare(1, cores=2, directory=Path(directory)).generating():
        started.set()
        stop.wait(30)


def test_a_process_alone_takes_every_core_and_shares_them_once_another_generates(tmp_path):
    share = CoreShare(1, cores=2, directory=tmp_path)
    with share.generating():
        assert share.generating_now() == 1 and share.threads() == 2
        ctx = multiprocessing.get_context("fork")
        started, stop = ctx.Event(), ctx.Event()
        other = ctx.Process(target=_generate_until_told, args=(str(tmp_path), started, stop))
        other.start()
        try:
            assert started.wait(10)
            assert share.generating_now() == 2 and share.threads() == 1
        finally:
            stop.set()
            other.join(10)
        # Its generation over, the other process's file is gone and the cores are this one's again.
        assert share.threads() == 2
        assert [p.name for p in tmp_path.iterdir()] == [str(os.getpid())]
    assert list(tmp_path.iterdir()) == []


def test_never_fewer_threads_than_configured_and_a_dead_process_file_is_cleared(tmp_path):
    # A process that died while generating (its lock went with it) left its file behind.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    (tmp_path / dead.stdout.decode().strip()).touch()
    share = CoreShare(3, cores=4, directory=tmp_path)
    assert share.generating_now() == 1 and share.threads() == 4
    assert list(tmp_path.iterdir()) == []
    assert CoreShare(3, cores=2, directory=tmp_path).threads() == 3  # the floor stands


class _Context:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def set_n_threads(self, n: int, n_batch: int) -> None:
        self.calls.append((n, n_batch))


class _Model:
    def __init__(self) -> None:
        self._ctx = _Context()


def test_fit_sets_the_threads_only_when_they_change(tmp_path):
    share, model = CoreShare(1, cores=2, directory=tmp_path), _Model()
    assert share.fit(model) == 2 and share.fit(model) == 2
    assert model._ctx.calls == [(2, 2)]
