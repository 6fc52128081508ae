"""Webhooks trust only what is signed: the signature over the raw bytes is checked before anything of
the body is parsed, a repository's own secret cannot be replaced by another's, and hostile bodies
(deeply nested, huge, not JSON) get a 4xx, never a 5xx, and create nothing."""

# ruff: noqa: F811 - pytest injects the imported fixtures by parameter name
from __future__ import annotations

import json

import pytest

# The webhook tests' helpers and fixtures (`configure`, `enqueued`), shared rather than copied.
from helpers import task_row
from test_webhooks import (  # noqa: F401
    configure,
    deliver,
    enqueued,
    load,
    provider_api,
    source_row,
    unique_repo,
)

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


def as_fork(provider: str, data: dict) -> str:
    """Make the fixture's pull request come from mallory's fork; returns the fork's clone URL."""
    url = f"https://{provider}.example.com/mallory/calc.git"
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
    return url


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
    fork_url = "https://github.com/mallory/calc.git"
    provider_api.pulls[f"/repos/acme/{repo}/pulls/7"] = {
        "number": 7,
        "head": {
            "ref": "evil",
            "sha": "ab" * 20,
            "repo": {"full_name": "mallory/calc", "clone_url": fork_url},
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
