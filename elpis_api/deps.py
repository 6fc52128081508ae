"""Dependencies: handlers get a session, never build one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlalchemy.orm import Session

from models import Task, sessionmaker_for


def get_session(request: Request) -> Iterator[Session]:
    with sessionmaker_for(request.app.state.database_url)() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def task_or_404(session: Session, task_id: int) -> Task:
    task = session.get(Task, task_id)
    if task is None:
        raise HTTPException(404, f"task {task_id} not found (GET /v1/tasks lists the known tasks)")
    return task
