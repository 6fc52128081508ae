"""Merge the memory (0002) and webhook (0003) branches into one head.

Revision ID: 0004_merge
Revises: 0002_memory, 0003_webhooks
Create Date: 2026-11-25 09:55:00
"""

from collections.abc import Sequence

revision: str = "0004_merge"
down_revision: str | Sequence[str] | None = ("0002_memory", "0003_webhooks")
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
