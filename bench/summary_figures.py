"""The figures of `make bench` (bench/bench_summary.py) from what a run persisted: pure functions over the
task and step dicts the REST API returns, so they are tested without a model or a server
(tests/unit/test_bench_summary.py).

A turn's wall time is the time between the last step of the turns before it (the observations, for the
first turn) and its own last step. It splits into:
- prompt evaluation: `detail.prompt_eval_ms` of its think and reflect steps (both paths record it: the lazy
  one times its own evaluation, the eager one reads llama.cpp's counters);
- decoding: the rest of those steps' `duration_ms` (sampling and grammar checks included);
- tools: `duration_ms` of its tool results and memory recall;
- overhead: what is left: queue-free framework time (persisting steps, the emotion update, building the
  prompt, bookkeeping).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from models.records import ReflectDetail, ThinkDetail

__all__ = [
    "Row",
    "TurnTime",
    "decode_rate",
    "first_step_latency",
    "generations",
    "median",
    "prompt_reuse",
    "ratio",
    "summary_rows",
    "task_walls",
    "tasks_per_hour",
    "turn_times",
]

GENERATION_KINDS = ("think", "reflect")
TOOL_KINDS = ("tool_result", "memory")


def _when(value: str | datetime) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def median(values: Iterable[float]) -> float | None:
    values = list(values)
    return statistics.median(values) if values else None


def ratio(value: float | None, baseline: float | None) -> float | None:
    if value is None or not baseline:
        return None
    return value / baseline


def _call_detail(step: dict[str, Any]) -> ThinkDetail | ReflectDetail:
    """A think or reflect step's detail (as the API returns it) read through its model."""
    model = ReflectDetail if step["kind"] == "reflect" else ThinkDetail
    return model.model_validate(step.get("detail") or {})


def generations(steps: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The steps that are one LLM call each, in order: every think the model wrote (not one the agent
    composed, `detail.composed`), and every reflect (or replan) that is not the reflection half of a
    one-call reply (`detail.merged`)."""
    calls = []
    for step in sorted(steps, key=lambda s: s["seq"]):
        if step["kind"] not in ("think", "reflect"):
            continue
        detail = _call_detail(step)
        if not (detail.composed if isinstance(detail, ThinkDetail) else detail.merged):
            calls.append(step)
    return calls


def prompt_reuse(steps: Sequence[dict[str, Any]]) -> list[tuple[int, int]]:
    """(prompt tokens evaluated, tokens new to the call) for each LLM call of one task after its first:
    new is how much the prompt grew since the task's previous call (at least 1), as tests/system/
    test_e2e.py counts it. Calls without an evaluated count (the eager path) are left out."""
    calls = generations(steps)
    pairs = []
    for before, after in zip(calls, calls[1:], strict=False):
        evaluated = _call_detail(after).evaluated_prompt_tokens
        if evaluated is None or after.get("prompt_tokens") is None or before.get("prompt_tokens") is None:
            continue
        pairs.append((int(evaluated), max(int(after["prompt_tokens"]) - int(before["prompt_tokens"]), 1)))
    return pairs


@dataclass(frozen=True)
class TurnTime:
    """One finished turn's wall time and its parts, in seconds; prompt_s is None where the steps do not
    say (then decode_s holds all model time)."""

    task_id: int
    turn: int
    wall_s: float
    prompt_s: float | None
    decode_s: float
    tools_s: float
    overhead_s: float
    steps: int
    generations: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def turn_times(task_id: int, steps: Sequence[dict[str, Any]]) -> list[TurnTime]:
    """Every turn that reached its emotion step (a finished turn), split as the module says."""
    ordered = sorted(steps, key=lambda s: s["seq"])
    by_turn: dict[int, list[dict[str, Any]]] = {}
    for step in ordered:
        by_turn.setdefault(step["turn"], []).append(step)
    observed = [s for s in ordered if s["turn"] == 0]
    if not observed:
        return []
    previous_end = _when(observed[-1]["created_at"])
    times = []
    for number in sorted(t for t in by_turn if t > 0):
        turn = by_turn[number]
        end = _when(turn[-1]["created_at"])
        if any(s["kind"] == "emotion" for s in turn):
            model = [s for s in turn if s["kind"] in GENERATION_KINDS]
            model_ms = sum(s.get("duration_ms") or 0.0 for s in model)
            evals = [_call_detail(s).prompt_eval_ms for s in model]
            known = [e for e in evals if e is not None]
            prompt_ms = sum(known) if known else None
            tools_ms = sum(s.get("duration_ms") or 0.0 for s in turn if s["kind"] in TOOL_KINDS)
            wall = (end - previous_end).total_seconds()
            times.append(
                TurnTime(
                    task_id=task_id,
                    turn=number,
                    wall_s=wall,
                    prompt_s=None if prompt_ms is None else prompt_ms / 1000,
                    decode_s=(model_ms - (prompt_ms or 0.0)) / 1000,
                    tools_s=tools_ms / 1000,
                    overhead_s=wall - (model_ms + tools_ms) / 1000,
                    steps=len(turn),
                    generations=len(generations(turn)),
                )
            )
        previous_end = end
    return times


def decode_rate(steps: Sequence[dict[str, Any]]) -> tuple[int, float]:
    """(completion tokens, decoding seconds) of one task's LLM calls that record their prompt evaluation
    time; the reflect half of a one-call reply counts with its think half, so the two add up to the call."""
    timed_turns = {
        s["turn"] for s in steps if s["kind"] == "think" and _call_detail(s).prompt_eval_ms is not None
    }
    tokens, seconds = 0, 0.0
    for step in steps:
        if step["kind"] not in GENERATION_KINDS:
            continue
        detail = _call_detail(step)
        prompt_ms = detail.prompt_eval_ms
        merged_half = step["kind"] == "reflect" and detail.merged and step["turn"] in timed_turns
        if prompt_ms is None and not merged_half:
            continue
        tokens += int(step.get("completion_tokens") or 0)
        seconds += ((step.get("duration_ms") or 0.0) - (prompt_ms or 0.0)) / 1000
    return tokens, seconds


def task_walls(tasks: Sequence[dict[str, Any]]) -> dict[int, float]:
    """Each finished task's wall time (claimed → finished), in seconds."""
    return {
        t["id"]: (_when(t["finished_at"]) - _when(t["started_at"])).total_seconds()
        for t in tasks
        if t.get("started_at") and t.get("finished_at")
    }


def tasks_per_hour(tasks: Sequence[dict[str, Any]]) -> float | None:
    """Finished tasks per hour from the first submission to the last finish."""
    done = [t for t in tasks if t.get("finished_at")]
    if not done:
        return None
    span = max(_when(t["finished_at"]) for t in done) - min(_when(t["created_at"]) for t in tasks)
    seconds = span.total_seconds()
    return len(done) * 3600 / seconds if seconds > 0 else None


def first_step_latency(
    tasks: Sequence[dict[str, Any]], steps: dict[int, Sequence[dict[str, Any]]], processes: int
) -> list[float]:
    """Submit → first persisted step, in seconds, for the tasks that found a worker idle: the first
    `processes` tasks to be claimed (the others waited in the queue behind them)."""
    claimed = sorted((t for t in tasks if t.get("started_at")), key=lambda t: _when(t["started_at"]))
    latencies = []
    for task in claimed[:processes]:
        own = sorted(steps.get(task["id"], []), key=lambda s: s["seq"])
        if own:
            latencies.append((_when(own[0]["created_at"]) - _when(task["created_at"])).total_seconds())
    return latencies


@dataclass(frozen=True)
class Row:
    """One line of the table: a figure, its baseline measured in the same run, and their ratio."""

    figure: str
    value: str
    baseline: str
    ratio: str

    def cells(self) -> tuple[str, str, str, str]:
        return (self.figure, self.value, self.baseline, self.ratio)


def _num(value: float | None, unit: str = "", digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}{unit}"


def _ratio(value: float | None, baseline: float | None) -> str:
    """Two decimals; a small ratio (overhead against a step) with two significant digits instead."""
    r = ratio(value, baseline)
    if r is None:
        return "–"
    return f"{r:.2g}×" if 0 < r < 0.1 else f"{r:.2f}×"


def summary_rows(f: dict[str, Any]) -> list[Row]:
    """The table's rows from the figures bench_summary computed (`None` where a run gave no value)."""
    return [
        Row(
            "constrained decode tok/s (lazy grammar), plain process",
            _num(f.get("constrained_tok_s")),
            f"free decoding {_num(f.get('free_tok_s'))}",
            _num(f.get("constrained_over_free"), "×", 2),
        ),
        Row(
            "decode tok/s inside a worker (1 process, whole tasks)",
            _num(f.get("worker_decode_tok_s")),
            f"plain llama-cpp-python {_num(f.get('free_tok_s'))}",
            _ratio(f.get("worker_decode_tok_s"), f.get("free_tok_s")),
        ),
        Row(
            "prompt tokens evaluated per LLM call",
            _num(f.get("evaluated_tokens"), digits=0),
            f"tokens new to those calls {_num(f.get('new_tokens'), digits=0)}",
            _ratio(f.get("evaluated_tokens"), f.get("new_tokens")),
        ),
        Row(
            "LLM generations per turn",
            _num(f.get("generations_per_turn"), digits=2),
            f"old path {_num(f.get('old_generations_per_turn'), digits=2)}",
            _ratio(f.get("generations_per_turn"), f.get("old_generations_per_turn")),
        ),
        Row(
            "framework overhead per step (no LLM or tool time)",
            _num(f.get("overhead_per_step_ms"), " ms", 0),
            f"wall time per step {_num(f.get('wall_per_step_ms'), ' ms', 0)}",
            _ratio(f.get("overhead_per_step_ms"), f.get("wall_per_step_ms")),
        ),
        Row(
            "submit → first step, warm idle worker",
            _num(f.get("first_step_s"), " s", 2),
            f"median turn {_num(f.get('turn_s'), ' s')}",
            _ratio(f.get("first_step_s"), f.get("turn_s")),
        ),
        Row(
            "median wall time per turn",
            _num(f.get("turn_s"), " s"),
            f"old path {_num(f.get('old_turn_s'), ' s')}",
            _ratio(f.get("turn_s"), f.get("old_turn_s")),
        ),
        Row(
            "prompt evaluation per turn, old path (the part fewer generations leave)",
            _num(f.get("old_prompt_turn_s"), " s"),
            f"old path mean turn {_num(f.get('old_timed_turn_s'), ' s')}",
            _ratio(f.get("old_prompt_turn_s"), f.get("old_timed_turn_s")),
        ),
        Row(
            "median wall time per turn that calls the model",
            _num(f.get("generating_turn_s"), " s"),
            f"old path {_num(f.get('old_generating_turn_s'), ' s')}",
            _ratio(f.get("generating_turn_s"), f.get("old_generating_turn_s")),
        ),
        Row(
            "median turn, 1 process taking the idle cores",
            _num(f.get("lone_turn_s"), " s"),
            f"1 process, 1 thread {_num(f.get('one_thread_turn_s'), ' s')}",
            _ratio(f.get("lone_turn_s"), f.get("one_thread_turn_s")),
        ),
        Row(
            "median wall time per solved task",
            _num(f.get("solved_task_s"), " s"),
            f"old path {_num(f.get('old_solved_task_s'), ' s')}",
            _ratio(f.get("solved_task_s"), f.get("old_solved_task_s")),
        ),
        Row(
            "tasks per hour, 2 worker processes",
            _num(f.get("tasks_per_hour_2")),
            f"1 worker process {_num(f.get('tasks_per_hour_1'))}",
            _ratio(f.get("tasks_per_hour_2"), f.get("tasks_per_hour_1")),
        ),
    ]
