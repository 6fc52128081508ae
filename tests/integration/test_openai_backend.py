"""The openai model backend against a real OpenAI-compatible server: llama-cpp-python's own
`llama_cpp.server`, started here on loopback with SmolLM2-135M. Its replies follow the tool-call schema
sent as the request's JSON schema, the agent loop runs on it end to end, and server errors are retried,
then reported."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import jsonschema
import pytest
from helpers import SAMPLES, free_port, steps_of, wait_for

from configs import ConfigError
from configs.settings import load_settings
from elpis_worker.agent import run_agent
from elpis_worker.backend import ModelServerError, OpenAIBackend, resolve_model_path
from elpis_worker.grammar import REFLECT_SCHEMA, THINK_REFLECT_SCHEMA, THINK_SCHEMA, think_schema
from elpis_worker.store import TaskStore
from elpis_worker.turns import loads_reply
from models import StepKind, TaskStatus

MESSAGES = [
    {"role": "system", "content": "You are a coding agent. Answer with one JSON object."},
    {"role": "user", "content": "The tests fail in calc/ops.py: subtract returns a + b. Fix it."},
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = load_settings()
    model = resolve_model_path(settings.model, settings)  # the tests' smollm2-135m
    port = free_port()
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1"]
            + ["--port", str(port), "--n_ctx", "4096", "--n_threads", "1", "--verbose", "false"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/v1"

    def up() -> bool:
        assert proc.poll() is None, log.read_text()[-2000:]
        try:
            return httpx.get(f"{url}/models", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, timeout=120, what="llama_cpp.server to answer")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def backend_for(url: str, **overrides) -> OpenAIBackend:
    settings = load_settings(
        model={"backend": "openai", "base_url": url, "schema_format": "json_object", **overrides}
    )
    return OpenAIBackend(settings.model)


@pytest.mark.parametrize(
    "schema",
    [THINK_SCHEMA, THINK_REFLECT_SCHEMA, think_schema(["write_file", "edit_file"]), REFLECT_SCHEMA],
    ids=["think", "think+reflect", "repair-only", "reflect"],
)
def test_replies_follow_the_schema_sent_to_the_server(server: str, schema: dict) -> None:
    backend = backend_for(server)
    completion = backend.chat(MESSAGES, schema=schema, temperature=0.7, top_p=0.9, max_tokens=256)
    # Read as the loop reads it: the server's own schema-to-grammar converter lets a raw newline into a
    # string (seen here at temperature 0.7; strict json.loads then failed now and then), and
    # `loads_reply` accepts it, as its meaning is plain.
    reply = loads_reply(completion.text)
    jsonschema.validate(reply, schema)
    assert completion.finish_reason == "stop"
    assert completion.prompt_tokens > 20 and completion.completion_tokens > 0
    assert backend.count_tokens(completion.text) >= 1


def test_a_reply_cut_by_max_tokens_says_so(server: str) -> None:
    completion = backend_for(server).chat(
        MESSAGES, schema=THINK_SCHEMA, temperature=0.7, top_p=0.9, max_tokens=4
    )
    assert completion.finish_reason == "length" and completion.completion_tokens == 4


def test_the_agent_loop_runs_on_the_server(server: str, api, db_url: str) -> None:
    """The same loop as on the resident model: observations, then turns whose every reply the server
    ended parsed as a tool call, all persisted; the task ends in a terminal state with the tests run. (The
    135M model can run a string on until max_tokens cuts it, which no schema prevents: such a reply is
    recorded as cut, with finish_reason "length".)"""
    api.app.state.enqueue = lambda task_id: None
    task = {"repo": str(SAMPLES / "calc"), "instruction": "Fix the failing test in tests/test_ops.py"}
    response = api.post(
        "/v1/batches",
        json={"tasks": [{**task, "test_command": "python -m pytest -q", "budget": {"max_steps": 2}}]},
    )
    task_id = response.json()["tasks"][0]["id"]
    settings = load_settings(model={"backend": "openai", "base_url": server, "schema_format": "json_object"})
    store = TaskStore(db_url)
    assert store.claim(task_id, stale_after=60) is not None
    status = run_agent(store, OpenAIBackend(settings.model), settings, task_id)
    assert status in (TaskStatus.succeeded, TaskStatus.failed)
    steps = steps_of(db_url, task_id)
    kinds = [s.kind for s in steps]
    assert kinds[:4] == [StepKind.observe] * 3 + [StepKind.memory]
    thinks = [s for s in steps if s.kind == StepKind.think]
    assert 1 <= len(thinks) <= 2 and kinds.count(StepKind.emotion) == len(thinks)
    assert all(s.completion_tokens > 0 and s.detail["finish_reason"] in ("stop", "length") for s in thinks)
    for s in thinks:
        if s.detail["finish_reason"] == "stop":
            assert s.detail["parse_error"] is None, s.content
        else:
            assert s.detail["parse_error"] is None or "cut by max_tokens" in s.detail["parse_error"]
    assert [s.seq for s in steps] == list(range(len(steps)))


class _FlakyServer(BaseHTTPRequestHandler):
    """Answers the queued status codes in order, then 200 with one completion."""

    statuses: list[int] = []
    seen: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        length = int(self.headers.get("Content-Length", 0))
        type(self).seen.append(json.loads(self.rfile.read(length)))
        status = type(self).statuses.pop(0) if type(self).statuses else 200
        body = (
            {"error": "busy"}
            if status != 200
            else {
                "choices": [{"message": {"role": "assistant", "content": '{"ok": true}'}}],
                "usage": {"prompt_tokens": 12, "completion_tokens": 3},
            }
        )
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def flaky() -> Iterator[str]:
    _FlakyServer.statuses, _FlakyServer.seen = [], []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _FlakyServer)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()


def test_a_busy_server_is_retried_and_the_schema_goes_as_json_schema(flaky: str) -> None:
    _FlakyServer.statuses = [503, 429]
    backend = backend_for(flaky, schema_format="json_schema", api_key="k-123", server_model="qwen")
    completion = backend.chat(MESSAGES, schema=REFLECT_SCHEMA, temperature=0.2, top_p=0.9, max_tokens=16)
    assert completion.text == '{"ok": true}' and completion.prompt_tokens == 12
    assert len(_FlakyServer.seen) == 3
    sent = _FlakyServer.seen[-1]
    assert sent["model"] == "qwen" and sent["response_format"]["json_schema"]["schema"] == REFLECT_SCHEMA


def test_a_server_that_keeps_failing_is_an_error_naming_it(flaky: str) -> None:
    _FlakyServer.statuses = [500, 500, 500]
    backend = backend_for(flaky, request_retries=1)
    with pytest.raises(ModelServerError, match=r"answered 500.*after 2 tries"):
        backend.chat(MESSAGES, schema=None, temperature=0.2, top_p=0.9, max_tokens=16)
    assert len(_FlakyServer.seen) == 2
    _FlakyServer.statuses = [400]
    with pytest.raises(ModelServerError, match="answered 400"):  # a client error is not retried
        backend.chat(MESSAGES, schema=None, temperature=0.2, top_p=0.9, max_tokens=16)
    assert len(_FlakyServer.seen) == 3


def test_openai_backend_needs_a_server_url(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model.base_url"):
        load_settings(model={"backend": "openai"})


def test_doctor_checks_the_model_server(server: str) -> None:
    from elpis_api.doctor import check_model

    up = check_model(load_settings(model={"backend": "openai", "base_url": server}))
    assert up.ok and server in up.detail
    closed = free_port()
    down = check_model(
        load_settings(model={"backend": "openai", "base_url": f"http://127.0.0.1:{closed}/v1"})
    )
    assert not down.ok and "unreachable" in down.detail and "model.base_url" in down.fix


def test_the_server_key_is_a_secret_redacted_like_the_others() -> None:
    from configs.redact import redact, settings_secrets

    settings = load_settings(
        model={"backend": "openai", "base_url": "http://h/v1", "api_key": "sk-local-9f8e"}
    )
    assert "sk-local-9f8e" in settings_secrets(settings) and "sk-local-9f8e" not in repr(settings)
    assert "sk-local-9f8e" not in redact("key sk-local-9f8e", settings_secrets(settings))
