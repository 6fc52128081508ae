"""Gitea (and Forgejo): GitHub's payload shapes and REST API paths, with its own headers and a few
differences. X-Gitea-Signature is the hex HMAC-SHA256 of the raw body, without GitHub's `sha256=`;
X-Gitea-Event (issues, issue_comment, pull_request, push, ...), X-Gitea-Delivery.

Gitea's label events say which labels an item has, not which one was just added: an issue makes one
label task (its dedup key), and a pull request one per head commit. A comment's payload does not say
its author's role: the API is asked (`Forge.vet_commenter`), by user name; a comment says it is on a
pull request with `is_pull`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from elpis_worker.forges import events
from elpis_worker.forges.base import ROLE_NONE, quoted
from elpis_worker.forges.errors import ForgeError, PayloadError
from elpis_worker.forges.events import Delivery, Ignored, Kind
from elpis_worker.forges.github import Comment, GitHub, IssueCommentEvent, IssuesEvent, User
from elpis_worker.forges.payloads import Flag, Maybe, MaybeText, Payload, parse
from elpis_worker.forges.plans import Commenter
from models.webhooks import Provider

__all__ = ["Gitea"]

# Gitea's repository permissions as the names of GitHub's author_association (the comment_associations
# lists): owner, admin and write can push; read and none cannot.
_ROLES = {"owner": "OWNER", "admin": "MEMBER", "write": "COLLABORATOR"}


# --- payloads: GitHub's, and what Gitea adds ------------------------------------------------------------


class GiteaUser(User):
    username: MaybeText = None

    @property
    def name(self) -> str | None:
        return self.login or self.username


class GiteaComment(Comment):
    user: Maybe[GiteaUser] = None


class GiteaIssueCommentEvent(IssueCommentEvent):
    comment: GiteaComment
    is_pull: Flag = False

    @property
    def on_pull_request(self) -> bool:
        return self.is_pull or super().on_pull_request


class PermissionAnswer(Payload):
    """`GET /repos/<owner>/<repo>/collaborators/<user>/permission`."""

    permission: str


# --- the adapter ---------------------------------------------------------------------------------------


class Gitea(GitHub):
    provider = Provider.gitea
    display = "Gitea"
    event_header = "X-Gitea-Event"
    secret_env = "ELPIS_GITEA_WEBHOOK_SECRET"
    delivery_header = "X-Gitea-Delivery"
    signature_header = "X-Gitea-Signature"
    signature_prefix = ""
    kinds: ClassVar[dict[str, Kind]] = {
        "issues": Kind.issue,
        "issue_comment": Kind.comment,
        "pull_request": Kind.pull_request,
        "push": Kind.push,
    }
    issue_actions: ClassVar[tuple[str, ...]] = ("opened", "reopened", "label_updated")
    pull_request_actions = ("opened", "reopened", "synchronized", "label_updated")
    issue_comment_event = GiteaIssueCommentEvent

    def labelled_issue(self, d: Delivery) -> events.Issue:
        if d.action not in self.issue_actions:
            raise Ignored(f"issues/{d.action}: only {', '.join(self.issue_actions)} are read")
        issue = parse(IssuesEvent, d.payload).issue
        if issue.state not in (None, "open"):
            raise Ignored("the issue is not open")
        if d.rules.trigger_label not in issue.labels:
            raise Ignored(f"the issue has no '{d.rules.trigger_label}' label")
        return events.Issue(issue.number, issue.title, issue.body)

    def comment(self, comment: Comment, number: int, **target: Any) -> events.Comment:
        """The comment, and who to ask the API about: its author's user name."""
        name = comment.user.name if comment.user else None
        if name is None:
            raise PayloadError("payload field comment.user.login is missing or not a string")
        commenter = Commenter(name, name)
        return events.Comment(comment.id, comment.body, name, number, commenter=commenter, **target)

    # --- the REST API ------------------------------------------------------------------------------------

    def api_headers(self, token: str) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "elpis"}
        if token:
            headers["Authorization"] = f"token {token}"
        return headers

    def role_url(self, api_url: str, *, repository: str, project_id: str | None, user: str | int) -> str:
        """The user's permission (the token's user must be an admin of the repository)."""
        return f"{api_url}/repos/{quoted(repository)}/collaborators/{quoted(str(user), '')}/permission"

    def role_of(self, answer: dict[str, Any], url: str) -> str:
        try:
            permission = parse(PermissionAnswer, answer).permission
        except PayloadError:
            raise ForgeError(f"GET {url} answered without a permission") from None
        return _ROLES.get(permission.lower(), ROLE_NONE)
