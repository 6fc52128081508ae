"""Server-rendered pages: `/` (recent tasks), `/tasks/{id}` (the step timeline, emotion chart, diff and
tests), `/batches/{id}` (one row per task). They update live over server-sent events: the server renders
each new step (or the changed table) with the same templates as the first page load and pushes the HTML,
so the browser's JavaScript only inserts fragments and redraws the chart. No build step, no CDN.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs

import anyio
from fastapi import APIRouter, Header, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool

from elpis_api.deps import (
    MAX_SEQ,
    TOKEN_COOKIE,
    DbId,
    LoginRequired,
    PageLogin,
    PageScope,
    SessionDep,
    authenticate,
)
from models import Batch, Step, StepKind, Task, sessionmaker_for
from models.records import Affect, EmotionRecord, step_detail

HERE = Path(__file__).resolve().parents[1]
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(include_in_schema=False)

# How often a live page's stream looks at the database, and how long one stream stays open before the
# browser reconnects (EventSource does it by itself, resuming after the last step it got): a bounded
# stream never keeps the server from shutting down for long.
POLL_SECONDS = 0.5
STREAM_SECONDS = 30.0
# How long a stream may take to end once the server is stopping before it is cancelled.
SHUTDOWN_GRACE_SECONDS = 2.0
RECENT_TASKS = 50


def static_files() -> StaticFiles:
    return StaticFiles(directory=HERE / "static")


# --- template helpers --------------------------------------------------------------------------------
def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


def _from_json(text: str | None) -> Any:
    try:
        return json.loads(text or "")
    except (TypeError, ValueError):
        return None


def _signed(value: Any) -> str:
    return f"{value:+.2f}" if isinstance(value, int | float) else "-"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


def _diff_class(line: str) -> str:
    if line.startswith(("+++", "---", "diff ", "index ")):
        return "meta"
    if line.startswith("@@"):
        return "hunk"
    return {"+": "add", "-": "del"}.get(line[:1], "")


def _detail(step: Step) -> Any:
    """A step's detail as its kind's model (models/records.py), for the step templates."""
    return step_detail(step.kind, step.detail)


templates.env.filters.update(
    detail=_detail,
    pretty=_pretty,
    from_json=_from_json,
    signed=_signed,
    duration=_duration,
    when=_when,
    diff_class=_diff_class,
)


def _task_seconds(task: Task) -> float | None:
    """Wall time of a finished task (a running one shows its start instead: a live page's HTML then
    changes only when the task does)."""
    if task.started_at is None or task.finished_at is None:
        return None
    return (task.finished_at - task.started_at).total_seconds()


def _turns_done(session: Session, task_ids: list[int]) -> dict[int, int]:
    if not task_ids:
        return {}
    rows = session.execute(
        select(Step.task_id, func.count())
        .where(Step.task_id.in_(task_ids), Step.kind == StepKind.emotion)
        .group_by(Step.task_id)
    ).all()
    return dict(rows)


def _rows(session: Session, tasks: list[Task]) -> list[dict[str, Any]]:
    """The view of a task in a table: its row, with turns done and wall time."""
    turns = _turns_done(session, [t.id for t in tasks])
    return [
        {
            "task": t,
            "turns": turns.get(t.id, 0),
            "max_turns": int((t.budget or {}).get("max_steps") or 0),
            "seconds": _task_seconds(t),
        }
        for t in tasks
    ]


def emotion_points(steps: list[Step]) -> list[dict[str, Any]]:
    """The chart's points: the state before the first turn, then the state after each turn."""
    points: list[dict[str, Any]] = []
    for step in steps:
        if step.kind != StepKind.emotion or not step.emotion:
            continue
        record = EmotionRecord.model_validate(step.emotion)
        if not points and record.before is not None:
            points.append(_point(step.turn - 1, record.before))
        points.append(_point(step.turn, record.after))
    return points


def _point(turn: int, state: Affect | None) -> dict[str, Any]:
    values = state.model_dump() if state is not None else {}
    return {"turn": turn, **{k: values.get(k) for k in ("valence", "arousal", "dominance", "mood")}}


def _render(name: str, **context: Any) -> str:
    return templates.get_template(name).render(**context)


def _task_parts(task: Task) -> dict[str, str]:
    seconds = _task_seconds(task)
    return {
        "status": task.status.value,
        "header": _render("_task_header.html", task=task, seconds=seconds),
        "outcome": _render("_task_outcome.html", task=task),
    }


def _sse(event: str, data: Any, event_id: int | None = None) -> ServerSentEvent:
    return ServerSentEvent(
        json.dumps(data, default=str), event=event, id=None if event_id is None else str(event_id)
    )


def _stream(body: Callable[[anyio.Event], AsyncIterator[ServerSentEvent]]) -> EventSourceResponse:
    """Server-sent events from `body`, which gets the event sse-starlette sets when the server is asked to
    stop (uvicorn waits for open responses, and no ASGI message tells an endless one to finish): `body`
    then ends at its next poll. The stream also ends when the browser goes away."""
    stopping = anyio.Event()
    return EventSourceResponse(
        body(stopping), sep="\n", shutdown_event=stopping, shutdown_grace_period=SHUTDOWN_GRACE_SECONDS
    )


# --- pages -----------------------------------------------------------------------------------------
@router.get("/", response_class=HTMLResponse)
def index(request: Request, session: SessionDep, token: PageScope) -> HTMLResponse:
    context = _index_context(session)
    return templates.TemplateResponse(request, "index.html", context)


def _index_context(session: Session) -> dict[str, Any]:
    tasks = list(session.scalars(select(Task).order_by(Task.id.desc()).limit(RECENT_TASKS)))
    batches = list(session.scalars(select(Batch).order_by(Batch.id.desc()).limit(10)))
    counts: dict[int, dict[str, int]] = {}
    if batches:
        for batch_id, status, n in session.execute(
            select(Task.batch_id, Task.status, func.count())
            .where(Task.batch_id.in_([b.id for b in batches]))
            .group_by(Task.batch_id, Task.status)
        ):
            counts.setdefault(batch_id, {})[status.value] = n
    return {"rows": _rows(session, tasks), "batches": batches, "batch_counts": counts}


@router.get("/tasks/{task_id}", response_class=HTMLResponse)
def task_page(task_id: DbId, request: Request, session: SessionDep, token: PageScope) -> HTMLResponse:
    task = session.get(Task, task_id)
    if task is None:
        raise HTTPException(404, f"task {task_id} not found (the index at / lists recent tasks)")
    steps = list(session.scalars(select(Step).where(Step.task_id == task_id).order_by(Step.seq)))
    turns: dict[int, list[Step]] = {}
    for step in steps:
        turns.setdefault(step.turn, []).append(step)
    return templates.TemplateResponse(
        request,
        "task.html",
        {
            "task": task,
            "parts": _task_parts(task),
            "turns": turns,
            "points": emotion_points(steps),
            "last_seq": steps[-1].seq if steps else -1,
        },
    )


@router.get("/batches/{batch_id}", response_class=HTMLResponse)
def batch_page(batch_id: DbId, request: Request, session: SessionDep, token: PageScope) -> HTMLResponse:
    batch = session.get(Batch, batch_id)
    if batch is None:
        raise HTTPException(404, f"batch {batch_id} not found (the index at / lists recent batches)")
    return templates.TemplateResponse(
        request, "batch.html", {"batch": batch, **_batch_context(session, batch)}
    )


def _batch_context(session: Session, batch: Batch) -> dict[str, Any]:
    tasks = list(session.scalars(select(Task).where(Task.batch_id == batch.id).order_by(Task.id)))
    counts: dict[str, int] = {}
    for t in tasks:
        counts[t.status.value] = counts.get(t.status.value, 0) + 1
    return {
        "rows": _rows(session, tasks),
        "counts": counts,
        "finished": all(t.status.finished for t in tasks),
        "tokens": sum(t.prompt_tokens + t.completion_tokens for t in tasks),
    }


# --- live updates ----------------------------------------------------------------------------------
def _task_changes(
    database_url: str, task_id: int, after: int
) -> tuple[dict[str, str], list[dict[str, Any]], bool]:
    """The task's parts and the steps after `after`. The task is read first: when it is already
    finished, every step it will ever have is in the list that follows."""
    with sessionmaker_for(database_url)() as session:
        task = session.get(Task, task_id)
        if task is None:
            raise LookupError(task_id)
        finished = task.status.finished
        parts = _task_parts(task)
        steps = list(
            session.scalars(select(Step).where(Step.task_id == task_id, Step.seq > after).order_by(Step.seq))
        )
        events = []
        for step in steps:
            event: dict[str, Any] = {
                "seq": step.seq,
                "turn": step.turn,
                "kind": step.kind.value,
                "html": _render("_step_fragment.html", step=step),
            }
            if step.kind == StepKind.emotion and step.emotion:
                record = EmotionRecord.model_validate(step.emotion)
                event["before"] = _point(step.turn - 1, record.before)
                event["point"] = _point(step.turn, record.after)
            events.append(event)
        return parts, events, finished


def _task_exists(database_url: str, task_id: int) -> bool:
    with sessionmaker_for(database_url)() as session:
        return session.get(Task, task_id) is not None


@router.get("/tasks/{task_id}/events")
async def task_events(
    task_id: DbId,
    request: Request,
    token: PageScope,
    after: int = Query(-1, ge=-1, le=MAX_SEQ, description="send the steps with seq greater than this"),
    last_event_id: Annotated[int | None, Header(ge=-1, le=MAX_SEQ)] = None,
) -> EventSourceResponse:
    """Server-sent events: `step` (each new step, rendered), `task` (header and outcome, when they
    change) and `end` once the task is finished and every step was sent."""
    url = request.app.state.database_url
    if not await run_in_threadpool(_task_exists, url, task_id):
        raise HTTPException(404, f"task {task_id} not found")
    start = after if last_event_id is None else max(after, last_event_id)

    async def body(stopping: anyio.Event) -> AsyncIterator[ServerSentEvent]:
        sent, shown, deadline = start, None, time.monotonic() + STREAM_SECONDS
        yield ServerSentEvent(retry=1000)
        while not stopping.is_set():
            parts, steps, finished = await run_in_threadpool(_task_changes, url, task_id, sent)
            for step in steps:
                yield _sse("step", step, step["seq"])
                sent = step["seq"]
            if parts != shown:
                yield _sse("task", parts | {"finished": finished})
                shown = parts
            if finished:
                yield _sse("end", {"status": parts["status"], "last_seq": sent})
                return
            if time.monotonic() > deadline:
                return
            await asyncio.sleep(POLL_SECONDS)

    return _stream(body)


def _snapshots(render: Callable[[], tuple[dict[str, Any], bool]]) -> EventSourceResponse:
    """Re-render a table every POLL_SECONDS and push it when it changed; `end` when `render` says done."""

    async def body(stopping: anyio.Event) -> AsyncIterator[ServerSentEvent]:
        shown, deadline = None, time.monotonic() + STREAM_SECONDS
        yield ServerSentEvent(retry=1000)
        while not stopping.is_set():
            data, done = await run_in_threadpool(render)
            if data != shown:
                yield _sse("update", data)
                shown = data
            if done:
                yield _sse("end", {})
                return
            if time.monotonic() > deadline:
                return
            await asyncio.sleep(POLL_SECONDS)

    return _stream(body)


@router.get("/batches/{batch_id}/events")
async def batch_events(batch_id: DbId, request: Request, token: PageScope) -> EventSourceResponse:
    url = request.app.state.database_url

    def render() -> tuple[dict[str, Any], bool]:
        with sessionmaker_for(url)() as session:
            batch = session.get(Batch, batch_id)
            if batch is None:
                raise HTTPException(404, f"batch {batch_id} not found")
            context = _batch_context(session, batch)
            return {
                "rows": _render("_task_rows.html", rows=context["rows"], show_batch=False),
                "summary": _render("_batch_summary.html", batch=batch, **context),
            }, context["finished"]

    await run_in_threadpool(render)  # a 404 before the stream starts
    return _snapshots(render)


@router.get("/events/tasks")
async def index_events(request: Request, token: PageScope) -> EventSourceResponse:
    url = request.app.state.database_url

    def render() -> tuple[dict[str, Any], bool]:
        with sessionmaker_for(url)() as session:
            context = _index_context(session)
            return {
                "rows": _render("_task_rows.html", rows=context["rows"], show_batch=True),
                "batches": _render("_batch_list.html", **context),
            }, False

    return _snapshots(render)


# --- login -----------------------------------------------------------------------------------------
# The pages take the token once (`?token=` on any page, or the form below) and keep it in an HttpOnly,
# SameSite=Strict cookie; from then on the cookie authenticates the pages' GETs and their streams.
COOKIE_SECONDS = 7 * 24 * 3600
_FORM_BYTES = 8192


def _safe_next(target: str) -> str:
    """Only a path on this site: a login link must not send the browser elsewhere."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _login_page(request: Request, target: str, error: str | None, status_code: int) -> HTMLResponse:
    return templates.TemplateResponse(
        request,
        "login.html",
        {"next": _safe_next(target), "error": error},
        status_code=status_code,
        headers={"WWW-Authenticate": "Bearer"} if status_code == 401 else None,
    )


def _logged_in(request: Request, token: str, target: str) -> RedirectResponse:
    response = RedirectResponse(_safe_next(target), status_code=303)
    response.set_cookie(
        TOKEN_COOKIE,
        token,
        max_age=COOKIE_SECONDS,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


def _here_without_token(request: Request) -> str:
    query = request.url.remove_query_params("token").query
    return request.url.path + (f"?{query}" if query else "")


def login_required(request: Request, exc: LoginRequired) -> HTMLResponse:
    """Exception handler: a page without a valid token answers 401 with the login form."""
    return _login_page(request, _here_without_token(request), str(exc.detail), 401)


def page_login(request: Request, exc: PageLogin) -> RedirectResponse:
    """Exception handler: a page opened with a valid `?token=` sets the cookie and reloads without it."""
    return _logged_in(request, exc.token, _here_without_token(request))


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/") -> HTMLResponse:
    return _login_page(request, next, None, 200)


@router.post("/login")
async def login(request: Request) -> Response:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _FORM_BYTES:
            raise HTTPException(413, f"a login form is under {_FORM_BYTES} bytes")
    form = parse_qs(body.decode(errors="replace"))
    token = (form.get("token") or [""])[0].strip()
    target = (form.get("next") or ["/"])[0]
    principal = await run_in_threadpool(authenticate, request, token) if token else None
    if principal is None:
        what = "invalid API token (unknown or revoked)" if token else "missing API token"
        return _login_page(request, target, f"{what}: try again", 401)
    return _logged_in(request, token, target)
