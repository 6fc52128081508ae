"""GitLab: X-Gitlab-Token (the configured secret, verbatim), X-Gitlab-Event, and Idempotency-Key
(the same on every retry of one delivery; X-Gitlab-Event-UUID on GitLab before 17.4).

Events (by object_kind): issue (the trigger label added, or present when opened); note (a new comment on
an issue or merge request starting with the command prefix, by a project member whose access level the
API confirms); merge_request (opened, reopened, updated with new commits or the trigger label, while it
has the label); push.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from elpis_api.webhooks.common import (
    UNKNOWN_FORK,
    Commenter,
    Interpretation,
    PayloadError,
    ProviderAdapter,
    Rules,
    TaskPlan,
    dig,
    fork_of,
    fork_refused,
    fork_unnamed,
    issue_instruction,
    label_names,
    need_int,
    need_str,
    opt_str,
    pull_request_instruction,
    push_interpretation,
    same,
)
from models.webhooks import Provider, Trigger

TOKEN_HEADER = "X-Gitlab-Token"
NAME = "project.path_with_namespace"


def _label_added(payload: Mapping[str, Any], label: str, *, opened: bool) -> bool:
    """True when this event added `label`: from changes.labels when GitLab sends them, else (an item just
    opened) from the current labels."""
    change = dig(payload, "changes.labels")
    if isinstance(change, Mapping):
        return label in label_names(change.get("current")) and label not in label_names(
            change.get("previous")
        )
    return opened and label in label_names(dig(payload, "labels") or dig(payload, "object_attributes.labels"))


class GitLab(ProviderAdapter):
    provider = Provider.gitlab
    display = "GitLab"
    event_header = "X-Gitlab-Event"

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
        return opt_str(payload, "project.path_with_namespace")

    def interpret(self, event: str, payload: Mapping[str, Any], rules: Rules) -> Interpretation:
        kind = opt_str(payload, "object_kind") or ""
        action = opt_str(payload, "object_attributes.action")
        repository = self.repository(payload)
        if kind not in ("issue", "note", "merge_request", "push"):
            return Interpretation(
                event, action, repository, ignored=f"event '{event}' is not one Elpis acts on"
            )
        if repository is None:
            raise PayloadError("payload field project.path_with_namespace is missing or not a string")
        if kind == "push":
            return push_interpretation(
                self.provider,
                event,
                payload,
                rules,
                repository=repository,
                name_field=NAME,
                deleted=False,
            )

        def ignore(why: str) -> Interpretation:
            return Interpretation(event, action, repository, ignored=why)

        clone_url = rules.repository_url(repository, NAME)
        project_id = dig(payload, "project.id")
        project_id = str(project_id) if isinstance(project_id, int) else None
        default_branch = opt_str(payload, "project.default_branch")
        label = rules.trigger_label

        if kind == "issue":
            if action not in ("open", "reopen", "update"):
                return ignore(f"issue/{action}: only open, reopen and update are read")
            if opt_str(payload, "object_attributes.state") not in (None, "opened"):
                return ignore("the issue is not open")
            if not _label_added(payload, label, opened=action == "open"):
                return ignore(f"the '{label}' label was not added")
            number = need_int(payload, "object_attributes.iid")
            plan = TaskPlan(
                trigger=Trigger.issue_label,
                repository=repository,
                clone_url=clone_url,
                ref=default_branch,
                push_url=clone_url,
                instruction=issue_instruction(
                    need_str(payload, "object_attributes.title"),
                    opt_str(payload, "object_attributes.description"),
                ),
                number=number,
                project_id=project_id,
                dedup_key=f"gitlab:{repository}:issue:{number}:label",
                fields={"push_url": NAME, "repo": NAME, "ref": "project.default_branch"},
            )
            return Interpretation(event, action, repository, plan=plan)

        if kind == "note":
            if action not in (None, "create"):
                return ignore(f"note/{action}: only new comments are read")
            noteable = opt_str(payload, "object_attributes.noteable_type")
            if noteable not in ("Issue", "MergeRequest"):
                return ignore(f"a comment on a {noteable or 'unknown object'}, not an issue or merge request")
            instruction = rules.command(opt_str(payload, "object_attributes.note"))
            if instruction is None:
                return ignore("comment does not start with the command prefix")
            user = opt_str(payload, "user.username")
            refused = rules.refuses_commenter(user)
            if refused:
                return ignore(refused)
            # The note does not say the author's role: the route asks the API (vet_commenter).
            user_id = need_int(payload, "user.id")
            commenter = Commenter(user or f"user {user_id}", user_id)
            dedup_key = f"gitlab:{repository}:comment:{need_int(payload, 'object_attributes.id')}"
            if noteable == "Issue":
                plan = TaskPlan(
                    trigger=Trigger.comment,
                    repository=repository,
                    clone_url=clone_url,
                    ref=default_branch,
                    push_url=clone_url,
                    instruction=instruction,
                    number=need_int(payload, "issue.iid"),
                    project_id=project_id,
                    dedup_key=dedup_key,
                    fields={"push_url": NAME, "repo": NAME, "ref": "project.default_branch"},
                    commenter=commenter,
                )
            else:
                if _merge_request_fork(payload, "merge_request", repository) == UNKNOWN_FORK:
                    return ignore(fork_unnamed(need_int(payload, "merge_request.iid")))
                plan = self._merge_request_plan(
                    payload,
                    "merge_request",
                    rules,
                    repository,
                    clone_url,
                    project_id,
                    Trigger.comment,
                    instruction,
                    dedup_key,
                    commenter=commenter,
                )
            return Interpretation(event, action, repository, plan=plan)

        # merge_request
        if action not in ("open", "reopen", "update"):
            return ignore(f"merge_request/{action}: only open, reopen and update are read")
        if opt_str(payload, "object_attributes.state") not in (None, "opened"):
            return ignore("the merge request is not open")
        labels = label_names(dig(payload, "labels") or dig(payload, "object_attributes.labels"))
        if label not in labels:
            return ignore(f"the merge request has no '{label}' label")
        if action == "update" and not (
            opt_str(payload, "object_attributes.oldrev") or _label_added(payload, label, opened=False)
        ):
            return ignore(f"an update with neither new commits nor the '{label}' label added")
        number = need_int(payload, "object_attributes.iid")
        sha = need_str(payload, "object_attributes.last_commit.id")
        fork = _merge_request_fork(payload, "object_attributes", repository)
        if fork and not rules.settings.allow_forks:
            return ignore(fork_refused(number, fork))
        if fork == UNKNOWN_FORK:
            return ignore(fork_unnamed(number))
        instruction = pull_request_instruction(
            number,
            need_str(payload, "object_attributes.title"),
            opt_str(payload, "object_attributes.description"),
            rules.test_command(repository),
        )
        plan = self._merge_request_plan(
            payload,
            "object_attributes",
            rules,
            repository,
            clone_url,
            project_id,
            Trigger.pull_request,
            instruction,
            f"gitlab:{repository}:pr:{number}:{sha}",
        )
        return Interpretation(event, action, repository, plan=plan)

    @staticmethod
    def _merge_request_plan(
        payload: Mapping[str, Any],
        where: str,
        rules: Rules,
        repository: str,
        clone_url: str,
        project_id: str | None,
        trigger: Trigger,
        instruction: str,
        dedup_key: str,
        commenter: Commenter | None = None,
    ) -> TaskPlan:
        """The merge request's task on its source branch. The callers have refused a fork the payload
        does not name (and one that is not allowed)."""
        fork = _merge_request_fork(payload, where, repository)
        source_field = f"{where}.source.path_with_namespace"
        # A merge request from a fork is cloned from the fork, whose URL is built like the project's own,
        # and its result goes back to the fork: never into this project.
        source_url = rules.repository_url(fork, source_field) if fork else clone_url
        return TaskPlan(
            trigger=trigger,
            repository=repository,
            clone_url=source_url,
            ref=need_str(payload, f"{where}.source_branch"),
            push_url=source_url,
            instruction=instruction,
            number=need_int(payload, f"{where}.iid"),
            is_pull_request=True,
            project_id=project_id,
            head_sha=opt_str(payload, f"{where}.last_commit.id"),
            dedup_key=dedup_key,
            fields={
                "push_url": source_field if fork else NAME,
                "repo": source_field if fork else NAME,
                "ref": f"{where}.source_branch",
            },
            commenter=commenter,
        )


def _merge_request_fork(payload: Mapping[str, Any], where: str, repository: str) -> str | None:
    """The fork a merge request comes from (its source project's path, UNKNOWN_FORK when the payload does
    not name it), None when its source project is its target."""
    source, target = dig(payload, f"{where}.source_project_id"), dig(payload, f"{where}.target_project_id")
    if source is None or source == target:
        return None
    return opt_str(payload, f"{where}.source.path_with_namespace") or fork_of(None, repository)
