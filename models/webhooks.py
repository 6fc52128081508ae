"""Webhook deliveries, and where each webhook task came from and what it gave back.

Kept apart from `task` so the task table stays the same for REST and webhook tasks: a task has a
`task_source` row exactly when a verified webhook delivery created it.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, str_enum


class Provider(enum.StrEnum):
    github = "github"
    gitlab = "gitlab"
    gitea = "gitea"


class DeliveryOutcome(enum.StrEnum):
    tasks = "tasks"  # the delivery created tasks
    ignored = "ignored"  # verified, but no rule made a task of it (detail says why)
    ping = "ping"


class Trigger(enum.StrEnum):
    issue_label = "issue_label"
    comment = "comment"
    pull_request = "pull_request"
    push = "push"


class ResultStatus(enum.StrEnum):
    pushed = "pushed"  # the change is on the elpis/task-<id> branch of the source repository
    no_change = "no_change"  # the task ended without a diff: nothing to push
    skipped = "skipped"  # the task was cancelled: its partial change is not pushed
    push_failed = "push_failed"  # result_error says why


class CommentStatus(enum.StrEnum):
    posted = "posted"
    skipped = "skipped"  # no API token (or no issue / pull request to comment on)
    failed = "failed"


class WebhookDelivery(Base):
    """Every verified delivery, ignored ones included. (provider, delivery_id) is unique: a redelivery
    finds the first one's row (and its tasks) instead of making new ones, even when both arrive at once."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        UniqueConstraint("provider", "delivery_id", name="uq_webhook_delivery_provider_delivery_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    provider: Mapped[Provider] = mapped_column(str_enum(Provider, "webhook_provider"))
    # X-GitHub-Delivery, GitLab's Idempotency-Key / X-Gitlab-Event-UUID, X-Gitea-Delivery.
    delivery_id: Mapped[str] = mapped_column(String(255))
    event: Mapped[str] = mapped_column(String(64))
    action: Mapped[str | None] = mapped_column(String(64))
    repository: Mapped[str | None] = mapped_column(Text)
    payload_sha256: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[DeliveryOutcome] = mapped_column(str_enum(DeliveryOutcome, "webhook_outcome"))
    detail: Mapped[str | None] = mapped_column(Text)
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("batch.id", ondelete="SET NULL"))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class TaskSource(Base):
    """The webhook origin of a task (provider, delivery, issue / pull request) and its published result."""

    __tablename__ = "task_source"

    task_id: Mapped[int] = mapped_column(ForeignKey("task.id", ondelete="CASCADE"), primary_key=True)
    delivery_pk: Mapped[int] = mapped_column(
        ForeignKey("webhook_delivery.id", ondelete="CASCADE"), index=True
    )
    provider: Mapped[Provider] = mapped_column(str_enum(Provider, "task_source_provider"))
    trigger: Mapped[Trigger] = mapped_column(str_enum(Trigger, "task_source_trigger"))
    repository: Mapped[str] = mapped_column(Text)
    # GitLab's numeric project id (its notes API wants it); None elsewhere.
    project_id: Mapped[str | None] = mapped_column(String(64))
    # Issue or pull-request number (GitLab: iid); None for a push.
    number: Mapped[int | None] = mapped_column(Integer)
    is_pull_request: Mapped[bool] = mapped_column(Boolean, default=False)
    # Where the result branch is pushed: the source repository's clone URL from the payload.
    push_url: Mapped[str] = mapped_column(Text)
    head_sha: Mapped[str | None] = mapped_column(String(64))
    # A comment on a GitHub / Gitea pull request does not carry the head branch: the worker looks it
    # up through the provider's API before the task runs.
    resolve_head: Mapped[bool] = mapped_column(Boolean, default=False)
    # What the task acts on (an issue's label, a comment, a pull request head, a pushed commit): unique,
    # so the same thing reported twice (two hooks, opened + labeled) makes one task.
    dedup_key: Mapped[str] = mapped_column(Text, unique=True)

    result_status: Mapped[ResultStatus | None] = mapped_column(str_enum(ResultStatus, "task_source_result"))
    result_branch: Mapped[str | None] = mapped_column(String(255))
    result_commit: Mapped[str | None] = mapped_column(String(64))
    result_summary: Mapped[str | None] = mapped_column(Text)
    result_test_passed: Mapped[bool | None] = mapped_column(Boolean)
    result_error: Mapped[str | None] = mapped_column(Text)
    comment_status: Mapped[CommentStatus | None] = mapped_column(
        str_enum(CommentStatus, "task_source_comment")
    )
    comment_url: Mapped[str | None] = mapped_column(Text)
    comment_error: Mapped[str | None] = mapped_column(Text)
    # When publishing ended: the result is what result_status and comment_status say (a failure
    # included). NULL while it is still to do; the reconciler enqueues elpis.publish_result for those.
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Tries of elpis.publish_result so far; the last try's error (a transient one, retried at
    # publish_retry_at, or the one publishing gave up on).
    publish_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    publish_error: Mapped[str | None] = mapped_column(Text)
    publish_retry_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
