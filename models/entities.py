"""The tables: a batch of tasks, each task's steps, and the worker processes that ran them."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import Base, str_enum


class TaskStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (TaskStatus.succeeded, TaskStatus.failed, TaskStatus.cancelled)


class StepKind(enum.StrEnum):
    think = "think"
    tool_call = "tool_call"
    tool_result = "tool_result"
    reflect = "reflect"
    emotion = "emotion"
    memory = "memory"  # long-term memories retrieved into the prompt
    observe = "observe"  # what the worker looked at before the first think (map, tests, sources)


class Batch(Base):
    __tablename__ = "batch"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(32), default="rest")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    tasks: Mapped[list[Task]] = relationship(back_populates="batch", order_by="Task.id")


class Task(Base):
    __tablename__ = "task"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batch.id", ondelete="CASCADE"), index=True)
    repo: Mapped[str] = mapped_column(Text)
    ref: Mapped[str | None] = mapped_column(String(255))
    instruction: Mapped[str] = mapped_column(Text)
    test_command: Mapped[str | None] = mapped_column(Text)
    # The task's own budget, merged over the config defaults when the task is created.
    budget: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    # Path globs (relative to the workspace root, e.g. "tests/**") that every tool refuses to change.
    protected: Mapped[list[str]] = mapped_column(JSONB, default=list, server_default=text("'[]'::jsonb"))

    status: Mapped[TaskStatus] = mapped_column(
        str_enum(TaskStatus, "task_status"), default=TaskStatus.queued, index=True
    )
    failure_reason: Mapped[str | None] = mapped_column(Text)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")

    # The claim: which worker process holds the task, and when it last said it was alive.
    worker_id: Mapped[str | None] = mapped_column(String(255))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # When the reconciler last sent the task to the broker again (queued or stale): it waits a grace
    # period after that before sending it once more, so a long queue is not flooded with copies.
    requeued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    # Outcome. workspace_diff is refreshed after every tool that may change files, so a task
    # resumed on another host rebuilds its workspace as a fresh clone plus this diff.
    summary: Mapped[str | None] = mapped_column(Text)
    workspace_diff: Mapped[str | None] = mapped_column(Text)
    test_passed: Mapped[bool | None] = mapped_column(Boolean)
    test_output: Mapped[str | None] = mapped_column(Text)
    test_exit_code: Mapped[int | None] = mapped_column(Integer)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    emotion: Mapped[dict[str, Any] | None] = mapped_column(JSONB)

    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    batch: Mapped[Batch] = relationship(back_populates="tasks")
    steps: Mapped[list[Step]] = relationship(
        back_populates="task", order_by="Step.seq", cascade="all, delete-orphan", passive_deletes=True
    )


class Step(Base):
    __tablename__ = "step"
    __table_args__ = (UniqueConstraint("task_id", "seq", name="uq_step_task_seq"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("task.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    # Which agent turn the step belongs to (one turn = think, tool call, result, reflect, emotion).
    turn: Mapped[int] = mapped_column(Integer)
    kind: Mapped[StepKind] = mapped_column(str_enum(StepKind, "step_kind"))
    content: Mapped[str] = mapped_column(Text, default="")

    tool_name: Mapped[str | None] = mapped_column(String(64))
    tool_args: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    tool_result: Mapped[str | None] = mapped_column(Text)
    exit_code: Mapped[int | None] = mapped_column(Integer)

    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    duration_ms: Mapped[float | None] = mapped_column(Float)
    sampling: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    emotion: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # Structured facts about the step (test counts, error kind, diff size, parse errors).
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    worker_id: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    task: Mapped[Task] = relationship(back_populates="steps")


class WorkerProcess(Base):
    """One row per model load: proves a process loads its model once and reuses it."""

    __tablename__ = "worker_process"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    worker_id: Mapped[str] = mapped_column(String(255), index=True)
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    backend: Mapped[str] = mapped_column(String(32))
    model_path: Mapped[str] = mapped_column(Text)
    load_seconds: Mapped[float] = mapped_column(Float)
    warmup_seconds: Mapped[float | None] = mapped_column(Float)
    tasks_run: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
