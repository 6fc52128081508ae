"""`elpis eval`: run a suite through the real pipeline and judge every task independently of the agent.

The agent's own status is not the verdict: each task's stored diff is applied to a fresh copy of its
repository and the suite's check command (which may run tests the agent never saw) decides. Runs are
written as JSON so that two runs (another model, modulation off, other seeds) can be compared.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.table import Table

from configs.settings import Settings
from elpis_api.eval_suite import EvalSuite, EvalTask, judge
from elpis_worker.backend import resolve_model_path

__all__ = [
    "RunConfig",
    "TaskOutcome",
    "batch_for",
    "compare_table",
    "count_repeated_actions",
    "model_env",
    "outcome_of",
    "outcomes_table",
    "summarize",
    "write_run",
]

REPEAT_WINDOW = 3


@dataclass(frozen=True)
class RunConfig:
    model: str
    modulation: bool
    seed: int


@dataclass
class TaskOutcome:
    """One task of one run: the judge's verdict beside what the agent did."""

    id: str
    kind: str
    seed: int
    task_id: int
    solved: bool
    agent_status: str
    judge_reason: str | None
    turns: int
    tokens: int
    wall_s: float | None
    mood: str
    repeated_actions: int
    failure_reason: str | None = None
    check_tail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def model_env(model: str | None, modulation: bool, seed: int) -> dict[str, str]:
    """Environment overrides for the stack's processes: a catalogue name or a GGUF path, modulation on or
    off, and the sampling seed of the workers' llama.cpp context."""
    env = {"ELPIS_EMOTIONS__MODULATION": "true" if modulation else "false", "ELPIS_MODEL__SEED": str(seed)}
    if model:
        if Path(model).expanduser().is_file():
            env["ELPIS_MODEL__PATH"] = str(Path(model).expanduser().resolve())
        else:
            env["ELPIS_MODEL__NAME"] = model
            env["ELPIS_MODEL__PATH"] = ""
    return env


def isolated_env(settings: Settings, stamp: str, seed: int) -> dict[str, str]:
    """Environment overrides that give one seed of a run a fresh home (its own embedded Postgres and
    valkey, so no long-term memory an earlier run formed is recalled: runs are independent and can be
    compared), with the model file of the main home. Empty with a configured database, which the run
    then shares."""
    if settings.database_url.get_secret_value():
        return {}
    env = {"ELPIS_HOME": str(settings.home_dir / "eval-runs" / f"{stamp}-seed{seed}")}
    if settings.model.backend == "llama":
        env["ELPIS_MODEL__PATH"] = str(resolve_model_path(settings.model, settings))
    return env


def batch_for(suite: EvalSuite, tasks: list[EvalTask], max_steps: int | None = None) -> dict[str, Any]:
    """The REST batch of the suite's tasks (repos are absolute paths on this machine); `max_steps` caps
    every task's turn budget."""
    items = []
    for task in tasks:
        item: dict[str, Any] = {
            "repo": str(task.repo),
            "instruction": task.instruction,
            "test_command": task.test_command,
            "protected": list(task.protected),
        }
        budget = dict(task.budget or {})
        if max_steps is not None:
            budget["max_steps"] = min(int(budget.get("max_steps", max_steps)), max_steps)
        if budget:
            item["budget"] = {k: int(v) if k != "max_seconds" else v for k, v in budget.items()}
        items.append(item)
    return {"tasks": items}


def count_repeated_actions(steps: list[dict[str, Any]]) -> int:
    """Tool calls identical (tool and arguments) to one of the previous REPEAT_WINDOW turns' calls."""
    calls = [
        (s["turn"], s.get("tool_name"), json.dumps(s.get("tool_args") or {}, sort_keys=True))
        for s in steps
        if s["kind"] == "tool_call"
    ]
    repeated = 0
    for i, (turn, tool, args) in enumerate(calls):
        if any((t2, a2) == (tool, args) for (n, t2, a2) in calls[:i] if turn - REPEAT_WINDOW <= n < turn):
            repeated += 1
    return repeated


def _wall(task: dict[str, Any]) -> float | None:
    if not (task.get("started_at") and task.get("finished_at")):
        return None
    started = datetime.fromisoformat(task["started_at"])
    finished = datetime.fromisoformat(task["finished_at"])
    return round((finished - started).total_seconds(), 1)


def outcome_of(
    suite_task: EvalTask, seed: int, task: dict[str, Any], steps: list[dict[str, Any]]
) -> TaskOutcome:
    """Judge one finished task: its stored diff on a fresh copy, then the suite's own check."""
    verdict = judge(suite_task, task.get("diff") or "")
    return TaskOutcome(
        id=suite_task.id,
        kind=suite_task.kind,
        seed=seed,
        task_id=task["id"],
        solved=verdict.solved,
        agent_status=task["status"],
        judge_reason=verdict.reason,
        turns=task.get("steps_by_kind", {}).get("emotion", 0),
        tokens=int(task.get("prompt_tokens", 0)) + int(task.get("completion_tokens", 0)),
        wall_s=_wall(task),
        mood=((task.get("emotion") or {}).get("mood")) or "-",
        repeated_actions=count_repeated_actions(steps),
        failure_reason=task.get("failure_reason"),
        check_tail=verdict.output[-600:],
    )


def summarize(outcomes: list[TaskOutcome]) -> dict[str, Any]:
    solved = [o for o in outcomes if o.solved]
    walls = [o.wall_s for o in outcomes if o.wall_s is not None]
    by_kind: dict[str, list[int]] = {}
    for o in outcomes:
        by_kind.setdefault(o.kind, [0, 0])
        by_kind[o.kind][0] += o.solved
        by_kind[o.kind][1] += 1
    return {
        "tasks": len(outcomes),
        "solved": len(solved),
        "solve_rate": round(len(solved) / len(outcomes), 3) if outcomes else 0.0,
        "agent_said_succeeded": sum(o.agent_status == "succeeded" for o in outcomes),
        "repeated_actions": sum(o.repeated_actions for o in outcomes),
        "median_turns": statistics.median([o.turns for o in outcomes]) if outcomes else 0,
        "median_turns_solved": statistics.median([o.turns for o in solved]) if solved else None,
        "median_wall_s": round(statistics.median(walls), 1) if walls else None,
        "median_wall_s_solved": (
            round(statistics.median([o.wall_s for o in solved if o.wall_s is not None]), 1)
            if any(o.wall_s is not None for o in solved)
            else None
        ),
        "total_tokens": sum(o.tokens for o in outcomes),
        "by_kind": {k: f"{v[0]}/{v[1]}" for k, v in sorted(by_kind.items())},
    }


def outcomes_table(outcomes: list[TaskOutcome], title: str) -> Table:
    table = Table(
        "task", "kind", "seed", "solved", "agent", "turns", "tokens", "wall s", "mood", "repeats", title=title
    )
    for o in outcomes:
        table.add_row(
            o.id,
            o.kind,
            str(o.seed),
            "[green]yes[/]" if o.solved else "[red]no[/]",
            o.agent_status,
            str(o.turns),
            str(o.tokens),
            "-" if o.wall_s is None else f"{o.wall_s:.0f}",
            o.mood,
            str(o.repeated_actions),
        )
    return table


def write_run(path: Path, config: dict[str, Any], outcomes: list[TaskOutcome]) -> dict[str, Any]:
    run = {
        "suite": config["suite"],
        "model": config["model"],
        "model_file": config.get("model_file"),
        "modulation": config["modulation"],
        "seeds": config["seeds"],
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        "worker_processes": config.get("worker_processes"),
        "max_steps": config.get("max_steps"),
        # Where each seed ran (a fresh home each with the embedded stack): its database keeps the steps.
        "homes": config.get("homes", []),
        "summary": summarize(outcomes),
        "tasks": [asdict(o) for o in outcomes],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(run, indent=2) + "\n")
    return run


def compare_table(runs: list[tuple[str, dict[str, Any]]]) -> Table:
    """Runs side by side: solve rate and how they got there."""
    table = Table("", *(name for name, _ in runs), title="comparison")
    rows: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
        ("model", lambda r: r["model"]),
        ("modulation", lambda r: "on" if r["modulation"] else "off"),
        ("seeds", lambda r: ",".join(map(str, r["seeds"]))),
        ("solved", lambda r: f"{r['summary']['solved']}/{r['summary']['tasks']}"),
        ("solve rate", lambda r: f"{100 * r['summary']['solve_rate']:.0f} %"),
        ("agent said succeeded", lambda r: r["summary"]["agent_said_succeeded"]),
        ("repeated identical actions", lambda r: r["summary"]["repeated_actions"]),
        ("median turns", lambda r: r["summary"]["median_turns"]),
        ("median wall s (solved)", lambda r: r["summary"]["median_wall_s_solved"]),
        ("tokens", lambda r: r["summary"]["total_tokens"]),
        ("date", lambda r: r["date"]),
    ]
    for label, get in rows:
        table.add_row(label, *(str(get(run)) for _, run in runs))
    return table


def iter_seeds(seeds: int, first: int = 0) -> Iterator[int]:
    yield from range(first, first + seeds)
