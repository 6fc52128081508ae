"""GET /healthz: is the database there, the broker, and at least one worker that answers?"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from models import get_engine

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz(request: Request) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        with get_engine(request.app.state.database_url).connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - reported in the body
        checks["database"] = f"unreachable: {exc.__class__.__name__}: {str(exc).splitlines()[0][:200]}"
    try:
        request.app.state.ping_broker()
        checks["broker"] = "ok"
    except Exception as exc:  # noqa: BLE001 - reported in the body
        checks["broker"] = f"unreachable: {exc.__class__.__name__}: {str(exc)[:200]}"
    workers: list[str] = []
    if checks["broker"] == "ok":
        try:
            workers = request.app.state.ping_workers()
            checks["workers"] = (
                "ok" if workers else "none answering: start one with `elpis worker` or `elpis up`"
            )
        except Exception as exc:  # noqa: BLE001 - reported in the body
            checks["workers"] = f"unknown: {exc.__class__.__name__}: {str(exc)[:200]}"
    else:
        checks["workers"] = "unknown: the broker is unreachable"
    healthy = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ok" if healthy else "degraded", **checks, "worker_names": workers},
        status_code=200 if healthy else 503,
    )
