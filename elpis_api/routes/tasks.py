"""Tasks and their steps."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException, Query
from sqlalchemy import func, select

from elpis_api.deps import MAX_ID, MAX_SEQ, DbId, ReadScope, SessionDep, SubmitScope, task_or_404
from elpis_api.schemas import EmotionPage, Page, StepOut, StepPage, TaskDetail, TaskOut
from models import Step, StepKind, Task, TaskStatus
from models.records import EmotionRecord

router = APIRouter(prefix="/v1/tasks", tags=["tasks"])


@router.get("", response_model=Page)
def list_tasks(
    session: SessionDep,
    token: ReadScope,
    status: TaskStatus | None = None,
    batch_id: int | None = Query(None, ge=1, le=MAX_ID),
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=MAX_ID),
) -> Page:
    query = select(Task)
    if status is not None:
        query = query.where(Task.status == status)
    if batch_id is not None:
        query = query.where(Task.batch_id == batch_id)
    total = session.scalar(select(func.count()).select_from(query.subquery()))
    rows = session.scalars(query.order_by(Task.id.desc()).limit(limit).offset(offset))
    return Page(items=[TaskOut.model_validate(t) for t in rows], total=total, limit=limit, offset=offset)


@router.get("/{task_id}", response_model=TaskDetail)
def get_task(task_id: DbId, session: SessionDep, token: ReadScope) -> TaskDetail:
    task = task_or_404(session, task_id)
    counts = dict(
        session.execute(
            select(Step.kind, func.count()).where(Step.task_id == task_id).group_by(Step.kind)
        ).all()
    )
    detail = TaskDetail.model_validate(task)
    detail.steps_by_kind = {str(k): v for k, v in counts.items()}
    return detail


@router.get("/{task_id}/steps", response_model=StepPage)
def list_steps(
    task_id: DbId,
    session: SessionDep,
    token: ReadScope,
    after: int = Query(-1, ge=-1, le=MAX_SEQ, description="return steps with seq greater than this"),
    limit: int = Query(100, ge=1, le=1000),
) -> Page:
    task_or_404(session, task_id)
    rows = list(
        session.scalars(
            select(Step).where(Step.task_id == task_id, Step.seq > after).order_by(Step.seq).limit(limit)
        )
    )
    items = [StepOut.model_validate(s) for s in rows]
    return StepPage(items=items, limit=limit, next_after=items[-1].seq if items else None)


@router.get("/{task_id}/emotions", response_model=EmotionPage)
def list_emotions(task_id: DbId, session: SessionDep, token: ReadScope) -> EmotionPage:
    """The affect trajectory: one item per emotion step (the state after the turn, how it moves,
    and what it changed for the next turn)."""
    task_or_404(session, task_id)
    rows = session.scalars(
        select(Step).where(Step.task_id == task_id, Step.kind == StepKind.emotion).order_by(Step.seq)
    )
    items = []
    for step in rows:
        record = EmotionRecord.model_validate(step.emotion)
        after, modulation, trajectory = record.after, record.modulation, record.trajectory
        items.append(
            {
                "seq": step.seq,
                "turn": step.turn,
                "valence": after.valence,
                "arousal": after.arousal,
                "dominance": after.dominance,
                "mood": after.mood,
                "before": record.before,
                "appraisals": [a.rule for a in record.appraisals],
                "trend": trajectory.trend if trajectory else None,
                "spiral": trajectory.spiral if trajectory else None,
                "velocity": trajectory.velocity if trajectory else None,
                "strategy": modulation.strategy if modulation else None,
                "temperature": modulation.temperature if modulation else None,
                "top_p": modulation.top_p if modulation else None,
                "replan_next": record.plan.replan if record.plan else False,
                "created_at": step.created_at,
            }
        )
    return EmotionPage(items=items, limit=len(items))


@router.post("/{task_id}/cancel", response_model=TaskOut, status_code=202)
def cancel_task(task_id: DbId, session: SessionDep, token: SubmitScope) -> TaskOut:
    """A queued task is cancelled at once; a running one stops before its next step."""
    with session.begin():
        task = session.execute(select(Task).where(Task.id == task_id).with_for_update()).scalar_one_or_none()
        if task is None:
            raise HTTPException(404, f"task {task_id} not found")
        if task.status.finished:
            raise HTTPException(409, f"task {task_id} already {task.status.value}; nothing to cancel")
        task.cancel_requested = True
        if task.status == TaskStatus.queued:
            task.status = TaskStatus.cancelled
            task.failure_reason = "cancelled before it started"
            task.finished_at = datetime.now(UTC)
    return TaskOut.model_validate(task)
