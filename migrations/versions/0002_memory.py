"""long-term memory: memories in pgvector (HNSW, cosine), the embedding model, consolidated tasks;
steps of kind "memory"

Revision ID: 0002_memory
Revises: 0001
Create Date: 2026-11-25 08:50:22.014001

The embedding_model row records the model the memory vectors are made with (all-MiniLM-L6-v2, 384
dimensions, matching the vector(384) column). Moving to another model is a new migration that
changes the column's dimension, re-embeds or drops the memories and updates that row; processes
whose configured model differs refuse to embed until then.
"""

from collections.abc import Sequence

import pgvector.sqlalchemy
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002_memory"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STEP_KINDS = ("think", "tool_call", "tool_result", "reflect", "emotion")


def _step_kind_check(kinds: Sequence[str]) -> None:
    # op.f: the name is final (the naming convention would prefix it again).
    op.drop_constraint(op.f("ck_step_step_kind"), "step", type_="check")
    listed = ", ".join(f"'{k}'" for k in kinds)
    op.create_check_constraint(op.f("ck_step_step_kind"), "step", f"kind IN ({listed})")


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    op.create_table(
        "embedding_model",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("dimension", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_embedding_model")),
    )
    op.execute("INSERT INTO embedding_model (id, name, dimension) VALUES (1, 'all-MiniLM-L6-v2', 384)")
    op.create_table(
        "consolidated_task",
        sa.Column("task_id", sa.BigInteger(), nullable=False),
        sa.Column("memory_ids", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "consolidated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["task_id"], ["task.id"], name=op.f("fk_consolidated_task_task_id_task"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("task_id", name=op.f("pk_consolidated_task")),
    )
    op.create_table(
        "memory",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "episodic",
                "semantic",
                "procedural",
                name="memory_kind",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("embedding", pgvector.sqlalchemy.Vector(dim=384), nullable=False),
        sa.Column("repo", sa.Text(), nullable=True),
        sa.Column("task_id", sa.BigInteger(), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("importance", sa.Float(), nullable=False),
        sa.Column("valence", sa.Float(), server_default="0", nullable=False),
        sa.Column("arousal", sa.Float(), server_default="0", nullable=False),
        sa.Column("access_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("reinforced_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_accessed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lineage", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"], ["task.id"], name=op.f("fk_memory_task_id_task"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_memory")),
    )
    op.create_index(
        "ix_memory_embedding_hnsw",
        "memory",
        ["embedding"],
        unique=False,
        postgresql_using="hnsw",
        postgresql_with={"m": 16, "ef_construction": 64},
        postgresql_ops={"embedding": "vector_cosine_ops"},
    )
    op.create_index(op.f("ix_memory_kind"), "memory", ["kind"], unique=False)
    op.create_index(op.f("ix_memory_repo"), "memory", ["repo"], unique=False)
    _step_kind_check((*STEP_KINDS, "memory"))


def downgrade() -> None:
    # Retrieval steps cannot exist under the old constraint.
    op.execute("DELETE FROM step WHERE kind = 'memory'")
    _step_kind_check(STEP_KINDS)
    op.drop_index(op.f("ix_memory_repo"), table_name="memory")
    op.drop_index(op.f("ix_memory_kind"), table_name="memory")
    op.drop_index("ix_memory_embedding_hnsw", table_name="memory")
    op.drop_table("memory")
    op.drop_table("consolidated_task")
    op.drop_table("embedding_model")
