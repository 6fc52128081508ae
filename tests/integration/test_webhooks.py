"""Git webhooks: GitHub, GitLab and Gitea deliveries (realistic payloads from tests/webhook_payloads/)
through the real API into real Postgres; results pushed to a local bare repository (the provider's
configured web_url is a file:// directory of bare repositories) and commented back to a local HTTP server
standing in for the provider's REST API."""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import json
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import SAMPLES, free_port, steps_of, task_row, wait_finished, wait_for
from sqlalchemy import func, select

from configs import get_settings
from configs.settings import load_settings
from elpis_worker import results, tasks
from elpis_worker.backend import ScriptedBackend
from elpis_worker.forges import FORGES
from elpis_worker.forges.api import retry_after
from elpis_worker.store import TaskStore
from models import Batch, Task, TaskStatus, session_scope
from models.webhooks import CommentStatus, Provider, ResultStatus, TaskSource, WebhookDelivery

PAYLOADS = Path(__file__).resolve().parents[1] / "webhook_payloads"
SECRETS = {"github": "gh-secret-0d1e", "gitlab": "gl-token-7a2b", "gitea": "gt-secret-93c4"}
# Where the fixtures' repository lives by each provider's web_url (GitHub's and GitLab's defaults; Gitea
# has none, so `configure` sets one): the URL a task clones from, whatever the payload says.
CLONE_URLS = {
    "github": "https://github.com/acme/calc.git",
    "gitlab": "https://gitlab.com/acme/calc.git",
    "gitea": "https://gitea.example.com/acme/calc.git",
}
# The event header each provider sends for a fixture, by fixture name.
EVENTS = {
    ("github", "issues_labeled"): "issues",
    ("github", "issue_comment_pull_request"): "issue_comment",
    ("github", "issue_comment_issue"): "issue_comment",
    ("github", "pull_request_opened"): "pull_request",
    ("github", "pull_request_labeled"): "pull_request",
    ("github", "push"): "push",
    ("github", "ping"): "ping",
    ("github", "star_created"): "star",
    ("gitlab", "issue_hook_labeled"): "Issue Hook",
    ("gitlab", "merge_request_hook_open"): "Merge Request Hook",
    ("gitlab", "note_hook_merge_request"): "Note Hook",
    ("gitlab", "note_hook_issue"): "Note Hook",
    ("gitlab", "push_hook"): "Push Hook",
    ("gitea", "issues_label_updated"): ("issues", "issue_label"),
    ("gitea", "issue_comment_pull_request"): ("issue_comment", "pull_request_comment"),
    ("gitea", "pull_request_opened"): ("pull_request", "pull_request"),
    ("gitea", "push"): ("push", "push"),
}
FIX_SCRIPT = SAMPLES / "fix_script.json"


# --- helpers ------------------------------------------------------------------------------------------


def load(provider: str, name: str, repo: str) -> dict[str, Any]:
    """A fixture payload for repository acme/<repo> (unique per test: dedup keys are global)."""
    text = (PAYLOADS / provider / f"{name}.json").read_text()
    return json.loads(text.replace("acme/calc", f"acme/{repo}"))


def signature_headers(provider: str, body: bytes, secret: str) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if provider == "github":
        return {"X-Hub-Signature-256": f"sha256={digest}"}
    if provider == "gitlab":
        return {"X-Gitlab-Token": secret}
    return {"X-Gitea-Signature": digest}


def deliver(
    api,
    provider: str,
    name: str,
    data: Any,
    *,
    delivery: str | None = None,
    secret: str | None | bool = None,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
):
    """POST a delivery the way the provider sends it: its event and delivery headers, signed with the
    configured secret (secret=False: unsigned; a string: that secret)."""
    body = json.dumps(data).encode() if body is None else body
    delivery = delivery or str(uuid.uuid4())
    sent = {"Content-Type": "application/json", "User-Agent": f"{provider}-Hookshot/test"}
    event = EVENTS[(provider, name)]
    if provider == "github":
        sent |= {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery, "X-GitHub-Hook-ID": "512345678"}
    elif provider == "gitlab":
        sent |= {"X-Gitlab-Event": event, "Idempotency-Key": delivery, "X-Gitlab-Event-UUID": delivery}
    else:
        sent |= {"X-Gitea-Event": event[0], "X-Gitea-Event-Type": event[1], "X-Gitea-Delivery": delivery}
    if secret is not False:
        sent |= signature_headers(provider, body, SECRETS[provider] if secret in (None, True) else secret)
    sent |= headers or {}
    return api.post(f"/webhooks/{provider}", content=body, headers=sent)


def unique_repo() -> str:
    return f"calc-{uuid.uuid4().hex[:8]}"


def source_row(db_url: str, task_id: int) -> TaskSource | None:
    with session_scope(db_url) as s:
        row = s.get(TaskSource, task_id)
        if row is not None:
            s.expunge(row)
        return row


def deliveries_of(db_url: str, repo: str) -> list[WebhookDelivery]:
    with session_scope(db_url) as s:
        rows = list(
            s.scalars(
                select(WebhookDelivery)
                .where(WebhookDelivery.repository == f"acme/{repo}")
                .order_by(WebhookDelivery.id)
            )
        )
        for row in rows:
            s.expunge(row)
        return rows


def count_tasks(db_url: str) -> int:
    with session_scope(db_url) as s:
        return s.scalar(select(func.count()).select_from(Task))


def git(*args: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return proc.stdout.strip()


def forge(tmp_path: Path) -> str:
    """A file:// web_url: a directory of bare repositories named <owner>/<name>.git, as make_origin
    makes them. Configuration, so a test may point a provider there; a payload never can."""
    return (tmp_path / "forge").as_uri()


def make_origin(tmp_path: Path, repo: str) -> tuple[Path, str, str]:
    """A bare repository acme/<repo>.git under `forge(tmp_path)` holding samples/calc on main, and a
    branch fix-subtract one commit ahead (the pull request's head). Returns (bare path, main sha,
    fix-subtract sha)."""
    work = tmp_path / "seed"
    shutil.copytree(
        SAMPLES / "calc", work, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    )
    git("init", "--quiet", "-b", "main", cwd=work)
    git("config", "user.name", "Alice", cwd=work)
    git("config", "user.email", "alice@example.com", cwd=work)
    git("add", "-A", cwd=work)
    git("commit", "--quiet", "-m", "calc", cwd=work)
    main = git("rev-parse", "HEAD", cwd=work)
    git("checkout", "--quiet", "-b", "fix-subtract", cwd=work)
    (work / "NOTES.md").write_text("subtract is wrong; see pull request 7\n")
    git("add", "NOTES.md", cwd=work)
    git("commit", "--quiet", "-m", "notes", cwd=work)
    head = git("rev-parse", "HEAD", cwd=work)
    bare = tmp_path / "forge" / "acme" / f"{repo}.git"
    bare.parent.mkdir(parents=True, exist_ok=True)
    git("clone", "--quiet", "--bare", str(work), str(bare))
    return bare, main, head


class FakeProviderAPI:
    """A real HTTP server playing a provider's REST API: records every request (with the time it came
    and the status answered), answers GETs (pull requests, members, permissions) from `answers` by path
    (a (status, body) pair for another status than 200; 404 for any other path), and comment posts with
    201, or with the next of `comment_answers` (status, headers) while there are any."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.answers: dict[str, Any] = {}
        self.comment_answers: list[tuple[int, dict[str, str]]] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, entry: dict[str, Any], status: int, data: Any, **headers: str) -> None:
                entry["status"] = status
                body = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def _record(self) -> dict[str, Any]:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                entry = {
                    "method": self.command,
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "json": json.loads(raw) if raw else None,
                    "at": time.monotonic(),
                }
                api.requests.append(entry)
                return entry

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                entry = self._record()
                answer = api.answers.get(self.path, (404, {"message": "Not Found"}))
                self._answer(entry, *(answer if isinstance(answer, tuple) else (200, answer)))

            def do_POST(self) -> None:  # noqa: N802
                entry = self._record()
                if not entry["path"].endswith(("/comments", "/notes")):
                    self._answer(entry, 404, {"message": "Not Found"})
                elif api.comment_answers:
                    status, headers = api.comment_answers.pop(0)
                    self._answer(entry, status, {"message": "scripted failure"}, **headers)
                else:
                    self._answer(
                        entry, 201, {"id": 1, "html_url": f"{api.url}{entry['path']}#1", "body": "x"}
                    )

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def posted(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] == "POST"]

    def got(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] == "GET"]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def provider_api() -> Iterator[FakeProviderAPI]:
    api = FakeProviderAPI()
    yield api
    api.close()


@pytest.fixture
def configure(monkeypatch):
    """Set webhook settings through the environment (the names deployments use), for this process and
    for worker processes started after; the settings cache is rebuilt, and restored at teardown."""

    def apply(repositories: dict[str, Any] | None = None, **env: str) -> None:
        base = {
            "ELPIS_GITHUB_WEBHOOK_SECRET": SECRETS["github"],
            "ELPIS_GITLAB_WEBHOOK_TOKEN": SECRETS["gitlab"],
            "ELPIS_GITEA_WEBHOOK_SECRET": SECRETS["gitea"],
            "ELPIS_WEBHOOKS__GITEA__WEB_URL": "https://gitea.example.com",
        }
        for key, value in (base | env).items():
            monkeypatch.setenv(key, value)
        if repositories is not None:
            monkeypatch.setenv("ELPIS_WEBHOOKS__REPOSITORIES", json.dumps(repositories))
        get_settings.cache_clear()

    apply()
    yield apply
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.fixture
def enqueued(api) -> list[int]:
    ids: list[int] = []
    api.app.state.enqueue = ids.append
    return ids


# --- configuration --------------------------------------------------------------------------------------


def test_secret_environment_names_are_settings(monkeypatch):
    monkeypatch.setenv("ELPIS_GITHUB_WEBHOOK_SECRET", "a")
    monkeypatch.setenv("ELPIS_GITLAB_WEBHOOK_TOKEN", "b")
    monkeypatch.setenv("ELPIS_GITEA_WEBHOOK_SECRET", "c")
    hooks = load_settings().webhooks
    assert hooks.github.secret.get_secret_value() == "a"
    assert hooks.gitlab.secret.get_secret_value() == "b"
    assert hooks.gitea.secret.get_secret_value() == "c"
    assert hooks.max_body_bytes == 25 * 1024 * 1024 and hooks.trigger_label == "elpis"
    assert hooks.command_prefix == "/elpis "
    # The nested spelling wins over the short name; secrets never show in a repr.
    monkeypatch.setenv("ELPIS_WEBHOOKS__GITHUB__SECRET", "nested")
    hooks = load_settings().webhooks
    assert hooks.github.secret.get_secret_value() == "nested"
    assert "nested" not in repr(hooks)


# --- authentication and bad input -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "name"),
    [("github", "issues_labeled"), ("gitlab", "issue_hook_labeled"), ("gitea", "issues_label_updated")],
)
def test_valid_signature_makes_one_task_with_its_source(api, db_url, configure, enqueued, provider, name):
    repo = unique_repo()
    configure(repositories={f"acme/{repo}": {"test_command": "python -m pytest -q"}})
    delivery = str(uuid.uuid4())
    response = deliver(api, provider, name, load(provider, name, repo), delivery=delivery)

    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["delivery"] == delivery and len(answer["tasks"]) == 1
    task_id = answer["tasks"][0]
    assert enqueued == [task_id]
    task = task_row(db_url, task_id)
    assert task.status == TaskStatus.queued
    assert task.instruction.startswith("subtract returns the sum\n\ncalc.ops.subtract(5, 3) returns 8.")
    assert task.repo == CLONE_URLS[provider].replace("acme/calc", f"acme/{repo}")
    assert task.ref == "main" and task.test_command == "python -m pytest -q"
    with session_scope(db_url) as s:
        assert s.get(Batch, task.batch_id).source == provider
    source = source_row(db_url, task_id)
    assert source.provider == provider and source.repository == f"acme/{repo}"
    assert (
        source.trigger == "issue_label" and source.number == {"github": 5, "gitlab": 23, "gitea": 3}[provider]
    )
    assert source.is_pull_request is False and source.push_url == task.repo
    [record] = deliveries_of(db_url, repo)
    assert record.provider == provider and record.delivery_id == delivery and record.outcome == "tasks"
    assert record.payload_sha256 == hashlib.sha256(response.request.content).hexdigest()

    shown = api.get(f"/webhooks/{provider}/deliveries/{delivery}").json()
    assert shown["tasks"] == [task_id] and shown["outcome"] == "tasks"
    assert api.get(f"/v1/tasks/{task_id}/source").json()["number"] == source.number


def test_the_same_delivery_twice_makes_one_task(api, db_url, configure, enqueued):
    repo = unique_repo()
    data = load("github", "issues_labeled", repo)
    delivery = str(uuid.uuid4())
    first = deliver(api, "github", "issues_labeled", data, delivery=delivery)
    second = deliver(api, "github", "issues_labeled", data, delivery=delivery)
    assert first.status_code == second.status_code == 202
    assert second.json()["tasks"] == first.json()["tasks"] and len(first.json()["tasks"]) == 1
    assert second.json()["redelivery"] is True and first.json()["redelivery"] is False
    assert enqueued == first.json()["tasks"]  # the redelivery enqueued nothing
    assert len(deliveries_of(db_url, repo)) == 1


def test_concurrent_duplicate_deliveries_make_one_task(api, db_url, configure, enqueued):
    repo = unique_repo()
    data = load("gitea", "issues_label_updated", repo)
    delivery = str(uuid.uuid4())
    barrier = threading.Barrier(6)

    def send(_: int):
        barrier.wait()
        return deliver(api, "gitea", "issues_label_updated", data, delivery=delivery)

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(send, range(6)))
    assert {r.status_code for r in answers} == {202}
    task_lists = {tuple(r.json()["tasks"]) for r in answers}
    assert len(task_lists) == 1 and len(next(iter(task_lists))) == 1
    assert sum(not r.json()["redelivery"] for r in answers) == 1
    assert len(enqueued) == 1 and len(deliveries_of(db_url, repo)) == 1


def test_a_redelivery_racing_the_first_waits_for_it(db_url, configure):
    """The first delivery's transaction is still open when the redelivery arrives: the redelivery's
    insert waits on the unique constraint, then answers with the first one's task (no check-then-insert
    window in which both would make a task)."""
    from sqlalchemy import text

    from elpis_worker.deliveries import record_delivery, validate_plan, write_delivery
    from elpis_worker.forges import FORGES, Rules
    from models import sessionmaker_for

    repo = unique_repo()
    rules = Rules(Provider.github, get_settings().webhooks)
    interpretation = FORGES[Provider.github].interpret(
        "issues", load("github", "issues_labeled", repo), rules
    )
    task_in = validate_plan(interpretation.plan, None)
    delivery = str(uuid.uuid4())
    make = sessionmaker_for(db_url)

    def redelivery_waits() -> bool:
        # A session per look: pg_stat_activity is a snapshot held for the rest of a transaction.
        with make() as watcher:
            return bool(
                watcher.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND query LIKE 'INSERT INTO webhook_delivery%'"
                    )
                )
            )

    # The session closes (releasing the first delivery's row) before the pool waits for its thread.
    with ThreadPoolExecutor(1) as pool:
        with make() as first:
            transaction = first.begin()
            first_result = write_delivery(first, Provider.github, delivery, "0" * 64, interpretation, task_in)
            pending = pool.submit(
                lambda: record_delivery(make(), Provider.github, delivery, "0" * 64, interpretation, task_in)
            )
            wait_for(redelivery_waits, timeout=30, what="the redelivery to wait on the first delivery's row")
            assert not pending.done()
            transaction.commit()
        second = pending.result(timeout=30)
    assert second.redelivery is True and second.task_ids == first_result.task_ids
    assert len(first_result.task_ids) == 1 and second.new_tasks == []


def test_the_same_event_from_two_deliveries_makes_one_task(api, db_url, configure, enqueued):
    """GitHub sends opened and labeled for a pull request opened with the label: one task per head."""
    repo = unique_repo()
    opened = deliver(api, "github", "pull_request_opened", load("github", "pull_request_opened", repo))
    labeled = deliver(api, "github", "pull_request_labeled", load("github", "pull_request_labeled", repo))
    assert len(opened.json()["tasks"]) == 1
    assert labeled.status_code == 202 and labeled.json()["tasks"] == []
    assert f"already handled by task {opened.json()['tasks'][0]}" in labeled.json()["detail"]
    assert [d.outcome for d in deliveries_of(db_url, repo)] == ["tasks", "ignored"]


@pytest.mark.parametrize(
    ("provider", "name"), [("github", "push"), ("gitlab", "push_hook"), ("gitea", "push")]
)
def test_wrong_secret_is_401_and_writes_nothing(api, db_url, configure, enqueued, provider, name):
    repo = unique_repo()
    before = count_tasks(db_url)
    response = deliver(api, provider, name, load(provider, name, repo), secret="not-the-secret")
    assert response.status_code == 401
    assert "does not match" in response.json()["detail"]
    assert count_tasks(db_url) == before and deliveries_of(db_url, repo) == [] and enqueued == []


@pytest.mark.parametrize(
    ("provider", "name", "header"),
    [
        ("github", "issues_labeled", "X-Hub-Signature-256"),
        ("gitlab", "issue_hook_labeled", "X-Gitlab-Token"),
        ("gitea", "issues_label_updated", "X-Gitea-Signature"),
    ],
)
def test_unsigned_is_401(api, db_url, configure, enqueued, provider, name, header):
    repo = unique_repo()
    response = deliver(api, provider, name, load(provider, name, repo), secret=False)
    assert response.status_code == 401
    assert f"missing {header}" in response.json()["detail"]
    assert deliveries_of(db_url, repo) == [] and enqueued == []


def test_a_signature_of_another_body_is_401(api, db_url, configure, enqueued):
    repo = unique_repo()
    data = load("github", "issues_labeled", repo)
    forged = json.dumps({**data, "label": {"name": "elpis"}, "issue": {**data["issue"], "title": "rm -rf"}})
    headers = signature_headers("github", json.dumps(data).encode(), SECRETS["github"])
    response = deliver(
        api, "github", "issues_labeled", None, body=forged.encode(), secret=False, headers=headers
    )
    assert response.status_code == 401 and enqueued == []


def test_no_secret_configured_refuses_every_request(api, db_url, configure, enqueued):
    configure(ELPIS_GITLAB_WEBHOOK_TOKEN="")
    repo = unique_repo()
    data = load("gitlab", "issue_hook_labeled", repo)
    for secret in ("", False, "anything"):
        response = deliver(api, "gitlab", "issue_hook_labeled", data, secret=secret)
        assert response.status_code == 403
        assert "no secret is configured" in response.json()["detail"]
        assert "ELPIS_GITLAB_WEBHOOK_TOKEN" in response.json()["detail"]
    assert deliveries_of(db_url, repo) == [] and enqueued == []


def test_repository_secret_replaces_the_providers(api, db_url, configure, enqueued):
    repo = unique_repo()
    configure(repositories={f"github:acme/{repo}": {"secret": "repo-own-secret"}})
    data = load("github", "issues_labeled", repo)
    assert deliver(api, "github", "issues_labeled", data).status_code == 401
    accepted = deliver(api, "github", "issues_labeled", data, secret="repo-own-secret")
    assert accepted.status_code == 202 and len(accepted.json()["tasks"]) == 1


def test_malformed_json_is_400(api, db_url, configure, enqueued):
    response = deliver(api, "github", "issues_labeled", None, body=b'{"action": "labeled", "issue": {')
    assert response.status_code == 400 and "not valid JSON" in response.json()["detail"]
    not_object = deliver(api, "gitea", "push", None, body=b"[1, 2, 3]")
    assert not_object.status_code == 400 and "JSON object" in not_object.json()["detail"]
    assert enqueued == []


def test_oversized_body_is_413_without_reading_it(api, db_url, configure, enqueued):
    configure(ELPIS_WEBHOOKS__MAX_BODY_BYTES="2048")
    repo = unique_repo()
    data = load("github", "push", repo)
    data["padding"] = "x" * 4096
    body = json.dumps(data).encode()
    declared = deliver(api, "github", "push", data, body=body)
    assert declared.status_code == 413 and "webhooks.max_body_bytes" in declared.json()["detail"]

    # A chunked body declares no length: it is counted while it streams in.
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": str(uuid.uuid4()),
    } | signature_headers("github", body, SECRETS["github"])
    chunked = api.post(
        "/webhooks/github", content=(body[i : i + 512] for i in range(0, len(body), 512)), headers=headers
    )
    assert chunked.request.headers.get("transfer-encoding") == "chunked"
    assert chunked.status_code == 413
    assert deliveries_of(db_url, repo) == [] and enqueued == []


def test_bad_field_is_422_naming_it(api, db_url, configure, enqueued):
    repo = unique_repo()
    data = load("github", "issues_labeled", repo)
    data["repository"]["full_name"] = f"acme/{repo} now"
    bad_name = deliver(api, "github", "issues_labeled", data)
    assert bad_name.status_code == 422 and "repository.full_name" in bad_name.json()["detail"]
    data = load("gitlab", "issue_hook_labeled", repo)
    del data["object_attributes"]["iid"]
    missing = deliver(api, "gitlab", "issue_hook_labeled", data)
    assert missing.status_code == 422 and "object_attributes.iid" in missing.json()["detail"]
    assert deliveries_of(db_url, repo) == [] and enqueued == []


def test_form_encoded_github_delivery(api, db_url, configure, enqueued):
    from urllib.parse import urlencode

    repo = unique_repo()
    body = urlencode({"payload": json.dumps(load("github", "issues_labeled", repo))}).encode()
    response = deliver(
        api,
        "github",
        "issues_labeled",
        None,
        body=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 202 and len(response.json()["tasks"]) == 1


# --- which events make tasks ----------------------------------------------------------------------------


def test_ping_answers_200(api, db_url, configure, enqueued):
    repo = unique_repo()
    response = deliver(api, "github", "ping", load("github", "ping", repo))
    assert response.status_code == 200
    assert response.json()["tasks"] == [] and response.json()["outcome"] == "ping"
    assert [d.outcome for d in deliveries_of(db_url, repo)] == ["ping"]


def test_irrelevant_events_are_recorded_and_make_no_task(api, db_url, configure, enqueued):
    repo = unique_repo()
    star = deliver(api, "github", "star_created", load("github", "star_created", repo))
    assert star.status_code == 202 and star.json()["tasks"] == []
    assert "not one Elpis acts on" in star.json()["detail"]

    data = load("github", "issues_labeled", repo)
    data["label"] = data["issue"]["labels"][0]  # "bug" was added, not "elpis"
    other_label = deliver(api, "github", "issues_labeled", data)
    assert other_label.json()["tasks"] == []

    data = load("github", "issue_comment_issue", repo)
    data["comment"]["body"] = "Thanks, /elpis is great"
    chatter = deliver(api, "github", "issue_comment_issue", data)
    assert chatter.json()["tasks"] == [] and "command prefix" in chatter.json()["detail"]

    data = load("github", "issue_comment_issue", repo)
    data["comment"]["author_association"] = "NONE"
    stranger = deliver(api, "github", "issue_comment_issue", data)
    assert stranger.json()["tasks"] == [] and "comment_associations" in stranger.json()["detail"]

    unruled = deliver(api, "gitlab", "push_hook", load("gitlab", "push_hook", repo))
    assert unruled.json()["tasks"] == [] and "no push rule" in unruled.json()["detail"]

    assert enqueued == []
    assert [d.outcome for d in deliveries_of(db_url, repo)] == ["ignored"] * 5


def test_issue_comment_becomes_a_task_with_the_rest_as_instruction(api, db_url, configure, enqueued):
    repo = unique_repo()
    response = deliver(api, "github", "issue_comment_issue", load("github", "issue_comment_issue", repo))
    [task_id] = response.json()["tasks"]
    task = task_row(db_url, task_id)
    assert task.instruction == "add a docstring to calc/ops.py" and task.ref == "main"
    source = source_row(db_url, task_id)
    assert source.trigger == "comment" and source.number == 5 and source.resolve_head is False


def test_pull_request_comments_run_on_the_head_branch(api, db_url, configure, enqueued, provider_api):
    repo = unique_repo()
    configure(
        ELPIS_WEBHOOKS__GITLAB__API_URL=f"{provider_api.url}/api/v4",
        ELPIS_WEBHOOKS__GITEA__API_URL=f"{provider_api.url}/api/v1",
    )
    # The commenter's role, as GitLab (Developer) and Gitea (write) tell it.
    provider_api.answers["/api/v4/projects/14/members/all/51"] = {"id": 51, "access_level": 30}
    gitea_role = f"/api/v1/repos/acme/{repo}/collaborators/alice/permission"
    provider_api.answers[gitea_role] = {"permission": "write"}
    # GitLab's note carries the merge request: its source branch is the task's ref.
    [gitlab_task] = deliver(
        api, "gitlab", "note_hook_merge_request", load("gitlab", "note_hook_merge_request", repo)
    ).json()["tasks"]
    task = task_row(db_url, gitlab_task)
    assert task.ref == "fix-subtract" and task.instruction == "fix subtract in calc/ops.py so the tests pass"
    source = source_row(db_url, gitlab_task)
    assert source.is_pull_request and source.number == 4 and source.project_id == "14"
    assert source.head_sha == "da1560886d4f094c3e6c9ef40349f7d38b5d27d7" and not source.resolve_head
    # GitHub's and Gitea's comments do not: the worker looks the head up before it runs.
    for provider in ("github", "gitea"):
        name = "issue_comment_pull_request"
        [task_id] = deliver(api, provider, name, load(provider, name, repo)).json()["tasks"]
        source = source_row(db_url, task_id)
        assert source.is_pull_request and source.resolve_head and task_row(db_url, task_id).ref is None


def test_gitea_pull_request_comment_needs_the_api(api, db_url, configure, enqueued):
    repo = unique_repo()
    name = "issue_comment_pull_request"
    response = deliver(api, "gitea", name, load("gitea", name, repo))
    assert response.json()["tasks"] == [] and "webhooks.gitea.api_url" in response.json()["detail"]


@pytest.mark.parametrize(
    ("provider", "name"),
    [
        ("github", "pull_request_opened"),
        ("gitlab", "merge_request_hook_open"),
        ("gitea", "pull_request_opened"),
    ],
)
def test_labeled_pull_request_makes_a_make_the_tests_pass_task(
    api, db_url, configure, enqueued, provider, name
):
    repo = unique_repo()
    configure(repositories={f"acme/{repo}": {"test_command": "python -m pytest -q"}})
    [task_id] = deliver(api, provider, name, load(provider, name, repo)).json()["tasks"]
    task = task_row(db_url, task_id)
    assert task.instruction.startswith("Make the tests (`python -m pytest -q`) of pull request #")
    assert task.ref == "fix-subtract"
    source = source_row(db_url, task_id)
    assert source.trigger == "pull_request" and source.is_pull_request and source.head_sha

    # Without the label the same pull request is left alone.
    data = load(provider, name, unique_repo())
    holder = data["object_attributes"] if provider == "gitlab" else data["pull_request"]
    holder["labels"] = []
    if provider == "gitlab":
        data["labels"] = []
    assert deliver(api, provider, name, data).json()["tasks"] == []


@pytest.mark.parametrize(
    ("provider", "name"), [("github", "push"), ("gitlab", "push_hook"), ("gitea", "push")]
)
def test_push_to_a_ruled_branch_makes_its_instruction(api, db_url, configure, enqueued, provider, name):
    repo = unique_repo()
    configure(repositories={f"acme/{repo}": {"push": {"release/*": "Bump nothing", "main": "Run the tests"}}})
    [task_id] = deliver(api, provider, name, load(provider, name, repo)).json()["tasks"]
    task = task_row(db_url, task_id)
    assert task.instruction == "Run the tests" and task.ref == "main"
    assert source_row(db_url, task_id).trigger == "push"

    data = load(provider, name, repo)
    data["ref"] = "refs/heads/release/2.0"
    data["after"] = "ab" * 20
    [glob_task] = deliver(api, provider, name, data).json()["tasks"]
    assert task_row(db_url, glob_task).instruction == "Bump nothing"

    data["ref"] = "refs/heads/elpis/task-1"  # Elpis's own result branches never trigger it
    data["after"] = "cd" * 20
    assert "own result branches" in deliver(api, provider, name, data).json()["detail"]
    data["ref"] = "refs/heads/main"
    data["after"] = "0" * 40  # a deleted branch
    assert "deleted" in deliver(api, provider, name, data).json()["detail"]


def test_a_delivery_the_broker_refuses_stays_queued_for_the_reconciler(api, db_url, configure):
    def broken(task_id: int) -> None:
        raise ConnectionError("broker down")

    api.app.state.enqueue = broken
    repo = unique_repo()
    response = deliver(api, "github", "issues_labeled", load("github", "issues_labeled", repo))
    assert response.status_code == 202, response.text
    [task_id] = response.json()["tasks"]
    assert task_row(db_url, task_id).status == TaskStatus.queued  # test_reconcile.py sends it later


# --- results --------------------------------------------------------------------------------------------


@pytest.fixture
def run_in_process(monkeypatch) -> Callable[[int, Path], TaskStatus | None]:
    """The production elpis.run_task in this process, the scripted model standing in for the resident
    one; then the elpis.publish_result it enqueued, run as a worker runs it (its retries included)."""

    def run(task_id: int, script: Path) -> TaskStatus | None:
        settings = get_settings()
        backend = ScriptedBackend(
            settings.model.model_copy(update={"backend": "scripted", "script": str(script)})
        )
        monkeypatch.setattr(tasks, "_backend", backend)
        sent: list[int] = []
        monkeypatch.setattr(tasks, "enqueue_publish", sent.append)
        status = tasks.run_task.apply(args=[task_id], throw=True).get()
        assert sent == [task_id]  # publishing is enqueued once the outcome is stored
        publish(task_id)
        return TaskStatus(status) if status else None

    return run


def publish(task_id: int) -> str:
    """elpis.publish_result as a worker runs it; run eagerly, its retries follow at once."""
    return tasks.publish_result.apply(args=[task_id]).get()


def test_webhook_task_on_a_bare_repository_pushes_its_branch(
    api, db_url, configure, tmp_path, start_worker, provider_api
):
    """GitHub: `/elpis ...` on pull request 7 → a real worker looks up the head branch through the API,
    runs the (scripted) loop on it, pushes elpis/task-<id> to the bare repository and comments back."""
    repo = unique_repo()
    bare, main_sha, head_sha = make_origin(tmp_path, repo)
    clone_url = bare.as_uri()
    provider_api.answers[f"/repos/acme/{repo}/pulls/7"] = {
        "number": 7,
        "state": "open",
        "head": {
            "label": "acme:fix-subtract",
            "ref": "fix-subtract",
            "sha": head_sha,
            "repo": {"full_name": f"acme/{repo}", "clone_url": f"https://github.com/acme/{repo}.git"},
        },
        "base": {"ref": "main", "sha": main_sha, "repo": {"full_name": f"acme/{repo}"}},
    }
    configure(
        repositories={f"acme/{repo}": {"test_command": "python -m pytest -q"}},
        ELPIS_WEBHOOKS__GITHUB__WEB_URL=forge(tmp_path),
        ELPIS_WEBHOOKS__GITHUB__API_URL=provider_api.url,
        ELPIS_WEBHOOKS__GITHUB__API_TOKEN="gh-api-token",
    )
    worker = start_worker(ELPIS_MODEL__BACKEND="scripted", ELPIS_MODEL__SCRIPT=str(FIX_SCRIPT))
    api.app.state.enqueue = worker.send

    name = "issue_comment_pull_request"
    response = deliver(api, "github", name, load("github", name, repo))
    assert response.status_code == 202, response.text
    [task_id] = response.json()["tasks"]
    task = wait_finished(db_url, task_id)
    source = wait_for(lambda: (s := source_row(db_url, task_id)).published_at and s, what="the result")

    assert task.status == TaskStatus.succeeded, (task.failure_reason, worker.log_text()[-3000:])
    assert task.repo == clone_url and task.ref == "fix-subtract"  # the pull request's head
    assert source.result_status == ResultStatus.pushed, source.result_error
    branch = f"elpis/task-{task_id}"
    assert source.result_branch == branch and source.result_test_passed is True
    # The task's summary (the agent writes a finish-only turn itself) is what the forge is told.
    assert source.result_summary == task.summary and source.result_summary.startswith("Changed calc/ops.py.")
    pushed = git("rev-parse", f"refs/heads/{branch}", cwd=bare)
    assert pushed == source.result_commit
    assert git("rev-parse", f"{branch}^", cwd=bare) == head_sha  # on top of the head branch
    assert "return a - b" in git("show", f"{branch}:calc/ops.py", cwd=bare)
    assert git("show", f"{branch}:NOTES.md", cwd=bare).startswith("subtract is wrong")
    assert git("rev-parse", "refs/heads/main", cwd=bare) == main_sha  # nothing else moved
    assert git("rev-parse", "refs/heads/fix-subtract", cwd=bare) == head_sha

    lookup = [r for r in provider_api.requests if r["method"] == "GET"]
    assert [r["path"] for r in lookup] == [f"/repos/acme/{repo}/pulls/7"]
    [comment] = provider_api.posted()
    assert comment["path"] == f"/repos/acme/{repo}/issues/7/comments"
    assert comment["headers"]["authorization"] == "Bearer gh-api-token"
    assert comment["headers"]["accept"] == "application/vnd.github+json"
    text = comment["json"]["body"]
    assert f"task {task_id} succeeded" in text and f"`{branch}`" in text and pushed[:12] in text
    assert "Tests passed." in text
    assert source.comment_status == CommentStatus.posted and source.comment_url.startswith(provider_api.url)
    shown = api.get(f"/v1/tasks/{task_id}/source").json()["result"]
    assert shown["branch"] == branch and shown["commit"] == pushed and shown["status"] == "pushed"
    assert shown["publish_attempts"] == 1 and shown["publish_error"] is None


def gitlab_issue_task(
    api,
    configure,
    tmp_path: Path,
    provider_api: FakeProviderAPI,
    repo: str,
    repositories: dict[str, Any] | None = None,
    **env: str,
) -> int:
    """The task of a labeled GitLab issue on `repo`, GitLab configured to clone from `forge(tmp_path)` and
    to post its notes to `provider_api`; `repositories` and `env` as `configure` takes them."""
    configure(
        repositories,
        ELPIS_WEBHOOKS__GITLAB__WEB_URL=forge(tmp_path),
        ELPIS_WEBHOOKS__GITLAB__API_URL=f"{provider_api.url}/api/v4",
        ELPIS_WEBHOOKS__GITLAB__API_TOKEN="gl-api-token",
        **env,
    )
    name = "issue_hook_labeled"
    [task_id] = deliver(api, "gitlab", name, load("gitlab", name, repo)).json()["tasks"]
    return task_id


def test_gitlab_issue_task_pushes_and_posts_a_note(
    api, db_url, configure, tmp_path, provider_api, enqueued, run_in_process
):
    repo = unique_repo()
    bare, main_sha, _ = make_origin(tmp_path, repo)
    tests = {f"acme/{repo}": {"test_command": "python -m pytest -q"}}
    task_id = gitlab_issue_task(api, configure, tmp_path, provider_api, repo, tests)

    assert run_in_process(task_id, FIX_SCRIPT) == TaskStatus.succeeded
    source = source_row(db_url, task_id)
    assert source.result_status == ResultStatus.pushed
    branch = f"elpis/task-{task_id}"
    assert git("rev-parse", f"{branch}^", cwd=bare) == main_sha
    assert "return a - b" in git("show", f"{branch}:calc/ops.py", cwd=bare)
    [note] = provider_api.posted()
    assert note["path"] == "/api/v4/projects/14/issues/23/notes"
    assert note["headers"]["private-token"] == "gl-api-token" and "authorization" not in note["headers"]
    assert f"`{branch}`" in note["json"]["body"]

    # Publishing again (a redelivery, the reconciler) pushes and comments nothing more.
    pushed = git("rev-parse", f"refs/heads/{branch}", cwd=bare)
    assert publish(task_id) == "already_published"
    assert len(provider_api.posted()) == 1 and git("rev-parse", f"refs/heads/{branch}", cwd=bare) == pushed
    assert source_row(db_url, task_id).publish_attempts == 1


def test_unreachable_clone_url_fails_cleanly_with_a_reason(
    api, db_url, configure, provider_api, enqueued, run_in_process
):
    repo = unique_repo()
    gone = f"https://127.0.0.1:{free_port()}/gone"  # nothing listens there
    dead = f"{gone}/acme/{repo}.git"
    configure(
        ELPIS_WEBHOOKS__GITEA__WEB_URL=gone,
        ELPIS_WEBHOOKS__GITEA__API_URL=f"{provider_api.url}/api/v1",
        ELPIS_WEBHOOKS__GITEA__API_TOKEN="gt-api-token",
    )
    name = "issues_label_updated"
    [task_id] = deliver(api, "gitea", name, load("gitea", name, repo)).json()["tasks"]

    assert run_in_process(task_id, FIX_SCRIPT) == TaskStatus.failed
    task = task_row(db_url, task_id)
    assert task.status == TaskStatus.failed and task.finished_at is not None
    assert task.failure_reason.startswith(f"workspace: could not clone {dead}")
    assert "127.0.0.1" in task.failure_reason and steps_of(db_url, task_id) == []
    source = source_row(db_url, task_id)
    assert source.result_status == ResultStatus.no_change and source.result_branch is None
    [comment] = provider_api.posted()
    assert comment["path"] == f"/api/v1/repos/acme/{repo}/issues/3/comments"
    assert comment["headers"]["authorization"] == "token gt-api-token"
    assert (
        f"task {task_id} failed" in comment["json"]["body"] and "could not clone" in comment["json"]["body"]
    )


def test_missing_pull_request_head_fails_the_task_with_a_reason(
    api, db_url, configure, provider_api, enqueued, run_in_process
):
    repo = unique_repo()
    configure(ELPIS_WEBHOOKS__GITHUB__API_URL=provider_api.url)  # no token: no comment back
    name = "issue_comment_pull_request"
    [task_id] = deliver(api, "github", name, load("github", name, repo)).json()["tasks"]
    assert run_in_process(task_id, FIX_SCRIPT) == TaskStatus.failed
    task = task_row(db_url, task_id)
    assert task.failure_reason.startswith("could not find the head branch of pull request #7")
    assert "answered 404" in task.failure_reason
    source = source_row(db_url, task_id)
    assert source.comment_status == CommentStatus.skipped and "api_token" in source.comment_error
    assert provider_api.posted() == []


# --- publishing: its own task, retried, idempotent ------------------------------------------------------


def finished_github_task(api, db_url: str, configure, provider_api: FakeProviderAPI, **env: str) -> int:
    """A GitHub issue's task that finished without a change (as if its worker died before publishing),
    with comments going to `provider_api`."""
    configure(
        ELPIS_WEBHOOKS__GITHUB__API_URL=provider_api.url,
        ELPIS_WEBHOOKS__GITHUB__API_TOKEN="gh-api-token",
        **env,
    )
    [task_id] = deliver(
        api, "github", "issues_labeled", load("github", "issues_labeled", unique_repo())
    ).json()["tasks"]
    with session_scope(db_url) as s:
        task = s.get(Task, task_id)
        task.status, task.summary, task.finished_at = TaskStatus.succeeded, "nothing to change", func.now()
    return task_id


def test_publishing_is_retried_with_backoff_and_honours_retry_after(
    api, db_url, configure, enqueued, start_worker, provider_api
):
    """A real worker: a redelivered run_task finds the task finished but unpublished and enqueues
    elpis.publish_result; the forge answers 502, then 429 with Retry-After: 1, then 201."""
    task_id = finished_github_task(api, db_url, configure, provider_api)
    provider_api.comment_answers = [(502, {}), (429, {"Retry-After": "1"})]
    worker = start_worker(
        ELPIS_MODEL__BACKEND="scripted",
        ELPIS_MODEL__SCRIPT=str(FIX_SCRIPT),
        ELPIS_WORKER__PUBLISH_BACKOFF="0.05",
        ELPIS_WORKER__PUBLISH_BACKOFF_MAX="5",
    )
    worker.send(task_id)
    source = wait_for(
        lambda: (s := source_row(db_url, task_id)).published_at and s, timeout=60, what="the result"
    )

    posts = provider_api.posted()
    assert [p["status"] for p in posts] == [502, 429, 201], worker.log_text()[-3000:]
    assert posts[2]["at"] - posts[1]["at"] >= 1.0  # Retry-After, though the backoff was 0.1 s
    assert source.comment_status == CommentStatus.posted and source.result_status == ResultStatus.no_change
    assert source.publish_attempts == 3 and source.publish_error is None
    assert f"task {task_id} is finished but its result is not published" in worker.log_text()
    shown = api.get(f"/v1/tasks/{task_id}/source").json()["result"]
    assert shown["publish_attempts"] == 3 and shown["comment"] == "posted"


def test_a_permanent_forge_error_is_recorded_and_not_retried(api, db_url, configure, enqueued, provider_api):
    task_id = finished_github_task(api, db_url, configure, provider_api, ELPIS_WORKER__PUBLISH_BACKOFF="0.01")
    provider_api.comment_answers = [(403, {})]
    assert publish(task_id) == "failed"
    source = source_row(db_url, task_id)
    assert [p["status"] for p in provider_api.posted()] == [403]
    assert source.comment_status == CommentStatus.failed and "answered 403" in source.comment_error
    assert source.publish_attempts == 1 and source.published_at is not None
    assert "answered 403" in source.publish_error
    assert publish(task_id) == "already_published" and len(provider_api.posted()) == 1


def test_publishing_gives_up_after_the_configured_retries(api, db_url, configure, enqueued, provider_api):
    task_id = finished_github_task(
        api, db_url, configure, provider_api, ELPIS_WORKER__PUBLISH_MAX_RETRIES="2"
    )
    provider_api.comment_answers = [(502, {})] * 5
    assert publish(task_id) == "failed"
    source = source_row(db_url, task_id)
    assert [p["status"] for p in provider_api.posted()] == [502, 502, 502]
    assert source.comment_status == CommentStatus.failed and source.published_at is not None
    assert (
        source.comment_error.startswith("gave up after 3 tries: POST ")
        and "answered 502" in source.comment_error
    )
    assert source.publish_attempts == 3 and source.publish_error == source.comment_error


def test_a_pushed_result_whose_comment_failed_is_only_commented_again(
    api, db_url, configure, tmp_path, provider_api, enqueued, run_in_process, monkeypatch
):
    """The push is recorded before the comment: the retry after a 502 comments and does not push."""
    repo = unique_repo()
    bare, main_sha, _ = make_origin(tmp_path, repo)
    pushes: list[str] = []

    def counted_push(root, sha, branch, push_url, env):
        pushes.append(sha)
        return push_branch(root, sha, branch, push_url, env)

    push_branch = results.push_branch
    monkeypatch.setattr(results, "push_branch", counted_push)
    provider_api.comment_answers = [(502, {})]
    tests = {f"acme/{repo}": {"test_command": "python -m pytest -q"}}
    task_id = gitlab_issue_task(api, configure, tmp_path, provider_api, repo, tests)

    assert run_in_process(task_id, FIX_SCRIPT) == TaskStatus.succeeded
    source = source_row(db_url, task_id)
    assert [p["status"] for p in provider_api.posted()] == [502, 201]
    assert len(pushes) == 1 and source.publish_attempts == 2
    assert source.result_status == ResultStatus.pushed and source.comment_status == CommentStatus.posted
    assert git("rev-parse", f"refs/heads/elpis/task-{task_id}", cwd=bare) == pushes[0] == source.result_commit


def test_a_push_that_cannot_reach_the_server_is_retried_then_recorded(
    api, db_url, configure, tmp_path, provider_api, enqueued, run_in_process
):
    repo = unique_repo()
    bare, _, _ = make_origin(tmp_path, repo)
    task_id = gitlab_issue_task(
        api, configure, tmp_path, provider_api, repo, ELPIS_WORKER__PUBLISH_MAX_RETRIES="1"
    )
    dead = f"https://127.0.0.1:{free_port()}/acme/calc.git"  # nothing listens there
    with session_scope(db_url) as s:
        s.get(TaskSource, task_id).push_url = dead

    assert run_in_process(task_id, FIX_SCRIPT) == TaskStatus.succeeded
    source = source_row(db_url, task_id)
    assert source.result_status == ResultStatus.push_failed and source.publish_attempts == 2
    assert source.result_error.startswith("gave up after 2 tries: could not push")
    [note] = provider_api.posted()  # the comment still tells what happened
    assert "could not be pushed" in note["json"]["body"] and source.comment_status == CommentStatus.posted
    assert source.publish_error == source.result_error


def test_a_cancel_before_the_outcome_is_stored_wins_and_nothing_is_pushed(
    api, db_url, configure, tmp_path, provider_api, enqueued
):
    """A cancel that lands during the final test run: the finish stores `cancelled`, not the result,
    and publishing pushes nothing."""
    repo = unique_repo()
    bare, _, _ = make_origin(tmp_path, repo)
    task_id = gitlab_issue_task(api, configure, tmp_path, provider_api, repo)
    store = TaskStore(db_url)
    assert store.claim(task_id, stale_after=60) is not None
    assert api.post(f"/v1/tasks/{task_id}/cancel").status_code == 202
    diff = "--- a/NOTES.md\n+++ b/NOTES.md\n@@ -0,0 +1 @@\n+done\n"
    stored = store.finish(task_id, TaskStatus.succeeded, summary="fixed", workspace_diff=diff)

    assert stored == TaskStatus.cancelled
    task = task_row(db_url, task_id)
    assert task.status == TaskStatus.cancelled and task.failure_reason == "cancelled by request"
    assert publish(task_id) == "published"
    source = source_row(db_url, task_id)
    assert source.result_status == ResultStatus.skipped and source.result_branch is None
    assert "partial change was not pushed" in provider_api.posted()[0]["json"]["body"]
    assert git("branch", "--list", "elpis/*", cwd=bare) == ""


def test_retry_after_may_be_a_date():
    later = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    waits = [
        retry_after(httpx.Response(429, headers=headers))
        for headers in ({"Retry-After": "7"}, {"Retry-After": later}, {"Retry-After": "soon"}, {})
    ]
    assert waits[0] == 7.0 and 25 < waits[1] <= 30 and waits[2] is None and waits[3] is None


def test_push_credentials_go_only_to_configured_hosts(configure):
    configure(ELPIS_WEBHOOKS__GITHUB__PUSH_TOKEN="push-tok")
    settings = get_settings()

    def env_for(url: str) -> dict[str, str]:
        return FORGES[Provider.github].push_env(settings.webhooks, url)

    header = env_for("https://github.com/acme/calc.git")["GIT_CONFIG_VALUE_0"]
    assert header.startswith("Authorization: Basic ")
    import base64

    assert base64.b64decode(header.split()[-1]).decode() == "x-access-token:push-tok"
    assert env_for("https://evil.example.com/acme/calc.git") == {}
    assert env_for("file:///srv/git/calc.git") == {}
