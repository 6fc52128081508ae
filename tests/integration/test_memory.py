"""Long-term memory on the real Postgres + pgvector with the real embedding model: consolidation
(idempotent, concurrent, crash-safe, merging, forgetting), retrieval within a token budget, the model
guard, the REST API and CLI, the Celery task on a real worker, and recall across two agent tasks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from helpers import AUTH, ROOT, SAMPLES, steps_of, wait_finished, wait_for
from sqlalchemy import create_engine, select, text, update

from configs import get_settings
from elpis_api.migrate import upgrade
from elpis_worker import memory as mem
from elpis_worker.embedding import EmbeddingMismatchError, get_embedder
from models import Batch, Step, StepKind, Task, TaskStatus, session_scope
from models.memory import ConsolidatedTask, EmbeddingModel, Memory, MemoryKind

REPO = "/repos/calc"
FIX_DIFF = (
    "diff --git a/calc/ops.py b/calc/ops.py\n--- a/calc/ops.py\n+++ b/calc/ops.py\n"
    "@@ -9,1 +9,1 @@\n-    return a + b\n+    return a - b\n"
)
FIX_TURNS = [
    ("list_dir", {"path": "."}, {"ok": True}, "calc/\nconftest.py\npyproject.toml\ntests/"),
    ("run_tests", {}, {"ok": False, "tests_run": True, "tests_passed": False, "failures": 1}, "1 failed"),
    ("read_file", {"path": "calc/ops.py"}, {"ok": True}, "def subtract(a, b):\n    return a + b"),
    ("write_file", {"path": "calc/ops.py", "content": "..."}, {"ok": True}, "wrote calc/ops.py"),
    ("run_tests", {}, {"ok": True, "tests_run": True, "tests_passed": True, "failures": 0}, "4 passed"),
    ("finish", {"summary": "Fixed subtract"}, {"ok": True, "finished": True}, "finished"),
]
FAIL_TURNS = [
    ("run_tests", {}, {"ok": False, "tests_run": True, "tests_passed": False, "failures": 2}, "2 failed"),
    ("read_file", {"path": "parser.py"}, {"ok": True}, "def parse(): ..."),
    ("run_tests", {}, {"ok": False, "tests_run": True, "tests_passed": False, "failures": 2}, "2 failed"),
]


def word_tokens(text_: str) -> int:
    return len(text_.split())


@pytest.fixture
def mem_db(fresh_database: str) -> str:
    """A database of its own, so consolidation sees only this test's tasks."""
    upgrade(fresh_database)
    return fresh_database


@pytest.fixture(scope="module")
def embedder():
    return get_embedder()


def succeeded_and_failed(url: str) -> list[int]:
    """Two finished tasks, one fixed and one that failed frustrated: what a consolidation run finds."""
    return [
        make_task(url),
        make_task(
            url,
            instruction="Make the parser accept tabs",
            status=TaskStatus.failed,
            turns=FAIL_TURNS,
            emotion=(-0.6, 0.7),
            diff=None,
        ),
    ]


def cfg(**changes):
    return get_settings().memory.model_copy(update=changes)


def make_task(
    url: str,
    *,
    repo: str = REPO,
    instruction: str = "Fix the failing subtract test in calc",
    status: TaskStatus = TaskStatus.succeeded,
    turns=FIX_TURNS,
    emotion: tuple[float, float] = (0.4, 0.3),
    diff: str | None = FIX_DIFF,
    test_command: str | None = "python -m pytest -q",
) -> int:
    """A finished task with its steps, as the agent loop leaves it."""
    with session_scope(url) as s:
        batch = Batch()
        s.add(batch)
        s.flush()
        task = Task(
            batch_id=batch.id,
            repo=repo,
            instruction=instruction,
            test_command=test_command,
            budget={},
            status=status,
            failure_reason=None
            if status == TaskStatus.succeeded
            else "budget exhausted: 3 steps (turns) used",
            summary="Fixed subtract" if status == TaskStatus.succeeded else None,
            workspace_diff=diff,
            test_passed=status == TaskStatus.succeeded,
            emotion={"valence": emotion[0], "arousal": emotion[1], "dominance": 0.0, "mood": "content"},
            finished_at=datetime.now(UTC),
        )
        s.add(task)
        s.flush()
        seq = 0
        for number, (tool, args, detail, output) in enumerate(turns, start=1):
            for kind, fields in (
                (StepKind.think, {"content": json.dumps({"tool": tool, "args": args})}),
                (StepKind.tool_call, {"content": tool, "tool_name": tool, "tool_args": args}),
                (StepKind.tool_result, {"tool_name": tool, "tool_result": output, "detail": detail}),
                (StepKind.reflect, {"content": json.dumps({"assessment": "ok", "next": "go on"})}),
                (StepKind.emotion, {"emotion": {"after": {"valence": emotion[0], "arousal": emotion[1]}}}),
            ):
                s.add(Step(task_id=task.id, seq=seq, turn=number, kind=kind, **fields))
                seq += 1
        return task.id


def snapshot(url: str) -> list[tuple]:
    with session_scope(url) as s:
        rows = s.scalars(select(Memory).order_by(Memory.id))
        return [
            (
                m.id,
                m.kind,
                m.content,
                m.importance,
                m.valence,
                m.arousal,
                json.dumps(m.lineage, sort_keys=True),
                m.access_count,
                m.reinforced_count,
                m.updated_at,
            )
            for m in rows
        ]


def expected_drafts(url: str, task_ids: list[int]) -> int:
    with session_scope(url) as s:
        total = 0
        for task_id in task_ids:
            task = s.get(Task, task_id)
            steps = list(s.scalars(select(Step).where(Step.task_id == task_id).order_by(Step.seq)))
            total += len(mem.form_memories(task, steps))
        return total


def drafts_by_task(url: str, task_ids: list[int]) -> dict[int, int]:
    return {task_id: expected_drafts(url, [task_id]) for task_id in task_ids}


def memories_by_task(url: str) -> dict[int, int]:
    """How many memories each task is in the lineage of: every draft of a task lands in exactly one."""
    counts: dict[int, int] = {}
    with session_scope(url) as s:
        for lineage in s.scalars(select(Memory.lineage)):
            for task_id in lineage["tasks"]:
                counts[task_id] = counts.get(task_id, 0) + 1
    return counts


def markers(url: str) -> list[int]:
    with session_scope(url) as s:
        return sorted(s.scalars(select(ConsolidatedTask.task_id)))


# --- the embedding model ------------------------------------------------------------------------------


def test_embedding_model_is_real_and_loaded_once(embedder):
    assert embedder.dimension == 384  # read from the ONNX file, not configured
    assert get_embedder() is embedder
    vectors = embedder.embed(
        [
            "Fixed the failing subtract test in calc/ops.py",
            "repaired the broken subtraction unit test",
            "The weather in Paris is sunny today",
        ]
    )
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    similar, unrelated = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
    assert similar > 0.5 > unrelated


# --- consolidation ------------------------------------------------------------------------------------


def _written() -> dict[str, float]:
    """elpis_memories_written_total by kind, as a scrape of the multiprocess store would read it."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    from elpis_worker.metrics import instruments, multiprocess_dir

    instruments()  # this process's store exists before the first read
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(multiprocess_dir()))
    return {
        s.labels["kind"]: s.value
        for family in registry.collect()
        for s in family.samples
        if s.name == "elpis_memories_written_total"
    }


def test_consolidation_forms_memories_with_lineage_back_to_steps(mem_db, embedder):
    task_id = make_task(mem_db)
    written = _written()
    report = mem.consolidate_memories(mem_db, embedder=embedder)
    counted = _written()
    # Each memory created is counted once, by kind, once its transaction committed.
    moved = {kind.value: counted.get(kind.value, 0) - written.get(kind.value, 0) for kind in MemoryKind}
    assert sum(moved.values()) == report.memories_created and all(moved.values()), moved
    assert report.ran and report.tasks_consolidated == 1 and report.task_ids == [task_id]
    assert markers(mem_db) == [task_id]
    with session_scope(mem_db) as s:
        memories = {m.kind: m for m in s.scalars(select(Memory))}
        seqs = set(s.scalars(select(Step.seq).where(Step.task_id == task_id)))
        kinds_by_seq = dict(s.execute(select(Step.seq, Step.kind).where(Step.task_id == task_id)).all())
    assert set(memories) == {MemoryKind.episodic, MemoryKind.procedural, MemoryKind.semantic}
    episode = memories[MemoryKind.episodic]
    assert episode.outcome == "success" and episode.repo == REPO and episode.task_id == task_id
    assert "Fix the failing subtract test" in episode.content and "calc/ops.py" in episode.content
    assert (episode.valence, episode.arousal) == (0.4, 0.3)
    assert episode.lineage["tasks"] == [task_id]
    assert set(episode.lineage["steps"][str(task_id)]) <= seqs
    procedure = memories[MemoryKind.procedural]
    assert "write_file calc/ops.py" in procedure.content and "run_tests (passed)" in procedure.content
    traced = {kinds_by_seq[q] for q in procedure.lineage["steps"][str(task_id)]}
    assert traced <= {StepKind.tool_call, StepKind.tool_result}
    assert report.memories_created == expected_drafts(mem_db, [task_id])


def test_consolidation_is_idempotent(mem_db, embedder):
    ids = succeeded_and_failed(mem_db)
    first = mem.consolidate_memories(mem_db, embedder=embedder)
    assert first.tasks_consolidated == 2
    before = snapshot(mem_db)
    again = mem.consolidate_memories(mem_db, embedder=embedder)
    assert again.ran
    assert (again.tasks_consolidated, again.memories_created, again.memories_merged) == (0, 0, 0)
    assert (again.memories_reinforced, again.memories_forgotten) == (0, 0)
    assert snapshot(mem_db) == before
    assert markers(mem_db) == sorted(ids)


def test_near_duplicates_are_merged_not_copied(mem_db, embedder):
    first = make_task(mem_db)
    mem.consolidate_memories(mem_db, embedder=embedder)
    single = {row[2]: row for row in snapshot(mem_db)}  # by content
    second = make_task(mem_db)  # the same fix again on the same repository
    other = make_task(mem_db, repo="/repos/other")  # same text, another repository: kept apart
    report = mem.consolidate_memories(mem_db, embedder=embedder)
    assert report.memories_merged == len(single)
    with session_scope(mem_db) as s:
        here = {m.content: m for m in s.scalars(select(Memory).where(Memory.repo == REPO))}
        there = list(s.scalars(select(Memory).where(Memory.repo == "/repos/other")))
    assert set(here) == set(single)  # no copies
    for content, memory in here.items():
        assert memory.lineage["tasks"] == [first, second]
        assert memory.importance > single[content][3]  # merging raised it
    assert len(there) == len(single) and all(m.lineage["tasks"] == [other] for m in there)


def test_two_consolidations_at_once_do_each_task_once(mem_db, embedder):
    ids = [make_task(mem_db, instruction=f"Fix bug number {n} in module m{n}") for n in range(6)]
    barrier = threading.Barrier(2)
    reports, errors = [], []

    def run() -> None:
        try:
            barrier.wait()
            reports.append(mem.consolidate_memories(mem_db, embedder=embedder))
        except Exception as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert markers(mem_db) == ids
    assert sum(r.tasks_consolidated for r in reports) == len(ids)
    # Every draft stored exactly once (a task done twice would show up as extra merges).
    assert sum(r.memories_created + r.memories_merged for r in reports) == expected_drafts(mem_db, ids)
    assert memories_by_task(mem_db) == drafts_by_task(mem_db, ids)


def test_consolidation_gives_way_while_another_holds_the_lock(mem_db, embedder):
    task_id = make_task(mem_db)
    engine = create_engine(mem_db)
    try:
        with engine.connect() as conn, conn.begin():
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": mem.CONSOLIDATION_LOCK})
            report = mem.consolidate_memories(mem_db, embedder=embedder)
            assert not report.ran and report.tasks_consolidated == 0 and "another" in report.note
            assert markers(mem_db) == [] and snapshot(mem_db) == []
    finally:
        engine.dispose()
    assert mem.consolidate_memories(mem_db, embedder=embedder).task_ids == [task_id]


def test_a_crash_mid_run_leaves_nothing_half_written(mem_db, embedder, monkeypatch):
    ids = [
        make_task(mem_db, instruction=f"Fix defect {n} in the {n} module") for n in ("alpha", "beta", "gamma")
    ]
    per_task = expected_drafts(mem_db, ids[:1])
    real_store = mem.store_draft
    calls = {"n": 0}

    def crashing_store(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == per_task + 2:  # the second draft of the second task
            raise RuntimeError("worker killed")
        return real_store(*args, **kwargs)

    monkeypatch.setattr(mem, "store_draft", crashing_store)
    with pytest.raises(RuntimeError, match="worker killed"):
        mem.consolidate_memories(mem_db, embedder=embedder)
    assert markers(mem_db) == ids[:1]
    with session_scope(mem_db) as s:
        lineages = [m.lineage["tasks"] for m in s.scalars(select(Memory))]
    assert len(lineages) == per_task and all(tasks == ids[:1] for tasks in lineages)  # task 2: nothing

    monkeypatch.setattr(mem, "store_draft", real_store)
    report = mem.consolidate_memories(mem_db, embedder=embedder)
    assert report.task_ids == ids[1:]
    assert markers(mem_db) == ids
    assert report.memories_created + report.memories_merged == expected_drafts(mem_db, ids[1:])
    assert memories_by_task(mem_db) == drafts_by_task(mem_db, ids)


def _memory(url: str, embedder, content: str, **fields) -> int:
    with session_scope(url) as s:
        memory = Memory(
            kind=fields.pop("kind", MemoryKind.semantic),
            content=content,
            embedding=embedder.embed([content])[0].tolist(),
            repo=fields.pop("repo", REPO),
            importance=fields.pop("importance", 0.5),
            lineage={"tasks": [], "memories": [], "steps": {}},
            **fields,
        )
        s.add(memory)
        s.flush()
        return memory.id


def test_decayed_unused_memories_are_forgotten_unless_felt_or_used(mem_db, embedder):
    old = datetime.now(UTC) - timedelta(days=200)
    faded = _memory(mem_db, embedder, "The cache directory is tmp", importance=0.2, updated_at=old)
    intense = _memory(
        mem_db, embedder, "The deploy broke production", importance=0.2, updated_at=old, arousal=0.9
    )
    used = _memory(
        mem_db,
        embedder,
        "Lint with ruff",
        importance=0.2,
        updated_at=old,
        access_count=5,
        reinforced_count=5,
        last_accessed_at=old,
    )
    fresh = _memory(mem_db, embedder, "Docs live in docs/", importance=0.2)
    report = mem.consolidate_memories(mem_db, embedder=embedder)
    assert report.memories_forgotten == 1
    with session_scope(mem_db) as s:
        left = set(s.scalars(select(Memory.id)))
    assert left == {intense, used, fresh} and faded not in left
    assert mem.consolidate_memories(mem_db, embedder=embedder).memories_forgotten == 0


def test_retrieval_strengthens_and_consolidation_counts_it_once(mem_db, embedder):
    memory_id = _memory(mem_db, embedder, "In calc, run the tests with python -m pytest -q", importance=0.4)
    got = mem.retrieve_for_task(
        mem_db,
        repo=REPO,
        query="how do I run the tests in calc?",
        token_budget=200,
        count_tokens=word_tokens,
        embedder=embedder,
    )
    assert [m.id for m in got] == [memory_id]
    report = mem.consolidate_memories(mem_db, embedder=embedder)
    assert report.memories_reinforced == 1
    with session_scope(mem_db) as s:
        row = s.get(Memory, memory_id)
        assert row.access_count == 1 and row.last_accessed_at is not None
        assert row.importance == pytest.approx(0.4 + mem.REINFORCE_STEP)
    assert mem.consolidate_memories(mem_db, embedder=embedder).memories_reinforced == 0


# --- retrieval ----------------------------------------------------------------------------------------


def test_retrieval_fits_the_token_budget_most_valuable_first(mem_db, embedder):
    facts = [
        "In calc, subtract lives in calc/ops.py and is tested by tests/test_ops.py",
        "In calc, the failing subtract test was fixed by returning a - b instead of a + b",
        "In calc, run the tests with python -m pytest -q from the repository root",
        "In calc, division by zero raises ValueError with the message cannot divide by zero",
        "In calc, the multiply function is covered by test_multiply in tests/test_ops.py " * 3,
    ]
    for fact in facts:
        _memory(mem_db, embedder, fact)
    _memory(
        mem_db,
        embedder,
        "In calc, the subtract test failure is fixed in calc/ops.py",
        repo="/repos/elsewhere",
    )
    query = "Fix the failing subtract test in calc"

    def retrieve(token_budget: int, limit: int = 10) -> list:
        return mem.retrieve_for_task(
            mem_db,
            repo=REPO,
            query=query,
            token_budget=token_budget,
            count_tokens=word_tokens,
            embedder=embedder,
            settings=cfg(min_similarity=-1.0),
            limit=limit,
        )

    everything = retrieve(10_000)
    assert len(everything) == len(facts)  # the other repository's fact stays out
    assert [m.score for m in everything] == sorted((m.score for m in everything), reverse=True)
    assert "a - b" in everything[0].content or "subtract lives" in everything[0].content

    for budget in (60, 35, 20):
        got = retrieve(budget)
        assert got and word_tokens(mem.render_memories(got)) <= budget
        assert [m.score for m in got] == sorted((m.score for m in got), reverse=True)
        # Most valuable first: a memory is left out only when it no longer fits beside the better ones.
        greedy: list = []
        for candidate in everything:
            if word_tokens(mem.render_memories([*greedy, candidate])) <= budget:
                greedy.append(candidate)
        assert [m.id for m in got] == [m.id for m in greedy]
        assert (got[0].id == everything[0].id) == (word_tokens(mem.render_memories(everything[:1])) <= budget)
    assert (
        mem.retrieve_for_task(
            mem_db, repo=REPO, query=query, token_budget=5, count_tokens=word_tokens, embedder=embedder
        )
        == []
    )
    limited = retrieve(10_000, limit=2)
    assert [m.id for m in limited] == [m.id for m in everything[:2]]


def test_memory_signal_and_rendering():
    def recalled(outcome, similarity=0.8):
        return mem.RetrievedMemory(1, "episodic", "x", 0.5, similarity, 0.0, 0.0, outcome)

    assert mem.memory_signal([]) == 0.0
    assert mem.memory_signal([recalled("success"), recalled("success")]) == 1.0
    assert mem.memory_signal([recalled("failure")]) == -1.0
    assert 0 < mem.memory_signal([recalled("success", 0.9), recalled("failure", 0.3)]) < 1
    assert mem.memory_signal([recalled(None)]) == 0.0
    assert mem.render_memories([]) == ""
    block = mem.render_memories([recalled("failure")])
    assert block.startswith(mem.RENDER_HEADER) and "[episodic, failed] x" in block


def test_short_term_memory_is_read_from_the_steps(mem_db):
    task_id = make_task(mem_db)
    entries = mem.short_term_memory(mem_db, task_id, capacity=2)
    assert {e.turn for e in entries} == {len(FIX_TURNS) - 1, len(FIX_TURNS)}
    assert [e.kind for e in entries] == ["observation", "reflection"] * 2
    assert entries[0].content == FIX_TURNS[-2][3]


# --- the model guard ----------------------------------------------------------------------------------


class OtherModel:
    def __init__(self, name: str, dimension: int) -> None:
        self.name, self.dimension = name, dimension

    def embed(self, texts, batch_size=8):
        return np.ones((len(texts), self.dimension), dtype=np.float32) / np.sqrt(self.dimension)


def test_another_embedding_model_is_refused_until_migrated(mem_db, embedder):
    make_task(mem_db)
    for model in (OtherModel("all-mpnet-base-v2", 768), OtherModel("bge-small-en-v1.5", 384)):
        with pytest.raises(EmbeddingMismatchError, match="migration"):
            mem.consolidate_memories(mem_db, embedder=model)
        with pytest.raises(EmbeddingMismatchError, match=model.name):
            mem.retrieve_for_task(
                mem_db, repo=REPO, query="q", token_budget=100, count_tokens=len, embedder=model
            )
    assert markers(mem_db) == [] and snapshot(mem_db) == []
    # The database says which model its vectors belong to: the configured one, from the migration.
    with session_scope(mem_db) as s:
        row = s.get(EmbeddingModel, 1)
        assert (row.name, row.dimension) == (embedder.name, embedder.dimension)
        s.execute(update(EmbeddingModel).values(name="something-else"))
    with pytest.raises(EmbeddingMismatchError, match="something-else"):
        mem.consolidate_memories(mem_db, embedder=embedder)


# --- API and CLI --------------------------------------------------------------------------------------


@pytest.fixture
def mem_api(mem_db):
    from fastapi.testclient import TestClient

    from elpis_api.app import create_app

    app = create_app(mem_db)
    app.state.enqueue = lambda task_id: None
    with TestClient(app, headers=AUTH) as client:
        yield client


def test_api_lists_searches_reads_and_deletes(mem_api, mem_db, embedder):
    first = _memory(mem_db, embedder, "In calc, run the tests with python -m pytest -q")
    second = _memory(
        mem_db, embedder, "Subtract returned a + b; the fix was a - b", kind=MemoryKind.procedural
    )
    third = _memory(mem_db, embedder, "Widgets are built with make", repo="/repos/widgets")

    newest = mem_api.get("/v1/memories").json()["items"]
    assert [m["id"] for m in newest] == [third, second, first]
    assert newest[0]["score"] is None and newest[0]["lineage"] == {"tasks": [], "memories": [], "steps": {}}

    found = mem_api.get("/v1/memories", params={"query": "how to fix subtraction", "limit": 2}).json()[
        "items"
    ]
    assert found[0]["id"] == second and len(found) == 2
    assert found[0]["score"] >= found[1]["score"] and 0 < found[0]["similarity"] <= 1
    only = mem_api.get("/v1/memories", params={"query": "tests", "repo": REPO, "kind": "semantic"}).json()
    assert [m["id"] for m in only["items"]] == [first]

    assert mem_api.get(f"/v1/memories/{first}").json()["content"].startswith("In calc")
    assert mem_api.delete(f"/v1/memories/{first}").status_code == 204
    missing = mem_api.get(f"/v1/memories/{first}")
    assert missing.status_code == 404 and f"memory {first} not found" in missing.json()["detail"]
    assert mem_api.delete(f"/v1/memories/{first}").status_code == 404


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"kind": "dream"}, "kind"),
        ({"query": ""}, "query"),
        ({"query": "   "}, "query"),
    ],
)
def test_api_rejects_bad_parameters(mem_api, params, field):
    response = mem_api.get("/v1/memories", params=params)
    assert response.status_code == 422
    assert response.json()["detail"].startswith(f"query.{field}:")  # names the parameter


def test_api_bad_id_is_422(mem_api):
    assert mem_api.get("/v1/memories/abc").status_code == 422


def test_api_consolidates_on_demand(mem_api, mem_db):
    task_id = make_task(mem_db)
    response = mem_api.post("/v1/memories/consolidate")
    assert response.status_code == 200, response.text
    assert response.json()["task_ids"] == [task_id] and response.json()["memories_created"] > 0
    engine = create_engine(mem_db)
    try:
        with engine.connect() as conn, conn.begin():
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": mem.CONSOLIDATION_LOCK})
            make_task(mem_db, instruction="Another task")
            busy = mem_api.post("/v1/memories/consolidate")
            assert busy.status_code == 409 and "another consolidation" in busy.json()["detail"]
    finally:
        engine.dispose()


def test_cli_consolidate_prints_the_report(mem_db):
    task_id = make_task(mem_db)
    result = subprocess.run(
        [str(Path(sys.executable).parent / "elpis"), "consolidate"],
        env=dict(os.environ, ELPIS_DATABASE_URL=mem_db),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["task_ids"] == [task_id] and report["ran"] is True


# --- Celery: the beat task on a real worker -----------------------------------------------------------


def test_beat_schedules_consolidation_on_the_maintenance_queue():
    from elpis_worker.celery_app import MAINTENANCE_QUEUE, app

    entry = next(e for e in app.conf.beat_schedule.values() if e["task"] == "elpis.consolidate_memories")
    assert entry["schedule"] == get_settings().memory.consolidation_interval
    assert app.conf.task_routes["elpis.consolidate_memories"] == {"queue": MAINTENANCE_QUEUE}


def test_consolidation_task_runs_on_a_real_worker(mem_db, start_worker):
    task_id = make_task(mem_db)
    worker = start_worker(
        ELPIS_DATABASE_URL=mem_db,
        ELPIS_MODEL__BACKEND="scripted",
        ELPIS_MODEL__SCRIPT=str(SAMPLES / "fix_script.json"),
    )
    from elpis_worker.celery_app import app

    app.send_task("elpis.consolidate_memories", queue=worker.queue)
    wait_for(lambda: markers(mem_db) == [task_id], timeout=120, what="the worker to consolidate")
    assert "embedding model loaded once" in worker.log_text()


# --- the agent remembers across tasks -----------------------------------------------------------------


def test_second_task_recalls_what_the_first_learned(api, db_url, start_worker):
    worker = start_worker(
        ELPIS_MODEL__BACKEND="scripted", ELPIS_MODEL__SCRIPT=str(SAMPLES / "fix_script.json")
    )
    api.app.state.enqueue = lambda task_id: None
    task = {
        "repo": str(SAMPLES / "calc"),
        "instruction": "Fix the failing subtract test",
        "test_command": "python -m pytest -q",
    }

    def submit() -> int:
        response = api.post("/v1/batches", json={"tasks": [task]})
        assert response.status_code == 201, response.text
        return response.json()["tasks"][0]["id"]

    first = submit()
    worker.send(first)
    assert wait_finished(db_url, first).status == TaskStatus.succeeded
    mem.consolidate_memories(db_url)
    # What the first task formed or was merged into (the shared database may hold the same fix from
    # earlier tests, so the first task's memories can be merges into older ones): by lineage.
    formed_by_first = Memory.lineage.contains({"tasks": [first]})
    with session_scope(db_url) as s:
        learned = {m.kind: m.content for m in s.scalars(select(Memory).where(formed_by_first))}
    assert {MemoryKind.episodic, MemoryKind.procedural} <= set(learned)

    second = submit()
    worker.send(second)
    wait_finished(db_url, second)
    recalls = [s for s in steps_of(db_url, second) if s.kind == StepKind.memory]
    assert recalls, "the second task recorded no retrieval step"
    # What happened on the first task (its episode, stored under the task's repository) and how it
    # was fixed both come back, verbatim, in the first retrieval.
    assert learned[MemoryKind.episodic] in recalls[0].content, (
        "the first task's episode was not recalled (memories are stored under the task's exact "
        f"repository, so the loop must pass repo=task.repo): {recalls[0].content}"
    )
    assert learned[MemoryKind.procedural] in recalls[0].content, recalls[0].content
    recalled_ids = {m["id"] for m in recalls[0].detail["memories"]}
    with session_scope(db_url) as s:
        firsts = set(s.scalars(select(Memory.id).where(formed_by_first)))
    assert recalled_ids & firsts
