"""The forges without a server: the captured payloads (tests/webhook_payloads/) read through the payload
models and interpreted, signatures, repository URLs, push credentials, and the provider APIs' requests
and answers (httpx stubbed). The same paths through the real API and database are in
tests/integration/test_webhooks.py and test_webhook_security.py."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from configs.settings import WebhookSettings
from elpis_worker.forges import (
    FORGES,
    ForgeError,
    ForgeUnavailable,
    PayloadError,
    Rules,
    Unverified,
    github,
    gitlab,
)
from elpis_worker.forges.gitea import Gitea, GiteaIssueCommentEvent
from elpis_worker.forges.github import GitHub, PullRequestEvent
from elpis_worker.forges.payloads import parse
from models.webhooks import Provider, Trigger

PAYLOADS = Path(__file__).resolve().parents[1] / "webhook_payloads"
SECRET = "s3cret"
GITEA = {"web_url": "https://gitea.example.com", "api_url": "https://gitea.example.com/api/v1"}
# The head commits of the captured payloads.
GITHUB_SHA = "6dcb09b5b57875f334f61aebed695e2e4193db5e"
GITLAB_SHA = "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"
GITEA_SHA = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"


def load(provider: str, name: str) -> dict[str, Any]:
    return json.loads((PAYLOADS / provider / f"{name}.json").read_text())


def webhook_settings(**extra: Any) -> WebhookSettings:
    """Webhook settings with Gitea's URLs set (it has no default); a provider's keys in `extra` are added
    to those."""
    values: dict[str, Any] = {"gitea": dict(GITEA)}
    for key, value in extra.items():
        values[key] = values.get(key, {}) | value if isinstance(value, dict) else value
    return WebhookSettings.model_validate(values)


def interpret(provider: str, event: str, payload: dict[str, Any], **extra: Any):
    p = Provider(provider)
    return FORGES[p].interpret(event, payload, Rules(p, webhook_settings(**extra)))


# --- payload models ------------------------------------------------------------------------------------


def test_the_payload_models_read_the_captured_payloads() -> None:
    pull = parse(PullRequestEvent, load("github", "pull_request_opened")).pull_request
    assert (pull.number, pull.head.ref, pull.head.sha, pull.state) == (7, "fix-subtract", GITHUB_SHA, "open")
    assert "elpis" in pull.labels

    hook = parse(gitlab.MergeRequestHook, load("gitlab", "merge_request_hook_open"))
    assert hook.object_attributes.iid == 4 and hook.object_attributes.source_branch == "fix-subtract"
    assert "elpis" in hook.current_labels and hook.label_added("elpis", opened=True)

    labelled = parse(gitlab.IssueHook, load("gitlab", "issue_hook_labeled"))
    assert labelled.label_added("elpis", opened=False) and not labelled.label_added("bug", opened=False)


def test_gitea_shares_githubs_shapes() -> None:
    """Gitea's adapter and models are GitHub's, with what Gitea adds (is_pull, a user's username)."""
    assert issubclass(Gitea, GitHub) and issubclass(GiteaIssueCommentEvent, github.IssueCommentEvent)
    pull = parse(PullRequestEvent, load("gitea", "pull_request_opened")).pull_request
    assert (pull.number, pull.head.ref, pull.head.sha) == (8, "fix-subtract", GITEA_SHA)
    comment = parse(GiteaIssueCommentEvent, load("gitea", "issue_comment_pull_request"))
    assert comment.on_pull_request and comment.comment.user is not None
    assert comment.comment.user.name == "alice"


def _drop_number(data: dict[str, Any]) -> None:
    del data["pull_request"]["number"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_drop_number, "pull_request.number is missing"),
        (lambda d: d["pull_request"].update(number=True), "pull_request.number is not an integer"),
        (lambda d: d["pull_request"].update(number="7"), "pull_request.number is not an integer"),
        (lambda d: d["pull_request"].update(title=""), "pull_request.title is empty"),
        (lambda d: d["pull_request"]["head"].update(sha=None), "pull_request.head.sha is missing"),
        (lambda d: d.update(pull_request=[]), "pull_request is not an object"),
    ],
)
def test_a_field_the_event_needs_is_reported_by_its_name(change, message) -> None:
    data = load("github", "pull_request_opened")
    change(data)
    with pytest.raises(PayloadError) as raised:
        interpret("github", "pull_request", data)
    assert str(raised.value).startswith(f"payload field {message}")


def test_a_field_an_event_may_lack_is_read_as_absent() -> None:
    data = load("github", "issues_labeled")
    data["issue"]["body"] = 42  # not text: no body
    data["repository"]["default_branch"] = ["main"]
    plan = interpret("github", "issues", data).plan
    assert plan is not None and plan.instruction == "subtract returns the sum" and plan.ref is None


def test_an_event_elpis_ignores_is_not_refused_for_its_fields() -> None:
    data = load("github", "pull_request_opened")
    data["action"] = "closed"
    del data["pull_request"]["number"]
    assert interpret("github", "pull_request", data).ignored.startswith("pull_request/closed: only")
    assert interpret("github", "star", {"repository": "not an object"}).ignored.endswith("acts on")


def test_a_repository_name_is_checked_and_named_by_its_field() -> None:
    data = load("gitlab", "issue_hook_labeled")
    data["project"]["path_with_namespace"] = "acme/../x"
    with pytest.raises(PayloadError, match="payload field project.path_with_namespace: 'acme/../x' is not"):
        interpret("gitlab", "Issue Hook", data)
    data["project"]["path_with_namespace"] = None
    with pytest.raises(PayloadError, match="payload field project.path_with_namespace is missing"):
        interpret("gitlab", "Issue Hook", data)


# --- interpretation ------------------------------------------------------------------------------------


ISSUE, COMMENT, PULL, PUSH = Trigger.issue_label, Trigger.comment, Trigger.pull_request, Trigger.push
CAPTURED = [
    ("github", "issues_labeled", "issues", ISSUE, "issue:5:label", "main"),
    ("github", "issue_comment_issue", "issue_comment", COMMENT, "comment:3100200301", "main"),
    ("github", "issue_comment_pull_request", "issue_comment", COMMENT, "comment:3100200300", None),
    ("github", "pull_request_opened", "pull_request", PULL, f"pr:7:{GITHUB_SHA}", "fix-subtract"),
    ("github", "push", "push", PUSH, "push:main:1481a2de7b2a7d02428ad93446ab166be7793fbb", "main"),
    ("gitlab", "issue_hook_labeled", "Issue Hook", ISSUE, "issue:23:label", "main"),
    ("gitlab", "note_hook_issue", "Note Hook", COMMENT, "comment:1245", "main"),
    ("gitlab", "note_hook_merge_request", "Note Hook", COMMENT, "comment:1244", "fix-subtract"),
    ("gitlab", "merge_request_hook_open", "Merge Request Hook", PULL, f"pr:4:{GITLAB_SHA}", "fix-subtract"),
    ("gitlab", "push_hook", "Push Hook", PUSH, f"push:main:{GITLAB_SHA}", "main"),
    ("gitea", "issues_label_updated", "issues", ISSUE, "issue:3:label", "main"),
    ("gitea", "issue_comment_pull_request", "issue_comment", COMMENT, "comment:120", None),
    ("gitea", "pull_request_opened", "pull_request", PULL, f"pr:8:{GITEA_SHA}", "fix-subtract"),
    ("gitea", "push", "push", PUSH, "push:main:0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c", "main"),
]


@pytest.mark.parametrize(("provider", "name", "event", "trigger", "dedup_key", "ref"), CAPTURED)
def test_each_captured_event_makes_its_task(provider, name, event, trigger, dedup_key, ref) -> None:
    rules = {"repositories": {"acme/calc": {"push": {"main": "Run the tests"}}}}
    plan = interpret(provider, event, load(provider, name), **rules).plan
    assert plan is not None
    base = {"github": "https://github.com", "gitlab": "https://gitlab.com"}.get(provider, GITEA["web_url"])
    assert plan.clone_url == plan.push_url == f"{base}/acme/calc.git"
    assert (plan.trigger, plan.ref, plan.repository) == (trigger, ref, "acme/calc")
    assert plan.dedup_key == f"{provider}:acme/calc:{dedup_key}"
    # The role of a GitLab or Gitea commenter is asked of the API; GitHub's is in the payload.
    assert (plan.commenter is not None) == (trigger == COMMENT and provider != "github")
    assert plan.resolve_head == (ref is None)
    assert plan.project_id == ("14" if provider == "gitlab" and trigger != PUSH else None)


def test_ping_and_other_events() -> None:
    assert interpret("github", "ping", load("github", "ping")).ping
    star = interpret("github", "star", load("github", "star_created"))
    assert star.plan is None and star.ignored == "event 'star' is not one Elpis acts on"


@pytest.mark.parametrize(
    ("provider", "name", "event"),
    [
        ("github", "pull_request_opened", "pull_request"),
        ("gitea", "pull_request_opened", "pull_request"),
        ("gitlab", "merge_request_hook_open", "Merge Request Hook"),
    ],
)
def test_a_fork_is_refused_unless_allowed_and_then_cloned_from_the_fork(provider, name, event) -> None:
    data = load(provider, name)
    if provider == "gitlab":
        attributes = data["object_attributes"]
        attributes["source_project_id"] += 1000
        attributes["source"]["path_with_namespace"] = "mallory/calc"
    else:
        data["pull_request"]["head"]["repo"]["full_name"] = "mallory/calc"
    refused = interpret(provider, event, data)
    assert "comes from mallory/calc" in refused.ignored and "webhooks.allow_forks" in refused.ignored
    plan = interpret(provider, event, data, allow_forks=True).plan
    assert plan is not None and plan.push_url.endswith("/mallory/calc.git")
    named_by = "source.path_with_namespace" if provider == "gitlab" else "head.repo.full_name"
    assert plan.fields["push_url"].endswith(named_by)


def test_comment_rules() -> None:
    data = load("github", "issue_comment_issue")
    data["comment"]["author_association"] = "NONE"
    refused = interpret("github", "issue_comment", data).ignored
    assert "(NONE), not one of github.comment_associations" in refused
    data = load("gitlab", "note_hook_issue")
    data["object_attributes"]["noteable_type"] = "Commit"
    refused = interpret("gitlab", "Note Hook", data).ignored
    assert refused == "a comment on a Commit, not an issue or merge request"
    data = load("gitea", "issue_comment_pull_request")
    refused = interpret("gitea", "issue_comment", data, gitea={"api_url": ""}).ignored
    assert "webhooks.gitea.api_url is not set" in refused


def test_pushes_that_make_no_task() -> None:
    data = load("github", "push")
    rules = {"repositories": {"acme/calc": {"push": {"main": "Run", "elpis/*": "Never"}}}}
    for ref, after, why in [
        ("refs/tags/v1", "ab" * 20, "not to a branch"),
        ("refs/heads/main", "0" * 40, "was deleted"),
        ("refs/heads/elpis/task-3", "ab" * 20, "own result branches"),
        ("refs/heads/dev", "ab" * 20, "no push rule"),
    ]:
        data.update(ref=ref, after=after)
        assert why in interpret("github", "push", data, **rules).ignored


# --- verification --------------------------------------------------------------------------------------


def signed(provider: Provider, body: bytes, secret: str) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        Provider.github: {"X-Hub-Signature-256": f"sha256={digest}"},
        Provider.gitea: {"X-Gitea-Signature": digest},
        Provider.gitlab: {"X-Gitlab-Token": secret},
    }[provider]


@pytest.mark.parametrize("provider", list(Provider))
def test_a_delivery_is_verified_against_each_secret(provider: Provider) -> None:
    forge, body = FORGES[provider], b'{"a": 1}'
    headers = signed(provider, body, SECRET)
    assert forge.verify(headers, body, SECRET) is None
    assert forge.signed_with(headers, body, ["other", SECRET]) == SECRET
    with pytest.raises(Unverified, match="does not match"):
        forge.signed_with(headers, body, ["other"])
    with pytest.raises(Unverified, match="missing"):
        forge.signed_with({}, body, [SECRET])
    if provider != Provider.gitlab:  # GitLab's token does not cover the body
        assert forge.verify(headers, body + b" ", SECRET) is not None


def test_delivery_ids() -> None:
    assert FORGES[Provider.github].delivery_id({"X-GitHub-Delivery": "a"}) == "a"
    assert FORGES[Provider.gitea].delivery_id({"X-Gitea-Delivery": "b"}) == "b"
    assert FORGES[Provider.gitlab].delivery_id({"X-Gitlab-Event-UUID": "c"}) == "c"
    assert FORGES[Provider.gitlab].delivery_id({"Idempotency-Key": "d", "X-Gitlab-Event-UUID": "c"}) == "d"


# --- where a repository lives, push credentials --------------------------------------------------------


def test_repository_names_and_urls() -> None:
    settings = WebhookSettings.model_validate({"github": {"web_url": "https://ghe.example/git/"}})
    assert FORGES[Provider.github].clone_url(settings, "acme/calc") == "https://ghe.example/git/acme/calc.git"
    assert FORGES[Provider.gitlab].full_name_problem("acme/platform/calc") is None
    assert "owner/name" in (FORGES[Provider.github].full_name_problem("acme/platform/calc") or "")
    for name in ("acme/..", "acme/x y", "acme\\x", "-acme/x"):
        assert FORGES[Provider.gitlab].full_name_problem(name) is not None
    with pytest.raises(ForgeError, match="webhooks.gitea.web_url is not set"):
        FORGES[Provider.gitea].clone_url(settings, "acme/calc")


def test_push_credentials_are_sent_to_the_configured_hosts_only() -> None:
    settings = WebhookSettings.model_validate({"github": {"push_token": "push-tok"}})
    forge = FORGES[Provider.github]
    header = forge.push_env(settings, "https://github.com/acme/calc.git")["GIT_CONFIG_VALUE_0"]
    assert base64.b64decode(header.split()[-1]).decode() == "x-access-token:push-tok"
    assert forge.push_env(settings, "https://evil.example.com/acme/calc.git") == {}
    assert forge.push_env(settings, "file:///srv/git/calc.git") == {}


# --- the REST API --------------------------------------------------------------------------------------


class FakeAPI:
    """httpx.request stubbed: `answers` by URL (a Response, or an exception to raise); `sent` lists each
    request's method, URL and headers."""

    def __init__(self) -> None:
        self.answers: dict[str, httpx.Response | Exception] = {}
        self.sent: list[tuple[str, str, dict[str, str]]] = []

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        self.sent.append((method, url, kwargs["headers"]))
        answer = self.answers[url]
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture
def api(monkeypatch) -> FakeAPI:
    fake = FakeAPI()
    monkeypatch.setattr(httpx, "request", fake.request)
    return fake


GITLAB_MEMBER = "https://gitlab.com/api/v4/projects/14/members/all/51"
GITEA_PERMISSION = f"{GITEA['api_url']}/repos/acme/calc/collaborators/alice/permission"


@pytest.mark.parametrize(
    ("provider", "url", "user", "answer", "role"),
    [
        ("gitlab", GITLAB_MEMBER, 51, {"access_level": 50}, "OWNER"),
        ("gitlab", GITLAB_MEMBER, 51, {"access_level": 35}, "COLLABORATOR"),  # a custom role above Developer
        ("gitlab", GITLAB_MEMBER, 51, {"access_level": 20}, "NONE"),
        ("gitea", GITEA_PERMISSION, "alice", {"permission": "admin"}, "MEMBER"),
        ("gitea", GITEA_PERMISSION, "alice", {"permission": "read"}, "NONE"),
    ],
)
def test_commenter_roles(api, provider, url, user, answer, role) -> None:
    api.answers[url] = httpx.Response(200, json=answer)
    settings = webhook_settings(gitlab={"api_token": "gl-tok"}, gitea={"api_token": "gt-tok"})
    got = FORGES[Provider(provider)].commenter_role(
        settings, repository="acme/calc", project_id="14", user=user
    )
    assert got == role
    [(_, _, headers)] = api.sent
    assert headers.get("PRIVATE-TOKEN") == "gl-tok" or headers.get("Authorization") == "token gt-tok"


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        (httpx.Response(404, json={}), None),
        (httpx.Response(200, json={"id": 51}), "answered without an access_level"),
        (httpx.Response(200, json=["no"]), "did not answer a JSON object"),
        (httpx.Response(401, text="no"), "answered 401 (check the provider's api_token"),
        (httpx.Response(503, text="down"), "answered 503"),
        (httpx.ConnectError("refused"), "failed: refused"),
    ],
)
def test_a_role_that_cannot_be_learnt_is_an_error_and_a_404_is_none(api, answer, said) -> None:
    api.answers[GITLAB_MEMBER] = answer
    forge, settings = FORGES[Provider.gitlab], webhook_settings()
    if said is None:
        assert forge.commenter_role(settings, repository="acme/calc", project_id="14", user=51) == "NONE"
        return
    with pytest.raises(ForgeError) as raised:
        forge.commenter_role(settings, repository="acme/calc", project_id="14", user=51)
    assert said in str(raised.value)


def test_a_pull_requests_head_is_asked_and_cloned_from_the_configured_web_url(api) -> None:
    url, forge, settings = (
        "https://api.github.com/repos/acme/calc/pulls/7",
        FORGES[Provider.github],
        webhook_settings(),
    )
    head = {"ref": "fix", "sha": "ab" * 20, "repo": {"full_name": "mallory/calc", "clone_url": "file:///x"}}
    api.answers[url] = httpx.Response(200, json={"head": head})
    found = forge.pull_request_head(settings, "acme/calc", 7)
    assert (found.repository, found.ref) == ("mallory/calc", "fix")
    assert found.clone_url == "https://github.com/mallory/calc.git"
    api.answers[url] = httpx.Response(200, json={"head": {"ref": "fix", "repo": None}})
    with pytest.raises(ForgeError, match="names none"):
        forge.pull_request_head(settings, "acme/calc", 7)
    api.answers[url] = httpx.Response(200, json={"number": 7})
    with pytest.raises(ForgeError, match="answered without head.ref"):
        forge.pull_request_head(settings, "acme/calc", 7)
    with pytest.raises(ForgeError, match="payloads name a pull request's head"):
        FORGES[Provider.gitlab].pull_request_head(settings, "acme/calc", 7)


@pytest.mark.parametrize(
    ("provider", "is_pull_request", "url", "auth"),
    [
        ("github", True, "https://api.github.com/repos/acme/calc/issues/7/comments", "Bearer tok"),
        ("gitlab", True, "https://gitlab.com/api/v4/projects/14/merge_requests/7/notes", "tok"),
        ("gitlab", False, "https://gitlab.com/api/v4/projects/14/issues/7/notes", "tok"),
        ("gitea", False, f"{GITEA['api_url']}/repos/acme/calc/issues/7/comments", "token tok"),
    ],
)
def test_comments_go_where_each_provider_takes_them(api, provider, is_pull_request, url, auth) -> None:
    api.answers[url] = httpx.Response(201, json={"html_url": "https://example/c/1"})
    link = FORGES[Provider(provider)].post_comment(
        webhook_settings(**{provider: {"api_token": "tok"}}),
        repository="acme/calc",
        project_id="14",
        number=7,
        is_pull_request=is_pull_request,
        text="hi",
    )
    assert link == "https://example/c/1"
    [(method, _, headers)] = api.sent
    assert method == "POST" and auth in (headers.get("Authorization"), headers.get("PRIVATE-TOKEN"))


def test_which_api_failures_are_worth_another_try(api) -> None:
    url = "https://api.github.com/repos/acme/calc/issues/7/comments"
    for answer, transient, wait in [
        (httpx.Response(502), True, None),
        (httpx.Response(429, headers={"Retry-After": "7"}), True, 7.0),
        (httpx.Response(403, headers={"Retry-After": "3"}), True, 3.0),  # GitHub's secondary rate limit
        (httpx.ConnectTimeout("slow"), True, None),
        (httpx.Response(403), False, None),
        (httpx.Response(422), False, None),
    ]:
        api.answers[url] = answer
        with pytest.raises(ForgeError) as raised:
            FORGES[Provider.github].post_comment(
                webhook_settings(),
                repository="acme/calc",
                project_id=None,
                number=7,
                is_pull_request=False,
                text="x",
            )
        assert isinstance(raised.value, ForgeUnavailable) == transient, answer
        assert getattr(raised.value, "retry_after", None) == wait
