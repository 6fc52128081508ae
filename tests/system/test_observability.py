"""Watching Elpis work: Prometheus metrics from real API and worker processes, the live pages and their
event streams, structured logs, /healthz with a real worker ping, `elpis doctor`, `elpis watch`, and
Flower seeing a worker the test started. Every part is real: Postgres, valkey, Celery worker processes
(scripted model), uvicorn, Flower."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers import (
    AUTH,
    FIXED_OPS,
    ROOT,
    SAMPLES,
    free_port,
    has_called,
    scripted_env,
    steps_of,
    task_row,
    wait_finished,
    wait_for,
)

from models import StepKind, TaskStatus

ELPIS = str(Path(sys.executable).parent / "elpis")


# --- helpers -----------------------------------------------------------------------------------------
def gated_script(gate: Path) -> list[dict]:
    """A task that stops in its second turn until the test creates `gate`: the test then sees the
    task mid-way, deterministically, whatever the machine's speed."""
    return [
        {"thought": "which test fails?", "tool": "run_tests", "args": {}},
        {
            "thought": "wait for the test",
            "tool": "run",
            "args": {"command": f"while [ ! -e {gate} ]; do sleep 0.05; done; echo released"},
        },
        {
            "thought": "fix subtract",
            "tool": "write_file",
            "args": {"path": "calc/ops.py", "content": FIXED_OPS},
        },
        {"thought": "check", "tool": "run_tests", "args": {}},
        {"thought": "done", "tool": "finish", "args": {"summary": "fixed subtract"}},
    ]


def submit(url: str, n: int = 1) -> tuple[int, list[int]]:
    task = {
        "repo": str(SAMPLES / "calc"),
        "instruction": "Fix the failing test",
        "test_command": "python -m pytest -q",
    }
    response = httpx.post(f"{url}/v1/batches", json={"tasks": [task] * n}, headers=AUTH, timeout=30)
    assert response.status_code == 201, response.text
    body = response.json()
    return body["id"], [t["id"] for t in body["tasks"]]


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(metrics: dict, name: str, **labels: str) -> float:
    return metrics.get((name, frozenset(labels.items())), 0.0)


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    response = httpx.get(f"{url}/metrics", headers=AUTH, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


def sse_events(response: httpx.Response) -> Iterator[dict]:
    """Parse a text/event-stream body into {"event", "data", "id"} dicts."""
    event: dict = {}
    for line in response.iter_lines():
        if not line:
            if "data" in event:
                event["data"] = json.loads(event["data"])
                yield event
            event = {}
        elif line.startswith(("event:", "data:", "id:")):
            key, _, rest = line.partition(":")
            event[key] = rest.strip()


@pytest.fixture
def gate(tmp_path: Path) -> Path:
    return tmp_path / "gate"


# --- metrics -----------------------------------------------------------------------------------------
def test_metrics_names_labels_and_values_move_with_a_task(start_api, start_worker, db_url, scripted, gate):
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    queue = f"metrics-{os.urandom(4).hex()}"
    url = start_api(ELPIS_WORKER__QUEUE=queue)
    before = scrape(url)
    for status in ("queued", "running", "succeeded", "failed", "cancelled"):
        assert ("elpis_tasks", frozenset({"status": status}.items())) in before
    assert value(before, "elpis_database_up") == 1 and value(before, "elpis_broker_up") == 1

    # No worker yet: the task waits in the broker's queue.
    _, (task_id,) = submit(url)
    queued = scrape(url)
    assert value(queued, "elpis_queue_depth", queue=queue) == 1
    assert value(queued, "elpis_tasks", status="queued") == value(before, "elpis_tasks", status="queued") + 1

    worker = start_worker(queue=queue, **scripted_env(scripted(gated_script(gate))))
    wait_for(lambda: has_called(db_url, task_id, "run"), timeout=60, what="the gated step")
    # Mid-task: the current emotion of the running task is exported, equal to the database's.
    running = scrape(url)
    state = task_row(db_url, task_id).emotion
    assert task_row(db_url, task_id).status == TaskStatus.running
    for dimension in ("valence", "arousal", "dominance"):
        exported = value(running, "elpis_task_emotion", task_id=str(task_id), dimension=dimension)
        assert exported == pytest.approx(state[dimension])
    assert value(running, "elpis_task_mood", task_id=str(task_id), mood=state["mood"]) == 1
    assert value(running, "elpis_queue_depth", queue=queue) == 0

    gate.touch()
    task = wait_finished(db_url, task_id, timeout=120)
    assert task.status == TaskStatus.succeeded, task.failure_reason
    after = scrape(url)

    # Every counter moved by exactly what the task's stored steps say.
    steps = steps_of(db_url, task_id)
    for kind in {s.kind for s in steps}:
        moved = value(after, "elpis_steps_total", kind=kind.value) - value(
            before, "elpis_steps_total", kind=kind.value
        )
        assert moved == sum(s.kind == kind for s in steps), kind
    thinks = [s for s in steps if s.kind == StepKind.think]
    generated = value(after, "elpis_tokens_generated_total", kind="think") - value(
        before, "elpis_tokens_generated_total", kind="think"
    )
    assert generated == sum(s.completion_tokens for s in thinks) > 0
    timed = value(after, "elpis_step_duration_seconds_count", kind="think") - value(
        before, "elpis_step_duration_seconds_count", kind="think"
    )
    assert timed == len(thinks)
    assert value(after, "elpis_generation_tokens_per_second_count", kind="think") > value(
        before, "elpis_generation_tokens_per_second_count", kind="think"
    )
    calls = [s.tool_name for s in steps if s.kind == StepKind.tool_call]
    for tool in set(calls):
        moved = value(after, "elpis_tool_calls_total", tool=tool) - value(
            before, "elpis_tool_calls_total", tool=tool
        )
        assert moved == calls.count(tool), tool
    errors = [
        (s.tool_name, s.detail["error_kind"])
        for s in steps
        if s.kind == StepKind.tool_result and not s.detail["ok"]
    ]
    assert ("run_tests", "nonzero_exit") in errors  # the first run_tests, before the fix
    for tool, kind in set(errors):
        moved = value(after, "elpis_tool_errors_total", tool=tool, error_kind=kind) - value(
            before, "elpis_tool_errors_total", tool=tool, error_kind=kind
        )
        assert moved == errors.count((tool, kind))
    finished = value(after, "elpis_tasks_finished_total", status="succeeded") - value(
        before, "elpis_tasks_finished_total", status="succeeded"
    )
    assert finished == 1
    assert value(after, "elpis_task_duration_seconds_count", status="succeeded") > value(
        before, "elpis_task_duration_seconds_count", status="succeeded"
    )
    assert (
        value(after, "elpis_tasks", status="succeeded")
        == value(before, "elpis_tasks", status="succeeded") + 1
    )
    assert (
        "elpis_task_emotion",
        frozenset({"task_id": str(task_id), "dimension": "valence"}.items()),
    ) not in after

    # The worker process wrote its own file in the shared multiprocess directory; read it directly.
    from elpis_worker.metrics import multiprocess_dir

    directory = multiprocess_dir()  # $ELPIS_HOME/run/prometheus, as for the processes

    host, _, pid = task.worker_id.rpartition(":")
    assert (directory / f"counter_{host.replace('_', '-')}-{pid}.db").is_file()
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    direct = samples(generate_latest(registry).decode())
    assert value(direct, "elpis_steps_total", kind="think") == value(after, "elpis_steps_total", kind="think")

    # The worker's log lines carry the task id, and the step lines their seq.
    log = worker.log_text()
    assert re.search(rf"task_id={task_id} seq=(\d+) msg=\"task {task_id} step \1 think\"", log), log[-3000:]
    assert re.search(rf"task_id={task_id} msg=\"task {task_id} claimed by", log), log[-3000:]


def test_webhook_deliveries_are_counted_by_outcome_refused_ones_too(api, monkeypatch):
    """The API process counts each delivery it answers, into the same store the scrape reads."""
    monkeypatch.setenv("ELPIS_GITHUB_WEBHOOK_SECRET", "counted-secret")
    from configs import get_settings

    get_settings.cache_clear()
    try:
        before = samples(api.get("/metrics").text)
        forged = {"X-GitHub-Event": "ping", "X-Hub-Signature-256": "sha256=" + "0" * 64}
        assert api.post("/webhooks/github", content=b"{}", headers=forged).status_code == 401
        body = b'{"zen": "counted", "hook_id": 1}'
        signed = {"X-GitHub-Event": "ping", "X-Hub-Signature-256": _github_signature(b"counted-secret", body)}
        assert api.post("/webhooks/github", content=body, headers=signed).status_code == 200
        after = samples(api.get("/metrics").text)
    finally:
        get_settings.cache_clear()

    def moved(outcome: str) -> float:
        labels = {"provider": "github", "outcome": outcome}
        return value(after, "elpis_webhook_deliveries_total", **labels) - value(
            before, "elpis_webhook_deliveries_total", **labels
        )

    assert moved("refused_401") == 1
    assert moved("ping") == 1


def _github_signature(secret: bytes, body: bytes) -> str:
    import hashlib
    import hmac

    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def test_memory_and_webhook_gauges_are_read_from_the_database(api, db_url):
    from models import session_scope
    from models.memory import EMBEDDING_DIM, Memory, MemoryKind
    from models.webhooks import DeliveryOutcome, Provider, WebhookDelivery

    before = samples(api.get("/metrics").text)
    for kind in MemoryKind:
        assert ("elpis_memories", frozenset({"kind": kind.value}.items())) in before
    memory = Memory(kind=MemoryKind.semantic, content="metrics test", embedding=[0.1] * EMBEDDING_DIM)
    delivery = WebhookDelivery(
        provider=Provider.gitea,
        delivery_id=f"metrics-{os.urandom(4).hex()}",
        event="ping",
        payload_sha256="0" * 64,
        outcome=DeliveryOutcome.ping,
    )
    with session_scope(db_url) as s:
        s.add_all([memory, delivery])
    try:
        after = samples(api.get("/metrics").text)
    finally:  # other tests recall memories: leave none behind
        with session_scope(db_url) as s:
            s.delete(s.get(Memory, memory.id))
            s.delete(s.get(WebhookDelivery, delivery.id))
    assert (
        value(after, "elpis_memories", kind="semantic")
        == value(before, "elpis_memories", kind="semantic") + 1
    )
    stored = {"provider": "gitea", "outcome": "ping"}
    assert value(after, "elpis_webhook_deliveries_stored", **stored) == (
        value(before, "elpis_webhook_deliveries_stored", **stored) + 1
    )


def test_metrics_report_a_broker_that_is_down(api, monkeypatch):
    monkeypatch.setenv("ELPIS_BROKER_URL", f"redis://127.0.0.1:{free_port()}/0")
    from configs import get_settings

    get_settings.cache_clear()
    try:
        metrics = samples(api.get("/metrics").text)
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert value(metrics, "elpis_broker_up") == 0
    assert value(metrics, "elpis_database_up") == 1


# --- logs --------------------------------------------------------------------------------------------
def test_log_lines_carry_task_id_and_seq(capsys):
    from configs.logging import bind_task, configure_logging

    log = logging.getLogger("elpis.test")
    root_level = logging.getLogger().level
    try:
        configure_logging("INFO", "json")
        with bind_task(41):
            log.info("task %s step %s %s", 41, 3, "think", extra={"seq": 3})
            log.info("inside the task")
        log.debug("below the level")
        log.warning("outside any task")
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if '"elpis.test"' in line]
        assert [(r.get("task_id"), r.get("seq"), r["msg"]) for r in lines] == [
            (41, 3, "task 41 step 3 think"),
            (41, None, "inside the task"),
            (None, None, "outside any task"),
        ]
        configure_logging("WARNING", "logfmt")
        with bind_task(7):
            log.warning('quoted "text"\nsecond line', extra={"seq": 0})
        (line,) = [x for x in capsys.readouterr().err.splitlines() if "logger=elpis.test" in x]
        assert re.fullmatch(
            r'time=\S+ level=WARNING logger=elpis.test task_id=7 seq=0 msg="quoted \\"text\\"\\nsecond line"',
            line,
        )
    finally:
        for handler in [h for h in logging.getLogger().handlers if getattr(h, "_elpis", False)]:
            logging.getLogger().removeHandler(handler)
        logging.getLogger().setLevel(root_level)


# --- health ------------------------------------------------------------------------------------------
def test_healthz_needs_a_worker_that_answers(api, start_worker):
    response = api.get("/healthz")
    assert response.status_code == 503
    assert response.json()["workers"].startswith("none answering")
    assert response.json()["database"] == "ok" and response.json()["broker"] == "ok"

    worker = start_worker(**scripted_env(SAMPLES / "fix_script.json"))
    response = api.get("/healthz")
    assert response.status_code == 200, response.json()
    assert response.json()["workers"] == "ok"
    assert f"{worker.queue}@{socket.gethostname()}" in response.json()["worker_names"]


# --- pages -------------------------------------------------------------------------------------------
def _fake_run(db_url: str, task_id: int, *, finish: bool) -> None:
    """Write a turn the way a worker does (the store is the worker's own write path)."""
    from elpis_worker.store import TaskStore

    store = TaskStore(db_url, worker_id="page-test:1")
    assert store.claim(task_id, stale_after=60) is not None
    store.append_step(
        task_id, StepKind.think, 1, content='{"tool": "run"}', detail={"thought": "try <b>it</b>"}
    )
    store.append_step(
        task_id, StepKind.tool_call, 1, content="run", tool_name="run", tool_args={"command": "ls"}
    )
    store.append_step(
        task_id,
        StepKind.tool_result,
        1,
        content="x",
        tool_name="run",
        tool_result="<script>alert(1)</script>",
        exit_code=1,
        detail={"ok": False, "error_kind": "nonzero_exit"},
        workspace_diff="--- a/x\n+++ b/x\n@@ -1 +1 @@\n-old\n+new\n",
    )
    store.append_step(
        task_id,
        StepKind.reflect,
        1,
        content=json.dumps({"progress": False, "assessment": "hm", "next": "fix"}),
    )
    before = {"valence": 0.1, "arousal": 0.2, "dominance": 0.0, "mood": "calm"}
    after = {"valence": -0.3, "arousal": 0.5, "dominance": -0.1, "mood": "frustrated"}
    store.append_step(
        task_id,
        StepKind.emotion,
        1,
        content="next",
        emotion={
            "before": before,
            "after": after,
            "appraisals": [{"rule": "tool_failed", "reason": "the command failed", "d_valence": -0.4}],
            "trajectory": {"trend": "declining", "spiral": None},
            "modulation": {"strategy": "continue", "prompt_line": ""},
        },
    )
    if finish:
        store.finish(task_id, TaskStatus.failed, reason="budget exhausted: 1 steps (turns) used")


def test_pages_render_the_task_batch_and_index(api, db_url):
    api.app.state.enqueue = lambda task_id: None
    created = api.post(
        "/v1/batches", json={"tasks": [{"repo": str(SAMPLES / "calc"), "instruction": "Make <it> work"}]}
    ).json()
    batch_id, task_id = created["id"], created["tasks"][0]["id"]

    page = api.get(f"/tasks/{task_id}")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "Make &lt;it&gt; work" in page.text and "no steps yet" in page.text
    assert 'id="emotion-chart"' in page.text and "/static/elpis.js" in page.text

    _fake_run(db_url, task_id, finish=True)
    page = api.get(f"/tasks/{task_id}").text
    assert page.count('class="step step-') == 5
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert(1)" not in page
    assert "try &lt;b&gt;it&lt;/b&gt;" in page
    assert '<span class="add">+new</span>' in page and '<span class="del">-old</span>' in page
    assert "budget exhausted" in page and "frustrated" in page and "the command failed" in page
    points = json.loads(re.search(r'id="emotion-data">(.*?)</script>', page).group(1))
    assert [(p["turn"], p["mood"]) for p in points] == [(0, "calm"), (1, "frustrated")]

    batch = api.get(f"/batches/{batch_id}")
    assert batch.status_code == 200 and f'href="/tasks/{task_id}"' in batch.text and "failed" in batch.text
    index = api.get("/")
    assert index.status_code == 200 and f'href="/tasks/{task_id}"' in index.text
    assert f'href="/batches/{batch_id}"' in index.text
    assert api.get("/static/elpis.js").status_code == 200
    missing = api.get("/tasks/999999999")
    assert missing.status_code == 404 and "not found" in missing.json()["detail"]
    assert api.get("/batches/999999999").status_code == 404
    assert api.get("/tasks/999999999/events").status_code == 404


def test_finished_task_stream_sends_every_step_then_ends(api, db_url):
    api.app.state.enqueue = lambda task_id: None
    created = api.post("/v1/batches", json={"tasks": [{"repo": str(SAMPLES / "calc"), "instruction": "x"}]})
    task_id = created.json()["tasks"][0]["id"]
    _fake_run(db_url, task_id, finish=True)
    with api.stream("GET", f"/tasks/{task_id}/events") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = list(sse_events(response))
    kinds = [e["event"] for e in events]
    assert kinds == ["step"] * 5 + ["task", "end"]
    assert [e["data"]["seq"] for e in events[:5]] == [0, 1, 2, 3, 4]
    assert [e["id"] for e in events[:5]] == ["0", "1", "2", "3", "4"]
    assert (
        events[4]["data"]["point"]["mood"] == "frustrated" and events[4]["data"]["before"]["mood"] == "calm"
    )
    assert events[5]["data"]["status"] == "failed" and "budget exhausted" in events[5]["data"]["header"]
    # Resuming after the third step (what EventSource does with Last-Event-ID) sends only the rest.
    with api.stream("GET", f"/tasks/{task_id}/events", headers={"Last-Event-ID": "2"}) as response:
        resumed = [e["data"]["seq"] for e in sse_events(response) if e["event"] == "step"]
    assert resumed == [3, 4]


def test_an_open_stream_does_not_hold_up_the_apis_shutdown(start_api, tmp_path: Path):
    """uvicorn waits for open responses before it stops; a live page's stream ends as soon as the server
    is asked to stop, not STREAM_SECONDS later, and ends cleanly (no response cut off)."""
    from elpis_api.routes.pages import STREAM_SECONDS

    url = start_api()
    process = start_api.processes[-1]
    with httpx.stream("GET", f"{url}/events/tasks", headers=AUTH, timeout=30) as response:
        next(sse_events(response))  # the stream is open and has sent the index
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        process.wait(timeout=STREAM_SECONDS)
    assert time.monotonic() - started < STREAM_SECONDS / 3
    log = (tmp_path / f"api-{url.rsplit(':', 1)[1]}.log").read_text()
    assert "without completing response" not in log, log


def test_task_stream_shows_steps_as_the_task_advances(start_api, start_worker, db_url, scripted, gate):
    queue = f"pages-{os.urandom(4).hex()}"
    start_worker(queue=queue, **scripted_env(scripted(gated_script(gate))))
    url = start_api(ELPIS_WORKER__QUEUE=queue)
    batch_id, (task_id,) = submit(url)

    seqs: list[int] = []
    statuses: list[str] = []
    released = False
    ended = None
    with httpx.Client(timeout=httpx.Timeout(10, read=90), headers=AUTH) as client:
        while ended is None:  # a stream closes after STREAM_SECONDS; resume like EventSource does
            headers = {"Last-Event-ID": str(seqs[-1])} if seqs else {}
            with client.stream("GET", f"{url}/tasks/{task_id}/events", headers=headers) as response:
                for event in sse_events(response):
                    if event["event"] == "step":
                        seqs.append(event["data"]["seq"])
                        if 'data-tool="run"' in event["data"]["html"] and not released:
                            # The task is held mid-way: what the page got so far arrived while it ran.
                            assert task_row(db_url, task_id).status == TaskStatus.running
                            assert "running" in statuses
                            assert all(s.seq <= seqs[-1] + 1 for s in steps_of(db_url, task_id))
                            gate.touch()
                            released = True
                    elif event["event"] == "task":
                        statuses.append(event["data"]["status"])
                    elif event["event"] == "end":
                        ended = event["data"]
                        break
    assert released
    assert ended["status"] == "succeeded" and statuses[-1] == "succeeded"
    assert seqs == [s.seq for s in steps_of(db_url, task_id)]

    batch = httpx.get(f"{url}/batches/{batch_id}", headers=AUTH, timeout=10)
    assert batch.status_code == 200 and "succeeded" in batch.text
    with httpx.stream("GET", f"{url}/batches/{batch_id}/events", headers=AUTH, timeout=30) as response:
        events = list(sse_events(response))
    assert [e["event"] for e in events] == ["update", "end"]
    assert f'data-task="{task_id}" data-status="succeeded"' in events[0]["data"]["rows"]


# --- the command line ----------------------------------------------------------------------------------
def run_elpis(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ELPIS, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=dict(os.environ) | {"COLUMNS": "200"} | env,
    )


def test_watch_shows_progress_then_a_summary_table(start_api, start_worker):
    queue = f"watch-{os.urandom(4).hex()}"
    start_worker(queue=queue, **scripted_env(SAMPLES / "fix_script.json"))
    url = start_api(ELPIS_WORKER__QUEUE=queue)
    batch_id, ids = submit(url, n=2)
    port = url.rsplit(":", 1)[1]
    result = run_elpis("watch", str(batch_id), "--poll", "0.2", ELPIS_API_PORT=port)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"batch {batch_id}: 2 tasks" in out and f"/batches/{batch_id}" in out
    assert "summary" in out and "2/2 succeeded" in out
    for task_id in ids:
        assert re.search(rf"│ +{task_id} +│ succeeded", out), out

    missing = run_elpis("watch", "999999999", ELPIS_API_PORT=port)
    assert missing.returncode == 1 and "batch 999999999 not found" in missing.stderr


def test_doctor_passes_on_a_working_setup(start_worker):
    start_worker(**scripted_env(SAMPLES / "fix_script.json"))
    result = run_elpis("doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("config", "model", "database", "pgvector", "migrations", "broker", "worker"):
        assert re.search(rf"^✓ {name} ", result.stdout, re.MULTILINE), result.stdout
    assert "GGUF" in result.stdout and "at head" in result.stdout


def test_doctor_says_what_is_wrong_and_how_to_fix_it(tmp_path: Path, fresh_database):
    not_a_model = tmp_path / "model.gguf"
    not_a_model.write_text("this is not a model")
    dead_port = free_port()
    result = run_elpis(
        "doctor",
        ELPIS_MODEL__PATH=str(not_a_model),
        ELPIS_BROKER_URL=f"redis://127.0.0.1:{dead_port}/0",
        ELPIS_DATABASE_URL=fresh_database,
    )
    out = result.stdout
    assert result.returncode == 1, out
    assert re.search(r"^✗ model .*is not a GGUF file.*\n  fix: point model.path", out, re.MULTILINE), out
    assert re.search(r"^✗ broker .*unreachable.*\n  fix: check ELPIS_BROKER_URL", out, re.MULTILINE), out
    assert re.search(r"^- worker +skipped: no broker", out, re.MULTILINE), out
    assert re.search(r"^✓ database ", out, re.MULTILINE), out
    assert re.search(r"^✓ pgvector .*not yet created in this database", out, re.MULTILINE), out
    assert re.search(
        r"^✗ migrations .*has no migration applied.*\n  fix: run `elpis migrate`", out, re.MULTILINE
    ), out
    assert "3 problem(s): model, migrations, broker" in result.stderr

    result = run_elpis(
        "doctor",
        ELPIS_MODEL__PATH=str(tmp_path / "missing.gguf"),
        ELPIS_DATABASE_URL=f"postgresql+psycopg://elpis@127.0.0.1:{dead_port}/elpis",
    )
    out = result.stdout
    assert result.returncode == 1, out
    assert re.search(r"^✗ model .*missing.gguf is not a file\n  fix: set model.path", out, re.MULTILINE), out
    assert re.search(r"^✗ database .*unreachable.*\n  fix: check the host", out, re.MULTILINE), out
    assert re.search(r"^- pgvector +skipped", out, re.MULTILINE) and re.search(
        r"^- migrations +skipped", out, re.M
    )

    bad = tmp_path / "config.yaml"
    bad.write_text("model:\n  n_ctxx: 10\n")
    result = run_elpis("doctor", ELPIS_CONFIG=str(bad))
    assert result.returncode == 1
    assert re.search(r"^✗ config +unknown config key 'model.n_ctxx'.*\n  fix: edit ", result.stdout, re.M)


# --- Flower ------------------------------------------------------------------------------------------
@pytest.fixture
def flower(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log = tmp_path / "flower.log"
    env = dict(os.environ) | {"FLOWER_UNAUTHENTICATED_API": "true"}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "celery"),
                "-A",
                "elpis_worker.celery_app",
                "flower",
                f"--port={port}",
                "--address=127.0.0.1",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert process.poll() is None, log.read_text()
        try:
            return httpx.get(f"{url}/healthcheck", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, timeout=60, what="Flower to answer")
    yield url
    os.killpg(process.pid, 15)
    process.wait(timeout=20)


def test_flower_sees_the_worker_and_its_tasks(flower, start_worker, api, db_url):
    worker = start_worker(**scripted_env(SAMPLES / "fix_script.json"))
    name = f"{worker.queue}@{socket.gethostname()}"

    def worker_listed() -> bool:
        try:  # a refresh broadcasts to the workers: on a loaded machine it may time out, so ask again
            response = httpx.get(f"{flower}/api/workers", params={"refresh": "1"}, timeout=30)
        except httpx.TimeoutException:
            return False
        return response.status_code == 200 and name in response.json()

    wait_for(worker_listed, timeout=90, interval=1, what=f"Flower to list {name}")

    api.app.state.enqueue = lambda task_id: None
    created = api.post("/v1/batches", json={"tasks": [{"repo": str(SAMPLES / "calc"), "instruction": "x"}]})
    task_id = created.json()["tasks"][0]["id"]
    worker.send(task_id)
    wait_finished(db_url, task_id)

    def task_seen() -> dict | None:
        tasks = httpx.get(f"{flower}/api/tasks", timeout=10).json()
        return next(
            (t for t in tasks.values() if t.get("args") == f"task_id={task_id}" and t["state"] == "SUCCESS"),
            None,
        )

    seen = wait_for(task_seen, timeout=60, interval=0.5, what=f"Flower to show task {task_id}")
    assert seen["name"] == "elpis.run_task" and seen["worker"] == name
