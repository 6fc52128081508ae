"""GET /healthz: is the database there, the broker, and at least one worker that answers?"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from models import get_engine

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)


def _failure(what: str, exc: Exception) -> str:
    """What /healthz says about a failed check: the kind of error only. The message can hold a host,
    a user name or a URL, and /healthz answers without a token; the API log has it (redacted)."""
    log.warning("healthz: %s check failed: %s: %s", what, exc.__class__.__name__, exc)
    return f"{exc.__class__.__name__} (details in the API log)"


@router.get("/healthz")
def healthz(request: Request) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        with get_engine(request.app.state.database_url).connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - reported in the body
        checks["database"] = f"unreachable: {_failure('database', exc)}"
    try:
        request.app.state.ping_broker()
        checks["broker"] = "ok"
    except Exception as exc:  # noqa: BLE001 - reported in the body
        checks["broker"] = f"unreachable: {_failure('broker', exc)}"
    workers: list[str] = []
    if checks["broker"] == "ok":
        try:
            workers = request.app.state.ping_workers()
            checks["workers"] = (
                "ok" if workers else "none answering: start one with `elpis worker` or `elpis up`"
            )
        except Exception as exc:  # noqa: BLE001 - reported in the body
            checks["workers"] = f"unknown: {_failure('workers', exc)}"
    else:
        checks["workers"] = "unknown: the broker is unreachable"
    healthy = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ok" if healthy else "degraded", **checks, "worker_names": workers},
        status_code=200 if healthy else 503,
    )
