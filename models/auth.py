"""API tokens: who may call the REST API and the pages, and with which scope.

Only a token's sha256 is stored: the token itself is shown once, when it is made. Tokens are 32 random
bytes, so a plain hash is as good as a slow one (nothing to guess) and lets a request be checked with one
indexed lookup.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import BigInteger, DateTime, String, func
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, str_enum


class TokenScope(enum.StrEnum):
    """Ordered: each scope can do everything the ones before it can."""

    read = "read"  # tasks, steps, emotions, memories, batches, the pages, /metrics
    submit = "submit"  # also create batches and cancel tasks
    admin = "admin"  # also delete memories, run consolidation, manage tokens

    @property
    def rank(self) -> int:
        return list(TokenScope).index(self)

    def allows(self, needed: TokenScope) -> bool:
        return self.rank >= needed.rank


class ApiToken(Base):
    __tablename__ = "api_token"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    scope: Mapped[TokenScope] = mapped_column(str_enum(TokenScope, "api_token_scope"))
    # hex sha256 of the token; the token itself is never stored.
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
