"""GitHub: X-Hub-Signature-256 (HMAC-SHA256 of the raw body), X-GitHub-Event, X-GitHub-Delivery.

Events: ping; issues (labeled); issue_comment and pull_request_review_comment (created, starting with
the command prefix; the commenter's role is the comment's author_association, signed into the
payload); pull_request (opened, reopened, synchronize, labeled); push. A comment on a pull request
does not name its head: the worker asks `GET /repos/<owner>/<repo>/pulls/<n>` before the task runs.

The payload models are Gitea's too (gitea.py): its payloads are GitHub's shapes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from configs.settings import WebhookSettings
from elpis_worker.forges import events
from elpis_worker.forges.base import (
    ROLE_NONE,
    Forge,
    PullRequestHead,
    hmac_sha256_hex,
    quoted,
    same,
)
from elpis_worker.forges.errors import ForgeError, PayloadError
from elpis_worker.forges.events import Delivery, Ignored, Kind
from elpis_worker.forges.payloads import Flag, Labels, Maybe, MaybeText, Number, Payload, Text, parse
from elpis_worker.forges.rules import Rules
from models.webhooks import Provider

__all__ = ["GitHub"]

HEAD_NAME = "pull_request.head.repo.full_name"


# --- payloads ------------------------------------------------------------------------------------------


class RepositoryRef(Payload):
    full_name: MaybeText = None
    default_branch: MaybeText = None


class Envelope(Payload):
    """What every event says, read leniently."""

    action: MaybeText = None
    repository: Maybe[RepositoryRef] = None

    @property
    def full_name(self) -> str | None:
        return self.repository.full_name if self.repository else None


class Label(Payload):
    name: MaybeText = None


class User(Payload):
    login: MaybeText = None

    @property
    def name(self) -> str | None:
        return self.login


class Item(Payload):
    """What an issue and a pull request have alike (on GitHub a pull request is an issue too)."""

    number: Number
    title: Text
    body: MaybeText = None
    state: MaybeText = None
    labels: Labels = ()


class Issue(Item):
    # An object when the issue is a pull request.
    pull_request: Maybe[dict[str, Any]] = None


class IssuesEvent(Payload):
    issue: Issue
    # The label this event added or removed.
    label: Maybe[Label] = None


class Comment(Payload):
    id: Number
    body: MaybeText = None
    user: Maybe[User] = None
    author_association: MaybeText = None


class IssueCommentEvent(Payload):
    comment: Comment
    issue: Issue

    @property
    def on_pull_request(self) -> bool:
        return self.issue.pull_request is not None


class HeadRepository(Payload):
    full_name: MaybeText = None


class Head(Payload):
    ref: Text
    sha: MaybeText = None
    # None when the head repository is gone (a deleted fork).
    repo: Maybe[HeadRepository] = None


class PullRequest(Item):
    head: Head

    def view(self, repository: str) -> events.PullRequest:
        name = self.head.repo.full_name if self.head.repo else None
        return events.PullRequest(
            number=self.number,
            title=self.title,
            body=self.body,
            head=events.Head(
                ref=self.head.ref,
                sha=self.head.sha,
                repository=name,
                # A head repository the payload does not name (a deleted fork) counts as a fork.
                fork=name is None or name.lower() != repository.lower(),
                name_field=HEAD_NAME,
                ref_field="pull_request.head.ref",
            ),
        )


class HeadAtCommit(Head):
    sha: Text


class PullRequestAtCommit(PullRequest):
    """A pull request event's: the head commit names the task (one per head commit)."""

    head: HeadAtCommit


class PullRequestEvent(Payload):
    pull_request: PullRequestAtCommit
    label: Maybe[Label] = None


class ReviewCommentEvent(Payload):
    comment: Comment
    pull_request: PullRequest


class PushEvent(Payload):
    ref: MaybeText = None
    after: MaybeText = None
    deleted: Flag = False


class PullRequestAnswer(Payload):
    """`GET /repos/<owner>/<repo>/pulls/<n>`: the REST API's pull request, the webhook's shape."""

    head: Head


# --- the adapter ---------------------------------------------------------------------------------------


class GitHub(Forge):
    provider = Provider.github
    display = "GitHub"
    event_header = "X-GitHub-Event"
    secret_env = "ELPIS_GITHUB_WEBHOOK_SECRET"
    name_field = "repository.full_name"
    default_branch_field = "repository.default_branch"
    delivery_header: ClassVar[str] = "X-GitHub-Delivery"
    signature_header: ClassVar[str] = "X-Hub-Signature-256"
    signature_prefix: ClassVar[str] = "sha256="
    kinds: ClassVar[dict[str, Kind]] = {
        "ping": Kind.ping,
        "issues": Kind.issue,
        "issue_comment": Kind.comment,
        "pull_request_review_comment": Kind.comment,
        "pull_request": Kind.pull_request,
        "push": Kind.push,
    }
    pull_request_actions: ClassVar[tuple[str, ...]] = ("opened", "reopened", "synchronize", "labeled")
    issue_comment_event: ClassVar[type[IssueCommentEvent]] = IssueCommentEvent

    def verify(self, headers: Mapping[str, str], body: bytes, secret: str) -> str | None:
        header = self.signature_header
        given = headers.get(header)
        if not given:
            return f"missing {header} header: unsigned deliveries are refused (give the webhook a secret)"
        if not same(given.strip().lower(), self.signature_prefix + hmac_sha256_hex(secret, body)):
            return f"{header} does not match the body: check the webhook's secret"
        return None

    def delivery_id(self, headers: Mapping[str, str]) -> str | None:
        return headers.get(self.delivery_header) or None

    def repository(self, payload: Mapping[str, Any]) -> str | None:
        return parse(Envelope, payload).full_name

    def delivery(self, event: str, payload: Mapping[str, Any], rules: Rules) -> Delivery:
        envelope = parse(Envelope, payload)
        return Delivery(
            event=event,
            name=event,
            kind=self.kinds.get(event),
            action=envelope.action,
            repository=envelope.full_name or "",
            default_branch=envelope.repository.default_branch if envelope.repository else None,
            payload=payload,
            rules=rules,
        )

    def labelled_issue(self, d: Delivery) -> events.Issue:
        label = d.rules.trigger_label
        why = f"issues/{d.action} without the '{label}' label being added"
        if d.action != "labeled":
            raise Ignored(why)
        event = parse(IssuesEvent, d.payload)
        if event.label is None or event.label.name != label:
            raise Ignored(why)
        return events.Issue(event.issue.number, event.issue.title, event.issue.body)

    def new_comment(self, d: Delivery) -> events.Comment:
        if d.action != "created":
            raise Ignored(f"{d.name}/{d.action}: only new comments are read")
        if d.event == "pull_request_review_comment":
            review = parse(ReviewCommentEvent, d.payload)
            pull = review.pull_request
            return self.comment(review.comment, pull.number, pull_request=pull.view(d.repository))
        event = parse(self.issue_comment_event, d.payload)
        return self.comment(event.comment, event.issue.number, on_pull_request=event.on_pull_request)

    def comment(self, comment: Comment, number: int, **target: Any) -> events.Comment:
        """The comment, with its author's role as the payload signs it."""
        author = comment.user.name if comment.user else None
        role = comment.author_association or ROLE_NONE
        return events.Comment(comment.id, comment.body, author, number, role=role, **target)

    def labelled_pull_request(self, d: Delivery) -> events.PullRequest:
        actions = self.pull_request_actions
        if d.action not in actions:
            raise Ignored(f"pull_request/{d.action}: only {', '.join(actions)} are read")
        event = parse(PullRequestEvent, d.payload)
        pull = event.pull_request
        if pull.state not in (None, "open"):
            raise Ignored("the pull request is not open")
        label = d.rules.trigger_label
        if d.action == "labeled" and (event.label.name if event.label else None) != label:
            raise Ignored(f"a label other than '{label}' was added")
        if label not in pull.labels and d.action != "labeled":
            raise Ignored(f"the pull request has no '{label}' label")
        return pull.view(d.repository)

    def push(self, d: Delivery) -> events.Push:
        push = parse(PushEvent, d.payload)
        return events.Push(push.ref, push.after or "", push.deleted)

    # --- the REST API ------------------------------------------------------------------------------------

    def api_headers(self, token: str) -> dict[str, str]:
        headers = {
            "Accept": "application/vnd.github+json",
            "User-Agent": "elpis",
            "X-GitHub-Api-Version": "2022-11-28",
        }
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def pull_request_head(self, settings: WebhookSettings, repository: str, number: int) -> PullRequestHead:
        url = f"{self._api(settings)}/repos/{quoted(repository)}/pulls/{number}"
        try:
            head = parse(PullRequestAnswer, self._call(settings, "GET", url)).head
        except PayloadError:
            raise ForgeError(f"GET {url} answered without head.ref") from None
        name = head.repo.full_name if head.repo else None
        if name is None:
            raise ForgeError("the pull request's head repository no longer exists (the answer names none)")
        try:
            clone_url = self.clone_url(settings, name)
        except ForgeError as exc:
            raise ForgeError(f"GET {url}: bad head repository: {exc}") from None
        return PullRequestHead(name, clone_url, head.ref, head.sha, source=f"GET {url}")

    def comment_url(
        self, api_url: str, *, repository: str, project_id: str | None, number: int, is_pull_request: bool
    ) -> str:
        return f"{api_url}/repos/{quoted(repository)}/issues/{number}/comments"
