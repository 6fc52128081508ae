"""The FastAPI application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp

from configs.logging import configure_logging
from elpis_api import metrics
from elpis_api.deps import LoginRequired, PageLogin
from elpis_api.routes import batches, docs, health, memories, pages, tasks, tokens
from elpis_api.routes import webhooks as webhook_routes


def _where(loc: tuple | list) -> str:
    parts = [p for p in loc if p != "body"]
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with one readable line per problem, naming the field (`tasks[1].repo: ...`)."""
    errors = exc.errors()
    messages = [f"{_where(e['loc'])}: {e['msg']}" for e in errors]
    return JSONResponse(
        status_code=422,
        content={
            "detail": messages[0] if len(messages) == 1 else "; ".join(messages),
            "errors": [{"field": _where(e["loc"]), "message": e["msg"], "type": e["type"]} for e in errors],
        },
    )


class TrustedHosts(TrustedHostMiddleware):
    """Starlette's Host header check with `api_allowed_hosts` read when the app first serves, not when
    it is imported."""

    def __init__(self, app: ASGIApp) -> None:
        from configs import get_settings

        super().__init__(app, allowed_hosts=get_settings().api_allowed_hosts, www_redirect=False)


def create_app(database_url: str | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from elpis_api.stack import database_url as start_or_find_database

        if database_url is None:
            # The served app owns the process's logging; one built for a given database (the tests,
            # an embedding program) leaves logging to its host.
            configure_logging()
        app.state.database_url = database_url or start_or_find_database()
        if not hasattr(app.state, "enqueue"):
            from elpis_worker.celery_app import app as celery
            from elpis_worker.tasks import enqueue_run_task

            def enqueue(task_id: int) -> None:
                enqueue_run_task(task_id, app.state.database_url)

            def ping_broker() -> None:
                with celery.connection_for_write() as conn:
                    conn.ensure_connection(max_retries=1, timeout=2)

            app.state.enqueue = enqueue
            app.state.ping_broker = ping_broker
        if not hasattr(app.state, "ping_workers"):
            from elpis_worker.celery_app import app as celery

            def ping_workers() -> list[str]:
                return sorted(name for reply in celery.control.ping(timeout=1.0) for name in reply)

            app.state.ping_workers = ping_workers
        yield

    app = FastAPI(
        title="Elpis",
        version="0.1.0",
        lifespan=lifespan,
        description="A self-hosted coding agent with an emotional state.",
        # Served by routes/docs.py instead, behind a token.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.add_middleware(TrustedHosts)
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(LoginRequired, pages.login_required)  # type: ignore[arg-type]
    app.add_exception_handler(PageLogin, pages.page_login)  # type: ignore[arg-type]
    app.include_router(batches.router)
    app.include_router(tasks.router)
    app.include_router(memories.router)
    app.include_router(tokens.router)
    app.include_router(health.router)
    app.include_router(webhook_routes.router)
    app.include_router(metrics.router)
    app.include_router(pages.router)
    app.include_router(docs.router)
    app.mount("/static", pages.static_files(), name="static")
    return app


app = create_app()
