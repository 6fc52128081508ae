"""Request and response bodies. Requests forbid unknown fields so a typo is a 422, not a silent drop."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from models import StepKind, TaskStatus

_URL = re.compile(r"^(https?|ssh|git|file)://\S+$|^[\w.-]+@[\w.-]+:\S+$")


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class BudgetIn(_In):
    max_steps: int | None = Field(None, ge=1, le=500, description="agent turns before giving up")
    max_tokens: int | None = Field(None, ge=100, le=10_000_000, description="prompt + completion tokens")
    max_seconds: float | None = Field(None, gt=0, le=86_400, description="wall-clock seconds")


class TaskIn(_In):
    repo: str = Field(
        ...,
        min_length=1,
        max_length=2000,
        description="git URL (https://, ssh://, file://) or an absolute path on the workers",
    )
    ref: str | None = Field(None, max_length=255, description="branch, tag or commit; default HEAD")
    instruction: str = Field(..., min_length=1, max_length=20_000)
    test_command: str | None = Field(None, max_length=2000, description="shell command that runs the tests")
    budget: BudgetIn | None = None
    protected: list[str] = Field(
        default_factory=list,
        max_length=100,
        description="path globs relative to the repository root (e.g. tests/**) that no tool may change",
    )

    @field_validator("protected")
    @classmethod
    def _protected_are_relative_globs(cls, value: list[str]) -> list[str]:
        for glob in value:
            if not glob or len(glob) > 500 or glob.startswith("/") or ".." in glob.split("/"):
                raise ValueError(f"{glob!r} must be a non-empty relative path glob without '..'")
        return value

    @field_validator("repo")
    @classmethod
    def _repo_is_url_or_absolute_path(cls, value: str) -> str:
        if _URL.match(value) and "://" in value:
            try:
                parts = urlsplit(value)
                password = parts.password
            except ValueError as exc:
                raise ValueError("is not a valid URL") from exc
            # Stored, shown by GET /v1/tasks and logged: a credential must never ride in it. (ssh://git@
            # names the account; on http(s) any user part is a token.)
            if password is not None or (parts.scheme in ("http", "https") and parts.username):
                raise ValueError(
                    "must not carry credentials (user:password@ or token@): the workers' git "
                    "configuration or a deploy key gives access to private repositories"
                )
            return value
        if _URL.match(value) or value.startswith("/"):
            return value
        raise ValueError("must be a git URL (https://, ssh://, git@host:path, file://) or an absolute path")

    @field_validator("ref")
    @classmethod
    def _ref_is_plain(cls, value: str | None) -> str | None:
        if value is not None and (not value or value.startswith("-") or re.search(r"\s|\.\.", value)):
            raise ValueError(
                "must be a branch, tag or commit name (no spaces, no '..', not starting with '-')"
            )
        return value or None


class BatchIn(_In):
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
    sampling: dict[str, Any] | None
    emotion: dict[str, Any] | None
    detail: dict[str, Any] | None
    worker_id: str | None
    created_at: datetime


class Page(BaseModel):
    items: list[Any]
    total: int | None = None
    limit: int
    offset: int | None = None
    next_after: int | None = None
