"""What a verified delivery comes down to: an `Interpretation` (the event, and at most one `TaskPlan`,
or why none), whichever provider sent it. The webhook route validates a plan, and the intake
(`elpis_worker.deliveries`) writes it; neither looks at a provider's payload."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from models.webhooks import Trigger

__all__ = ["Commenter", "Interpretation", "TaskPlan"]


@dataclass(frozen=True)
class Commenter:
    """The author of a comment whose role the provider's API must confirm before its task stands:
    `key` is what the API knows them by (GitLab: the user id, Gitea: the user name)."""

    name: str
    key: str | int


@dataclass(frozen=True)
class TaskPlan:
    """The task a delivery asks for, before it is validated and written."""

    trigger: Trigger
    repository: str
    # Where the task's code comes from (a fork's URL for a pull request from a fork).
    clone_url: str
    ref: str | None
    # The source repository's clone URL: where the elpis/task-<id> branch is pushed.
    push_url: str
    instruction: str
    dedup_key: str
    number: int | None = None
    is_pull_request: bool = False
    project_id: str | None = None
    head_sha: str | None = None
    resolve_head: bool = False
    # Payload fields the values came from, so a bad value is reported by the field that carried it.
    fields: Mapping[str, str] = field(default_factory=dict)
    # Set where the role is not in the payload (GitLab, Gitea): see `Forge.vet_commenter`.
    commenter: Commenter | None = None


@dataclass(frozen=True)
class Interpretation:
    event: str
    action: str | None = None
    repository: str | None = None
    plan: TaskPlan | None = None
    ignored: str | None = None  # why no task was made
    ping: bool = False
