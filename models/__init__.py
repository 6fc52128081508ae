"""SQLAlchemy 2.0 ORM models and the session factory shared by the API and the worker."""

from models.auth import ApiToken, TokenScope
from models.base import Base
from models.db import get_engine, session_scope, sessionmaker_for
from models.entities import Batch, Step, StepKind, Task, TaskStatus, WorkerProcess
from models.memory import ConsolidatedTask, EmbeddingModel, Memory, MemoryKind  # noqa: F401 - memory tables
from models.webhooks import TaskSource, WebhookDelivery  # noqa: F401 - registers the webhook tables

__all__ = [
    "ApiToken",
    "Base",
    "Batch",
    "Step",
    "StepKind",
    "Task",
    "TaskStatus",
    "TokenScope",
    "WorkerProcess",
    "get_engine",
    "session_scope",
    "sessionmaker_for",
]
