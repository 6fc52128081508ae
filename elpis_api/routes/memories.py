"""Long-term memories: search, read, forget; run a consolidation on demand."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict
from sqlalchemy import select

from elpis_api.deps import AdminScope, DbId, ReadScope, SessionDep
from elpis_worker.embedding import EmbeddingLoadError, EmbeddingMismatchError
from models.memory import Memory, MemoryKind

router = APIRouter(prefix="/v1/memories", tags=["memories"])


class MemoryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: MemoryKind
    content: str
    # Combined retrieval score and cosine similarity to the query (None when listing without one).
    score: float | None = None
    similarity: float | None = None
    repo: str | None
    task_id: int | None
    outcome: str | None
    importance: float
    # Importance decayed by the time since last use: what forgetting compares with memory.forget_below.
    strength: float = 0.0
    valence: float
    arousal: float
    salience: float = 0.0
    access_count: int
    last_accessed_at: datetime | None
    lineage: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class MemoryPage(BaseModel):
    items: list[MemoryOut]
    limit: int
    query: str | None = None


def _out(memory: Memory, score: float | None = None, similarity: float | None = None) -> MemoryOut:
    from elpis_worker.memory import memory_strength, salience

    out = MemoryOut.model_validate(memory)
    out.score, out.similarity = score, similarity
    out.strength = round(memory_strength(memory, now=datetime.now(UTC)), 4)
    out.salience = round(salience(memory.valence, memory.arousal), 4)
    return out


def _memory_or_404(session: SessionDep, memory_id: int) -> Memory:
    memory = session.get(Memory, memory_id)
    if memory is None:
        raise HTTPException(
            404, f"memory {memory_id} not found (it may have been forgotten; GET /v1/memories lists them)"
        )
    return memory


def _embedder_for(database_url: str):
    """The API process's embedding model, loaded on the first search and kept."""
    from elpis_worker.embedding import get_embedder
    from elpis_worker.memory import check_embedding_model

    try:
        embedder = get_embedder()
        check_embedding_model(database_url, embedder)
    except (EmbeddingLoadError, EmbeddingMismatchError) as exc:
        raise HTTPException(503, f"memory search is unavailable: {exc}") from exc
    return embedder


@router.get("", response_model=MemoryPage)
def list_memories(
    request: Request,
    session: SessionDep,
    token: ReadScope,
    query: str | None = Query(
        None, min_length=1, max_length=4000, description="text to search for; omitted: newest first"
    ),
    limit: int = Query(20, ge=1, le=200),
    kind: MemoryKind | None = None,
    repo: str | None = Query(None, min_length=1, max_length=2000, description="exact repository of the task"),
) -> MemoryPage:
    if query is None or not query.strip():
        if query is not None:
            # Through the app's validation handler, so it reads like every other 422.
            raise RequestValidationError(
                [
                    {
                        "loc": ("query", "query"),
                        "msg": "must contain some text (omit it to list the newest memories)",
                        "type": "value_error",
                    }
                ]
            )
        stmt = select(Memory)
        if kind is not None:
            stmt = stmt.where(Memory.kind == kind)
        if repo is not None:
            stmt = stmt.where(Memory.repo == repo)
        rows = session.scalars(stmt.order_by(Memory.created_at.desc(), Memory.id.desc()).limit(limit))
        return MemoryPage(items=[_out(m) for m in rows], limit=limit)

    from configs import get_settings
    from elpis_worker.memory import rank

    embedder = _embedder_for(request.app.state.database_url)
    vector = embedder.embed([query])[0]
    ranked = rank(session, vector, get_settings().memory, limit=limit, repo=repo, kind=kind)[:limit]
    items = [_out(m, round(score, 4), round(sim, 4)) for m, score, sim in ranked]
    session.rollback()  # ends the search's SET LOCAL settings; nothing was written
    return MemoryPage(items=items, limit=limit, query=query)


@router.get("/{memory_id}", response_model=MemoryOut)
def get_memory(memory_id: DbId, session: SessionDep, token: ReadScope) -> MemoryOut:
    return _out(_memory_or_404(session, memory_id))


@router.delete("/{memory_id}", status_code=204)
def delete_memory(memory_id: DbId, session: SessionDep, token: AdminScope) -> Response:
    with session.begin():
        session.delete(_memory_or_404(session, memory_id))
    return Response(status_code=204)


@router.post("/consolidate")
def consolidate(request: Request, token: AdminScope) -> dict[str, Any]:
    """Run a consolidation now (the same as the beat task) and return its report. 409 while another
    consolidation holds the lock: it is already doing the work."""
    from elpis_worker.memory import consolidate_memories

    try:
        report = consolidate_memories(request.app.state.database_url)
    except (EmbeddingLoadError, EmbeddingMismatchError) as exc:
        raise HTTPException(503, f"consolidation is unavailable: {exc}") from exc
    if not report.ran:
        raise HTTPException(409, "another consolidation is running; it will consolidate the pending tasks")
    return report.as_dict()
