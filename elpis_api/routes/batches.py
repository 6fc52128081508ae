"""POST /v1/batches and GET /v1/batches/{id}."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from fastapi import APIRouter, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy import func, select

from configs import get_settings
from elpis_api.deps import DbId, ReadScope, SessionDep, SubmitScope
from elpis_api.schemas import BatchIn, BatchOut, TaskBrief, TaskOut
from elpis_worker.batches import TaskIn, add_batch, enqueue_tasks
from elpis_worker.workspace import is_local_repo
from models import Batch, Task

router = APIRouter(prefix="/v1/batches", tags=["batches"])
log = logging.getLogger(__name__)


def refuse_local_repos(items: Sequence[TaskIn], *, allowed: bool) -> None:
    """A path or file:// `repo` has the workers read their own files: only where the operator allows
    it (`tools.allow_local_repos`). Refused the way every invalid field is (422 naming the field), so
    nothing of the batch is written. A settings check, so it is made here, not in the schema."""
    if allowed:
        return
    errors = [
        {
            "loc": ("body", "tasks", index, "repo"),
            "msg": "a local path or file:// repository is not allowed here (tools.allow_local_repos is "
            "false): give a git URL the workers can clone (https://, ssh://)",
            "type": "value_error",
        }
        for index, item in enumerate(items)
        if is_local_repo(item.repo)
    ]
    if errors:
        raise RequestValidationError(errors)


@router.post("", status_code=201)
def create_batch(body: BatchIn, session: SessionDep, request: Request, token: SubmitScope) -> dict:
    """Validate every task first (a bad one is a 422 and nothing is written), write the batch and its
    tasks in one transaction, then enqueue each task's id (a refused one waits for the reconciler)."""
    refuse_local_repos(body.tasks, allowed=get_settings().tools.allow_local_repos)
    with session.begin():
        batch = add_batch(session, request.headers.get("x-elpis-source", "rest"), body.tasks)
        tasks = list(batch.tasks)
    enqueue_tasks(request.app.state.enqueue, tasks)
    return {"id": batch.id, "tasks": [TaskBrief.model_validate(t).model_dump() for t in tasks]}


@router.get("/{batch_id}", response_model=BatchOut)
def get_batch(batch_id: DbId, session: SessionDep, token: ReadScope) -> BatchOut:
    batch = session.get(Batch, batch_id)
    if batch is None:
        raise HTTPException(404, f"batch {batch_id} not found")
    counts = dict(
        session.execute(
            select(Task.status, func.count()).where(Task.batch_id == batch_id).group_by(Task.status)
        ).all()
    )
    return BatchOut(
        id=batch.id,
        source=batch.source,
        created_at=batch.created_at,
        tasks=[TaskOut.model_validate(t) for t in batch.tasks],
        counts={str(k): v for k, v in counts.items()},
    )
