"""Request and response bodies. Requests forbid unknown fields so a typo is a 422, not a silent drop."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

# A task submission (TaskIn) is defined with the service that writes it, elpis_worker/batches.py.
from elpis_worker.batches import StrictInput, TaskIn
from models import StepKind, TaskStatus
from models.records import Affect, EmotionRecord, Sampling, StepDetailOut, Strategy, step_detail


class BatchIn(StrictInput):
    tasks: list[TaskIn] = Field(..., min_length=1, max_length=1000)


class TaskBrief(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    batch_id: int
    status: TaskStatus


class BatchOut(BaseModel):
    id: int
    source: str
    created_at: datetime
    tasks: list[TaskOut]
    counts: dict[str, int]


class TaskOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    batch_id: int
    repo: str
    ref: str | None
    instruction: str
    test_command: str | None
    budget: dict[str, Any]
    protected: list[str] = []
    status: TaskStatus
    failure_reason: str | None
    cancel_requested: bool
    worker_id: str | None
    attempts: int
    summary: str | None
    test_passed: bool | None
    test_exit_code: int | None
    prompt_tokens: int
    completion_tokens: int
    emotion: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None


class TaskDetail(TaskOut):
    diff: str | None = Field(None, validation_alias="workspace_diff")
    test_output: str | None
    steps_by_kind: dict[str, int] = {}


class StepOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    seq: int
    turn: int
    kind: StepKind
    content: str
    tool_name: str | None
    tool_args: dict[str, Any] | None
    tool_result: str | None
    exit_code: int | None
    prompt_tokens: int | None
    completion_tokens: int | None
    duration_ms: float | None
    sampling: Sampling | None
    # An emotion step's whole record; a think step's affect state at the time.
    emotion: EmotionRecord | Affect | None
    # The model of the step's kind (models/records.py: DETAILS); a tool call and an emotion update have
    # none, and a stored detail no model reads is returned as it is.
    detail: StepDetailOut | None
    worker_id: str | None
    created_at: datetime

    @field_validator("detail", mode="before")
    @classmethod
    def _detail_of_kind(cls, value: Any, info: ValidationInfo) -> Any:
        return step_detail(info.data.get("kind"), value) if isinstance(value, dict) else value


class Page(BaseModel):
    items: list[Any]
    total: int | None = None
    limit: int
    offset: int | None = None
    next_after: int | None = None


class StepPage(Page):
    items: list[StepOut]


class EmotionPoint(BaseModel):
    """One emotion step of a task's affect trajectory."""

    seq: int
    turn: int
    valence: float
    arousal: float
    dominance: float
    mood: str | None
    before: Affect | None
    appraisals: list[str]
    trend: str | None
    spiral: str | None
    velocity: dict[str, float] | None
    strategy: Strategy | None
    temperature: float | None
    top_p: float | None
    replan_next: bool
    created_at: datetime


class EmotionPage(Page):
    items: list[EmotionPoint]
