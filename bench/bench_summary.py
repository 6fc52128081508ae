"""`make bench`: one table for the default model, every figure a ratio against a baseline measured in the
same run (issue 13, part 6).

    .venv/bin/python bench/bench_summary.py [--model NAME|PATH] [--tasks a,b,c] [--max-steps 3]
        [--rounds 3] [--json docs/bench-summary.json] [--plot docs/bench-turn-time.png]

What runs, in this order, on one machine:
1. a plain llama-cpp-python process (this one) with the model at the workers' thread count: a ~1,000-token
   agent prompt evaluated once, then rounds of one free and one constrained (lazy grammar, as the workers
   decode) reply to it from the KV cache, in a rotating order (bench/bench_grammar.py's prompt and calls);
2. the eval suite's subset (--tasks) through the real pipeline (`elpis eval`'s path: embedded stack in a
   fresh home, REST batch, Celery workers, the suite's own judge), three times: the default configuration
   (2 worker processes), 1 worker process, and the path before issue 13 (two generations per turn,
   grammar over the whole vocabulary: `generation.one_call_per_turn: false`, `model.lazy_grammar: false`)
   with 2 worker processes.
The figures come from the steps each run persisted (bench/summary_figures.py says how). Not a test: it
asserts nothing, it measures. The older benches stay runnable on their own (`make bench-all`).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import summary_figures as sf  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

# Wide enough for the table when the output is piped (make, tee), where rich would assume 80 columns.
console = Console(width=None if sys.stdout.isatty() else 150)

# A small fixed subset of evals/: two tasks the 1.5B default solves in three turns (the fix, the review
# turn's check, then finish), one per worker process. Two, not four, so that the three pipeline runs fit
# `make bench` in 15 minutes on 2 shared cores (a 1.5B task takes ~2 minutes there); --tasks runs more.
DEFAULT_TASKS = "bank_withdraw,passing_grade"
# One thread per process whatever the other cores do (model.share_idle_cores off).
ONE_THREAD = {"ELPIS_MODEL__SHARE_IDLE_CORES": "false"}
OLD_PATH = {
    "ELPIS_GENERATION__ONE_CALL_PER_TURN": "false",
    "ELPIS_MODEL__LAZY_GRAMMAR": "false",
    "ELPIS_GENERATION__COMPOSE_FINISH": "false",
    **ONE_THREAD,
}
# (name, worker processes, environment overrides)
RUNS = (
    ("default", 2, {}),
    ("one process", 1, ONE_THREAD),
    ("one process sharing cores", 1, {}),
    ("old path", 2, OLD_PATH),
)
PROMPT_TOKENS = 1000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def machine() -> str:
    cpu = platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GiB, no GPU"


def resolve_model(model: str | None) -> Path:
    from configs.settings import load_settings
    from elpis_worker.backend import resolve_model_path

    settings = load_settings()
    cfg = settings.model
    if model and Path(model).expanduser().is_file():
        return Path(model).expanduser().resolve()
    if model:
        cfg = cfg.model_copy(update={"name": model, "path": ""})
    return resolve_model_path(cfg, settings).resolve()


def plain_baseline(model: Path, threads: int, rounds: int) -> dict[str, Any]:
    """Free and constrained decoding in one plain process, on a prompt already in the KV cache."""
    import bench_grammar

    from configs.settings import load_settings
    from elpis_worker import lazy_grammar
    from elpis_worker.backend import LlamaBackend

    update = {"path": str(model), "threads": threads, "n_ctx": 4096, "seed": 0, "lazy_grammar": True}
    backend = LlamaBackend(load_settings().model.model_copy(update=update))
    schema = bench_grammar.think_schema()
    msgs = bench_grammar.messages(backend, PROMPT_TOKENS)
    args = SimpleNamespace(max_tokens=256, free_max_tokens=48, temperature=0.7, top_p=0.9)
    first = bench_grammar.call(backend, "lazy grammar", msgs, schema, args)  # evaluates the prompt once
    prompt_tokens = len(lazy_grammar.chat_request(backend.llm, msgs, None).prompt_tokens)
    modes = ("free", "lazy grammar")
    rates: dict[str, list[float]] = {m: [] for m in modes}
    ratios: list[float] = []
    for n in range(rounds):
        rate = {}
        for mode in modes[n % 2 :] + modes[: n % 2]:
            run = bench_grammar.call(backend, mode, msgs, schema, args)
            for _retry in range(3):  # a free reply may end at once: nothing to time
                if run["tokens"]:
                    break
                run = bench_grammar.call(backend, mode, msgs, schema, args)
            rate[mode] = run["tokens"] / run["s"]
            rates[mode].append(rate[mode])
        ratios.append(rate["lazy grammar"] / rate["free"])
        console.print(
            f"plain round {n + 1}: free {rate['free']:.1f} tok/s, lazy grammar {rate['lazy grammar']:.1f}"
        )
    del backend
    gc.collect()
    return {
        "threads": threads,
        "prompt_tokens": prompt_tokens,
        "prompt_eval_tok_s": first["evaluated"] / first["prompt_s"],
        "rates": rates,
        "ratios": ratios,
        "free_tok_s": statistics.median(rates["free"]),
        "constrained_tok_s": statistics.median(rates["lazy grammar"]),
        "constrained_over_free": statistics.median(ratios),
    }


@contextlib.contextmanager
def environment(overrides: dict[str, str]) -> Iterator[None]:
    """Overrides for this process (and the stack's children, which inherit it); the settings are read
    again under them, and everything is put back afterwards."""
    from configs import get_settings

    saved = dict(os.environ)
    for key in ("ELPIS_DATABASE_URL", "ELPIS_BROKER_URL", "ELPIS_API_TOKEN"):
        os.environ.pop(key, None)
    os.environ.update(overrides)
    get_settings.cache_clear()
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        get_settings.cache_clear()


def eval_run(
    name: str,
    processes: int,
    overrides: dict[str, str],
    model: Path,
    tasks: list[str],
    max_steps: int,
    home: Path,
) -> dict[str, Any]:
    """The suite subset through the real pipeline, as `elpis eval` runs it, in a fresh home."""
    from configs import get_settings
    from elpis_api.cli import _start_stack
    from elpis_api.client import ElpisClient
    from elpis_api.console import watch_tasks
    from elpis_api.eval_suite import load_suite
    from elpis_api.evaluate import batch_for, outcome_of
    from elpis_api.supervisor import Supervisor
    from elpis_api.tokens import configured_api_token

    suite = load_suite(ROOT / "evals")
    chosen = [t for t in suite.tasks if t.id in tasks]
    env = {
        "ELPIS_HOME": str(home),
        "ELPIS_API_PORT": str(_free_port()),
        "ELPIS_FLOWER_PORT": str(_free_port()),
        "ELPIS_MODEL__PATH": str(model),
        "ELPIS_MODEL__SEED": "0",
        "ELPIS_WORKER__CONCURRENCY": str(processes),
    } | overrides
    console.rule(f"run '{name}': {processes} worker process(es), {len(chosen)} tasks")
    load_before = os.getloadavg()
    with environment(env):
        settings = get_settings()
        sup = Supervisor(settings)
        started = time.monotonic()
        try:
            _start_stack(sup, settings)
            stack_s = time.monotonic() - started
            client = ElpisClient(
                url=f"http://{settings.api_host}:{settings.api_port}", token=configured_api_token(settings)
            )
            created = client.submit(batch_for(suite, chosen, max_steps=max_steps))
            ids = [t["id"] for t in created["tasks"]]
            finished = watch_tasks(client, ids)
            steps = {t["id"]: client.steps(t["id"]) for t in finished}
            outcomes = [outcome_of(st, 0, t, steps[t["id"]]) for st, t in zip(chosen, finished, strict=True)]
        finally:
            sup.stop()
    solved = sum(o.solved for o in outcomes)
    console.print(f"run '{name}': solved {solved}/{len(outcomes)} by the suite's checks")
    return {
        "name": name,
        "processes": processes,
        "overrides": overrides,
        "stack_start_s": stack_s,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "tasks": finished,
        "steps": steps,
        "outcomes": [
            {"id": o.id, "task_id": o.task_id, "solved": o.solved, "turns": o.turns, "wall_s": o.wall_s}
            for o in outcomes
        ],
    }


def run_figures(run: dict[str, Any]) -> dict[str, Any]:
    """One run's figures, from its tasks and steps."""
    tasks, steps = run["tasks"], {int(k): v for k, v in run["steps"].items()}
    turns = [t for task in tasks for t in sf.turn_times(task["id"], steps[task["id"]])]
    pairs = [p for task in tasks for p in sf.prompt_reuse(steps[task["id"]])]
    tokens, seconds = 0, 0.0
    for task in tasks:
        n, s = sf.decode_rate(steps[task["id"]])
        tokens, seconds = tokens + n, seconds + s
    walls = sf.task_walls(tasks)
    solved = [o["task_id"] for o in run["outcomes"] if o["solved"]]
    turn_steps = sum(t.steps for t in turns)
    timed = [t for t in turns if t.prompt_s is not None]
    return {
        "turns": len(turns),
        "turn_s": sf.median(t.wall_s for t in turns),
        "generating_turn_s": sf.median(t.wall_s for t in turns if t.generations),
        "generations_per_turn": sum(t.generations for t in turns) / len(turns) if turns else None,
        "overhead_per_step_ms": 1000 * sum(t.overhead_s for t in turns) / turn_steps if turn_steps else None,
        "wall_per_step_ms": 1000 * sum(t.wall_s for t in turns) / turn_steps if turn_steps else None,
        # Mean prompt evaluation per turn, and the mean wall time of the same turns.
        "prompt_turn_s": statistics.fmean(t.prompt_s or 0.0 for t in timed) if timed else None,
        "timed_turn_s": statistics.fmean(t.wall_s for t in timed) if timed else None,
        "decode_tok_s": tokens / seconds if seconds else None,
        "evaluated_tokens": sum(e for e, _ in pairs) or None,
        "new_tokens": sum(n for _, n in pairs) or None,
        "max_call_ratio": max((e / n for e, n in pairs), default=None),
        "calls_compared": len(pairs),
        "first_step_s": sf.first_step_latency(tasks, steps, run["processes"]),
        "solved": len(solved),
        "solved_task_s": sf.median(walls[i] for i in solved if i in walls),
        "task_s": sf.median(walls.values()),
        "tasks_per_hour": sf.tasks_per_hour(tasks),
        "turn_times": [t.as_dict() for t in turns],
    }


def figures(plain: dict[str, Any], runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The table's figures: default run against the plain process, one process and the old path."""
    default, one, lone, old = (
        runs.get(name, {}) for name in ("default", "one process", "one process sharing cores", "old path")
    )
    latencies = default.get("first_step_s", []) + one.get("first_step_s", [])
    evaluated = (default.get("evaluated_tokens") or 0) + (one.get("evaluated_tokens") or 0)
    new = (default.get("new_tokens") or 0) + (one.get("new_tokens") or 0)
    return {
        "constrained_tok_s": plain.get("constrained_tok_s"),
        "free_tok_s": plain.get("free_tok_s"),
        "constrained_over_free": plain.get("constrained_over_free"),
        "worker_decode_tok_s": one.get("decode_tok_s"),
        "evaluated_tokens": evaluated or None,
        "new_tokens": new or None,
        "generations_per_turn": default.get("generations_per_turn"),
        "old_generations_per_turn": old.get("generations_per_turn"),
        "overhead_per_step_ms": default.get("overhead_per_step_ms"),
        "wall_per_step_ms": default.get("wall_per_step_ms"),
        "first_step_s": sf.median(latencies),
        "turn_s": default.get("turn_s"),
        "old_turn_s": old.get("turn_s"),
        "old_prompt_turn_s": old.get("prompt_turn_s"),
        "old_timed_turn_s": old.get("timed_turn_s"),
        "generating_turn_s": default.get("generating_turn_s"),
        "old_generating_turn_s": old.get("generating_turn_s"),
        "lone_turn_s": lone.get("turn_s"),
        "one_thread_turn_s": one.get("turn_s"),
        "solved_task_s": default.get("solved_task_s"),
        "old_solved_task_s": old.get("solved_task_s"),
        "tasks_per_hour_2": default.get("tasks_per_hour"),
        "tasks_per_hour_1": one.get("tasks_per_hour"),
    }


def title_of(model: str, where: str, date: str, tasks: list[str], max_steps: int, load: float) -> str:
    return (
        f"{model} on {where}, {date}; a subset of evals/ ({', '.join(tasks)}), --max-steps "
        f"{max_steps}; load average {load:.1f} at the start"
    )


def reprint(path: Path) -> None:
    """The table of an earlier run again, from its JSON (no measuring); its rows are rendered anew."""
    run = json.loads(path.read_text())
    rows = sf.summary_rows(run["figures"])
    title = title_of(
        run["model"],
        run["machine"],
        run["date"],
        run["tasks"],
        run["max_steps"],
        run["load_average_start"][0],
    )
    print_table(rows, title)
    print(markdown(rows), flush=True)
    run["rows"] = [row.cells() for row in rows]
    path.write_text(json.dumps(run, indent=1, default=str) + "\n")


def print_table(rows: list[sf.Row], title: str) -> None:
    table = Table("figure", "value", "baseline, same run", "ratio", title=title, title_justify="left")
    for row in rows:
        table.add_row(*row.cells())
    console.print(table)


def markdown(rows: list[sf.Row]) -> str:
    lines = ["| figure | value | baseline, same run | ratio |", "| --- | --- | --- | --- |"]
    lines += [f"| {' | '.join(row.cells())} |" for row in rows]
    return "\n".join(lines)


COLOURS = {
    "prompt evaluation": "#1f77b4",
    "decoding": "#ff7f0e",
    "model, not split": "#c5b0d5",
    "tools": "#2ca02c",
    "overhead": "#7f7f7f",
}


def _parts(turn: dict[str, Any]) -> dict[str, float]:
    """A turn's seconds by part; a turn whose steps do not record prompt evaluation (a backend that does
    not say, such as a model server) has its model time as one part."""
    split = turn["prompt_s"] is not None
    return {
        "prompt evaluation": turn["prompt_s"] or 0.0,
        "decoding": turn["decode_s"] if split else 0.0,
        "model, not split": 0.0 if split else turn["decode_s"],
        "tools": turn["tools_s"],
        "overhead": max(turn["overhead_s"], 0.0),
    }


def plot(runs: dict[str, dict[str, Any]], labels: dict[int, str], out: Path, title: str) -> None:
    """Stacked bars: every turn of the default run, then the mean turn of each run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    default = [_parts(t) for t in runs["default"]["figures"]["turn_times"]]
    names = [
        f"{labels.get(t['task_id'], t['task_id'])}\nturn {t['turn']}"
        for t in runs["default"]["figures"]["turn_times"]
    ]
    means, mean_names = [], []
    for name, run in runs.items():
        parts = [_parts(t) for t in run["figures"]["turn_times"]]
        if parts:
            means.append({k: statistics.fmean(p[k] for p in parts) for k in COLOURS})
            mean_names.append(f"{name}\n({len(parts)} turns)")
    fig, (ax, ax_mean) = plt.subplots(
        1,
        2,
        figsize=(12, 4.8),
        gridspec_kw={"width_ratios": [max(len(default), 3), max(len(means), 2)]},
        constrained_layout=True,
    )
    for axis, bars, ticks in ((ax, default, names), (ax_mean, means, mean_names)):
        bottom = [0.0] * len(bars)
        for part, colour in COLOURS.items():
            heights = [b[part] for b in bars]
            if not any(heights):
                continue  # no legend entry for a part no turn has
            axis.bar(range(len(bars)), heights, bottom=bottom, color=colour, label=part)
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
        axis.set_xticks(range(len(bars)), ticks, fontsize=7)
    ax.set_ylabel("seconds")
    ax.set_title("each turn, default configuration (2 worker processes)", fontsize=9)
    ax_mean.set_title("mean turn of each run", fontsize=9)
    ax_mean.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=os.environ.get("ELPIS_BENCH_MODEL"), help="catalogue name, GGUF")
    parser.add_argument("--tasks", default=DEFAULT_TASKS, help="comma-separated ids of evals/ tasks")
    parser.add_argument("--max-steps", type=int, default=3, help="turn budget of every task")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the plain process's decode pair")
    parser.add_argument("--runs", default=",".join(name for name, _, _ in RUNS), help="which pipeline runs")
    parser.add_argument("--json", type=Path, default=ROOT / "docs" / "bench-summary.json")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "bench-turn-time.png")
    parser.add_argument("--raw", type=Path, help="also write every run's tasks and steps here")
    parser.add_argument("--reprint", type=Path, metavar="JSON", help="print an earlier run's table; no run")
    args = parser.parse_args()
    if args.reprint:
        reprint(args.reprint)
        return

    from configs.settings import load_settings

    started = time.monotonic()
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    load_start = os.getloadavg()
    model = resolve_model(args.model)
    threads = load_settings().model.threads
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    wanted = {name.strip() for name in args.runs.split(",")}
    console.print(f"model {model.name}, {machine()}, load average {load_start[0]:.1f}")
    console.rule(f"plain llama-cpp-python, {threads} thread(s)")
    plain = plain_baseline(model, threads, args.rounds)
    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="elpis-bench-") as tmp:
        for name, processes, overrides in RUNS:
            if name in wanted:
                home = Path(tmp) / name.replace(" ", "-")
                runs[name] = eval_run(name, processes, overrides, model, tasks, args.max_steps, home)
                runs[name]["figures"] = run_figures(runs[name])
    figs = figures(plain, {name: run["figures"] for name, run in runs.items()})
    rows = sf.summary_rows(figs)
    elapsed = time.monotonic() - started
    title = title_of(model.name, machine(), date, tasks, args.max_steps, load_start[0])
    console.rule("summary")
    print_table(rows, title)
    print(markdown(rows), flush=True)
    console.print(f"bench took {elapsed / 60:.1f} min")
    labels = {o["task_id"]: o["id"] for run in runs.values() for o in run["outcomes"]}
    if "default" in runs:
        plot(runs, labels, args.plot, f"time per turn, {model.name}, {date}")
        console.print(f"plot written to {args.plot}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "date": date,
                "machine": machine(),
                "load_average_start": load_start,
                "load_average_end": os.getloadavg(),
                "model": model.name,
                "threads": threads,
                "tasks": tasks,
                "max_steps": args.max_steps,
                "elapsed_s": round(elapsed, 1),
                "figures": figs,
                "rows": [row.cells() for row in rows],
                "plain": plain,
                "runs": {
                    name: {k: v for k, v in run.items() if k not in ("tasks", "steps")}
                    for name, run in runs.items()
                },
            },
            indent=1,
            default=str,
        )
        + "\n"
    )
    console.print(f"figures written to {args.json}")
    if args.raw:
        raw = {name: {"tasks": run["tasks"], "steps": run["steps"]} for name, run in runs.items()}
        args.raw.write_text(json.dumps(raw, default=str))


if __name__ == "__main__":
    main()
