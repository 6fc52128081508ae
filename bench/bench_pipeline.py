"""Pipeline benchmark: stack start-up, per-task and per-step time, and generation speed inside the
worker against a plain llama-cpp-python call on the same model, measured in the same run.

    .venv/bin/python bench/bench_pipeline.py [--runs 3] [--out docs/benchmarks.md]

Runs the real default model (SmolLM2-135M-Instruct Q4_1) on this machine's CPU. Not a test: it asserts
nothing, it measures."""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def plain_llama(runs: int) -> dict[str, float]:
    """The baseline: the same model, prompt and grammar, called directly in one process."""
    from configs.settings import load_settings
    from elpis_worker.backend import LlamaBackend
    from elpis_worker.grammar import THINK_SCHEMA
    from elpis_worker.prompts import SYSTEM_PROMPT

    settings = load_settings()
    started = time.perf_counter()
    backend = LlamaBackend(settings.model)
    load = time.perf_counter() - started
    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {
            "role": "user",
            "content": "Task: One test in tests/test_ops.py fails. Fix calc/ops.py.\nFirst tool call.",
        },
    ]
    backend.chat(messages, schema=None, temperature=0.0, top_p=1.0, max_tokens=4)  # warm-up
    rates: dict[str, list[float]] = {"constrained_cold": [], "constrained_warm": [], "free_warm": []}
    for _ in range(runs):
        for kind, schema in (("constrained", THINK_SCHEMA), ("free", None)):
            if kind == "constrained":
                backend.llm.reset()  # cold: the whole prompt is evaluated, as for a task's first think
                c = backend.chat(messages, schema=schema, temperature=0.7, top_p=0.9, max_tokens=128)
                rates["constrained_cold"].append(c.completion_tokens / c.duration_s)
            # warm: the prompt prefix is already in the KV cache, as for every later step of a task
            c = backend.chat(messages, schema=schema, temperature=0.7, top_p=0.9, max_tokens=128)
            rates[f"{kind}_warm"].append(c.completion_tokens / c.duration_s)
    return {"load_s": load} | {f"tok_s_{k}": statistics.median(v) for k, v in rates.items()}


def run_pipeline(home: Path, port: int, flower: int) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k not in ("ELPIS_DATABASE_URL", "ELPIS_BROKER_URL")}
    env.update(ELPIS_HOME=str(home), ELPIS_API_PORT=str(port), ELPIS_FLOWER_PORT=str(flower), COLUMNS="120")
    started = time.monotonic()
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "elpis"), "up"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    stack_up: list[float] = []

    def read() -> None:
        for line in process.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if "stack up in" in line and not stack_up:
                stack_up.append(time.monotonic() - started)

    threading.Thread(target=read, daemon=True).start()
    while not any("serving" in line for line in lines):
        if process.poll() is not None:
            raise SystemExit("elpis up failed:\n" + "".join(lines))
        time.sleep(0.5)
    batch_wall = time.monotonic() - started - stack_up[0]
    stack = json.loads((home / "run" / "stack.json").read_text())
    figures = step_figures(stack["database_url"])
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    figures.update(
        stack_up_s=stack_up[0],
        batch_wall_s=batch_wall,
        aggregate_tok_s=figures["tokens_generated"] / batch_wall,
    )
    return figures


def step_figures(database_url: str) -> dict[str, object]:
    from sqlalchemy import select

    from models import Step, StepKind, Task, WorkerProcess, session_scope

    with session_scope(database_url) as s:
        steps = list(s.scalars(select(Step)))
        tasks = list(s.scalars(select(Task)))
        loads = list(s.scalars(select(WorkerProcess)))
        by_kind: dict[str, list[float]] = {}
        for step in steps:
            if step.duration_ms is not None:
                by_kind.setdefault(step.kind.value, []).append(step.duration_ms)
        generated = [
            st for st in steps if st.kind in (StepKind.think, StepKind.reflect) and st.completion_tokens
        ]
        tokens = sum(st.completion_tokens for st in generated)
        gen_seconds = sum(st.duration_ms for st in generated) / 1000
        task_seconds = [
            (t.finished_at - t.started_at).total_seconds() for t in tasks if t.finished_at and t.started_at
        ]
        turns = sum(1 for st in steps if st.kind == StepKind.emotion)
        return {
            "tasks": len(tasks),
            "succeeded": sum(t.status.value == "succeeded" for t in tasks),
            "turns": turns,
            "steps": len(steps),
            "task_s_median": statistics.median(task_seconds),
            "turn_s_mean": sum(task_seconds) / max(turns, 1),
            "step_ms_median": {k: statistics.median(v) for k, v in sorted(by_kind.items())},
            "worker_tok_s": tokens / gen_seconds if gen_seconds else 0.0,
            "tokens_generated": tokens,
            "generation_seconds": gen_seconds,
            "model_load_s": statistics.median(w.load_seconds for w in loads),
            "warmup_s": statistics.median(w.warmup_seconds or 0 for w in loads),
        }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    import socket

    def free() -> int:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]

    baseline = plain_llama(args.runs)
    with tempfile.TemporaryDirectory(prefix="elpis-bench-") as tmp:
        pipeline = run_pipeline(Path(tmp) / "home", free(), free())
    result = {"baseline": baseline, "pipeline": pipeline}
    print(json.dumps(result, indent=2, default=str))
    ratio = pipeline["worker_tok_s"] / baseline["tok_s_constrained_warm"]
    print(
        f"tokens/s inside the worker: {pipeline['worker_tok_s']:.1f} = {ratio:.2f}x a plain constrained call "
        f"with a warm prefix ({baseline['tok_s_constrained_warm']:.1f}; cold prompt "
        f"{baseline['tok_s_constrained_cold']:.1f}; unconstrained warm {baseline['tok_s_free_warm']:.1f})"
    )
    if args.out:
        args.out.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
