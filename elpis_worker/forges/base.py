"""A forge: what Elpis knows of one Git provider, in both directions.

Inbound, a webhook delivery is verified (`verify`, against each configured secret: `signed_with`),
read (`delivery`, then the event's own payload model) and made into at most one task
(`interpret`). The way from an event to a task is the same on every provider and lives here; each
provider's module says only what is its own: headers and signatures, payload shapes, which action
puts a label on, who wrote a comment and whether the payload says their role.

Outbound, the same adapter builds the URL a repository is cloned from and pushed to (from the
operator's `webhooks.<provider>.web_url` and a checked full name, never from a payload), the push
credential, and calls the provider's REST API: a commenter's role, a pull request's head, a comment.
An answer that cannot be had is an error, never a permission.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

from configs.settings import WebhookProviderSettings, WebhookSettings
from elpis_worker.forges import api
from elpis_worker.forges.errors import ForgeError, PayloadError, Unverified
from elpis_worker.forges.events import Comment, Delivery, Ignored, Issue, Kind, PullRequest, Push
from elpis_worker.forges.plans import Commenter, Interpretation, TaskPlan
from elpis_worker.forges.rules import Rules
from models.webhooks import Provider, Trigger

__all__ = ["ROLE_NONE", "Forge", "PullRequestHead"]

ROLE_NONE = "NONE"
# TaskIn's cap on an instruction; a long issue body is cut to fit rather than refused.
MAX_INSTRUCTION = 20_000
RESULT_BRANCH_PREFIX = "elpis/"
_ZERO_SHA = "0" * 40
# One path segment of a repository's full name: what GitHub, GitLab and Gitea allow in owner, group and
# repository names. No '/', ':', '%', '@', '\', whitespace or control characters can get through.
_SEGMENT = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.-]{0,99}")
_MAX_FULL_NAME = 255
# What a fork the payload does not name (a deleted one) is called.
UNKNOWN_FORK = "an unknown (deleted?) fork"


@dataclass(frozen=True)
class PullRequestHead:
    """A pull request's head as the provider's API says it, with its clone URL built from the
    configuration (the API's own clone_url is never used)."""

    repository: str
    clone_url: str
    ref: str
    sha: str | None
    # The API request it came from, for messages.
    source: str


class Forge(ABC):
    """One provider. Subclasses set the class attributes and implement the abstract methods."""

    provider: ClassVar[Provider]
    display: ClassVar[str]
    event_header: ClassVar[str]
    # The environment variable that holds the provider's webhook secret, for the 403 that asks for one.
    secret_env: ClassVar[str]
    # The payload fields that name the repository and its default branch.
    name_field: ClassVar[str]
    default_branch_field: ClassVar[str]
    # Whether a full name may have more than two parts (GitLab's group/subgroup/.../project).
    nested_names: ClassVar[bool] = False

    # --- inbound: verification -------------------------------------------------------------------------

    @abstractmethod
    def verify(self, headers: Mapping[str, str], body: bytes, secret: str) -> str | None:
        """None when the request carries a valid signature or token for `secret`, else why not."""

    def signed_with(self, headers: Mapping[str, str], body: bytes, secrets: list[str]) -> str:
        """The secret among `secrets` the delivery is signed with (each checked in constant time over the
        raw bytes: nothing of an unverified body is parsed); Unverified when none."""
        problem = "missing signature"
        for secret in secrets:
            why = self.verify(headers, body, secret)
            if why is None:
                return secret
            problem = why
        raise Unverified(problem)

    @abstractmethod
    def delivery_id(self, headers: Mapping[str, str]) -> str | None: ...

    def event(self, headers: Mapping[str, str]) -> str | None:
        return headers.get(self.event_header) or None

    # --- inbound: reading a payload ----------------------------------------------------------------------

    @abstractmethod
    def repository(self, payload: Mapping[str, Any]) -> str | None:
        """The repository's full name, read leniently (None when the payload does not say): used to find
        its rules and secret before anything else is read."""

    @abstractmethod
    def delivery(self, event: str, payload: Mapping[str, Any], rules: Rules) -> Delivery:
        """What every event says (which event, its action, repository, default branch), read leniently:
        nothing is refused before the event is known to be one Elpis acts on."""

    @abstractmethod
    def labelled_issue(self, d: Delivery) -> Issue:
        """The issue the trigger label was put on; Ignored when this event did not put it on."""

    @abstractmethod
    def new_comment(self, d: Delivery) -> Comment:
        """The new comment; Ignored when it is not a new comment on an issue or pull request."""

    @abstractmethod
    def labelled_pull_request(self, d: Delivery) -> PullRequest:
        """The open pull request with the trigger label that this event opened, updated or labelled;
        Ignored when it is none of these."""

    @abstractmethod
    def push(self, d: Delivery) -> Push: ...

    # --- inbound: from an event to a task ----------------------------------------------------------------

    def interpret(self, event: str, payload: Mapping[str, Any], rules: Rules) -> Interpretation:
        """At most one task of a verified event, or why none. Pure: no API is asked (see vet_commenter).
        PayloadError (a 422) when a field the event needs is missing or invalid."""
        d = self.delivery(event, payload, rules)
        repository = d.repository or None
        if d.kind is Kind.ping:
            return Interpretation(event, d.action, repository, ping=True)
        if d.kind is None:
            why = f"event '{event}' is not one Elpis acts on"
            return Interpretation(event, d.action, repository, ignored=why)
        if repository is None:
            raise PayloadError(f"payload field {self.name_field} is missing or not a string")
        try:
            plan = self._plan(d, repository)
        except Ignored as why:
            return Interpretation(event, d.action, repository, ignored=str(why))
        return Interpretation(event, d.action, repository, plan=plan)

    def _plan(self, d: Delivery, repository: str) -> TaskPlan:
        if d.kind is Kind.push:
            return self._push_plan(d, repository)
        clone_url = self.repository_url(d.rules, repository, self.name_field)
        key = f"{self.provider.value}:{repository}"
        if d.kind is Kind.issue:
            issue = self.labelled_issue(d)
            return TaskPlan(
                trigger=Trigger.issue_label,
                repository=repository,
                clone_url=clone_url,
                ref=d.default_branch,
                push_url=clone_url,
                instruction=clip(f"{issue.title.strip()}\n\n{(issue.body or '').strip()}".strip()),
                number=issue.number,
                project_id=d.project_id,
                dedup_key=f"{key}:issue:{issue.number}:label",
                fields=self._fields(self.name_field, self.default_branch_field),
            )
        if d.kind is Kind.comment:
            return self._comment_plan(d, repository, clone_url, key)
        pull = self.labelled_pull_request(d)
        if pull.head.fork and not d.rules.settings.allow_forks:
            raise Ignored(
                f"pull request {pull.number} comes from {pull.head.repository or UNKNOWN_FORK}: a fork's "
                "code is not run automatically (set webhooks.allow_forks to run it; results then go to "
                "the fork, never upstream)"
            )
        tests = d.rules.test_command(repository)
        text = f"Make the tests{f' (`{tests}`)' if tests else ''} of pull request #{pull.number} pass: "
        instruction = clip(f"{text}{pull.title.strip()}\n\n{(pull.body or '').strip()}".strip())
        dedup_key = f"{key}:pr:{pull.number}:{pull.head.sha}"
        return self._head_plan(d, repository, clone_url, pull, Trigger.pull_request, instruction, dedup_key)

    def _comment_plan(self, d: Delivery, repository: str, clone_url: str, key: str) -> TaskPlan:
        comment = self.new_comment(d)
        instruction = d.rules.command(comment.body)
        if instruction is None:
            raise Ignored("comment does not start with the command prefix")
        refused = d.rules.refuses_commenter(comment.author)
        if refused is None and comment.role is not None:
            # The payload says the role (GitHub signs it in): no API call is needed.
            refused = d.rules.refuses_role(comment.author, comment.role)
        if refused:
            raise Ignored(refused)
        dedup_key = f"{key}:comment:{comment.id}"
        if comment.pull_request is not None:
            # A trusted commenter may ask for a fork's pull request: it is cloned from the fork and its
            # result goes back there.
            return self._head_plan(
                d,
                repository,
                clone_url,
                comment.pull_request,
                Trigger.comment,
                instruction,
                dedup_key,
                comment.commenter,
            )
        resolve = comment.on_pull_request
        if resolve and not self.settings(d.rules.settings).api_url:
            raise Ignored(
                f"a comment on a pull request: its head branch is looked up through {self.display}'s API, "
                f"and webhooks.{self.provider.value}.api_url is not set"
            )
        return TaskPlan(
            trigger=Trigger.comment,
            repository=repository,
            clone_url=clone_url,
            # A pull request's head branch is not in this payload: the worker looks it up.
            ref=None if resolve else d.default_branch,
            push_url=clone_url,
            instruction=instruction,
            number=comment.number,
            is_pull_request=resolve,
            resolve_head=resolve,
            project_id=d.project_id,
            dedup_key=dedup_key,
            fields=self._fields(self.name_field, self.default_branch_field),
            commenter=comment.commenter,
        )

    def _head_plan(
        self,
        d: Delivery,
        repository: str,
        clone_url: str,
        pull: PullRequest,
        trigger: Trigger,
        instruction: str,
        dedup_key: str,
        commenter: Commenter | None = None,
    ) -> TaskPlan:
        """The pull request's task on its head branch. A fork's pull request is cloned from the fork,
        whose URL is built like the repository's own, and its result goes back to the fork: a fork's
        commits are never pushed into this repository."""
        head = pull.head
        url, name_field = clone_url, self.name_field
        if head.fork:
            if head.repository is None:
                raise Ignored(
                    f"pull request {pull.number} comes from {UNKNOWN_FORK}: the payload does not name the "
                    "fork's repository, so there is nothing to clone it from"
                )
            name_field = head.name_field
            url = self.repository_url(d.rules, head.repository, name_field)
        return TaskPlan(
            trigger=trigger,
            repository=repository,
            clone_url=url,
            ref=head.ref,
            push_url=url,
            instruction=instruction,
            number=pull.number,
            is_pull_request=True,
            project_id=d.project_id,
            head_sha=head.sha,
            dedup_key=dedup_key,
            fields=self._fields(name_field, head.ref_field),
            commenter=commenter,
        )

    def _push_plan(self, d: Delivery, repository: str) -> TaskPlan:
        """A push to a branch with a rule for the repository: the rule's instruction on that branch."""
        push = self.push(d)
        ref = push.ref
        branch = ref[len("refs/heads/") :] if ref and ref.startswith("refs/heads/") else None
        if branch is None:
            raise Ignored(f"push to {ref or 'an unknown ref'}, not to a branch")
        if push.deleted or push.after == _ZERO_SHA:
            raise Ignored(f"branch {branch} was deleted")
        if branch.startswith(RESULT_BRANCH_PREFIX):
            raise Ignored(f"push to {branch}, one of Elpis's own result branches")
        instruction = d.rules.push_instruction(repository, branch)
        if instruction is None:
            raise Ignored(f"no push rule for branch {branch} of {repository} (webhooks.repositories)")
        url = self.repository_url(d.rules, repository, self.name_field)
        return TaskPlan(
            trigger=Trigger.push,
            repository=repository,
            clone_url=url,
            ref=branch,
            push_url=url,
            instruction=clip(instruction),
            head_sha=push.after or None,
            dedup_key=f"{self.provider.value}:{repository}:push:{branch}:{push.after}",
            fields=self._fields(self.name_field, "ref"),
        )

    @staticmethod
    def _fields(name_field: str, ref_field: str) -> dict[str, str]:
        return {"push_url": name_field, "repo": name_field, "ref": ref_field}

    def vet_commenter(self, interpretation: Interpretation, rules: Rules) -> Interpretation:
        """A comment's task stands only when the provider's API says its author holds one of the
        provider's comment_associations roles (GitLab, Gitea: their payloads do not say). When the API
        cannot be asked or its answer is unusable the comment is not obeyed either: a forge that is down
        lets no one in. A refusal is an ignored delivery, with why."""
        plan = interpretation.plan
        if plan is None or plan.commenter is None:
            return interpretation
        user = plan.commenter
        try:
            role = self.commenter_role(
                rules.settings, repository=plan.repository, project_id=plan.project_id, user=user.key
            )
        except ForgeError as exc:
            why = f"comment by '{user.name}', whose role in {plan.repository} could not be checked: {exc}"
            return replace(interpretation, plan=None, ignored=why)
        refused = rules.refuses_role(user.name, role)
        return replace(interpretation, plan=None, ignored=refused) if refused else interpretation

    # --- where a repository lives ----------------------------------------------------------------------

    def settings(self, settings: WebhookSettings) -> WebhookProviderSettings:
        return getattr(settings, self.provider.value)

    def full_name_problem(self, full_name: str) -> str | None:
        """Why `full_name` is not a repository name this provider could have (None when it is one):
        `owner/name` segments (GitLab also `group/subgroup/.../project`), no '..', no scheme, no spaces."""
        if len(full_name) > _MAX_FULL_NAME:
            return f"is longer than {_MAX_FULL_NAME} characters"
        parts = full_name.split("/")
        if self.nested_names:
            if len(parts) < 2:
                return f"{full_name!r} is not a project path (group/project, or group/subgroup/.../project)"
        elif len(parts) != 2:
            return f"{full_name!r} is not a repository name (owner/name)"
        for part in parts:
            if not _SEGMENT.fullmatch(part) or ".." in part or part == ".":
                return (
                    f"{full_name!r} is not a repository name: each part may hold only letters, digits, "
                    "'_', '-' and '.', and no '..'"
                )
        return None

    def clone_url(self, settings: WebhookSettings, full_name: str) -> str:
        """The URL a repository is cloned from and pushed to: `<web_url>/<full name>.git`, from the
        operator's configuration and a checked name, never from a payload."""
        problem = self.full_name_problem(full_name)
        if problem:
            raise ForgeError(problem)
        base = self.settings(settings).web_url
        if not base:
            raise ForgeError(
                f"webhooks.{self.provider.value}.web_url is not set (where its repositories live)"
            )
        return f"{base if base.endswith('/') else base + '/'}{full_name}.git"

    def repository_url(self, rules: Rules, full_name: str, name_field: str) -> str:
        """`clone_url` of a name read from a payload: a name that is not a plain owner/name (GitLab:
        group/.../project) is a PayloadError naming the payload field that carried it."""
        problem = self.full_name_problem(full_name)
        if problem:
            raise PayloadError(f"payload field {name_field}: {problem}")
        return self.clone_url(rules.settings, full_name)

    def push_env(self, settings: WebhookSettings, push_url: str) -> dict[str, str]:
        """An Authorization header for git over HTTPS, from the config, for the configured push_hosts
        only. Passed in the environment (GIT_CONFIG_*), so it is neither in the URL, the command line nor
        the repository."""
        ps = self.settings(settings)
        parts = urlsplit(push_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return {}
        if parts.hostname.lower() not in {host.lower() for host in ps.push_hosts}:
            return {}
        token = ps.push_token.get_secret_value() or ps.api_token.get_secret_value()
        if not token:
            return {}
        basic = base64.b64encode(f"{ps.push_user}:{token}".encode()).decode()
        return {
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "http.extraHeader",
            "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
        }

    # --- the REST API ------------------------------------------------------------------------------------

    @abstractmethod
    def api_headers(self, token: str) -> dict[str, str]:
        """The provider's own way of taking a token (none sent when `token` is empty)."""

    def _api(self, settings: WebhookSettings) -> str:
        api_url = self.settings(settings).api_url.rstrip("/")
        if not api_url:
            raise ForgeError(f"webhooks.{self.provider.value}.api_url is not set")
        return api_url

    def _call(self, settings: WebhookSettings, method: str, url: str, **kwargs: Any) -> Any:
        token = self.settings(settings).api_token.get_secret_value()
        return api.call(method, url, headers=self.api_headers(token), timeout=settings.api_timeout, **kwargs)

    def role_url(self, api_url: str, *, repository: str, project_id: str | None, user: str | int) -> str:
        """Where the API says what role `user` holds in the repository."""
        raise ForgeError(f"{self.provider.value} roles come from the payload's author_association")

    def role_of(self, answer: dict[str, Any], url: str) -> str:
        """The role an answer from `role_url` gives, in the names of GitHub's author_association."""
        raise NotImplementedError

    def commenter_role(
        self, settings: WebhookSettings, *, repository: str, project_id: str | None, user: str | int
    ) -> str:
        """The role `user` holds in `repository`, in the names of GitHub's author_association (OWNER,
        MEMBER, COLLABORATOR, or NONE for anyone who cannot push), as the provider's API says it. A 404
        (not a member, no such user) is NONE; anything else the API cannot answer raises ForgeError, so
        no one is let in because the provider could not be reached."""
        api_url = self._api(settings)
        url = self.role_url(api_url, repository=repository, project_id=project_id, user=user)
        answer = self._call(settings, "GET", url, not_found_ok=True)
        if answer is api.NOT_FOUND:
            return ROLE_NONE
        if not isinstance(answer, dict):
            raise ForgeError(f"GET {url} did not answer a JSON object")
        return self.role_of(answer, url)

    def pull_request_head(self, settings: WebhookSettings, repository: str, number: int) -> PullRequestHead:
        """A pull request's head (repository, branch, commit), asked of the API: a comment's payload does
        not say it."""
        raise ForgeError(f"{self.display}'s payloads name a pull request's head: there is none to look up")

    @abstractmethod
    def comment_url(
        self, api_url: str, *, repository: str, project_id: str | None, number: int, is_pull_request: bool
    ) -> str:
        """Where a comment on the issue or pull request is posted."""

    def post_comment(
        self,
        settings: WebhookSettings,
        *,
        repository: str,
        project_id: str | None,
        number: int,
        is_pull_request: bool,
        text: str,
    ) -> str:
        """Comment on the issue or pull request; the comment's URL (the request's when the answer has
        none). ForgeUnavailable when another try may work."""
        url = self.comment_url(
            self._api(settings),
            repository=repository,
            project_id=project_id,
            number=number,
            is_pull_request=is_pull_request,
        )
        answer = self._call(settings, "POST", url, body={"body": text})
        link = answer.get("html_url") or answer.get("url") if isinstance(answer, dict) else None
        return link if isinstance(link, str) else url


# --- helpers shared by the providers -------------------------------------------------------------------


def hmac_sha256_hex(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def same(given: str, expected: str) -> bool:
    """Constant-time comparison, so the time taken says nothing about how much of a guess was right."""
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8", "replace"))


def quoted(text: str, safe: str = "/") -> str:
    """A full name (owner/name) as a path in an API URL; with safe="", one path segment."""
    return quote(text, safe=safe)


def clip(text: str) -> str:
    if len(text) <= MAX_INSTRUCTION:
        return text
    marker = "\n[... cut: the text is longer than an instruction may be ...]"
    return text[: MAX_INSTRUCTION - len(marker)] + marker
