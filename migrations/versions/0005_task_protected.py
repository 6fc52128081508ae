"""Task.protected: path globs (e.g. the task's tests) that every tool refuses to change; and the
`observe` step kind (what the worker looks at before the first think).

Revision ID: 0005_task_protected
Revises: 0004_merge
Create Date: 2026-11-28 05:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0005_task_protected"
down_revision: str | Sequence[str] | None = "0004_merge"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


STEP_KINDS = ("think", "tool_call", "tool_result", "reflect", "emotion", "memory")


def _step_kind_check(kinds: Sequence[str]) -> None:
    # op.f: the name is final (the naming convention would prefix it again).
    op.drop_constraint(op.f("ck_step_step_kind"), "step", type_="check")
    listed = ", ".join(f"'{k}'" for k in kinds)
    op.create_check_constraint(op.f("ck_step_step_kind"), "step", f"kind IN ({listed})")


def upgrade() -> None:
    _step_kind_check((*STEP_KINDS, "observe"))
    op.add_column(
        "task",
        sa.Column("protected", JSONB(), nullable=False, server_default=sa.text("'[]'::jsonb")),
    )


def downgrade() -> None:
    op.execute("DELETE FROM step WHERE kind = 'observe'")
    _step_kind_check(STEP_KINDS)
    op.drop_column("task", "protected")
