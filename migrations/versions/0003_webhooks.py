"""webhook deliveries and task sources

Revision ID: 0003_webhooks
Revises: 0001
Create Date: 2026-11-26 10:00:00.000000

Every verified webhook delivery (unique per provider and delivery id, so a redelivery finds the first
one), and for each webhook task where it came from and what it gave back (branch, commit, comment).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_webhooks"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _enum(name: str, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=16)


def upgrade() -> None:
    op.create_table(
        "webhook_delivery",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("provider", _enum("webhook_provider", "github", "gitlab", "gitea"), nullable=False),
        sa.Column("delivery_id", sa.String(length=255), nullable=False),
        sa.Column("event", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=True),
        sa.Column("repository", sa.Text(), nullable=True),
        sa.Column("payload_sha256", sa.String(length=64), nullable=False),
        sa.Column("outcome", _enum("webhook_outcome", "tasks", "ignored", "ping"), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("batch_id", sa.BigInteger(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["batch.id"], name=op.f("fk_webhook_delivery_batch_id_batch"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_delivery")),
        sa.UniqueConstraint("provider", "delivery_id", name="uq_webhook_delivery_provider_delivery_id"),
    )
    op.create_table(
        "task_source",
        sa.Column("task_id", sa.BigInteger(), nullable=False),
        sa.Column("delivery_pk", sa.BigInteger(), nullable=False),
        sa.Column("provider", _enum("task_source_provider", "github", "gitlab", "gitea"), nullable=False),
        sa.Column(
            "trigger",
            _enum("task_source_trigger", "issue_label", "comment", "pull_request", "push"),
            nullable=False,
        ),
        sa.Column("repository", sa.Text(), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=True),
        sa.Column("number", sa.Integer(), nullable=True),
        sa.Column("is_pull_request", sa.Boolean(), nullable=False),
        sa.Column("push_url", sa.Text(), nullable=False),
        sa.Column("head_sha", sa.String(length=64), nullable=True),
        sa.Column("resolve_head", sa.Boolean(), nullable=False),
        sa.Column("dedup_key", sa.Text(), nullable=False),
        sa.Column(
            "result_status",
            _enum("task_source_result", "pushed", "no_change", "skipped", "push_failed"),
            nullable=True,
        ),
        sa.Column("result_branch", sa.String(length=255), nullable=True),
        sa.Column("result_commit", sa.String(length=64), nullable=True),
        sa.Column("result_summary", sa.Text(), nullable=True),
        sa.Column("result_test_passed", sa.Boolean(), nullable=True),
        sa.Column("result_error", sa.Text(), nullable=True),
        sa.Column(
            "comment_status", _enum("task_source_comment", "posted", "skipped", "failed"), nullable=True
        ),
        sa.Column("comment_url", sa.Text(), nullable=True),
        sa.Column("comment_error", sa.Text(), nullable=True),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["delivery_pk"],
            ["webhook_delivery.id"],
            name=op.f("fk_task_source_delivery_pk_webhook_delivery"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["task_id"], ["task.id"], name=op.f("fk_task_source_task_id_task"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("task_id", name=op.f("pk_task_source")),
        sa.UniqueConstraint("dedup_key", name=op.f("uq_task_source_dedup_key")),
    )
    op.create_index(op.f("ix_task_source_delivery_pk"), "task_source", ["delivery_pk"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_task_source_delivery_pk"), table_name="task_source")
    op.drop_table("task_source")
    op.drop_table("webhook_delivery")
