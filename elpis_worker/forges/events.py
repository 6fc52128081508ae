"""An event as every provider's payload says it: the few facts a task is made of, in one shape.

Each provider reads its own payload models into these (`Forge.labelled_issue`, `new_comment`,
`labelled_pull_request`, `push`), deciding on the way what it alone knows (which action adds a label,
who wrote a comment); `Forge.interpret` makes the task of them the same way for every provider.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from elpis_worker.forges.plans import Commenter
from elpis_worker.forges.rules import Rules

__all__ = ["Comment", "Delivery", "Head", "Ignored", "Issue", "Kind", "PullRequest", "Push"]


class Kind(enum.Enum):
    """What an event is about, whatever the provider calls it."""

    ping = "ping"
    issue = "issue"
    comment = "comment"
    pull_request = "pull_request"
    push = "push"


class Ignored(Exception):
    """The delivery makes no task; the message says why (recorded on the delivery, answered 202)."""


@dataclass(frozen=True)
class Delivery:
    """One verified delivery being read: its event and what every event of it says."""

    event: str  # the event header's value
    name: str  # the provider's name of the event, in reasons ("issues", GitLab's object kind "note")
    kind: Kind | None  # None: not an event Elpis acts on
    action: str | None
    # The repository's full name; "" when the payload does not say (a 422 for an event Elpis acts on).
    repository: str
    default_branch: str | None
    payload: Any
    rules: Rules
    project_id: str | None = None  # GitLab's project id


@dataclass(frozen=True)
class Issue:
    number: int
    title: str
    body: str | None


@dataclass(frozen=True)
class Head:
    """Where a pull request's code is."""

    ref: str
    sha: str | None
    # The head repository's full name; None when the payload does not name it (a deleted fork).
    repository: str | None
    # Whether the head is in another repository than the pull request's own.
    fork: bool
    # The payload fields that name the head repository and its branch, for error messages.
    name_field: str
    ref_field: str


@dataclass(frozen=True)
class PullRequest:
    number: int
    title: str
    body: str | None
    head: Head


@dataclass(frozen=True)
class Comment:
    """A new comment on an issue or pull request."""

    id: int
    body: str | None
    # The user name `webhooks.commenters` is matched against.
    author: str | None
    # The issue's or pull request's number.
    number: int
    # The author's role when the payload says it (GitHub's author_association)...
    role: str | None = None
    # ... else who the provider's API is asked about.
    commenter: Commenter | None = None
    # The pull request commented on, when the payload names its head...
    pull_request: PullRequest | None = None
    # ... else whether it is a pull request at all (its head is then looked up before the task runs).
    on_pull_request: bool = False


@dataclass(frozen=True)
class Push:
    ref: str | None
    after: str
    deleted: bool = False
