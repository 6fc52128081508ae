"""Prometheus metrics: `GET /metrics` on the API shows what every Elpis process counted, plus gauges
read from Postgres and the broker at scrape time.

The counters and histograms are defined and counted in elpis_worker/metrics.py (by whichever process
does the work, into prometheus-client's multiprocess store); a scrape merges every process's files with
`MultiProcessCollector`.

Gauges that describe the system rather than one process (tasks by status, queue depth, the emotion of
each running task, memory counts) are read from the database and the broker when scraped, so they are
right whichever process changed them and need no cleanup when a process dies.

To add a counter, define it in elpis_worker/metrics.py's `instruments()` with an `observe_*` function
called where the work happens; for a gauge read from the database, `register_db_gauges` here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from elpis_api.deps import ReadScope
from elpis_worker.metrics import multiprocess_dir

log = logging.getLogger(__name__)

# --- read at scrape time ---------------------------------------------------------------------------
DbGauges = Callable[[object], Iterable[Metric]]
_db_gauges: list[DbGauges] = []


def register_db_gauges(provider: DbGauges) -> DbGauges:
    """Add gauges read from the database at scrape time: `provider(session)` yields metric families.
    A provider that fails is logged and skipped; the rest of the scrape still works."""
    if provider not in _db_gauges:
        _db_gauges.append(provider)
    return provider


def _task_gauges(session) -> Iterable[Metric]:
    from sqlalchemy import func, select

    from models import Task, TaskStatus

    counts = dict(session.execute(select(Task.status, func.count()).group_by(Task.status)).all())
    tasks = GaugeMetricFamily("elpis_tasks", "Tasks by status.", labels=["status"])
    for status in TaskStatus:
        tasks.add_metric([status.value], counts.get(status, 0))
    yield tasks

    emotion = GaugeMetricFamily(
        "elpis_task_emotion",
        "Current affect of each running task (valence, arousal, dominance in -1..1).",
        labels=["task_id", "dimension"],
    )
    mood = GaugeMetricFamily(
        "elpis_task_mood", "Current mood of each running task (1).", labels=["task_id", "mood"]
    )
    running = session.execute(
        select(Task.id, Task.emotion).where(Task.status == TaskStatus.running).order_by(Task.id)
    ).all()
    for task_id, state in running:
        state = state or {}
        for dimension in ("valence", "arousal", "dominance"):
            if isinstance(state.get(dimension), int | float):
                emotion.add_metric([str(task_id), dimension], float(state[dimension]))
        if state.get("mood"):
            mood.add_metric([str(task_id), str(state["mood"])], 1)
    yield emotion
    yield mood


def _memory_gauges(session) -> Iterable[Metric]:
    from sqlalchemy import func, select

    try:
        from models.memory import Memory, MemoryKind
    except ImportError:  # pragma: no cover - a build without long-term memory
        return

    counts = dict(session.execute(select(Memory.kind, func.count()).group_by(Memory.kind)).all())
    memories = GaugeMetricFamily("elpis_memories", "Long-term memories stored, by kind.", labels=["kind"])
    for kind in MemoryKind:
        memories.add_metric([kind.value], counts.get(kind, 0))
    yield memories


def _webhook_gauges(session) -> Iterable[Metric]:
    """Deliveries recorded (verified ones; refused deliveries are counted by WEBHOOK_DELIVERIES)."""
    from sqlalchemy import func, select

    try:
        from models.webhooks import WebhookDelivery
    except ImportError:  # pragma: no cover - a build without webhooks
        return
    stored = GaugeMetricFamily(
        "elpis_webhook_deliveries_stored",
        "Verified webhook deliveries recorded, by provider and outcome.",
        labels=["provider", "outcome"],
    )
    rows = session.execute(
        select(WebhookDelivery.provider, WebhookDelivery.outcome, func.count()).group_by(
            WebhookDelivery.provider, WebhookDelivery.outcome
        )
    )
    for provider, outcome, count in rows:
        stored.add_metric([str(provider), str(outcome)], count)
    yield stored


register_db_gauges(_task_gauges)
register_db_gauges(_memory_gauges)
register_db_gauges(_webhook_gauges)

# Celery's Redis transport keeps one list per priority step: "queue", then "queue\x06\x163" and so on.
_PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")


class StateCollector:
    """Gauges read from Postgres and the broker on each scrape."""

    def __init__(self, database_url: str, broker_url: Callable[[], str], queues: list[str]) -> None:
        self.database_url, self.broker_url, self.queues = database_url, broker_url, queues

    def collect(self) -> Iterable[Metric]:
        started = time.perf_counter()
        yield from self._database()
        yield from self._broker()
        took = GaugeMetricFamily("elpis_state_scrape_seconds", "Time spent reading the state gauges.")
        took.add_metric([], time.perf_counter() - started)
        yield took

    def _database(self) -> Iterable[Metric]:
        from models import sessionmaker_for

        up = GaugeMetricFamily("elpis_database_up", "1 when the database answered this scrape.")
        families: list[Metric] = []
        try:
            with sessionmaker_for(self.database_url)() as session:
                for provider in _db_gauges:
                    try:
                        with session.begin_nested():
                            families.extend(provider(session))
                    except Exception:  # noqa: BLE001 - one broken provider must not hide the rest
                        log.warning("metrics provider %s failed", provider.__name__, exc_info=True)
            up.add_metric([], 1)
        except Exception as exc:  # noqa: BLE001 - reported as elpis_database_up 0
            log.warning("metrics: database unreachable: %s", exc)
            up.add_metric([], 0)
        yield up
        yield from families

    def _broker(self) -> Iterable[Metric]:
        up = GaugeMetricFamily("elpis_broker_up", "1 when the broker answered this scrape.")
        depth = GaugeMetricFamily(
            "elpis_queue_depth",
            "Messages waiting in a Celery queue (not yet taken by a worker).",
            labels=["queue"],
        )
        try:
            client = _redis(self.broker_url())
            for queue in self.queues:
                depth.add_metric([queue], sum(client.llen(queue + suffix) for suffix in _PRIORITY_SUFFIXES))
            up.add_metric([], 1)
        except Exception as exc:  # noqa: BLE001 - reported as elpis_broker_up 0
            log.warning("metrics: broker unreachable: %s", exc)
            up.add_metric([], 0)
        yield up
        yield depth


_redis_clients: dict[str, object] = {}


def _redis(url: str):
    import redis

    if url not in _redis_clients:
        _redis_clients[url] = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    return _redis_clients[url]


def scrape(database_url: str, broker_url: Callable[[], str], queues: list[str]) -> bytes:
    """The text exposition of every process's counters plus the state gauges."""
    registry = CollectorRegistry()
    directory = multiprocess_dir()
    directory.mkdir(parents=True, exist_ok=True)
    MultiProcessCollector(registry, path=str(directory))
    registry.register(StateCollector(database_url, broker_url, queues))
    return generate_latest(registry)


router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request, token: ReadScope) -> Response:
    from configs import get_settings
    from configs.servers import resolve_broker_url
    from elpis_worker.celery_app import MAINTENANCE_QUEUE

    queues = [get_settings().worker.queue, MAINTENANCE_QUEUE]
    body = scrape(request.app.state.database_url, resolve_broker_url, queues)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
