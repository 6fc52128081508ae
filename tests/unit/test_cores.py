"""Sharing the host's cores among generating worker processes (elpis_worker.cores), with real processes
holding real lock files: no model."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

from helpers import another_process_generating

from elpis_worker.cores import CoreShare


def test_a_process_alone_takes_every_core_and_shares_them_once_another_generates(tmp_path):
    share = CoreShare(1, cores=2, directory=tmp_path)
    with share.generating():
        assert share.generating_now() == 1 and share.threads() == 2
        with another_process_generating(tmp_path):
            assert share.generating_now() == 2 and share.threads() == 1
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


def test_fit_sets_the_threads_only_when_they_change(tmp_path, monkeypatch):
    import llama_cpp

    calls: list[tuple[object, int, int]] = []
    monkeypatch.setattr(llama_cpp, "llama_set_n_threads", lambda ctx, n, nb: calls.append((ctx, n, nb)))
    model = SimpleNamespace(ctx="the context")
    share = CoreShare(1, cores=2, directory=tmp_path)
    assert share.fit(model) == 2 and share.fit(model) == 2
    assert calls == [("the context", 2, 2)]


def test_a_directory_that_cannot_be_used_keeps_the_configured_threads_and_fails_nothing(tmp_path, caplog):
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the directory should be")
    share = CoreShare(1, cores=4, directory=blocked)
    with share.generating():
        assert share.threads() == 1
    assert share.disabled and "share_idle_cores: cannot use" in caplog.text
