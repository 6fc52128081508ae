"""What every provider's webhook comes down to: a verified event, and at most one task to make of it.

Each provider module (github, gitlab, gitea) turns its own headers and payload shapes into an
`Interpretation`; the route and the intake code never look at a provider's payload themselves. Of a
payload only names are used (repository full names, branches, numbers): every URL a task clones from
or pushes to is built from the configuration (`Rules.repository_url`).
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from configs.settings import WebhookProviderSettings, WebhookRepositorySettings, WebhookSettings
from elpis_worker.forges import ForgeError, clone_url, commenter_role, full_name_problem
from models.webhooks import Provider, Trigger

# TaskIn's cap on an instruction; a long issue body is cut to fit rather than refused.
MAX_INSTRUCTION = 20_000
RESULT_BRANCH_PREFIX = "elpis/"
_ZERO_SHA = "0" * 40


class PayloadError(ValueError):
    """A verified payload lacks a field its event must have; the message names the field."""


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
    # Set where the role is not in the payload (GitLab, Gitea): see `vet_commenter`.
    commenter: Commenter | None = None


@dataclass(frozen=True)
class Interpretation:
    event: str
    action: str | None = None
    repository: str | None = None
    plan: TaskPlan | None = None
    ignored: str | None = None  # why no task was made
    ping: bool = False


@dataclass(frozen=True)
class Rules:
    """The configured rules as one provider sees them."""

    provider: Provider
    settings: WebhookSettings

    @property
    def provider_settings(self) -> WebhookProviderSettings:
        return getattr(self.settings, self.provider.value)

    @property
    def trigger_label(self) -> str:
        return self.settings.trigger_label

    def repository_url(self, full_name: str, name_field: str) -> str:
        """Where `full_name` is cloned from and pushed to: the provider's configured web_url and the
        name, never a URL from the payload. A name that is not a plain owner/name (GitLab:
        group/.../project) is refused, naming the payload field that carried it."""
        problem = full_name_problem(self.provider, full_name)
        if problem:
            raise PayloadError(f"payload field {name_field}: {problem}")
        return clone_url(self.settings, self.provider, full_name)

    def repository(self, full_name: str | None) -> WebhookRepositorySettings | None:
        """The rules for `full_name`: a "provider:name" key first, then a plain "name" (case-insensitive,
        as repository names are on the providers)."""
        if not full_name:
            return None
        wanted = full_name.lower()
        by_key = {key.lower(): rules for key, rules in self.settings.repositories.items()}
        return by_key.get(f"{self.provider.value}:{wanted}") or by_key.get(wanted)

    def secret_for(self, full_name: str | None) -> str:
        """The repository's own secret when it has one, else the provider's ('' = none configured)."""
        repo = self.repository(full_name)
        if repo is not None and repo.secret.get_secret_value():
            return repo.secret.get_secret_value()
        return self.provider_settings.secret.get_secret_value()

    def candidate_secrets(self) -> list[str]:
        """Every secret a delivery to this provider may be signed with: the provider's and each
        repository's own (keyed for this provider or for any), without duplicates. The signature is
        checked against these before the body is parsed; which repository may use which secret is
        checked after (see `secret_for`)."""
        prefixes = tuple(f"{p.value}:" for p in Provider if p != self.provider)
        secrets = [self.provider_settings.secret.get_secret_value()]
        secrets += [
            rules.secret.get_secret_value()
            for key, rules in self.settings.repositories.items()
            if not key.lower().startswith(prefixes)
        ]
        return list(dict.fromkeys(s for s in secrets if s))

    def any_secret(self) -> bool:
        return bool(self.candidate_secrets())

    def test_command(self, full_name: str) -> str | None:
        repo = self.repository(full_name)
        return (repo.test_command if repo and repo.test_command else self.settings.test_command) or None

    def push_instruction(self, full_name: str, branch: str) -> str | None:
        repo = self.repository(full_name)
        if repo is None:
            return None
        if branch in repo.push:
            return repo.push[branch]
        for pattern, instruction in repo.push.items():
            if fnmatch.fnmatchcase(branch, pattern):
                return instruction
        return None

    def command(self, text: str | None) -> str | None:
        """The instruction of a comment that starts with the command prefix ('/elpis fix the test'), else
        None. Any whitespace may follow the prefix's word, a newline included."""
        if not text:
            return None
        text = text.lstrip()
        word = self.settings.command_prefix.rstrip()
        if not text.startswith(word):
            return None
        rest = text[len(word) :]
        if word != self.settings.command_prefix and rest and not rest[0].isspace():
            return None  # '/elpisfoo' is not the command
        return rest.strip() or None

    def refuses_commenter(self, user: str | None) -> str | None:
        allowed = self.settings.commenters
        if allowed and (user or "").lower() not in {name.lower() for name in allowed}:
            return f"comment by '{user}', who is not in webhooks.commenters"
        return None

    def refuses_role(self, user: str | None, role: str) -> str | None:
        """Why a comment by `user`, who holds `role` (an author_association name), is not obeyed."""
        allowed = {a.upper() for a in self.provider_settings.comment_associations}
        if role.upper() not in allowed:
            return f"comment by '{user}' ({role}), not one of {self.provider.value}.comment_associations"
        return None


def vet_commenter(interpretation: Interpretation, rules: Rules) -> Interpretation:
    """A comment's task stands only when the provider's API says its author holds one of the
    provider's comment_associations roles (GitLab, Gitea: their payloads do not say). When the API
    cannot be asked or its answer is unusable the comment is not obeyed either: a forge that is down
    lets no one in. A refusal is an ignored delivery, with why."""
    plan = interpretation.plan
    if plan is None or plan.commenter is None:
        return interpretation
    user = plan.commenter
    try:
        role = commenter_role(
            rules.settings,
            rules.provider,
            repository=plan.repository,
            project_id=plan.project_id,
            user=user.key,
        )
    except ForgeError as exc:
        why = f"comment by '{user.name}', whose role in {plan.repository} could not be checked: {exc}"
        return replace(interpretation, plan=None, ignored=why)
    refused = rules.refuses_role(user.name, role)
    return replace(interpretation, plan=None, ignored=refused) if refused else interpretation


class ProviderAdapter(ABC):
    """One provider's headers, signature and payload shapes."""

    provider: Provider
    display: str
    event_header: str

    @abstractmethod
    def verify(self, headers: Mapping[str, str], body: bytes, secret: str) -> str | None:
        """None when the request carries a valid signature or token for `secret`, else why not."""

    @abstractmethod
    def delivery_id(self, headers: Mapping[str, str]) -> str | None: ...

    def event(self, headers: Mapping[str, str]) -> str | None:
        return headers.get(self.event_header) or None

    @abstractmethod
    def repository(self, payload: Mapping[str, Any]) -> str | None:
        """The repository's full name ("owner/name"), used to find its rules and secret."""

    @abstractmethod
    def interpret(self, event: str, payload: Mapping[str, Any], rules: Rules) -> Interpretation: ...


# --- helpers shared by the providers -------------------------------------------------------------------


def hmac_sha256_hex(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def same(given: str, expected: str) -> bool:
    """Constant-time comparison, so the time taken says nothing about how much of a guess was right."""
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8", "replace"))


def dig(payload: Mapping[str, Any], path: str) -> Any:
    """payload["a"]["b"]... for "a.b", None where a step is missing or not a mapping."""
    node: Any = payload
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def need_str(payload: Mapping[str, Any], path: str) -> str:
    value = dig(payload, path)
    if not isinstance(value, str) or not value:
        raise PayloadError(f"payload field {path} is missing or not a string")
    return value


def need_int(payload: Mapping[str, Any], path: str) -> int:
    value = dig(payload, path)
    if isinstance(value, bool) or not isinstance(value, int):
        raise PayloadError(f"payload field {path} is missing or not an integer")
    return value


def opt_str(payload: Mapping[str, Any], path: str) -> str | None:
    value = dig(payload, path)
    return value if isinstance(value, str) and value else None


def label_names(labels: Any) -> list[str]:
    """Label names from GitHub/Gitea ({"name"}) or GitLab ({"title"}) label objects, or plain strings."""
    names: list[str] = []
    for label in labels if isinstance(labels, list) else []:
        if isinstance(label, str):
            names.append(label)
        elif isinstance(label, Mapping):
            name = label.get("name") or label.get("title")
            if isinstance(name, str):
                names.append(name)
    return names


def issue_instruction(title: str, body: str | None) -> str:
    return clip(f"{title.strip()}\n\n{(body or '').strip()}".strip())


# What a fork the payload does not name (a deleted one) is called.
UNKNOWN_FORK = "an unknown (deleted?) fork"


def fork_of(head: str | None, repository: str) -> str | None:
    """The fork a pull request comes from (its head repository's full name), None when the head is in
    `repository` itself. A head repository the payload does not name (a deleted fork) counts as a fork."""
    if head is None:
        return UNKNOWN_FORK
    return head if head.lower() != repository.lower() else None


def fork_unnamed(number: int) -> str:
    return (
        f"pull request {number} comes from {UNKNOWN_FORK}: the payload does not name the fork's "
        "repository, so there is nothing to clone it from"
    )


def fork_refused(number: int, fork: str) -> str:
    return (
        f"pull request {number} comes from {fork}: a fork's code is not run automatically "
        "(set webhooks.allow_forks to run it; results then go to the fork, never upstream)"
    )


def pull_request_instruction(number: int, title: str, body: str | None, test_command: str | None) -> str:
    tests = f" (`{test_command}`)" if test_command else ""
    text = f"Make the tests{tests} of pull request #{number} pass: {title.strip()}"
    return clip(f"{text}\n\n{(body or '').strip()}".strip())


def clip(text: str) -> str:
    if len(text) <= MAX_INSTRUCTION:
        return text
    marker = "\n[... cut: the text is longer than an instruction may be ...]"
    return text[: MAX_INSTRUCTION - len(marker)] + marker


def branch_of(ref: str | None) -> str | None:
    return ref[len("refs/heads/") :] if ref and ref.startswith("refs/heads/") else None


def push_interpretation(
    provider: Provider,
    event: str,
    payload: Mapping[str, Any],
    rules: Rules,
    *,
    repository: str,
    name_field: str,
    deleted: bool,
) -> Interpretation:
    """A push to a branch with a rule for the repository: the rule's instruction on that branch."""
    ref = opt_str(payload, "ref")
    branch = branch_of(ref)
    after = opt_str(payload, "after") or opt_str(payload, "checkout_sha") or ""

    def ignore(why: str) -> Interpretation:
        return Interpretation(event, None, repository, ignored=why)

    if branch is None:
        return ignore(f"push to {ref or 'an unknown ref'}, not to a branch")
    if deleted or after == _ZERO_SHA:
        return ignore(f"branch {branch} was deleted")
    if branch.startswith(RESULT_BRANCH_PREFIX):
        return ignore(f"push to {branch}, one of Elpis's own result branches")
    instruction = rules.push_instruction(repository, branch)
    if instruction is None:
        return ignore(f"no push rule for branch {branch} of {repository} (webhooks.repositories)")
    url = rules.repository_url(repository, name_field)
    return Interpretation(
        event,
        None,
        repository,
        plan=TaskPlan(
            trigger=Trigger.push,
            repository=repository,
            clone_url=url,
            ref=branch,
            push_url=url,
            instruction=clip(instruction),
            head_sha=after or None,
            dedup_key=f"{provider.value}:{repository}:push:{branch}:{after}",
            fields={"push_url": name_field, "repo": name_field, "ref": "ref"},
        ),
    )
