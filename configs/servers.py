"""Where the database and broker are. This module reads; it never starts a server.

With `database_url` / `broker_url` set (ELPIS_DATABASE_URL / ELPIS_BROKER_URL) those servers are used.
Otherwise the addresses are the embedded servers' that `elpis up` started and recorded in
`$ELPIS_HOME/run/stack.json` (elpis_api/stack.py starts them; nothing else does). A worker, beat or
`alembic upgrade` run on its own with neither gets a StackError that says what to do, instead of
quietly starting a database of its own.
"""

from __future__ import annotations

import json
from pathlib import Path

from configs.errors import ElpisError
from configs.settings import get_settings


class StackError(ElpisError, RuntimeError):
    """The database or broker cannot be found, reached or started; the message says what to do."""


def stack_file() -> Path:
    """The record of the embedded servers `elpis up` runs (their URLs), under $ELPIS_HOME/run."""
    return get_settings().home_dir / "run" / "stack.json"


def read_stack() -> dict[str, str]:
    try:
        return json.loads(stack_file().read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def resolve_database_url() -> str:
    """The configured database URL, else the embedded server's that `elpis up` recorded."""
    settings = get_settings()
    if settings.database_url.get_secret_value():
        return settings.database_url.get_secret_value()
    url = read_stack().get("database_url")
    if not url:
        raise StackError(
            "no database: start the embedded stack with `elpis up` or set "
            "ELPIS_DATABASE_URL=postgresql+psycopg://user:password@host:5432/elpis"
        )
    return url


def resolve_broker_url() -> str:
    """The configured broker URL, else the embedded valkey-server's that `elpis up` recorded."""
    settings = get_settings()
    if settings.broker_url.get_secret_value():
        return settings.broker_url.get_secret_value()
    url = read_stack().get("broker_url")
    if not url:
        raise StackError(
            "no broker: start the embedded stack with `elpis up` or set ELPIS_BROKER_URL=redis://host:6379/0"
        )
    return url
