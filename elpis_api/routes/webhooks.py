"""POST /webhooks/{github,gitlab,gitea}: a verified Git event becomes a queued task.

Order of checks: size (413, before the body is read whole), a configured secret and web_url (403), the
signature or token over the raw bytes against every configured secret (401; nothing is parsed before),
JSON (400), that the secret it was signed with is the repository's (403 if none, else 401), the event's
fields (422), and for a GitLab or Gitea comment the author's role, asked of the provider's API (refused:
an ignored delivery). Only then is anything written: the delivery record
and its task in one transaction; the task id is enqueued after the commit (one the broker refuses stays
queued for the reconciler), and the answer is 202 with
`{"delivery", "tasks"}` (200 for GitHub's ping). Reading endpoints show a delivery and a task's source.

This module does the HTTP: the capped body, the status codes, the answer. What a provider's headers and
payloads mean is its forge's (`elpis_worker.forges`); writing the delivery is `elpis_worker.deliveries`.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from configs import get_settings
from configs.settings import WebhookSettings
from elpis_api.deps import DbId, ReadScope, SessionDep, task_or_404
from elpis_worker.batches import enqueue_tasks
from elpis_worker.deliveries import IntakeResult, payload_sha256, record_delivery, validate_plan
from elpis_worker.forges import FORGES, PayloadError, Rules, Unverified
from elpis_worker.metrics import observe_webhook
from models import sessionmaker_for
from models.webhooks import DeliveryOutcome, Provider, TaskSource, WebhookDelivery

router = APIRouter(tags=["webhooks"])
log = logging.getLogger(__name__)


async def read_capped_body(request: Request, cap: int) -> bytes:
    """The body, refused with 413 as soon as it is known to be over `cap` bytes: from Content-Length
    before reading anything, and by counting while streaming (a chunked body has no length)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise HTTPException(400, f"Content-Length {declared!r} is not a number") from None
        if length > cap:
            raise HTTPException(413, _too_large(cap))
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > cap:
            raise HTTPException(413, _too_large(cap))
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(cap: int) -> str:
    return f"payload larger than {cap} bytes (webhooks.max_body_bytes)"


def _payload(body: bytes, content_type: str) -> Any:
    """GitHub and Gitea can also send `payload=<json>` form-encoded; the signature covers the raw body."""
    text: str | bytes = body
    if content_type.split(";")[0].strip().lower() == "application/x-www-form-urlencoded":
        values = parse_qs(body.decode("utf-8", "replace")).get("payload")
        if not values:
            raise HTTPException(400, "form-encoded delivery without a 'payload' field")
        text = values[0]
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HTTPException(400, f"payload is not valid JSON: {exc}") from None
    except RecursionError:
        raise HTTPException(400, "payload is nested too deeply") from None


def _receive(provider: Provider, request: Request, body: bytes, settings: WebhookSettings) -> JSONResponse:
    forge = FORGES[provider]
    rules = Rules(provider, settings)
    headers = request.headers
    content_type = headers.get("content-type", "")
    if not rules.any_secret():
        raise HTTPException(
            403,
            f"{forge.display} webhooks are refused: no secret is configured "
            f"(set {forge.secret_env} or webhooks.{provider.value}.secret)",
        )
    if not rules.provider_settings.web_url:
        raise HTTPException(
            403,
            f"{forge.display} webhooks are refused: webhooks.{provider.value}.web_url is not set "
            "(where its repositories are cloned from and pushed to; payload URLs are never used)",
        )
    # The signature over the raw bytes first, against every configured secret: nothing of an unverified
    # body is parsed, not even to pick a repository's secret.
    try:
        signed_with = forge.signed_with(headers, body, rules.candidate_secrets())
    except Unverified as exc:
        raise HTTPException(401, str(exc)) from None
    payload = _payload(body, content_type)
    if not isinstance(payload, Mapping):
        raise HTTPException(400, f"payload must be a JSON object, not {type(payload).__name__}")
    repository = forge.repository(payload)
    secret = rules.secret_for(repository)
    if not secret:
        raise HTTPException(
            403,
            f"{forge.display} webhooks for {repository or 'this repository'} are refused: no secret is "
            f"configured for it (set webhooks.{provider.value}.secret or its webhooks.repositories secret)",
        )
    if not hmac.compare_digest(signed_with.encode(), secret.encode()):
        # Signed, but with a secret that is not this repository's (another repository's own secret, or
        # the provider's where the repository has its own).
        raise HTTPException(401, f"the signature does not match the secret configured for {repository}")
    event = forge.event(headers)
    if not event:
        raise HTTPException(400, f"missing {forge.event_header} header: which event is this?")
    digest = payload_sha256(body)
    # A delivery without an id (old GitLab) is known by its content: the same bytes are the same event.
    delivery_id = (forge.delivery_id(headers) or f"sha256:{digest}")[:255]
    try:
        interpretation = forge.vet_commenter(forge.interpret(event, payload, rules), rules)
        plan = interpretation.plan
        task_in = validate_plan(plan, rules.test_command(plan.repository)) if plan else None
    except PayloadError as exc:
        raise HTTPException(422, f"{forge.display} {event} delivery: {exc}") from None

    with sessionmaker_for(request.app.state.database_url)() as session:
        result = record_delivery(session, provider, delivery_id, digest, interpretation, task_in)
        enqueue_tasks(request.app.state.enqueue, result.new_tasks)
    log.info(
        "%s %s delivery %s: %s %s%s",
        provider.value,
        event,
        delivery_id,
        result.outcome.value,
        result.task_ids,
        " (redelivery)" if result.redelivery else "",
    )
    observe_webhook(provider.value, result.outcome.value)
    return JSONResponse(_answer(result), status_code=200 if result.outcome == DeliveryOutcome.ping else 202)


def _answer(result: IntakeResult) -> dict[str, Any]:
    return {
        "delivery": result.delivery,
        "tasks": result.task_ids,
        "outcome": result.outcome.value,
        "detail": result.detail,
        "redelivery": result.redelivery,
    }


async def _endpoint(provider: Provider, request: Request) -> JSONResponse:
    settings = get_settings().webhooks
    try:
        body = await read_capped_body(request, settings.max_body_bytes)
        # Signature checks, JSON and the database are blocking work: off the event loop.
        return await run_in_threadpool(_receive, provider, request, body, settings)
    except HTTPException as exc:  # refused: counted by status (401 forged, 413 oversized...)
        observe_webhook(provider.value, f"refused_{exc.status_code}")
        raise


_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"description": '`{"delivery": id, "tasks": [task ids]}`; tasks is empty when ignored'},
    400: {"description": "not JSON, or a required header is missing"},
    401: {"description": "missing or wrong signature / token"},
    403: {"description": "no secret configured: every request is refused"},
    413: {"description": "body over webhooks.max_body_bytes"},
    422: {"description": "a field the event needs is missing or invalid"},
}


@router.post("/webhooks/github", status_code=202, responses=_RESPONSES)
async def github_webhook(request: Request) -> JSONResponse:
    """GitHub: X-Hub-Signature-256, X-GitHub-Event, X-GitHub-Delivery."""
    return await _endpoint(Provider.github, request)


@router.post("/webhooks/gitlab", status_code=202, responses=_RESPONSES)
async def gitlab_webhook(request: Request) -> JSONResponse:
    """GitLab: X-Gitlab-Token, X-Gitlab-Event, Idempotency-Key / X-Gitlab-Event-UUID."""
    return await _endpoint(Provider.gitlab, request)


@router.post("/webhooks/gitea", status_code=202, responses=_RESPONSES)
async def gitea_webhook(request: Request) -> JSONResponse:
    """Gitea / Forgejo: X-Gitea-Signature, X-Gitea-Event, X-Gitea-Delivery."""
    return await _endpoint(Provider.gitea, request)


@router.get("/webhooks/{provider}/deliveries/{delivery_id}")
def get_delivery(
    provider: Provider, delivery_id: str, session: SessionDep, token: ReadScope
) -> dict[str, Any]:
    """What became of one delivery: its outcome and the tasks it created."""
    delivery = session.scalars(
        select(WebhookDelivery).where(
            WebhookDelivery.provider == provider, WebhookDelivery.delivery_id == delivery_id
        )
    ).one_or_none()
    if delivery is None:
        raise HTTPException(404, f"no {provider.value} delivery {delivery_id} was recorded")
    tasks = session.scalars(
        select(TaskSource.task_id).where(TaskSource.delivery_pk == delivery.id).order_by(TaskSource.task_id)
    )
    return {
        "provider": delivery.provider.value,
        "delivery": delivery.delivery_id,
        "event": delivery.event,
        "action": delivery.action,
        "repository": delivery.repository,
        "payload_sha256": delivery.payload_sha256,
        "outcome": delivery.outcome.value,
        "detail": delivery.detail,
        "tasks": list(tasks),
        "received_at": delivery.received_at,
    }


@router.get("/v1/tasks/{task_id}/source")
def get_task_source(task_id: DbId, session: SessionDep, token: ReadScope) -> dict[str, Any]:
    """Where a webhook task came from and what it gave back (branch, commit, comment)."""
    task_or_404(session, task_id)
    source = session.get(TaskSource, task_id)
    if source is None:
        raise HTTPException(404, f"task {task_id} was not created by a webhook")
    delivery = session.get_one(WebhookDelivery, source.delivery_pk)
    return {
        "task_id": task_id,
        "provider": source.provider.value,
        "delivery": delivery.delivery_id,
        "event": delivery.event,
        "trigger": source.trigger.value,
        "repository": source.repository,
        "number": source.number,
        "is_pull_request": source.is_pull_request,
        "push_url": source.push_url,
        "head_sha": source.head_sha,
        "result": {
            "status": source.result_status.value if source.result_status else None,
            "branch": source.result_branch,
            "commit": source.result_commit,
            "summary": source.result_summary,
            "test_passed": source.result_test_passed,
            "error": source.result_error,
            "comment": source.comment_status.value if source.comment_status else None,
            "comment_url": source.comment_url,
            "comment_error": source.comment_error,
            "published_at": source.published_at,
            "publish_attempts": source.publish_attempts,
            "publish_error": source.publish_error,
            "publish_retry_at": source.publish_retry_at,
        },
    }
