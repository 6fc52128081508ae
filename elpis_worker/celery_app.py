"""The Celery app, configured in one place. Tasks carry ids only; Postgres is the truth.

Importing this module defines the app and nothing else: its configuration (the broker's address among
it, which raises StackError when there is none) is read the first time Celery needs it, when a worker
or beat starts or a task is sent.
"""

from __future__ import annotations

from celery import Celery, signals
from kombu import Queue

from configs import get_settings
from configs.logging import connect_celery_signals
from configs.servers import resolve_broker_url

MAINTENANCE_QUEUE = "maintenance"


def create_app() -> Celery:
    app = Celery("elpis", include=["elpis_worker.tasks"])
    app.add_defaults(configuration)  # a promise: called when the configuration is first needed
    return app


def configuration() -> dict[str, object]:
    """The app's Celery settings, from Elpis's settings and the broker's address."""
    settings = get_settings()
    queue = settings.worker.queue
    return dict(
        broker_url=resolve_broker_url(),
        # A message is acknowledged only after the task ran; a worker that dies mid-task leaves it
        # on the broker for another worker, which resumes it from its persisted steps.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_queues=(Queue(queue), Queue(MAINTENANCE_QUEUE)),
        task_default_queue=queue,
        task_routes={
            "elpis.run_task": {"queue": queue},
            "elpis.publish_result": {"queue": queue},
            "elpis.reconcile": {"queue": MAINTENANCE_QUEUE},
            "elpis.consolidate_memories": {"queue": MAINTENANCE_QUEUE},
        },
        task_serializer="json",
        accept_content=["json"],
        # No result backend: outcomes live in Postgres.
        task_ignore_result=True,
        # Events let Flower show task progress.
        worker_send_task_events=True,
        task_send_sent_event=True,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": settings.worker.visibility_timeout},
        worker_hijack_root_logger=False,
        beat_schedule={
            # Whatever a fault left behind is sent again (elpis_worker/reconcile.py).
            "reconcile": {
                "task": "elpis.reconcile",
                "schedule": settings.worker.reconcile_interval,
                "options": {"queue": MAINTENANCE_QUEUE, "expires": settings.worker.reconcile_interval},
            },
            # Short-term memories of finished tasks become long-term ones (elpis_worker/memory.py).
            "consolidate-memories": {
                "task": "elpis.consolidate_memories",
                "schedule": settings.memory.consolidation_interval,
                "options": {"queue": MAINTENANCE_QUEUE, "expires": settings.memory.consolidation_interval},
            },
        },
    )


@signals.before_task_publish.connect
def _readable_args(
    sender: str | None = None, headers: dict | None = None, body: object = None, **_: object
) -> None:
    """Flower (and `celery events`) show a task's argsrepr: say what the bare id is."""
    by_id = sender in ("elpis.run_task", "elpis.publish_result")
    if by_id and headers is not None and isinstance(body, tuple | list) and body[0]:
        headers["argsrepr"] = f"task_id={body[0][0]}"


connect_celery_signals()  # structured logs with the task id (configs/logging.py)
app = create_app()
