"""Ablation: the same tasks with emotional modulation on and off, with the scripted backend and with
the real default model. Measures tasks solved, turns to success, repeated-action loops, replans and
the sampling temperature used.

    .venv/bin/python bench/ablation.py [--seeds 3] [--backend both|scripted|llama] [--out FILE.json]

Not a test: it measures and reports, whatever the figures show. Runs the loop in-process against an
embedded PostgreSQL started in a temporary folder."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SAMPLES = ROOT / "samples"

FIX_OPS = (
    (SAMPLES / "calc" / "calc" / "ops.py")
    .read_text()
    .replace("return a + b\n\n\ndef multiply", "return a - b\n\n\ndef multiply")
)
# A capable but stubborn scripted agent: it re-runs the failing tests instead of acting, and knows
# the fix ("instead") it would choose if that tool were not available.
STUBBORN_FIX = [
    {"thought": "run the tests", "tool": "run_tests", "args": {}},
    {"thought": "run them again", "tool": "run_tests", "args": {}},
    {"thought": "and again", "tool": "run_tests", "args": {}},
    {
        "thought": "once more",
        "tool": "run_tests",
        "args": {},
        "instead": {
            "thought": "fix subtract",
            "tool": "write_file",
            "args": {"path": "calc/ops.py", "content": FIX_OPS},
        },
    },
    {"thought": "check", "tool": "run_tests", "args": {}},
    {"thought": "done", "tool": "finish", "args": {"summary": "fixed subtract"}},
] + [{"thought": "again", "tool": "run_tests", "args": {}}] * 6


def sample_tasks() -> list[dict]:
    import yaml

    tasks = yaml.safe_load((SAMPLES / "batch.yaml").read_text())["tasks"]
    for task in tasks:
        task["repo"] = str(SAMPLES / "calc")
    return tasks


def run_one(database_url: str, task: dict, backend, settings) -> dict:
    from sqlalchemy import select

    from elpis_worker.agent import run_agent
    from elpis_worker.store import TaskStore
    from elpis_worker.turns import REPLAN, turn_key
    from models import Batch, Step, StepKind, Task, session_scope

    budget = settings.budget.model_dump() | task.get("budget", {})
    with session_scope(database_url) as s:
        row = Task(
            repo=task["repo"],
            instruction=task["instruction"],
            test_command=task["test_command"],
            budget=budget,
        )
        s.add(Batch(source="bench", tasks=[row]))
        s.flush()
        task_id = row.id
    store = TaskStore(database_url)
    store.claim(task_id, stale_after=600)
    started = time.perf_counter()
    status = run_agent(store, backend, settings, task_id)
    seconds = time.perf_counter() - started
    with session_scope(database_url) as s:
        steps = list(s.scalars(select(Step).where(Step.task_id == task_id).order_by(Step.seq)))
        calls = [
            (st.tool_name, json.dumps(st.tool_args, sort_keys=True))
            for st in steps
            if st.kind == StepKind.tool_call
        ]
        temps = [st.sampling["temperature"] for st in steps if st.kind == StepKind.think]
        return {
            "solved": status is not None and status.value == "succeeded",
            "turns": len(calls),
            "repeats": sum(1 for a, b in zip(calls, calls[1:], strict=False) if a == b),
            "replans": sum(1 for st in steps if turn_key(st) == REPLAN),
            "mean_temperature": statistics.mean(temps) if temps else None,
            "seconds": seconds,
        }


def summarise(runs: list[dict]) -> dict:
    solved = [r for r in runs if r["solved"]]
    return {
        "runs": len(runs),
        "solved": len(solved),
        "turns_to_success": statistics.mean(r["turns"] for r in solved) if solved else None,
        "repeated_actions_per_run": statistics.mean(r["repeats"] for r in runs),
        "replans_per_run": statistics.mean(r["replans"] for r in runs),
        "mean_temperature": statistics.mean(
            r["mean_temperature"] for r in runs if r["mean_temperature"] is not None
        ),
        "seconds_per_run": statistics.mean(r["seconds"] for r in runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--backend", choices=["both", "scripted", "llama"], default="both")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="elpis-ablation-"))
    os.environ["ELPIS_HOME"] = str(home)
    for key in ("ELPIS_DATABASE_URL", "ELPIS_BROKER_URL"):
        os.environ.pop(key, None)
    from configs.settings import load_settings
    from elpis_api.migrate import upgrade
    from elpis_api.stack import start_embedded_postgres, stop_embedded_postgres
    from elpis_worker.backend import LlamaBackend, ScriptedBackend

    database_url = start_embedded_postgres()
    upgrade(database_url)
    results: dict[str, dict] = {}
    try:
        if args.backend in ("both", "scripted"):
            script = home / "stubborn.json"
            script.write_text(json.dumps(STUBBORN_FIX))
            fix_task = sample_tasks()[0]
            for modulation in (True, False):
                settings = load_settings()
                settings.emotions.modulation = modulation
                backend = ScriptedBackend(
                    settings.model.model_copy(update={"backend": "scripted", "script": str(script)})
                )
                runs = [run_one(database_url, fix_task, backend, settings)]
                results[f"scripted/modulation={'on' if modulation else 'off'}"] = summarise(runs)
        if args.backend in ("both", "llama"):
            settings = load_settings()
            backend = LlamaBackend(settings.model)
            for modulation in (True, False):
                settings.emotions.modulation = modulation
                runs = []
                for seed in range(args.seeds):
                    for task in sample_tasks():
                        backend.llm.set_seed(seed)
                        runs.append(run_one(database_url, task, backend, settings))
                        print(f"llama modulation={modulation} seed={seed}: {runs[-1]}", flush=True)
                results[f"llama/modulation={'on' if modulation else 'off'}"] = summarise(runs)
    finally:
        stop_embedded_postgres()
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
