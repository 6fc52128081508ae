"""`elpis doctor`: what is wrong with this setup, and how to fix it.

Each check is one line: ✓ when fine, ✗ with the fix when not, `-` when it could not run because an
earlier one failed (the database is unreachable, so its migrations cannot be read). Doctor starts
nothing: it looks at the configured servers, or at the embedded ones `elpis up` started.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from configs import ConfigError, Settings, load_settings
from configs.redact import redact, settings_secrets
from configs.settings import ModelSettings, config_path

GGUF_MAGIC = b"GGUF"
TIMEOUT = 3.0


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool | None  # None: skipped, an earlier check failed
    detail: str
    fix: str = ""

    @property
    def mark(self) -> str:
        return {True: "✓", False: "✗", None: "-"}[self.ok]

    def line(self) -> str:
        text = f"{self.mark} {self.name:<10} {self.detail}"
        return f"{text}\n  fix: {self.fix}" if self.ok is False and self.fix else text


def check_config() -> tuple[Check, Settings | None]:
    try:
        settings = load_settings()
    except ConfigError as exc:
        return Check(
            "config", False, str(exc), f"edit {config_path()} or the ELPIS_* variable it names"
        ), None
    return Check("config", True, f"{config_path()} and the ELPIS_* environment are valid"), settings


def _check_model_server(cfg: ModelSettings) -> Check:
    """The openai backend's server answers its model list (with the configured key)."""
    import httpx

    key = cfg.api_key.get_secret_value()
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    url = f"{cfg.base_url.rstrip('/')}/models"
    try:
        response = httpx.get(url, headers=headers, timeout=5)
    except httpx.HTTPError as exc:
        return Check(
            "model", False, f"model server {url} unreachable ({exc})", "start it, or fix model.base_url"
        )
    if response.status_code != 200:
        fix = (
            "set model.api_key / ELPIS_MODEL__API_KEY"
            if response.status_code in (401, 403)
            else "check the server"
        )
        return Check("model", False, f"model server {url} answered {response.status_code}", fix)
    return Check("model", True, f"model server {cfg.base_url} answers (model {cfg.server_model or cfg.name})")


def check_model(settings: Settings) -> Check:
    """The file is there and is a GGUF; the model itself is not loaded (that takes the worker's time)."""
    from elpis_worker.backend import ModelLoadError, resolve_model_path

    cfg = settings.model
    if cfg.backend == "scripted":
        path = Path(cfg.script).expanduser()
        try:
            script = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            return Check(
                "model",
                False,
                f"scripted backend: model.script {path} unreadable ({exc})",
                "set ELPIS_MODEL__SCRIPT",
            )
        if not isinstance(script, list):
            return Check(
                "model", False, f"model.script {path} is not a JSON list", "see samples/fix_script.json"
            )
        return Check("model", True, f"scripted backend, {len(script)} scripted actions in {path}")
    if cfg.backend == "openai":
        return _check_model_server(cfg)
    try:
        path = resolve_model_path(cfg, settings)
    except ModelLoadError as exc:
        if cfg.path:
            fix = "set model.path / ELPIS_MODEL__PATH to a GGUF file"
        elif str(exc).startswith("model.name"):
            fix = "set model.name / ELPIS_MODEL__NAME to a name `elpis models` lists, or model.path"
        else:
            fix = f"run `elpis models pull {cfg.name}` (`elpis up` pulls it), or set model.path"
        detail = str(exc) if str(exc).startswith("model.name") else str(exc).split(":")[0]
        return Check("model", False, detail, fix)
    try:
        with open(path, "rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        return Check("model", False, f"{path} cannot be read: {exc}", "fix the file's permissions")
    if magic != GGUF_MAGIC:
        return Check(
            "model",
            False,
            f"{path} is not a GGUF file (starts with {magic!r})",
            "point model.path / ELPIS_MODEL__PATH at a .gguf model (llama.cpp format)",
        )
    if importlib.util.find_spec("llama_cpp") is None:
        return Check("model", False, f"{path} is a GGUF, but llama-cpp-python is missing", "`make install`")
    size = path.stat().st_size / 2**20
    which = "" if cfg.path else f"{cfg.name}: "
    return Check("model", True, f"{which}{path} ({size:.0f} MiB, GGUF)")


def _stack_value(key: str) -> str:
    from configs.servers import read_stack

    return read_stack().get(key, "")


def check_database(settings: Settings) -> tuple[Check, str | None]:
    from sqlalchemy import create_engine, text

    url = settings.database_url.get_secret_value() or _stack_value("database_url")
    if not url:
        return Check(
            "database",
            False,
            "no database: database_url is empty and the embedded PostgreSQL is not running",
            "start the stack with `elpis up`, or set ELPIS_DATABASE_URL=postgresql+psycopg://user:pw@host/elpis",
        ), None
    where = "configured" if settings.database_url.get_secret_value() else "embedded"
    engine = create_engine(url, connect_args={"connect_timeout": int(TIMEOUT)})
    try:
        with engine.connect() as conn:
            version = conn.scalar(text("SHOW server_version"))
    except Exception as exc:  # noqa: BLE001 - the message is the diagnosis
        first = str(exc).strip().splitlines()[0][:200]
        fix = (
            "check the host, port and credentials in ELPIS_DATABASE_URL and that PostgreSQL runs"
            if settings.database_url.get_secret_value()
            else "the embedded PostgreSQL is not answering: restart it with `elpis up`"
        )
        return Check("database", False, f"{where} PostgreSQL unreachable: {first}", fix), None
    finally:
        engine.dispose()
    return Check("database", True, f"{where} PostgreSQL {version} reachable"), url


def check_pgvector(url: str) -> Check:
    from sqlalchemy import create_engine, text

    engine = create_engine(url, connect_args={"connect_timeout": int(TIMEOUT)})
    try:
        with engine.connect() as conn:
            row = conn.execute(
                text(
                    "SELECT default_version, installed_version FROM pg_available_extensions "
                    "WHERE name = 'vector'"
                )
            ).first()
    finally:
        engine.dispose()
    if row is None:
        return Check(
            "pgvector",
            False,
            "the vector extension is not available on this PostgreSQL server",
            "install pgvector on the server (Debian: apt install postgresql-NN-pgvector; Docker: the "
            "pgvector/pgvector image) or use the embedded PostgreSQL (leave database_url empty)",
        )
    installed = (
        f"created in this database ({row.installed_version})"
        if row.installed_version
        else ("available, not yet created in this database (`elpis migrate` creates it)")
    )
    return Check("pgvector", True, f"pgvector {row.default_version} {installed}")


def check_migrations(url: str) -> Check:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import create_engine

    from elpis_api.migrate import alembic_config

    heads = set(ScriptDirectory.from_config(alembic_config(url)).get_heads())
    engine = create_engine(url, connect_args={"connect_timeout": int(TIMEOUT)})
    try:
        with engine.connect() as conn:
            current = set(MigrationContext.configure(conn).get_current_heads())
    finally:
        engine.dispose()
    if current == heads:
        return Check("migrations", True, f"at head ({', '.join(sorted(heads))})")
    have = f"is at {', '.join(sorted(current))}" if current else "has no migration applied"
    return Check(
        "migrations",
        False,
        f"the database {have}; the code expects {', '.join(sorted(heads))}",
        "run `elpis migrate`",
    )


def check_broker(settings: Settings) -> tuple[Check, str | None]:
    import redis

    url = settings.broker_url.get_secret_value() or _stack_value("broker_url")
    if not url:
        return Check(
            "broker",
            False,
            "no broker: broker_url is empty and the embedded valkey is not running",
            "start the stack with `elpis up`, or set ELPIS_BROKER_URL=redis://host:6379/0",
        ), None
    client = redis.Redis.from_url(url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT)
    try:
        info = client.info("server")
    except Exception as exc:  # noqa: BLE001 - the message is the diagnosis
        return Check(
            "broker",
            False,
            f"{url} unreachable: {exc}",
            "check ELPIS_BROKER_URL and that Redis/valkey runs there"
            if settings.broker_url.get_secret_value()
            else "the embedded valkey is not answering: restart the stack with `elpis up`",
        ), None
    finally:
        client.close()
    name = "valkey" if info.get("valkey_version") else "redis"
    version = info.get("valkey_version") or info.get("redis_version")
    return Check("broker", True, f"{url} ({name} {version}) reachable"), url


def check_worker(settings: Settings, broker_url: str) -> Check:
    from celery import Celery

    probe = Celery("elpis-doctor", broker=broker_url)
    try:
        replies = probe.control.ping(timeout=TIMEOUT / 2)
    finally:
        probe.close()
    names = sorted(name for reply in replies for name in reply)
    if not names:
        return Check(
            "worker",
            False,
            f"no worker answered a ping within {TIMEOUT / 2:.1f} s",
            f"start one with `elpis worker` (it consumes queue '{settings.worker.queue}') or `elpis up`",
        )
    return Check("worker", True, f"{len(names)} answering: {', '.join(names)}")


def check_sandbox(settings: Settings) -> Check:
    """How the agent's commands are isolated on this host; a worker refuses to start where this fails."""
    from elpis_worker.sandbox import Sandbox

    result = Sandbox.from_settings(settings).check()
    if not result.ok:
        return Check(
            "sandbox",
            False,
            f"bubblewrap cannot sandbox commands here, so workers refuse to start: {result.detail}",
            "run scripts/ensure_bwrap.sh (installs bubblewrap), allow unprivileged user namespaces, "
            "or set tools.sandbox: none to run commands unsandboxed",
        )
    if result.kind == "none":
        return Check("sandbox", True, "none (tools.sandbox: none): commands run UNSANDBOXED, as the worker")
    extra = "; " + "; ".join(result.warnings) if result.warnings else ""
    return Check("sandbox", True, f"bwrap ({result.detail}){extra}")


def _guard(name: str, run: Callable[[], Check]) -> Check:
    try:
        return run()
    except Exception as exc:  # noqa: BLE001 - doctor reports, it never crashes
        return Check(name, False, f"check failed: {exc.__class__.__name__}: {exc}", "see the message")


def run_checks() -> list[Check]:
    """Every check, with passwords and tokens masked (a URL or an error message may carry one)."""
    config, settings = check_config()
    if settings is None:
        return [config]
    secrets = settings_secrets(settings)
    return [
        replace(c, detail=redact(c.detail, secrets), fix=redact(c.fix, secrets))
        for c in _checks(config, settings)
    ]


def _checks(config: Check, settings: Settings) -> list[Check]:
    checks = [config]
    checks.append(_guard("model", lambda: check_model(settings)))
    checks.append(_guard("sandbox", lambda: check_sandbox(settings)))
    database, url = check_database(settings)
    checks.append(database)
    if url is None:
        checks += [
            Check("pgvector", None, "skipped: no database"),
            Check("migrations", None, "skipped: no database"),
        ]
    else:
        checks.append(_guard("pgvector", lambda: check_pgvector(url)))
        checks.append(_guard("migrations", lambda: check_migrations(url)))
    broker, broker_url = check_broker(settings)
    checks.append(broker)
    if broker_url is None:
        checks.append(Check("worker", None, "skipped: no broker"))
    else:
        checks.append(_guard("worker", lambda: check_worker(settings, broker_url)))
    return checks
