"""Publishing as its own retried task, and the reconciler: task_source.publish_attempts, publish_error and
publish_retry_at (tries of elpis.publish_result, the last error, when the next try is due); and
task.requeued_at (when the reconciler last sent a task to the broker again).

Revision ID: 0007_publish_and_reconcile
Revises: 0006_api_tokens
Create Date: 2026-12-01 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_publish_and_reconcile"
down_revision: str | Sequence[str] | None = "0006_api_tokens"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "task_source", sa.Column("publish_attempts", sa.Integer(), server_default="0", nullable=False)
    )
    op.add_column("task_source", sa.Column("publish_error", sa.Text(), nullable=True))
    op.add_column("task_source", sa.Column("publish_retry_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("task", sa.Column("requeued_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("task", "requeued_at")
    op.drop_column("task_source", "publish_retry_at")
    op.drop_column("task_source", "publish_error")
    op.drop_column("task_source", "publish_attempts")
