"""Webhooks trust only what is signed and configured: the signature over the raw bytes is checked before
anything of the body is parsed, a repository's own secret cannot be replaced by another's, hostile bodies
(deeply nested, huge, not JSON) get a 4xx, never a 5xx, and create nothing; every URL a task clones from
or pushes to is built from the provider's configured web_url and a checked full name, never taken from a
payload; and a GitLab or Gitea comment is obeyed only when the provider's API confirms its author's
role."""

# ruff: noqa: F811 - pytest injects the imported fixtures by parameter name
from __future__ import annotations

import json
from typing import Any

import pytest

# The webhook tests' helpers and fixtures (`configure`, `enqueued`), shared rather than copied.
from helpers import free_port, task_row
from test_webhooks import (  # noqa: F401
    CLONE_URLS,
    configure,
    count_tasks,
    deliver,
    deliveries_of,
    enqueued,
    load,
    provider_api,
    source_row,
    unique_repo,
)

from configs.settings import ConfigError, load_settings

PROVIDERS = [
    ("github", "issues_labeled"),
    ("gitlab", "issue_hook_labeled"),
    ("gitea", "issues_label_updated"),
]


@pytest.mark.parametrize(("provider", "name"), PROVIDERS)
def test_an_unsigned_body_is_not_parsed_even_when_it_is_not_json(api, configure, enqueued, provider, name):
    """Verify first: a forged body that is not even JSON is a 401 (not a 400 that would show it was
    parsed), and so is a deeply nested one that would cost the parser."""
    broken = deliver(api, provider, name, None, body=b'{"action": ', secret="forged")
    assert broken.status_code == 401, broken.text
    nested = b"[" * 100_000 + b"]" * 100_000
    deep = deliver(api, provider, name, None, body=nested, secret="forged")
    assert deep.status_code == 401, deep.text
    assert enqueued == []


@pytest.mark.parametrize(("provider", "name"), PROVIDERS)
def test_a_signed_deeply_nested_body_is_400_not_500(api, configure, enqueued, provider, name):
    nested = b'{"a": ' * 50_000 + b"1" + b"}" * 50_000
    response = deliver(api, provider, name, None, body=nested)
    assert response.status_code == 400 and "nested too deeply" in response.json()["detail"]
    assert enqueued == []


def test_one_repositorys_secret_does_not_sign_for_another(api, configure, enqueued):
    """acme/a has its own secret: a delivery for acme/b signed with it is refused (the secret is no
    longer picked by the unverified repository name), and the provider's secret cannot sign for acme/a."""
    a, b = unique_repo(), unique_repo()
    configure(repositories={f"github:acme/{a}": {"secret": "secret-of-a"}})
    for_b = deliver(
        api, "github", "issues_labeled", load("github", "issues_labeled", b), secret="secret-of-a"
    )
    assert for_b.status_code == 401 and f"acme/{b}" in for_b.json()["detail"]
    for_a = deliver(api, "github", "issues_labeled", load("github", "issues_labeled", a))
    assert for_a.status_code == 401
    own = deliver(api, "github", "issues_labeled", load("github", "issues_labeled", a), secret="secret-of-a")
    assert own.status_code == 202 and len(own.json()["tasks"]) == 1
    assert len(enqueued) == 1


def test_a_repository_secret_of_another_provider_signs_nothing_here(api, configure, enqueued):
    repo = unique_repo()
    configure(repositories={f"gitlab:acme/{repo}": {"secret": "gitlab-only"}})
    data = load("github", "issues_labeled", repo)
    assert deliver(api, "github", "issues_labeled", data, secret="gitlab-only").status_code == 401
    assert enqueued == []


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"", "application/json"),
        (b"\xff\xfe\x00garbage", "application/json"),
        (b"payload=%7B%22a%22", "application/x-www-form-urlencoded"),
        (json.dumps({"action": "labeled"}).encode(), "text/plain"),
        (b"null", "application/json"),
    ],
)
def test_hostile_signed_bodies_are_4xx_and_create_nothing(api, configure, enqueued, body, content_type):
    response = deliver(
        api, "github", "issues_labeled", None, body=body, headers={"Content-Type": content_type}
    )
    assert 400 <= response.status_code < 500, response.text
    assert enqueued == []


PULL_REQUESTS = [
    ("github", "pull_request_opened"),
    ("gitea", "pull_request_opened"),
    ("gitlab", "merge_request_hook_open"),
]


FORK_URLS = {
    "github": "https://github.com/mallory/calc.git",
    "gitlab": "https://gitlab.com/mallory/calc.git",
    "gitea": "https://gitea.example.com/mallory/calc.git",
}


def as_fork(provider: str, data: dict) -> str:
    """Make the fixture's pull request come from mallory's fork, whose payload clone URL points at a
    local path; returns the URL the fork is cloned from: the provider's web_url and the fork's name."""
    url = "file:///srv/elpis/secrets.git"
    if provider == "gitlab":
        attrs = data["object_attributes"]
        attrs["source_project_id"] = attrs["target_project_id"] + 1000
        attrs["source"] = {**attrs["source"], "path_with_namespace": "mallory/calc", "git_http_url": url}
    else:
        data["pull_request"]["head"]["repo"] = {
            **data["pull_request"]["head"]["repo"],
            "full_name": "mallory/calc",
            "clone_url": url,
        }
    return FORK_URLS[provider]


@pytest.mark.parametrize(("provider", "name"), PULL_REQUESTS)
def test_a_labelled_pull_request_from_a_fork_is_not_run(api, db_url, configure, enqueued, provider, name):
    """A fork's code never runs automatically: the delivery is recorded as ignored, with why."""
    data = load(provider, name, unique_repo())
    as_fork(provider, data)
    response = deliver(api, provider, name, data)
    assert response.status_code == 202 and response.json()["tasks"] == [] and enqueued == []
    assert response.json()["outcome"] == "ignored" and "mallory/calc" in response.json()["detail"]
    assert "webhooks.allow_forks" in response.json()["detail"]


@pytest.mark.parametrize(("provider", "name"), PULL_REQUESTS)
def test_an_allowed_fork_is_cloned_from_and_published_to_the_fork(
    api, db_url, configure, enqueued, provider, name
):
    """With webhooks.allow_forks the fork's pull request runs, and its result goes back to the fork:
    a fork's commits are never pushed into the upstream repository."""
    configure(ELPIS_WEBHOOKS__ALLOW_FORKS="true")
    data = load(provider, name, unique_repo())
    fork_url = as_fork(provider, data)
    [task_id] = deliver(api, provider, name, data).json()["tasks"]
    assert task_row(db_url, task_id).repo == fork_url
    assert source_row(db_url, task_id).push_url == fork_url


def test_a_commented_pull_request_from_a_fork_publishes_to_the_fork(
    api, db_url, configure, enqueued, provider_api
):
    """`/elpis ...` by a trusted commenter on a fork's pull request runs it (an explicit human command),
    but the head the worker looks up is in the fork, so the result is published to the fork: a fork's
    commits are never pushed into the upstream repository."""
    from configs import get_settings
    from elpis_worker import results
    from elpis_worker.store import TaskStore

    repo = unique_repo()
    fork_url = "https://github.com/mallory/calc.git"  # web_url and the head's full name
    provider_api.answers[f"/repos/acme/{repo}/pulls/7"] = {
        "number": 7,
        "head": {
            "ref": "evil",
            "sha": "ab" * 20,
            # The URL the API gives is not used: the fork is found by its name under web_url.
            "repo": {"full_name": "mallory/calc", "clone_url": "file:///srv/elpis/secrets.git"},
        },
    }
    configure(ELPIS_WEBHOOKS__GITHUB__API_URL=provider_api.url)
    name = "issue_comment_pull_request"
    [task_id] = deliver(api, "github", name, load("github", name, repo)).json()["tasks"]
    upstream = source_row(db_url, task_id).push_url
    assert "acme" in upstream
    store = TaskStore(db_url)
    assert store.claim(task_id, stale_after=60) is not None
    assert results.prepare_source(store, get_settings(), task_id) is None
    assert task_row(db_url, task_id).repo == fork_url and task_row(db_url, task_id).ref == "evil"
    assert source_row(db_url, task_id).push_url == fork_url != upstream


# --- clone and push URLs come from the configuration ----------------------------------------------------

POISON = "file:///srv/elpis/secrets.git"
TASK_EVENTS = [
    ("github", "issues_labeled"),
    ("gitlab", "issue_hook_labeled"),
    ("gitea", "issues_label_updated"),
    ("github", "push"),
    ("gitlab", "push_hook"),
    ("gitea", "push"),
    ("github", "pull_request_opened"),
    ("gitlab", "merge_request_hook_open"),
    ("gitea", "pull_request_opened"),
]


def poisoned(data: Any) -> Any:
    """The payload with every URL-like field (clone_url, git_http_url, ssh_url, html_url, ...) pointing
    at a local repository of the host, as a hostile or compromised sender would write it."""
    if isinstance(data, dict):
        return {
            key: POISON if "url" in key.lower() and isinstance(value, str) else poisoned(value)
            for key, value in data.items()
        }
    if isinstance(data, list):
        return [poisoned(item) for item in data]
    return data


@pytest.mark.parametrize(("provider", "name"), TASK_EVENTS)
def test_a_task_clones_and_pushes_where_the_configuration_says_whatever_the_payload_says(
    api, db_url, configure, enqueued, provider, name
):
    repo = unique_repo()
    configure(repositories={f"acme/{repo}": {"push": {"main": "Run the tests"}}})
    response = deliver(api, provider, name, poisoned(load(provider, name, repo)))
    assert response.status_code == 202, response.text
    [task_id] = response.json()["tasks"]
    expected = CLONE_URLS[provider].replace("acme/calc", f"acme/{repo}")
    assert task_row(db_url, task_id).repo == expected
    assert source_row(db_url, task_id).push_url == expected


def test_the_configured_web_url_is_the_base_of_every_repository(api, db_url, configure, enqueued):
    """A GitHub Enterprise-like base with a path, and GitLab's nested groups."""
    repo = unique_repo()
    configure(
        ELPIS_WEBHOOKS__GITHUB__WEB_URL="https://git.corp.example/mirror/",
        ELPIS_WEBHOOKS__GITLAB__WEB_URL="ssh://git@gitlab.corp.example:2222",
    )
    [github_task] = deliver(api, "github", "issues_labeled", load("github", "issues_labeled", repo)).json()[
        "tasks"
    ]
    assert task_row(db_url, github_task).repo == f"https://git.corp.example/mirror/acme/{repo}.git"

    data = load("gitlab", "issue_hook_labeled", repo)
    data["project"]["path_with_namespace"] = f"acme/platform/tools/{repo}"
    [gitlab_task] = deliver(api, "gitlab", "issue_hook_labeled", data).json()["tasks"]
    expected = f"ssh://git@gitlab.corp.example:2222/acme/platform/tools/{repo}.git"
    assert task_row(db_url, gitlab_task).repo == expected == source_row(db_url, gitlab_task).push_url


@pytest.mark.parametrize(
    ("provider", "name", "full_name"),
    [
        ("github", "issues_labeled", "acme/../../etc"),
        ("github", "issues_labeled", "https://evil.example/acme/x"),
        ("github", "issues_labeled", "file:///etc/x"),
        ("github", "issues_labeled", "/srv/git/x"),
        ("github", "issues_labeled", "acme/x y"),
        ("github", "issues_labeled", "acme"),
        ("github", "issues_labeled", "acme/group/x"),  # nested groups are GitLab's only
        ("github", "issues_labeled", "-acme/x"),
        ("gitea", "issues_label_updated", "acme/x@evil.example"),
        ("gitlab", "issue_hook_labeled", "acme//x"),
        ("gitlab", "issue_hook_labeled", "acme/sub/.."),
        ("gitlab", "issue_hook_labeled", "acme\\x"),
    ],
)
def test_a_repository_name_that_is_not_a_plain_name_is_422(
    api, db_url, configure, enqueued, provider, name, full_name
):
    data = load(provider, name, unique_repo())
    field = "project.path_with_namespace" if provider == "gitlab" else "repository.full_name"
    holder = data["project"] if provider == "gitlab" else data["repository"]
    holder["path_with_namespace" if provider == "gitlab" else "full_name"] = full_name
    before = count_tasks(db_url)
    response = deliver(api, provider, name, data)
    assert response.status_code == 422, response.text
    assert field in response.json()["detail"] and "not a" in response.json()["detail"]
    assert count_tasks(db_url) == before and enqueued == []


@pytest.mark.parametrize(("provider", "name"), PULL_REQUESTS)
def test_an_allowed_fork_the_payload_does_not_name_is_not_run(
    api, db_url, configure, enqueued, provider, name
):
    """With forks allowed, a fork whose repository the payload does not name (deleted) has no URL to
    build: ignored, never cloned from (or pushed to) the upstream repository instead."""
    configure(ELPIS_WEBHOOKS__ALLOW_FORKS="true")
    data = load(provider, name, unique_repo())
    as_fork(provider, data)
    if provider == "gitlab":
        del data["object_attributes"]["source"]["path_with_namespace"]
    else:
        data["pull_request"]["head"]["repo"] = None
    response = deliver(api, provider, name, data)
    assert response.status_code == 202 and response.json()["tasks"] == [] and enqueued == []
    assert "does not name the fork's repository" in response.json()["detail"]


def test_a_provider_without_a_web_url_refuses_every_delivery(api, db_url, configure, enqueued):
    configure(ELPIS_WEBHOOKS__GITEA__WEB_URL="")
    repo = unique_repo()
    response = deliver(api, "gitea", "issues_label_updated", load("gitea", "issues_label_updated", repo))
    assert response.status_code == 403 and "webhooks.gitea.web_url" in response.json()["detail"]
    assert deliveries_of(db_url, repo) == [] and enqueued == []


@pytest.mark.parametrize(
    "value",
    [
        "http://github.com",  # git's protocol allow-list has https, ssh and file only
        "https://user:token@github.com",
        "https://token@github.com",
        "/srv/git",
        "file://srv/git",
        "github.com",
        "https://github.com/?x=1",
        "https://github.com/#x",
        "https://git hub.com",
    ],
)
def test_a_web_url_that_is_not_a_plain_base_stops_the_program(monkeypatch, value):
    monkeypatch.setenv("ELPIS_WEBHOOKS__GITHUB__WEB_URL", value)
    with pytest.raises(ConfigError, match="webhooks.github.web_url"):
        load_settings()


def test_plain_web_urls_are_settings(monkeypatch):
    for value in ("https://github.com", "https://gitea.example.com/git/", "ssh://git@host:22", "file:///srv"):
        monkeypatch.setenv("ELPIS_WEBHOOKS__GITEA__WEB_URL", value)
        assert load_settings().webhooks.gitea.web_url == value
    monkeypatch.delenv("ELPIS_WEBHOOKS__GITEA__WEB_URL")
    hooks = load_settings().webhooks
    assert (hooks.github.web_url, hooks.gitlab.web_url, hooks.gitea.web_url) == (
        "https://github.com",
        "https://gitlab.com",
        "",
    )


def test_a_pull_request_head_the_api_does_not_name_fails_the_task(
    api, db_url, configure, enqueued, provider_api
):
    """The worker's head lookup builds the head's URL from its full name too: an answer with only a
    clone URL is not used."""
    from configs import get_settings
    from elpis_worker import results
    from elpis_worker.store import TaskStore

    repo = unique_repo()
    provider_api.answers[f"/repos/acme/{repo}/pulls/7"] = {
        "number": 7,
        "head": {"ref": "evil", "sha": "ab" * 20, "repo": {"clone_url": POISON}},
    }
    configure(ELPIS_WEBHOOKS__GITHUB__API_URL=provider_api.url)
    name = "issue_comment_pull_request"
    [task_id] = deliver(api, "github", name, load("github", name, repo)).json()["tasks"]
    store = TaskStore(db_url)
    assert store.claim(task_id, stale_after=60) is not None
    assert results.prepare_source(store, get_settings(), task_id) == "failed"
    task = task_row(db_url, task_id)
    assert task.repo == f"https://github.com/acme/{repo}.git" and "names none" in task.failure_reason


# --- GitLab and Gitea comments: the author's role, from the provider's API -------------------------------

GITLAB_MEMBER = "/api/v4/projects/14/members/all/51"


def gitea_permission(repo: str) -> str:
    return f"/api/v1/repos/acme/{repo}/collaborators/alice/permission"


def gitea_issue_comment(repo: str) -> dict[str, Any]:
    """Gitea's comment fixture, on an issue rather than a pull request."""
    data = load("gitea", "issue_comment_pull_request", repo)
    data["is_pull"] = False
    data["issue"]["pull_request"] = None
    return data


@pytest.fixture
def forge_api(configure, provider_api):
    """GitLab's and Gitea's API played by `provider_api`, with tokens."""
    configure(
        ELPIS_WEBHOOKS__GITLAB__API_URL=f"{provider_api.url}/api/v4",
        ELPIS_WEBHOOKS__GITLAB__API_TOKEN="gl-api-token",
        ELPIS_WEBHOOKS__GITEA__API_URL=f"{provider_api.url}/api/v1",
        ELPIS_WEBHOOKS__GITEA__API_TOKEN="gt-api-token",
    )
    return provider_api


@pytest.mark.parametrize(
    ("level", "role"), [(50, "OWNER"), (40, "MEMBER"), (30, "COLLABORATOR"), (20, "NONE"), (10, "NONE")]
)
def test_a_gitlab_comment_is_obeyed_only_from_a_member_who_can_push(
    api, db_url, forge_api, enqueued, level, role
):
    """Developer (30) and above, by the access level GitLab's API gives for the note's author."""
    repo = unique_repo()
    forge_api.answers[GITLAB_MEMBER] = {"id": 51, "username": "alice", "access_level": level}
    response = deliver(api, "gitlab", "note_hook_issue", load("gitlab", "note_hook_issue", repo))
    assert response.status_code == 202, response.text
    [lookup] = forge_api.got()
    assert lookup["path"] == GITLAB_MEMBER and lookup["headers"]["private-token"] == "gl-api-token"
    if role == "NONE":
        assert response.json()["tasks"] == [] and enqueued == []
        assert (
            response.json()["detail"] == "comment by 'alice' (NONE), not one of gitlab.comment_associations"
        )
        assert [d.outcome for d in deliveries_of(db_url, repo)] == ["ignored"]
    else:
        assert len(response.json()["tasks"]) == 1 and enqueued == response.json()["tasks"]


@pytest.mark.parametrize(
    ("permission", "obeyed"),
    [("owner", True), ("admin", True), ("write", True), ("read", False), ("none", False)],
)
def test_a_gitea_comment_is_obeyed_only_from_a_collaborator_who_can_write(
    api, db_url, forge_api, enqueued, permission, obeyed
):
    repo = unique_repo()
    forge_api.answers[gitea_permission(repo)] = {"permission": permission, "role_name": permission}
    response = deliver(api, "gitea", "issue_comment_pull_request", gitea_issue_comment(repo))
    assert response.status_code == 202, response.text
    [lookup] = forge_api.got()
    assert lookup["path"] == gitea_permission(repo)
    assert lookup["headers"]["authorization"] == "token gt-api-token"
    assert bool(response.json()["tasks"]) is obeyed
    if not obeyed:
        assert "(NONE), not one of gitea.comment_associations" in response.json()["detail"]
        assert enqueued == []


@pytest.mark.parametrize("provider", ["gitlab", "gitea"])
def test_a_commenter_the_provider_does_not_know_is_not_obeyed(api, db_url, forge_api, enqueued, provider):
    """No answer for the user (404: not a member, no such user) is no role."""
    repo = unique_repo()
    if provider == "gitlab":
        response = deliver(api, "gitlab", "note_hook_issue", load("gitlab", "note_hook_issue", repo))
    else:
        response = deliver(api, "gitea", "issue_comment_pull_request", gitea_issue_comment(repo))
    assert response.status_code == 202 and response.json()["tasks"] == [] and enqueued == []
    assert "(NONE), not one of" in response.json()["detail"]
    assert len(forge_api.got()) == 1


@pytest.mark.parametrize("provider", ["gitlab", "gitea"])
@pytest.mark.parametrize(
    ("failure", "said"),
    [
        ("down", "failed"),
        ((500, {"message": "boom"}), "answered 500"),
        ((401, {"message": "401 Unauthorized"}), "answered 401 (check the provider's api_token"),
        ((200, ["not", "an", "object"]), "did not answer a JSON object"),
        ((200, {"id": 51}), "answered without"),
    ],
)
def test_a_role_that_cannot_be_checked_is_refused_never_allowed(
    api, db_url, forge_api, configure, enqueued, provider, failure, said
):
    """Fail closed: an unreachable API, an error or an answer without the role makes no task, and the
    delivery says why."""
    repo = unique_repo()
    if failure == "down":
        dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        configure(
            ELPIS_WEBHOOKS__GITLAB__API_URL=f"{dead}/api/v4", ELPIS_WEBHOOKS__GITEA__API_URL=f"{dead}/api/v1"
        )
    else:
        forge_api.answers[GITLAB_MEMBER if provider == "gitlab" else gitea_permission(repo)] = failure
    if provider == "gitlab":
        response = deliver(api, "gitlab", "note_hook_issue", load("gitlab", "note_hook_issue", repo))
    else:
        response = deliver(api, "gitea", "issue_comment_pull_request", gitea_issue_comment(repo))
    assert response.status_code == 202, response.text
    assert response.json()["tasks"] == [] and enqueued == []
    detail = response.json()["detail"]
    assert detail.startswith(f"comment by 'alice', whose role in acme/{repo} could not be checked: ")
    assert said in detail
    [delivery] = deliveries_of(db_url, repo)
    assert delivery.outcome == "ignored" and delivery.detail == detail


def test_comment_associations_narrow_who_may_command(api, db_url, forge_api, configure, enqueued):
    configure(ELPIS_WEBHOOKS__GITLAB__COMMENT_ASSOCIATIONS='["OWNER"]')
    repo = unique_repo()
    forge_api.answers[GITLAB_MEMBER] = {"id": 51, "access_level": 40}
    response = deliver(api, "gitlab", "note_hook_issue", load("gitlab", "note_hook_issue", repo))
    assert response.json()["tasks"] == [] and "(MEMBER), not one of" in response.json()["detail"]


def test_a_gitea_comment_without_an_api_is_not_obeyed(api, db_url, configure, enqueued):
    """No api_url, no way to learn the role: refused, saying which setting is missing."""
    repo = unique_repo()
    response = deliver(api, "gitea", "issue_comment_pull_request", gitea_issue_comment(repo))
    assert response.status_code == 202 and response.json()["tasks"] == [] and enqueued == []
    assert "webhooks.gitea.api_url is not set" in response.json()["detail"]


def test_a_comment_without_the_command_asks_the_api_nothing(api, db_url, forge_api, enqueued):
    data = load("gitlab", "note_hook_issue", unique_repo())
    data["object_attributes"]["note"] = "thanks, looks good"
    response = deliver(api, "gitlab", "note_hook_issue", data)
    assert response.json()["tasks"] == [] and forge_api.got() == []
