"""Gitea (and Forgejo): X-Gitea-Signature (hex HMAC-SHA256 of the raw body, no prefix), X-Gitea-Event
(issues, issue_comment, pull_request, push, ...), X-Gitea-Event-Type (the finer kind: issue_label,
pull_request_sync, ...), X-Gitea-Delivery.

Gitea's label events say which labels an item has, not which one was just added: an issue makes one
label task (its dedup key), and a pull request one per head commit. A comment's author's role is not in
the payload: the API is asked (`vet_commenter`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from elpis_api.webhooks.common import (
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
    hmac_sha256_hex,
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

SIGNATURE_HEADER = "X-Gitea-Signature"
ISSUE_ACTIONS = ("opened", "reopened", "label_updated")
PR_ACTIONS = ("opened", "reopened", "synchronized", "label_updated")
NAME = "repository.full_name"
HEAD_NAME = "pull_request.head.repo.full_name"


class Gitea(ProviderAdapter):
    provider = Provider.gitea
    display = "Gitea"
    event_header = "X-Gitea-Event"

    def verify(self, headers: Mapping[str, str], body: bytes, secret: str) -> str | None:
        given = headers.get(SIGNATURE_HEADER)
        if not given:
            return (
                f"missing {SIGNATURE_HEADER} header: unsigned deliveries are refused "
                "(give the webhook a secret)"
            )
        if not same(given.strip().lower(), hmac_sha256_hex(secret, body)):
            return f"{SIGNATURE_HEADER} does not match the body: check the webhook's secret"
        return None

    def delivery_id(self, headers: Mapping[str, str]) -> str | None:
        return headers.get("X-Gitea-Delivery") or None

    def repository(self, payload: Mapping[str, Any]) -> str | None:
        return opt_str(payload, "repository.full_name")

    def interpret(self, event: str, payload: Mapping[str, Any], rules: Rules) -> Interpretation:
        action = opt_str(payload, "action")
        repository = self.repository(payload)
        if event not in ("issues", "issue_comment", "pull_request", "push"):
            return Interpretation(
                event, action, repository, ignored=f"event '{event}' is not one Elpis acts on"
            )
        if repository is None:
            raise PayloadError("payload field repository.full_name is missing or not a string")
        if event == "push":
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
        default_branch = opt_str(payload, "repository.default_branch")
        label = rules.trigger_label

        if event == "issues":
            if action not in ISSUE_ACTIONS:
                return ignore(f"issues/{action}: only {', '.join(ISSUE_ACTIONS)} are read")
            if opt_str(payload, "issue.state") not in (None, "open"):
                return ignore("the issue is not open")
            if label not in label_names(dig(payload, "issue.labels")):
                return ignore(f"the issue has no '{label}' label")
            number = need_int(payload, "issue.number")
            plan = TaskPlan(
                trigger=Trigger.issue_label,
                repository=repository,
                clone_url=clone_url,
                ref=default_branch,
                push_url=clone_url,
                instruction=issue_instruction(
                    need_str(payload, "issue.title"), opt_str(payload, "issue.body")
                ),
                number=number,
                dedup_key=f"gitea:{repository}:issue:{number}:label",
                fields={"push_url": NAME, "repo": NAME, "ref": "repository.default_branch"},
            )
            return Interpretation(event, action, repository, plan=plan)

        if event == "issue_comment":
            if action != "created":
                return ignore(f"issue_comment/{action}: only new comments are read")
            instruction = rules.command(opt_str(payload, "comment.body"))
            if instruction is None:
                return ignore("comment does not start with the command prefix")
            user = opt_str(payload, "comment.user.login") or opt_str(payload, "comment.user.username")
            refused = rules.refuses_commenter(user)
            if refused:
                return ignore(refused)
            if user is None:
                raise PayloadError("payload field comment.user.login is missing or not a string")
            is_pr = dig(payload, "is_pull") is True or isinstance(dig(payload, "issue.pull_request"), Mapping)
            if is_pr and not rules.settings.gitea.api_url:
                return ignore(
                    "a comment on a pull request: its head branch is looked up through Gitea's API, "
                    "and webhooks.gitea.api_url is not set"
                )
            plan = TaskPlan(
                trigger=Trigger.comment,
                repository=repository,
                clone_url=clone_url,
                ref=None if is_pr else default_branch,
                push_url=clone_url,
                instruction=instruction,
                number=need_int(payload, "issue.number"),
                is_pull_request=is_pr,
                resolve_head=is_pr,
                dedup_key=f"gitea:{repository}:comment:{need_int(payload, 'comment.id')}",
                fields={"push_url": NAME, "repo": NAME, "ref": "repository.default_branch"},
                # The payload does not say the author's role: the route asks the API (vet_commenter).
                commenter=Commenter(user, user),
            )
            return Interpretation(event, action, repository, plan=plan)

        # pull_request
        if action not in PR_ACTIONS:
            return ignore(f"pull_request/{action}: only {', '.join(PR_ACTIONS)} are read")
        if opt_str(payload, "pull_request.state") not in (None, "open"):
            return ignore("the pull request is not open")
        if label not in label_names(dig(payload, "pull_request.labels")):
            return ignore(f"the pull request has no '{label}' label")
        number = need_int(payload, "pull_request.number")
        sha = need_str(payload, "pull_request.head.sha")
        head_name = opt_str(payload, HEAD_NAME)
        fork = fork_of(head_name, repository)
        if fork and not rules.settings.allow_forks:
            return ignore(fork_refused(number, fork))
        if head_name is None:
            return ignore(fork_unnamed(number))
        # An allowed fork is cloned from the fork (its URL built like the repository's own), and its
        # result goes back to the fork, never into this repository.
        head_url = rules.repository_url(head_name, HEAD_NAME) if fork else clone_url
        plan = TaskPlan(
            trigger=Trigger.pull_request,
            repository=repository,
            clone_url=head_url,
            ref=need_str(payload, "pull_request.head.ref"),
            push_url=head_url,
            instruction=pull_request_instruction(
                number,
                need_str(payload, "pull_request.title"),
                opt_str(payload, "pull_request.body"),
                rules.test_command(repository),
            ),
            number=number,
            is_pull_request=True,
            head_sha=sha,
            dedup_key=f"gitea:{repository}:pr:{number}:{sha}",
            fields={
                "push_url": HEAD_NAME if fork else NAME,
                "repo": HEAD_NAME if fork else NAME,
                "ref": "pull_request.head.ref",
            },
        )
        return Interpretation(event, action, repository, plan=plan)
