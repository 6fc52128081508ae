"""GitHub: X-Hub-Signature-256 (HMAC-SHA256 of the raw body), X-GitHub-Event, X-GitHub-Delivery.

Events: ping; issues (labeled); issue_comment and pull_request_review_comment (created, starting with
the command prefix); pull_request (opened, reopened, synchronize, labeled); push.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from elpis_api.webhooks.common import (
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

SIGNATURE_HEADER = "X-Hub-Signature-256"
PR_ACTIONS = ("opened", "reopened", "synchronize", "labeled")
NAME = "repository.full_name"
HEAD_NAME = "pull_request.head.repo.full_name"


class GitHub(ProviderAdapter):
    provider = Provider.github
    display = "GitHub"
    event_header = "X-GitHub-Event"

    def verify(self, headers: Mapping[str, str], body: bytes, secret: str) -> str | None:
        given = headers.get(SIGNATURE_HEADER)
        if not given:
            return (
                f"missing {SIGNATURE_HEADER} header: unsigned deliveries are refused "
                "(give the webhook a secret)"
            )
        if not same(given.strip().lower(), "sha256=" + hmac_sha256_hex(secret, body)):
            return f"{SIGNATURE_HEADER} does not match the body: check the webhook's secret"
        return None

    def delivery_id(self, headers: Mapping[str, str]) -> str | None:
        return headers.get("X-GitHub-Delivery") or None

    def repository(self, payload: Mapping[str, Any]) -> str | None:
        return opt_str(payload, "repository.full_name")

    def interpret(self, event: str, payload: Mapping[str, Any], rules: Rules) -> Interpretation:
        action = opt_str(payload, "action")
        repository = self.repository(payload)
        if event == "ping":
            return Interpretation(event, action, repository, ping=True)
        if event not in ("issues", "issue_comment", "pull_request_review_comment", "pull_request", "push"):
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
                deleted=dig(payload, "deleted") is True,
            )

        def ignore(why: str) -> Interpretation:
            return Interpretation(event, action, repository, ignored=why)

        clone_url = rules.repository_url(repository, NAME)
        if event == "issues":
            if action != "labeled" or opt_str(payload, "label.name") != rules.trigger_label:
                return ignore(f"issues/{action} without the '{rules.trigger_label}' label being added")
            number = need_int(payload, "issue.number")
            plan = TaskPlan(
                trigger=Trigger.issue_label,
                repository=repository,
                clone_url=clone_url,
                ref=opt_str(payload, "repository.default_branch"),
                push_url=clone_url,
                instruction=issue_instruction(
                    need_str(payload, "issue.title"), opt_str(payload, "issue.body")
                ),
                number=number,
                dedup_key=f"github:{repository}:issue:{number}:label",
                fields={"push_url": NAME, "repo": NAME, "ref": "repository.default_branch"},
            )
            return Interpretation(event, action, repository, plan=plan)

        if event in ("issue_comment", "pull_request_review_comment"):
            if action != "created":
                return ignore(f"{event}/{action}: only new comments are read")
            instruction = rules.command(opt_str(payload, "comment.body"))
            if instruction is None:
                return ignore("comment does not start with the command prefix")
            user = opt_str(payload, "comment.user.login")
            # GitHub signs the commenter's role into the payload: no API call is needed.
            association = opt_str(payload, "comment.author_association") or "NONE"
            refused = rules.refuses_commenter(user) or rules.refuses_role(user, association)
            if refused:
                return ignore(refused)
            comment_id = need_int(payload, "comment.id")
            dedup_key = f"github:{repository}:comment:{comment_id}"
            if event == "pull_request_review_comment":
                number = need_int(payload, "pull_request.number")
                # A trusted commenter may ask for a fork's pull request: it is cloned from the fork and
                # its result goes back there.
                if not opt_str(payload, HEAD_NAME):
                    return ignore(fork_unnamed(number))
                return Interpretation(
                    event,
                    action,
                    repository,
                    plan=self._pull_request_plan(
                        payload, rules, repository, clone_url, Trigger.comment, instruction, dedup_key
                    ),
                )
            number = need_int(payload, "issue.number")
            is_pr = isinstance(dig(payload, "issue.pull_request"), Mapping)
            plan = TaskPlan(
                trigger=Trigger.comment,
                repository=repository,
                clone_url=clone_url,
                # A pull request's head branch is not in this payload: the worker looks it up.
                ref=None if is_pr else opt_str(payload, "repository.default_branch"),
                push_url=clone_url,
                instruction=instruction,
                number=number,
                is_pull_request=is_pr,
                resolve_head=is_pr,
                dedup_key=dedup_key,
                fields={"push_url": NAME, "repo": NAME, "ref": "repository.default_branch"},
            )
            return Interpretation(event, action, repository, plan=plan)

        # pull_request
        if action not in PR_ACTIONS:
            return ignore(f"pull_request/{action}: only {', '.join(PR_ACTIONS)} are read")
        if opt_str(payload, "pull_request.state") not in (None, "open"):
            return ignore("the pull request is not open")
        labels = label_names(dig(payload, "pull_request.labels"))
        if action == "labeled" and opt_str(payload, "label.name") != rules.trigger_label:
            return ignore(f"a label other than '{rules.trigger_label}' was added")
        if rules.trigger_label not in labels and action != "labeled":
            return ignore(f"the pull request has no '{rules.trigger_label}' label")
        number = need_int(payload, "pull_request.number")
        sha = need_str(payload, "pull_request.head.sha")
        fork = fork_of(opt_str(payload, HEAD_NAME), repository)
        if fork and not rules.settings.allow_forks:
            return ignore(fork_refused(number, fork))
        if fork and not opt_str(payload, HEAD_NAME):
            return ignore(fork_unnamed(number))
        instruction = pull_request_instruction(
            number,
            need_str(payload, "pull_request.title"),
            opt_str(payload, "pull_request.body"),
            rules.test_command(repository),
        )
        plan = self._pull_request_plan(
            payload,
            rules,
            repository,
            clone_url,
            Trigger.pull_request,
            instruction,
            f"github:{repository}:pr:{number}:{sha}",
        )
        return Interpretation(event, action, repository, plan=plan)

    @staticmethod
    def _pull_request_plan(
        payload: Mapping[str, Any],
        rules: Rules,
        repository: str,
        clone_url: str,
        trigger: Trigger,
        instruction: str,
        dedup_key: str,
    ) -> TaskPlan:
        """The pull request's task on its head branch. The callers have refused a fork the payload does
        not name (and one that is not allowed)."""
        head_name = opt_str(payload, HEAD_NAME) or repository
        fork = fork_of(head_name, repository) is not None
        # A fork's pull request is cloned from the fork, whose URL is built like the repository's own,
        # and its result goes back to the fork: a fork's commits are never pushed into this repository.
        head_url = rules.repository_url(head_name, HEAD_NAME) if fork else clone_url
        return TaskPlan(
            trigger=trigger,
            repository=repository,
            clone_url=head_url,
            ref=need_str(payload, "pull_request.head.ref"),
            push_url=head_url,
            instruction=instruction,
            number=need_int(payload, "pull_request.number"),
            is_pull_request=True,
            head_sha=opt_str(payload, "pull_request.head.sha"),
            dedup_key=dedup_key,
            fields={
                "push_url": HEAD_NAME if fork else NAME,
                "repo": HEAD_NAME if fork else NAME,
                "ref": "pull_request.head.ref",
            },
        )
