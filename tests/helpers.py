"""What tests share besides fixtures: paths, the session's admin token, and waiting on the database.

Imported as `from helpers import ...` (pytest puts tests/ on the path); fixtures live in conftest.py.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
# Every route but /healthz needs a token: the session's API processes accept this one as admin
# (ELPIS_API_TOKEN), and `api` / AUTH send it. tests/integration/test_auth.py covers the tokens themselves.
API_TOKEN = "elpis_test-admin-token-" + uuid.uuid4().hex
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def free_port() -> int:

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(
    predicate: Callable[[], object], timeout: float = 60, interval: float = 0.2, what: str = "condition"
) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def task_row(db_url: str, task_id: int):
    from models import Task, session_scope

    with session_scope(db_url) as s:
        task = s.get(Task, task_id)
        s.expunge(task)
        return task


def steps_of(db_url: str, task_id: int):
    from sqlalchemy import select

    from models import Step, session_scope

    with session_scope(db_url) as s:
        rows = list(s.scalars(select(Step).where(Step.task_id == task_id).order_by(Step.seq)))
        for r in rows:
            s.expunge(r)
        return rows


def has_called(db_url: str, task_id: int, tool: str) -> bool:
    """Whether the task has stored a call of `tool` (its result may still be on its way)."""
    from models import StepKind

    return any(s.kind == StepKind.tool_call and s.tool_name == tool for s in steps_of(db_url, task_id))


def wait_finished(db_url: str, task_id: int, timeout: float = 180):
    return wait_for(
        lambda: (t := task_row(db_url, task_id)).status.finished and t,
        timeout=timeout,
        what=f"task {task_id} to finish",
    )


def ago(seconds: float) -> datetime:
    return datetime.now(UTC) - timedelta(seconds=seconds)


def task_as_left(
    db_url: str, *, webhook: bool = False, source: dict[str, Any] | None = None, **fields: Any
) -> int:
    """A task row on the sample calc as a fault left it (status, times, holder given directly), for the
    reconciler to find; with `webhook`, the delivery and task_source rows of a GitHub issue."""
    from configs import get_settings
    from models import Batch, Task, session_scope
    from models.webhooks import DeliveryOutcome, Provider, TaskSource, Trigger, WebhookDelivery

    fields.setdefault("budget", get_settings().budget.model_dump())
    with session_scope(db_url) as s:
        batch = Batch(source="github" if webhook else "rest")
        s.add(batch)
        task = Task(repo=str(SAMPLES / "calc"), instruction="Fix it", **fields)
        batch.tasks.append(task)
        s.flush()
        if webhook:
            key = uuid.uuid4().hex
            delivery = WebhookDelivery(
                provider=Provider.github,
                delivery_id=key,
                event="issues",
                payload_sha256="0" * 64,
                outcome=DeliveryOutcome.tasks,
                batch_id=batch.id,
            )
            s.add(delivery)
            s.flush()
            s.add(
                TaskSource(
                    task_id=task.id,
                    delivery_pk=delivery.id,
                    provider=Provider.github,
                    trigger=Trigger.issue_label,
                    repository="acme/calc",
                    number=5,
                    push_url="https://github.com/acme/calc.git",
                    dedup_key=f"test:{key}",
                    **(source or {}),
                )
            )
        return task.id


# --- scripted workers on the sample repository -----------------------------------------------------------

# The sample calc's ops.py with its bug (subtract adds) fixed: what a scripted write_file writes.
FIXED_OPS = (
    (SAMPLES / "calc" / "calc" / "ops.py")
    .read_text()
    .replace("return a + b\n\n\ndef multiply", "return a - b\n\n\ndef multiply")
)


def scripted_env(script: Path | str) -> dict[str, str]:
    """A worker's settings to replay `script` (a JSON file of tool calls) instead of a model."""
    return {"ELPIS_MODEL__BACKEND": "scripted", "ELPIS_MODEL__SCRIPT": str(script)}


def create_tasks(api, n: int, **task) -> list[int]:
    """`n` tasks on the sample calc through the REST API, not enqueued: the test sends them to its own
    worker's queue."""
    task.setdefault("repo", str(SAMPLES / "calc"))
    task.setdefault("instruction", "Fix the failing test")
    task.setdefault("test_command", "python -m pytest -q")
    api.app.state.enqueue = lambda task_id: None
    response = api.post("/v1/batches", json={"tasks": [dict(task) for _ in range(n)]})
    assert response.status_code == 201, response.text
    return [t["id"] for t in response.json()["tasks"]]


@dataclass
class WorkerHandle:
    process: subprocess.Popen[bytes]
    queue: str
    log: Path
    env: dict[str, str]

    def send(self, task_id: int) -> None:
        from elpis_worker.celery_app import app

        app.send_task("elpis.run_task", args=[task_id], queue=self.queue)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)


# --- host processes: what a sandboxed or timed-out command left running -----------------------------------


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A killed orphan may linger as a zombie until its new parent reaps it: dead all the same.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def host_pids(marker: str) -> list[int]:
    """Live host processes whose command line contains `marker`: a sandboxed command sees its own PID
    numbers, so what it prints as $! means nothing out here."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if marker in cmdline and alive(int(entry.name)):
            pids.append(int(entry.name))
    return pids


def wait_gone(marker: str, within: float = 10.0) -> list[int]:
    """[] once no host process carries `marker`, else the survivors."""
    deadline = time.monotonic() + within
    while (left := host_pids(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def _generate_until_told(directory: str, started: Any, stop: Any) -> None:
    from elpis_worker.cores import CoreShare

    with CoreShare(1, cores=2, directory=Path(directory)).generating():
        started.set()
        stop.wait(60)


@contextlib.contextmanager
def another_process_generating(directory: Path) -> Iterator[None]:
    """A real forked process marked as generating (its lock file held in `directory`, as
    elpis_worker.cores does) for the block; its mark is gone when the block ends."""
    fork = multiprocessing.get_context("fork")
    started, stop = fork.Event(), fork.Event()
    other = fork.Process(target=_generate_until_told, args=(str(directory), started, stop))
    other.start()
    try:
        assert started.wait(10), "the other process never started generating"
        yield
    finally:
        stop.set()
        other.join(10)
