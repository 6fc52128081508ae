"""Engines and short, unit-of-work sessions."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker


@lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    """One pooled engine per URL per process (a forked Celery child must build its own)."""
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


def sessionmaker_for(url: str) -> sessionmaker[Session]:
    return sessionmaker(get_engine(url), expire_on_commit=False)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """`with session_scope(url) as s:` — one transaction, committed on success, rolled back on error."""
    with sessionmaker_for(url)() as session, session.begin():
        yield session
