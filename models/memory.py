"""Long-term memory: embedded memories in pgvector, the embedding model they were made with, and
which finished tasks consolidation has already turned into memories.

Short-term memory has no table of its own: a task's persisted steps are its short-term record
(observations = tool_result steps, reflections = reflect steps), so the loop writes nothing extra.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from pgvector.sqlalchemy import Vector
from sqlalchemy import BigInteger, DateTime, Float, ForeignKey, Index, Integer, String, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, str_enum

# The width of Memory.embedding. It is the dimension of the model named in EMBEDDING_MODEL; another
# model needs a migration that changes the column (and re-embeds or drops the rows) and the
# embedding_model row together.
EMBEDDING_DIM = 384
EMBEDDING_MODEL = "all-MiniLM-L6-v2"


class MemoryKind(enum.StrEnum):
    episodic = "episodic"  # what happened on one task
    semantic = "semantic"  # a fact about a repository or tool
    procedural = "procedural"  # a way of fixing a kind of problem


class Memory(Base):
    __tablename__ = "memory"
    __table_args__ = (
        # pgvector's approximate nearest-neighbour index; cosine, as the embeddings are normalised.
        Index(
            "ix_memory_embedding_hnsw",
            "embedding",
            postgresql_using="hnsw",
            postgresql_with={"m": 16, "ef_construction": 64},
            postgresql_ops={"embedding": "vector_cosine_ops"},
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    kind: Mapped[MemoryKind] = mapped_column(str_enum(MemoryKind, "memory_kind"), index=True)
    content: Mapped[str] = mapped_column(Text)
    embedding: Mapped[Any] = mapped_column(Vector(EMBEDDING_DIM))
    repo: Mapped[str | None] = mapped_column(Text, index=True)
    # The task that first formed it; the memory outlives the task (lineage keeps every source id).
    task_id: Mapped[int | None] = mapped_column(ForeignKey("task.id", ondelete="SET NULL"))
    # "success" / "failure" for memories of a finished attempt, None for plain facts.
    outcome: Mapped[str | None] = mapped_column(String(16))
    # Base importance in [0, 1]: raised by merges and by retrievals (see consolidation); the
    # strength used for ranking and forgetting decays from it with time since last use.
    importance: Mapped[float] = mapped_column(Float, default=0.5)
    # The affect when the memory was formed (the most intense one seen, after merges).
    valence: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    arousal: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    access_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # access_count already folded into importance by consolidation (so a rerun adds nothing).
    reinforced_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_accessed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # {"tasks": [ids], "memories": [ids], "steps": {"<task id>": [seqs]}}: where it came from.
    lineage: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class EmbeddingModel(Base):
    """The model the stored vectors were made with (one row). A process with another model or
    dimension refuses to embed, so vectors of two models never end up compared."""

    __tablename__ = "embedding_model"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    dimension: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ConsolidatedTask(Base):
    """A finished task whose steps consolidation has turned into memories: written in the same
    transaction as those memories, so a task is consolidated exactly once, or not at all."""

    __tablename__ = "consolidated_task"

    task_id: Mapped[int] = mapped_column(ForeignKey("task.id", ondelete="CASCADE"), primary_key=True)
    # Ids of the memories it created or merged into.
    memory_ids: Mapped[list[int]] = mapped_column(JSONB, default=list)
    consolidated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
