"""The OpenAPI schema and its Swagger UI, behind a token like every other route (FastAPI's own are
turned off in the app): the schema is a map of the API, and /docs can call it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse

from elpis_api.deps import PageScope, ReadScope

router = APIRouter(include_in_schema=False)


@router.get("/openapi.json")
def openapi(request: Request, token: ReadScope) -> dict[str, Any]:
    return request.app.openapi()


@router.get("/docs", response_class=HTMLResponse)
def docs(request: Request, token: PageScope) -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{request.app.title} · API")
