"""GitLab: X-Gitlab-Token (the configured secret, verbatim), X-Gitlab-Event, and Idempotency-Key
(the same on every retry of one delivery; X-Gitlab-Event-UUID on GitLab before 17.4).

Events (by object_kind): issue (the trigger label added, or present when opened); note (a new comment on
an issue or merge request starting with the command prefix, by a project member whose access level the
API confirms); merge_request (opened, reopened, updated with new commits or the trigger label, while it
has the label); push. A repository's full name is its project path, which may be nested
(group/subgroup/.../project); a merge request comes from a fork when its source project is not its
target.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from elpis_worker.forges import events
from elpis_worker.forges.base import ROLE_NONE, Forge, quoted, same
from elpis_worker.forges.errors import ForgeError, PayloadError
from elpis_worker.forges.events import Delivery, Ignored, Kind
from elpis_worker.forges.payloads import (
    Labels,
    Maybe,
    MaybeNumber,
    MaybeText,
    Number,
    Payload,
    Text,
    parse,
)
from elpis_worker.forges.plans import Commenter
from elpis_worker.forges.rules import Rules
from models.webhooks import Provider

__all__ = ["GitLab"]

TOKEN_HEADER = "X-Gitlab-Token"
# GitLab's access levels as the names of GitHub's author_association (the comment_associations lists):
# Owner, Maintainer (MEMBER) and Developer (COLLABORATOR) can push; Reporter, Guest and Minimal cannot.
_ROLES = {50: "OWNER", 40: "MEMBER", 30: "COLLABORATOR"}


# --- payloads ------------------------------------------------------------------------------------------


class ProjectRef(Payload):
    id: MaybeNumber = None
    path_with_namespace: MaybeText = None
    default_branch: MaybeText = None


class ActionRef(Payload):
    action: MaybeText = None


class Envelope(Payload):
    """What every event says, read leniently."""

    object_kind: MaybeText = None
    object_attributes: Maybe[ActionRef] = None
    project: Maybe[ProjectRef] = None


class LabelChange(Payload):
    previous: Labels = ()
    current: Labels = ()


class Changes(Payload):
    labels: Maybe[LabelChange] = None


class Attributes(Payload):
    labels: Labels = ()
    state: MaybeText = None


class LabelledHook(Payload):
    """An issue or merge request event: the labels it has now, and what this event changed."""

    object_attributes: Attributes
    labels: Labels = ()
    changes: Maybe[Changes] = None

    @property
    def current_labels(self) -> tuple[str, ...]:
        return self.labels or self.object_attributes.labels

    def label_added(self, label: str, *, opened: bool) -> bool:
        """True when this event added `label`: from changes.labels when GitLab sends them, else (an item
        just opened) from the current labels."""
        change = self.changes.labels if self.changes else None
        if change is not None:
            return label in change.current and label not in change.previous
        return opened and label in self.current_labels


class IssueAttributes(Attributes):
    iid: Number
    title: Text
    description: MaybeText = None


class IssueHook(LabelledHook):
    object_attributes: IssueAttributes


class Commit(Payload):
    id: MaybeText = None


class SourceProject(Payload):
    path_with_namespace: MaybeText = None


class MergeRequest(Payload):
    iid: Number
    title: Text
    description: MaybeText = None
    source_branch: Text
    # Compared as sent: any difference (a malformed id too) makes the merge request a fork's.
    source_project_id: Any = None
    target_project_id: Any = None
    source: Maybe[SourceProject] = None
    last_commit: Maybe[Commit] = None

    def view(self, where: str) -> events.PullRequest:
        """`where`: the payload field this merge request is (object_attributes, merge_request)."""
        source = self.source_project_id
        return events.PullRequest(
            number=self.iid,
            title=self.title,
            body=self.description,
            head=events.Head(
                ref=self.source_branch,
                sha=self.last_commit.id if self.last_commit else None,
                repository=self.source.path_with_namespace if self.source else None,
                fork=source is not None and source != self.target_project_id,
                name_field=f"{where}.source.path_with_namespace",
                ref_field=f"{where}.source_branch",
            ),
        )


class CommitAt(Commit):
    id: Text


class MergeRequestAttributes(MergeRequest, Attributes):
    # The head commit names the task (one per head commit).
    last_commit: CommitAt
    oldrev: MaybeText = None


class MergeRequestHook(LabelledHook):
    object_attributes: MergeRequestAttributes


class NoteAttributes(Payload):
    id: Number
    note: MaybeText = None
    noteable_type: MaybeText = None


class Author(Payload):
    id: Number
    username: MaybeText = None


class NoteHook(Payload):
    object_attributes: NoteAttributes
    user: Author


class IssueRef(Payload):
    iid: Number


class NoteOnIssue(Payload):
    issue: IssueRef


class NoteOnMergeRequest(Payload):
    merge_request: MergeRequest


class PushHook(Payload):
    ref: MaybeText = None
    after: MaybeText = None
    checkout_sha: MaybeText = None


class MemberAnswer(Payload):
    """`GET /projects/<id>/members/all/<user id>`."""

    access_level: Number


# --- the adapter ---------------------------------------------------------------------------------------


class GitLab(Forge):
    provider = Provider.gitlab
    display = "GitLab"
    event_header = "X-Gitlab-Event"
    secret_env = "ELPIS_GITLAB_WEBHOOK_TOKEN"
    name_field = "project.path_with_namespace"
    default_branch_field = "project.default_branch"
    nested_names = True
    kinds: ClassVar[dict[str, Kind]] = {
        "issue": Kind.issue,
        "note": Kind.comment,
        "merge_request": Kind.pull_request,
        "push": Kind.push,
    }
    actions: ClassVar[tuple[str, ...]] = ("open", "reopen", "update")

    def verify(self, headers: Mapping[str, str], body: bytes, secret: str) -> str | None:
        given = headers.get(TOKEN_HEADER)
        if not given:
            return f"missing {TOKEN_HEADER} header: deliveries without the secret token are refused"
        if not same(given, secret):
            return f"{TOKEN_HEADER} does not match: check the webhook's secret token"
        return None

    def delivery_id(self, headers: Mapping[str, str]) -> str | None:
        return headers.get("Idempotency-Key") or headers.get("X-Gitlab-Event-UUID") or None

    def repository(self, payload: Mapping[str, Any]) -> str | None:
        project = parse(Envelope, payload).project
        return project.path_with_namespace if project else None

    def delivery(self, event: str, payload: Mapping[str, Any], rules: Rules) -> Delivery:
        envelope = parse(Envelope, payload)
        kind = envelope.object_kind or ""
        project = envelope.project or ProjectRef()
        return Delivery(
            event=event,
            name=kind,
            kind=self.kinds.get(kind),
            action=envelope.object_attributes.action if envelope.object_attributes else None,
            repository=project.path_with_namespace or "",
            default_branch=project.default_branch,
            payload=payload,
            rules=rules,
            project_id=str(project.id) if project.id is not None else None,
        )

    def labelled_issue(self, d: Delivery) -> events.Issue:
        if d.action not in self.actions:
            raise Ignored(f"issue/{d.action}: only open, reopen and update are read")
        hook = parse(IssueHook, d.payload)
        issue = hook.object_attributes
        if issue.state not in (None, "opened"):
            raise Ignored("the issue is not open")
        if not hook.label_added(d.rules.trigger_label, opened=d.action == "open"):
            raise Ignored(f"the '{d.rules.trigger_label}' label was not added")
        return events.Issue(issue.iid, issue.title, issue.description)

    def new_comment(self, d: Delivery) -> events.Comment:
        if d.action not in (None, "create"):
            raise Ignored(f"note/{d.action}: only new comments are read")
        note = parse(NoteHook, d.payload)
        noteable = note.object_attributes.noteable_type
        if noteable not in ("Issue", "MergeRequest"):
            raise Ignored(f"a comment on a {noteable or 'unknown object'}, not an issue or merge request")
        attributes, user = note.object_attributes, note.user
        # The note does not say the author's role: the API is asked, by user id (vet_commenter).
        commenter = Commenter(user.username or f"user {user.id}", user.id)

        def comment(number: int, pull_request: events.PullRequest | None = None) -> events.Comment:
            return events.Comment(
                attributes.id,
                attributes.note,
                user.username,
                number,
                commenter=commenter,
                pull_request=pull_request,
            )

        if noteable == "Issue":
            return comment(parse(NoteOnIssue, d.payload).issue.iid)
        merge_request = parse(NoteOnMergeRequest, d.payload).merge_request
        return comment(merge_request.iid, merge_request.view("merge_request"))

    def labelled_pull_request(self, d: Delivery) -> events.PullRequest:
        if d.action not in self.actions:
            raise Ignored(f"merge_request/{d.action}: only open, reopen and update are read")
        hook = parse(MergeRequestHook, d.payload)
        merge_request = hook.object_attributes
        label = d.rules.trigger_label
        if merge_request.state not in (None, "opened"):
            raise Ignored("the merge request is not open")
        if label not in hook.current_labels:
            raise Ignored(f"the merge request has no '{label}' label")
        if d.action == "update" and not (merge_request.oldrev or hook.label_added(label, opened=False)):
            raise Ignored(f"an update with neither new commits nor the '{label}' label added")
        return merge_request.view("object_attributes")

    def push(self, d: Delivery) -> events.Push:
        push = parse(PushHook, d.payload)
        return events.Push(push.ref, push.after or push.checkout_sha or "")

    # --- the REST API ------------------------------------------------------------------------------------

    def api_headers(self, token: str) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "elpis"}
        if token:
            headers["PRIVATE-TOKEN"] = token
        return headers

    def role_url(self, api_url: str, *, repository: str, project_id: str | None, user: str | int) -> str:
        """The user's membership, inherited ones included (the token needs read_api)."""
        project = project_id or quoted(repository, "")
        return f"{api_url}/projects/{project}/members/all/{quoted(str(user), '')}"

    def role_of(self, answer: dict[str, Any], url: str) -> str:
        """A custom role is at least its base level, so the highest named level at or below it counts."""
        try:
            level = parse(MemberAnswer, answer).access_level
        except PayloadError:
            raise ForgeError(f"GET {url} answered without an access_level") from None
        for floor in sorted(_ROLES, reverse=True):
            if level >= floor:
                return _ROLES[floor]
        return ROLE_NONE

    def comment_url(
        self, api_url: str, *, repository: str, project_id: str | None, number: int, is_pull_request: bool
    ) -> str:
        kind = "merge_requests" if is_pull_request else "issues"
        return f"{api_url}/projects/{project_id or quoted(repository, '')}/{kind}/{number}/notes"
