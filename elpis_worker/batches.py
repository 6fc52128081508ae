"""Creating work: a batch of tasks written in one transaction, then each task's id enqueued.

REST batches (elpis_api/routes/batches.py) and webhook deliveries (elpis_worker/deliveries.py) both
write their rows through `add_batch`, and `TaskIn` is what a task submission is, wherever it comes from.
Requests forbid unknown fields so a typo is a 422, not a silent drop.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.orm import Session

from configs import get_settings
from models import Batch, Task

log = logging.getLogger(__name__)

_URL = re.compile(r"^(https?|ssh|git|file)://\S+$|^[\w.-]+@[\w.-]+:\S+$")


class StrictInput(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class BudgetIn(StrictInput):
    max_steps: int | None = Field(None, ge=1, le=500, description="agent turns before giving up")
    max_tokens: int | None = Field(None, ge=100, le=10_000_000, description="prompt + completion tokens")
    max_seconds: float | None = Field(None, gt=0, le=86_400, description="wall-clock seconds")


class TaskIn(StrictInput):
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


def add_batch(session: Session, source: str, items: Sequence[TaskIn]) -> Batch:
    """Stage a batch and its tasks in the session's open transaction (budgets merged over the config's),
    flushed so the ids exist. REST batches and webhook deliveries both write their rows through here."""
    defaults = get_settings().budget.model_dump()
    batch = Batch(source=source[:32])
    session.add(batch)
    for item in items:
        budget = defaults | (item.budget.model_dump(exclude_none=True) if item.budget else {})
        batch.tasks.append(
            Task(
                repo=item.repo,
                ref=item.ref,
                instruction=item.instruction,
                test_command=item.test_command,
                budget=budget,
                protected=list(item.protected),
            )
        )
    session.flush()
    return batch


def enqueue_tasks(enqueue: Callable[[int], None], tasks: Sequence[Task]) -> None:
    """Enqueue each committed task's id. One the broker refuses stays queued: the reconciler
    (elpis_worker/reconcile.py) sends it once `worker.queued_grace` has passed, so a task submitted
    while the broker is down is worked when it is back, and the answer stays 2xx."""
    for task in tasks:
        try:
            enqueue(task.id)
        except Exception as exc:  # noqa: BLE001 - the row is committed; the reconciler sends it later
            log.warning("could not enqueue task %s (%s); it stays queued for the reconciler", task.id, exc)
