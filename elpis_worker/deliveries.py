"""Write one verified webhook delivery: its record, and its batch, task and task-source rows, in one
transaction. The webhook route (elpis_api/routes/webhooks.py) calls these once the delivery's forge
(`elpis_worker.forges`) has verified and interpreted it.

Idempotency rests on unique constraints, not on looking first: (provider, delivery_id) makes a
redelivery find the first delivery's row, even when the two arrive at the same moment (the second
insert waits for the first transaction, then conflicts); task_source.dedup_key makes the same issue
label, comment, pull-request head or pushed commit reported by two deliveries one task.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from elpis_worker.batches import TaskIn, add_batch
from elpis_worker.forges import Interpretation, PayloadError, TaskPlan
from models import Task
from models.webhooks import DeliveryOutcome, Provider, TaskSource, WebhookDelivery

DEDUP_CONSTRAINT = "uq_task_source_dedup_key"


@dataclass
class IntakeResult:
    delivery: str
    outcome: DeliveryOutcome
    task_ids: list[int]
    detail: str | None = None
    redelivery: bool = False
    # Tasks this call created and committed, to be enqueued by the caller.
    new_tasks: list[Task] = field(default_factory=list)


def payload_sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def validate_plan(plan: TaskPlan, test_command: str | None) -> TaskIn:
    """The same checks a REST task gets (git URL, plain ref, sizes). A bad value is reported by the
    payload field that carried it."""
    try:
        TaskIn(repo=plan.push_url, instruction="the result's push target")
    except ValidationError as exc:
        where = plan.fields.get("push_url", "the repository's clone URL")
        raise PayloadError(f"payload field {where}: {exc.errors()[0]['msg']}") from None
    try:
        return TaskIn(
            repo=plan.clone_url, ref=plan.ref, instruction=plan.instruction, test_command=test_command
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        name = str(error["loc"][0]) if error["loc"] else "payload"
        raise PayloadError(f"payload field {plan.fields.get(name, name)}: {error['msg']}") from None


def record_delivery(
    session: Session,
    provider: Provider,
    delivery_id: str,
    body_sha256: str,
    interpretation: Interpretation,
    task_in: TaskIn | None,
) -> IntakeResult:
    """Record the delivery and create its task (if any) in one transaction; the session must not be in
    one. Nothing is written when it fails."""
    with session.begin():
        return write_delivery(session, provider, delivery_id, body_sha256, interpretation, task_in)


def write_delivery(
    session: Session,
    provider: Provider,
    delivery_id: str,
    body_sha256: str,
    interpretation: Interpretation,
    task_in: TaskIn | None,
) -> IntakeResult:
    """The writes of `record_delivery`, in the session's open transaction (committed by the caller)."""
    plan = interpretation.plan
    delivery_pk = session.execute(
        insert(WebhookDelivery)
        .values(
            provider=provider,
            delivery_id=delivery_id,
            event=interpretation.event[:64],
            action=(interpretation.action or None) and interpretation.action[:64],
            repository=interpretation.repository,
            payload_sha256=body_sha256,
            outcome=DeliveryOutcome.ping if interpretation.ping else DeliveryOutcome.ignored,
            detail=interpretation.ignored,
        )
        .on_conflict_do_nothing(index_elements=["provider", "delivery_id"])
        .returning(WebhookDelivery.id)
    ).scalar_one_or_none()
    if delivery_pk is None:
        return _redelivery(session, provider, delivery_id)
    delivery = session.get_one(WebhookDelivery, delivery_pk)
    if plan is None or task_in is None:
        return IntakeResult(delivery_id, delivery.outcome, [], delivery.detail)

    try:
        with session.begin_nested():
            batch = add_batch(session, provider.value, [task_in])
            task = batch.tasks[0]
            session.add(_source_row(task.id, delivery_pk, provider, plan))
            session.flush()
    except IntegrityError as exc:
        if getattr(getattr(exc.orig, "diag", None), "constraint_name", None) != DEDUP_CONSTRAINT:
            raise
        existing = session.scalar(select(TaskSource.task_id).where(TaskSource.dedup_key == plan.dedup_key))
        delivery.detail = f"already handled by task {existing} ({_what(plan)})"
        return IntakeResult(delivery_id, DeliveryOutcome.ignored, [], delivery.detail)
    delivery.outcome = DeliveryOutcome.tasks
    delivery.batch_id = batch.id
    return IntakeResult(delivery_id, DeliveryOutcome.tasks, [task.id], new_tasks=[task])


def _redelivery(session: Session, provider: Provider, delivery_id: str) -> IntakeResult:
    first = session.scalars(
        select(WebhookDelivery).where(
            WebhookDelivery.provider == provider, WebhookDelivery.delivery_id == delivery_id
        )
    ).one()
    task_ids = list(
        session.scalars(
            select(TaskSource.task_id).where(TaskSource.delivery_pk == first.id).order_by(TaskSource.task_id)
        )
    )
    return IntakeResult(delivery_id, first.outcome, task_ids, first.detail, redelivery=True)


def _source_row(task_id: int, delivery_pk: int, provider: Provider, plan: TaskPlan) -> TaskSource:
    return TaskSource(
        task_id=task_id,
        delivery_pk=delivery_pk,
        provider=provider,
        trigger=plan.trigger,
        repository=plan.repository,
        project_id=plan.project_id,
        number=plan.number,
        is_pull_request=plan.is_pull_request,
        push_url=plan.push_url,
        head_sha=plan.head_sha,
        resolve_head=plan.resolve_head,
        dedup_key=plan.dedup_key,
    )


def _what(plan: TaskPlan) -> str:
    kind = "pull request" if plan.is_pull_request else "issue"
    match plan.trigger:
        case "issue_label":
            return f"the label of issue #{plan.number}"
        case "comment":
            return f"the same comment on {kind} #{plan.number}"
        case "pull_request":
            return f"pull request #{plan.number} at {(plan.head_sha or '')[:12]}"
        case _:
            return f"the push of {(plan.head_sha or '')[:12]} to {plan.ref}"
