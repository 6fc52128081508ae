"""API authentication: every route but /healthz, the login form and the signed webhooks needs a bearer
token of the right scope. The route cases are generated from the app's route table, so a new route
without an auth dependency fails here. Also: tokens made and revoked through the CLI and REST, the
pages' cookie login, the Host header check, and secrets kept out of answers, doctor output and logs."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
import uuid
from collections.abc import Iterator

import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient
from helpers import API_TOKEN, AUTH, free_port
from typer.testing import CliRunner

from elpis_api.app import create_app
from elpis_api.deps import TOKEN_COOKIE, RequireScope
from models import ApiToken, TokenScope, session_scope

# Routes that must answer without a token: health, the login form itself, and the webhook receivers
# (they check the provider's signature over the body instead). Anything else needs a scope.
PUBLIC = {("GET", "/healthz"), ("GET", "/login"), ("POST", "/login")}


def is_public(method: str, path: str) -> bool:
    return (method, path) in PUBLIC or (method == "POST" and path.startswith("/webhooks/"))


# Path parameters of the generated requests: ids that do not exist (a 404 is past the auth check).
PARAMS = {"provider": "github", "name": "no-such-token", "delivery_id": "no-such-delivery"}


def _scope_of(dependant) -> TokenScope | None:
    for dep in dependant.dependencies:
        if isinstance(dep.call, RequireScope):
            return dep.call.scope
        found = _scope_of(dep)
        if found is not None:
            return found
    return None


def _route_table() -> list[tuple[str, str, TokenScope | None]]:
    """(method, path, scope) of every FastAPI route of the app, included routers' prefixes and
    dependencies applied (iter_route_contexts walks them as the app serves them)."""
    rows = []
    for route in iter_route_contexts(create_app("postgresql+psycopg://unused/x").routes):
        if isinstance(route.original_route, APIRoute):
            for method in sorted(route.methods - {"HEAD", "OPTIONS"}):
                rows.append((method, route.path, _scope_of(route.dependant)))
    return rows


ROUTES = _route_table()
PROTECTED = [(m, p, s) for m, p, s in ROUTES if not is_public(m, p)]
BELOW = {TokenScope.submit: TokenScope.read, TokenScope.admin: TokenScope.submit}


def _url(path: str) -> str:
    return re.sub(r"\{(\w+)(:\w+)?\}", lambda m: PARAMS.get(m[1], "999999999"), path)


def _ids(cases) -> list[str]:
    return [f"{m} {p}" for m, p, _ in cases]


@pytest.fixture(scope="module")
def tokens(db_url: str) -> Iterator[dict[TokenScope, str]]:
    """One stored token per scope."""
    from elpis_api.tokens import create_token

    made: dict[TokenScope, str] = {}
    names = []
    with session_scope(db_url) as session:
        for scope in TokenScope:
            name = f"test-{scope}-{uuid.uuid4().hex[:6]}"
            _, made[scope] = create_token(session, name=name, scope=scope)
            names.append(name)
    yield made
    from elpis_api.tokens import revoke_token

    with session_scope(db_url) as session:
        for name in names:
            revoke_token(session, name=name)


@pytest.fixture
def client(db_url: str, monkeypatch) -> Iterator[TestClient]:
    """The app with no token of its own; live streams end after one update, consolidation is a stub."""
    from elpis_api.routes import pages
    from elpis_worker import memory

    class Report:
        ran = True

        def as_dict(self) -> dict:
            return {}

    monkeypatch.setattr(pages, "STREAM_SECONDS", 0.0)
    monkeypatch.setattr(memory, "consolidate_memories", lambda url: Report())
    with TestClient(create_app(db_url)) as test_client:
        test_client.app.state.enqueue = lambda task_id: None
        yield test_client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- the route table ---------------------------------------------------------------------------------
def test_every_route_declares_a_scope_unless_it_is_public():
    assert len(PROTECTED) >= 20, ROUTES
    missing = [f"{m} {p}" for m, p, s in PROTECTED if s is None]
    assert not missing, f"routes without an auth dependency (add ReadScope/SubmitScope/AdminScope): {missing}"
    public = {(m, p) for m, p, _ in ROUTES if is_public(m, p)}
    assert public >= PUBLIC and any(p.startswith("/webhooks/") for _, p in public)
    assert all(s is None for m, p, s in ROUTES if is_public(m, p))
    scopes = {(m, p): s for m, p, s in PROTECTED}
    assert scopes[("POST", "/v1/batches")] == TokenScope.submit
    assert scopes[("POST", "/v1/tasks/{task_id}/cancel")] == TokenScope.submit
    assert scopes[("DELETE", "/v1/memories/{memory_id}")] == TokenScope.admin
    assert scopes[("POST", "/v1/memories/consolidate")] == TokenScope.admin
    assert scopes[("GET", "/metrics")] == TokenScope.read
    assert scopes[("GET", "/")] == TokenScope.read


@pytest.mark.parametrize(("method", "path", "scope"), PROTECTED, ids=_ids(PROTECTED))
def test_no_token_is_401(client, method, path, scope):
    response = client.request(method, _url(path), json={} if method != "GET" else None)
    assert response.status_code == 401, response.text
    assert "missing API token" in response.text and "elpis token create" in response.text
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(("method", "path", "scope"), PROTECTED, ids=_ids(PROTECTED))
def test_an_unknown_token_is_401(client, method, path, scope):
    response = client.request(method, _url(path), headers=bearer("elpis_not-a-token"))
    assert response.status_code == 401, response.text
    assert "invalid API token" in response.text


LOW = [(m, p, s) for m, p, s in PROTECTED if s in BELOW]


@pytest.mark.parametrize(("method", "path", "scope"), LOW, ids=_ids(LOW))
def test_a_token_of_too_low_a_scope_is_403(client, tokens, method, path, scope):
    response = client.request(method, _url(path), headers=bearer(tokens[BELOW[scope]]), json={})
    assert response.status_code == 403, response.text
    detail = response.json()["detail"]
    assert f"scope '{scope}'" in detail and f"has scope '{BELOW[scope]}'" in detail


@pytest.mark.parametrize(("method", "path", "scope"), PROTECTED, ids=_ids(PROTECTED))
def test_the_right_scope_gets_through(client, tokens, method, path, scope):
    response = client.request(
        method, _url(path), headers=bearer(tokens[scope]), json={} if method != "GET" else None
    )
    assert response.status_code not in (401, 403), response.text
    assert response.status_code < 500, response.text


def test_the_configured_token_is_admin(client):
    assert client.get("/v1/tokens", headers=AUTH).status_code == 200
    assert client.get("/healthz").status_code in (200, 503)  # public


# --- tokens ----------------------------------------------------------------------------------------
def test_cli_creates_lists_and_revokes_a_token(client, db_url):
    from elpis_api.cli import app

    runner = CliRunner()
    name = f"ci-{uuid.uuid4().hex[:6]}"
    made = runner.invoke(app, ["token", "create", name, "--scope", "submit"])
    assert made.exit_code == 0, made.output
    token = made.stdout.strip().splitlines()[-1]
    assert token.startswith("elpis_") and len(token) > 40
    with session_scope(db_url) as session:
        row = session.query(ApiToken).filter_by(name=name).one()
        assert row.scope == TokenScope.submit
        assert row.token_sha256 == hashlib.sha256(token.encode()).hexdigest()  # only the hash is kept

    assert client.get("/v1/tasks", headers=bearer(token)).status_code == 200
    assert client.post("/v1/batches", headers=bearer(token), json={}).status_code == 422
    assert client.post("/v1/memories/consolidate", headers=bearer(token)).status_code == 403

    listed = runner.invoke(app, ["token", "list"])
    assert listed.exit_code == 0 and re.search(rf"^{name} +submit ", listed.stdout, re.M), listed.stdout
    assert token not in listed.stdout
    again = runner.invoke(app, ["token", "create", name])
    assert again.exit_code == 1 and "exists" in again.output

    revoked = runner.invoke(app, ["token", "revoke", name])
    assert revoked.exit_code == 0, revoked.output
    response = client.get("/v1/tasks", headers=bearer(token))
    assert response.status_code == 401 and "invalid API token" in response.json()["detail"]
    gone = runner.invoke(app, ["token", "revoke", name])
    assert gone.exit_code == 1 and "no token named" in gone.output
    bad = runner.invoke(app, ["token", "create", "no spaces"])
    assert bad.exit_code == 1 and "token name" in bad.output


def test_admins_manage_tokens_over_rest(client, tokens):
    admin = bearer(tokens[TokenScope.admin])
    name = f"rest-{uuid.uuid4().hex[:6]}"
    made = client.post("/v1/tokens", headers=admin, json={"name": name, "scope": "read"})
    assert made.status_code == 201, made.text
    token = made.json()["token"]
    assert client.get("/v1/tasks", headers=bearer(token)).status_code == 200
    assert client.post("/v1/tokens", headers=admin, json={"name": name}).status_code == 409
    listed = client.get("/v1/tokens", headers=admin).json()
    assert {"name": name, "scope": "read"}.items() <= next(t for t in listed if t["name"] == name).items()
    assert token not in str(listed)
    assert client.delete(f"/v1/tokens/{name}", headers=admin).status_code == 204
    assert client.get("/v1/tasks", headers=bearer(token)).status_code == 401


# --- pages -----------------------------------------------------------------------------------------
def test_a_page_link_with_the_token_sets_a_strict_httponly_cookie(client, tokens):
    page = client.get("/")
    assert page.status_code == 401 and "<form" in page.text and "elpis token create" in page.text

    response = client.get("/?token=" + tokens[TokenScope.read] + "&x=1", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/?x=1"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{TOKEN_COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie

    assert client.get("/").status_code == 200  # the cookie authenticates from now on
    assert client.get("/metrics").status_code == 200
    assert client.get("/docs").status_code == 200 and client.get("/openapi.json").status_code == 200
    # ... but only reads: a same-site page cannot make the browser POST with it.
    assert client.post("/v1/tasks/1/cancel").status_code == 401


def test_the_login_form_sets_the_cookie_and_goes_back(client, tokens):
    form = client.get("/tasks/5")
    assert form.status_code == 401 and 'value="/tasks/5"' in form.text

    wrong = client.post("/login", data={"token": "elpis_wrong", "next": "/tasks/5"})
    assert wrong.status_code == 401 and "invalid API token" in wrong.text
    assert TOKEN_COOKIE not in client.cookies

    ok = client.post(
        "/login", data={"token": tokens[TokenScope.read], "next": "/batches/3"}, follow_redirects=False
    )
    assert ok.status_code == 303 and ok.headers["location"] == "/batches/3"
    assert "SameSite=strict" in ok.headers["set-cookie"] and "HttpOnly" in ok.headers["set-cookie"]
    assert client.get("/batches/999999").status_code == 404  # authenticated: past the login

    elsewhere = client.post(
        "/login", data={"token": tokens[TokenScope.read], "next": "//evil.example/"}, follow_redirects=False
    )
    assert elsewhere.headers["location"] == "/"  # never a redirect off the site


def test_a_revoked_token_in_a_cookie_is_refused(client, db_url):
    from elpis_api.tokens import create_token, revoke_token

    name = f"cookie-{uuid.uuid4().hex[:6]}"
    with session_scope(db_url) as session:
        _, token = create_token(session, name=name, scope=TokenScope.read)
    client.cookies.set(TOKEN_COOKIE, token)
    assert client.get("/").status_code == 200
    with session_scope(db_url) as session:
        revoke_token(session, name=name)
    assert client.get("/").status_code == 401


# --- host header -----------------------------------------------------------------------------------
def test_an_unknown_host_header_is_refused(client):
    assert client.get("/healthz", headers={"host": "rebound.example"}).status_code == 400
    assert client.get("/v1/tasks", headers={"host": "rebound.example", **AUTH}).status_code == 400
    assert client.get("/healthz", headers={"host": "localhost:8000"}).status_code in (200, 503)


# --- secrets ----------------------------------------------------------------------------------------
def test_credentials_in_a_repo_url_are_refused(client):
    for repo in ("https://alice:hunter2x@github.com/a/b.git", "https://ghp_abcdef@github.com/a/b.git"):
        response = client.post(
            "/v1/batches", headers=AUTH, json={"tasks": [{"repo": repo, "instruction": "x"}]}
        )
        assert response.status_code == 422, response.text
        assert "credentials" in response.json()["detail"]
        assert "hunter2x" not in response.text and "ghp_abcdef" not in response.text
    plain = {"repo": "ssh://git@example.com/a/b.git", "instruction": "x"}
    assert client.post("/v1/batches", headers=AUTH, json={"tasks": [plain]}).status_code == 201


def test_redaction():
    from configs.redact import redact, redact_url

    assert (
        redact_url("postgresql+psycopg://elpis:pw-123@db:5432/elpis")
        == "postgresql+psycopg://elpis:***@db:5432/elpis"
    )
    assert redact_url("redis://:pw-123@redis:6379/0") == "redis://:***@redis:6379/0"
    assert redact_url("redis://redis:6379/0") == "redis://redis:6379/0"
    assert redact("GET /tasks/1?token=elpis_abc&x=1") == "GET /tasks/1?token=***&x=1"
    assert redact("the value s3cret-value here", ["s3cret-value"]) == "the value *** here"


def test_healthz_keeps_connection_errors_to_itself(client):
    def down() -> None:
        raise ConnectionError("Error connecting to redis://:hunter22x@broker.internal:6379/0")

    client.app.state.ping_broker = down
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["broker"].startswith("unreachable: ConnectionError")
    assert "hunter22x" not in response.text and "broker.internal" not in response.text


def test_doctor_masks_passwords(monkeypatch):
    from elpis_api.cli import app

    port = free_port()
    monkeypatch.setenv("ELPIS_DATABASE_URL", f"postgresql+psycopg://elpis:hunter22x@127.0.0.1:{port}/elpis")
    monkeypatch.setenv("ELPIS_BROKER_URL", f"redis://:hunter33y@127.0.0.1:{port}/0")
    result = CliRunner().invoke(app, ["doctor"])
    assert result.exit_code == 1
    assert "hunter22x" not in result.output and "hunter33y" not in result.output, result.output
    assert f"redis://:***@127.0.0.1:{port}/0" in result.output


def test_log_lines_mask_secrets(capsys, monkeypatch):
    from configs import get_settings
    from configs.logging import configure_logging

    assert get_settings().api_token.get_secret_value() == API_TOKEN
    root = logging.getLogger()
    level = root.level
    handler = configure_logging("INFO", "logfmt")
    try:
        log = logging.getLogger("elpis.test.auth")
        log.warning("connecting to postgresql+psycopg://elpis:hunter22x@db/elpis")
        log.warning("GET /tasks/1?token=elpis_abcdef HTTP/1.1")
        log.warning("the token is %s", API_TOKEN)
        err = capsys.readouterr().err
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    lines = [line for line in err.splitlines() if "elpis.test.auth" in line]
    assert len(lines) == 3, err
    assert "hunter22x" not in err and "elpis_abcdef" not in err and API_TOKEN not in err
    assert "elpis:***@db" in lines[0] and "token=***" in lines[1]


def test_up_keeps_its_generated_secrets_private(tmp_path, monkeypatch):
    from configs.settings import load_settings
    from elpis_api.tokens import configured_api_token, ensure_api_token, ensure_flower_auth

    monkeypatch.setenv("ELPIS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ELPIS_API_TOKEN")
    settings = load_settings()
    token, path = ensure_api_token(settings)
    auth, auth_path = ensure_flower_auth(settings)
    for file in (path, auth_path):
        assert file is not None and stat.S_IMODE(os.stat(file).st_mode) == 0o600
    assert ensure_api_token(settings) == (token, path)  # made once, then reused
    assert configured_api_token(settings) == token
    user, _, password = auth.partition(":")
    assert user == "elpis" and len(password) >= 16
