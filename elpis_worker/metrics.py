"""What a worker process counts, called by the store right after a step or an outcome is committed.

The metric objects live in `elpis_api.metrics` (one definition for every process); they are imported on
first use so that importing the store never touches prometheus-client or the settings. Counting must
never break the work: any error here is logged and dropped.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from models import StepKind, TaskStatus

log = logging.getLogger(__name__)


def _tool_label(name: str | None) -> str:
    """Tool names come from the model: keep the label set bounded to the known tools."""
    from elpis_worker.tools import TOOL_SCHEMAS

    return name if name in TOOL_SCHEMAS else "other"


def observe_step(kind: StepKind, fields: dict[str, Any]) -> None:
    try:
        from elpis_api import metrics as m

        label = StepKind(kind).value
        m.STEPS.labels(label).inc()
        duration_ms = fields.get("duration_ms")
        if duration_ms is not None:
            m.STEP_SECONDS.labels(label).observe(duration_ms / 1000)
        completion = fields.get("completion_tokens")
        if completion is not None:
            m.TOKENS_GENERATED.labels(label).inc(completion)
            m.PROMPT_TOKENS.labels(label).inc(fields.get("prompt_tokens") or 0)
            if duration_ms:
                m.GENERATION_SECONDS.labels(label).inc(duration_ms / 1000)
                if completion:
                    m.TOKENS_PER_SECOND.labels(label).observe(completion / (duration_ms / 1000))
        if label == "memory":
            m.MEMORIES_RECALLED.inc(len((fields.get("detail") or {}).get("memories") or []))
        if kind == StepKind.tool_call:
            m.TOOL_CALLS.labels(_tool_label(fields.get("tool_name"))).inc()
        elif kind == StepKind.tool_result:
            detail = fields.get("detail") or {}
            if not detail.get("ok", True):
                m.TOOL_ERRORS.labels(
                    _tool_label(fields.get("tool_name")), str(detail.get("error_kind") or "failed")
                ).inc()
    except Exception:  # noqa: BLE001 - metrics are best effort, the step is already stored
        log.warning("could not count step metrics", exc_info=True)


def observe_finish(status: TaskStatus, started_at: datetime | None) -> None:
    try:
        from elpis_api import metrics as m

        label = TaskStatus(status).value
        m.TASKS_FINISHED.labels(label).inc()
        if started_at is not None:
            m.TASK_SECONDS.labels(label).observe((datetime.now(UTC) - started_at).total_seconds())
    except Exception:  # noqa: BLE001 - metrics are best effort, the outcome is already stored
        log.warning("could not count task metrics", exc_info=True)


def observe_reconcile(action: str) -> None:
    try:
        from elpis_api import metrics as m

        m.RECONCILER_ACTIONS.labels(action).inc()
    except Exception:  # noqa: BLE001 - metrics are best effort, the action is already taken
        log.warning("could not count a reconciler action", exc_info=True)


def observe_publish(outcome: str) -> None:
    try:
        from elpis_api import metrics as m

        m.PUBLISH_TRIES.labels(outcome).inc()
    except Exception:  # noqa: BLE001 - metrics are best effort, the try is already recorded
        log.warning("could not count a publishing try", exc_info=True)
