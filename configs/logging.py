"""Structured logs for every Elpis process: one line per record, logfmt or JSON (`log_format`), at the
configured `log_level`.

Every line written while a worker runs a task carries that task's `task_id` (bound by Celery's
task_prerun signal), and the loop's step lines carry the step's `seq` (passed as `extra=`), so the lines
of one task can be pulled out of a shared log with `grep task_id=12` or a JSON query.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

_task_id: ContextVar[int | None] = ContextVar("elpis_task_id", default=None)

# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged as a field.
_RECORD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
# Loggers that install handlers of their own; they are routed through the root handler instead.
_OWN_HANDLERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "celery", "celery.task", "celery.redirected")


def current_task_id() -> int | None:
    return _task_id.get()


@contextmanager
def bind_task(task_id: int | None) -> Iterator[None]:
    """Lines logged inside the block carry `task_id`."""
    token = _task_id.set(task_id)
    try:
        yield
    finally:
        _task_id.reset(token)


class ContextFilter(logging.Filter):
    """Gives every record `task_id` and `seq` (None when unknown), so formatters need not guess."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "task_id", None) is None:
            record.task_id = _task_id.get()
        if not hasattr(record, "seq"):
            record.seq = None
        return True


def _fields(record: logging.LogRecord, formatter: logging.Formatter) -> dict[str, Any]:
    out: dict[str, Any] = {
        "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
        "level": record.levelname,
        "logger": record.name,
    }
    task_id = getattr(record, "task_id", None)
    seq = getattr(record, "seq", None)
    if task_id is not None:
        out["task_id"] = task_id
    if seq is not None:
        out["seq"] = seq
    for key, value in vars(record).items():
        if key not in _RECORD_ATTRS and key not in ("task_id", "seq") and not key.startswith("_"):
            out[key] = value
    out["msg"] = record.getMessage()
    if record.exc_info:
        out["exc"] = formatter.formatException(record.exc_info)
    elif record.exc_text:
        out["exc"] = record.exc_text
    if record.stack_info:
        out["stack"] = record.stack_info
    return out


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record, self), default=str, ensure_ascii=False)


def _logfmt_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    if text and not any(c in text for c in ' "=\\\n\r\t'):
        return text
    for raw, escaped in (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t")):
        text = text.replace(raw, escaped)
    return f'"{text}"'


class LogfmtFormatter(logging.Formatter):
    """`key=value` pairs on one line (multi-line messages and tracebacks are escaped, never split)."""

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in _fields(record, self).items())


FORMATTERS: dict[str, type[logging.Formatter]] = {"logfmt": LogfmtFormatter, "json": JsonFormatter}


class StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is at emit time (test runners and Celery swap it out), with
    secrets masked: URL passwords, `?token=` parameters and the values of the secret settings."""

    def __init__(self, secrets: list[str] | None = None) -> None:
        super().__init__(sys.stderr)
        self.secrets = secrets or []

    def format(self, record: logging.LogRecord) -> str:
        from configs.redact import redact

        return redact(super().format(record), self.secrets)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:  # the base class assigns it; the property wins
        pass


def configure_logging(level: str | None = None, fmt: str | None = None) -> logging.Handler:
    """Install the Elpis handler on the root logger (replacing one installed before) and route the
    loggers that bring their own handlers (uvicorn, Celery) through it. Safe to call more than once."""
    from configs import ConfigError, get_settings
    from configs.redact import settings_secrets

    try:
        settings = get_settings()
    except ConfigError:
        if level is None or fmt is None:
            raise
        settings = None
    level = level or settings.log_level  # type: ignore[union-attr]
    fmt = fmt or settings.log_format  # type: ignore[union-attr]
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_elpis", False)]:
        root.removeHandler(old)
    handler = StderrHandler(settings_secrets(settings) if settings else [])
    handler._elpis = True  # type: ignore[attr-defined]
    handler.setFormatter(FORMATTERS[fmt]())
    handler.addFilter(ContextFilter())
    root.addHandler(handler)
    root.setLevel(level)
    for name in _OWN_HANDLERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    return handler


# --- Celery --------------------------------------------------------------------------------------
def celery_setup_logging(loglevel: int | str | None = None, **_: object) -> None:
    """Receiver of Celery's `setup_logging`: with it connected Celery leaves logging to us entirely.
    The level is the more verbose of `log_level` and the command's `-l`."""
    from configs import get_settings

    configured = logging.getLevelName(get_settings().log_level)
    asked = logging.getLevelName(loglevel.upper()) if isinstance(loglevel, str) else loglevel
    level = min(configured, asked) if isinstance(asked, int) and asked > 0 else configured
    configure_logging(logging.getLevelName(level))


def _task_started(sender: Any = None, args: Any = None, **_: object) -> None:
    if getattr(sender, "name", None) == "elpis.run_task" and args:
        _task_id.set(int(args[0]))


def _task_done(sender: Any = None, **_: object) -> None:
    _task_id.set(None)


def connect_celery_signals() -> None:
    """Called once by the Celery app module."""
    from celery import signals

    signals.setup_logging.connect(celery_setup_logging, weak=False)
    signals.task_prerun.connect(_task_started, weak=False)
    signals.task_postrun.connect(_task_done, weak=False)
