"""The figures of `make bench` (bench/summary_figures.py) from hand-made tasks and steps: no model, no
server, no timing."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import summary_figures as sf  # noqa: E402

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


def step(seq: int, turn: int, kind: str, when: float, **fields: Any) -> dict[str, Any]:
    return {"seq": seq, "turn": turn, "kind": kind, "created_at": at(when), **fields}


def think(
    seq: int, turn: int, when: float, ms: float, tokens: tuple[int, int], evaluated: tuple[int, float]
) -> dict[str, Any]:
    """A one-call reply's think half: (prompt, completion) tokens, (evaluated tokens, their ms)."""
    detail = {"merged": True, "evaluated_prompt_tokens": evaluated[0], "prompt_eval_ms": evaluated[1]}
    return step(
        seq,
        turn,
        "think",
        when,
        duration_ms=ms,
        prompt_tokens=tokens[0],
        completion_tokens=tokens[1],
        detail=detail,
    )


def one_call_task() -> list[dict[str, Any]]:
    """Observations, then two one-call turns: turn 1 think alone, turn 2 a reply split into reflect and
    think halves (3 s in all, 1 s of it prompt evaluation)."""
    return [
        step(0, 0, "observe", 1.0, duration_ms=500.0),
        step(1, 0, "observe", 2.0, duration_ms=400.0),
        step(2, 1, "memory", 2.1, duration_ms=50.0),
        think(3, 1, 12.0, 9_000.0, tokens=(1000, 40), evaluated=(1000, 6_000.0)),
        step(4, 1, "tool_call", 12.1),
        step(5, 1, "tool_result", 14.0, duration_ms=1_800.0),
        step(6, 1, "emotion", 14.2),
        step(
            7,
            2,
            "reflect",
            17.0,
            duration_ms=1_000.0,
            completion_tokens=10,
            detail={"merged": True, "completion": "{}"},
        ),
        think(8, 2, 17.1, 2_000.0, tokens=(1300, 20), evaluated=(330, 1_000.0)),
        step(9, 2, "tool_call", 17.2),
        step(10, 2, "tool_result", 18.0, duration_ms=700.0),
        step(11, 2, "emotion", 18.2),
    ]


def test_a_one_call_turn_is_one_generation_and_the_old_turn_two():
    steps = one_call_task()
    assert [s["seq"] for s in sf.generations(steps)] == [3, 8]
    old = [
        step(1, 1, "think", 5.0, prompt_tokens=900, completion_tokens=30),
        step(2, 1, "reflect", 8.0, prompt_tokens=1100, completion_tokens=30),
    ]
    assert len(sf.generations(old)) == 2


def test_a_finish_the_agent_composed_is_no_generation_and_no_call_to_compare():
    steps = one_call_task()
    composed = {"merged": True, "composed": True, "evaluated_prompt_tokens": 0, "prompt_eval_ms": 0.0}
    steps += [
        step(12, 3, "reflect", 18.3, completion_tokens=0, detail={"merged": True, "completion": "{}"}),
        step(13, 3, "think", 18.3, duration_ms=0.0, prompt_tokens=0, completion_tokens=0, detail=composed),
        step(14, 3, "tool_call", 18.4),
        step(15, 3, "tool_result", 19.0, duration_ms=500.0),
        step(16, 3, "emotion", 19.1),
    ]
    assert [s["seq"] for s in sf.generations(steps)] == [3, 8]
    assert sf.prompt_reuse(steps) == [(330, 300)]
    assert sf.turn_times(7, steps)[-1].generations == 0


def test_prompt_reuse_compares_each_call_with_the_prompt_growth_since_the_previous():
    assert sf.prompt_reuse(one_call_task()) == [(330, 300)]


def test_a_turn_splits_into_prompt_decode_tools_and_overhead():
    first, second = sf.turn_times(7, one_call_task())
    assert (first.task_id, first.turn, first.steps, first.generations) == (7, 1, 5, 1)
    assert first.wall_s == pytest.approx(12.2)  # from the last observation to its emotion step
    assert first.prompt_s == pytest.approx(6.0)
    assert first.decode_s == pytest.approx(3.0)
    assert first.tools_s == pytest.approx(1.85)  # tool result and memory recall
    assert first.overhead_s == pytest.approx(12.2 - 9.0 - 1.85)
    assert second.wall_s == pytest.approx(4.0)
    assert (second.prompt_s, second.decode_s) == (pytest.approx(1.0), pytest.approx(2.0))
    assert second.generations == 1


def test_an_unfinished_turn_is_left_out_and_unrecorded_prompt_time_stays_unknown():
    steps = [
        step(0, 0, "observe", 1.0),
        step(1, 1, "think", 4.0, duration_ms=2_500.0, prompt_tokens=800, completion_tokens=30),
        step(2, 1, "emotion", 5.0),
        step(3, 2, "think", 9.0, duration_ms=3_000.0),
    ]
    (turn,) = sf.turn_times(1, steps)
    assert turn.prompt_s is None and turn.decode_s == pytest.approx(2.5)


def test_decode_rate_counts_both_halves_of_a_one_call_reply_once():
    tokens, seconds = sf.decode_rate(one_call_task())
    assert tokens == 40 + 10 + 20
    assert seconds == pytest.approx(3.0 + 2.0)  # (9 - 6) + (1 + 2 - 1)


def test_throughput_and_first_step_latency():
    tasks = [
        {"id": 1, "created_at": at(0), "started_at": at(1), "finished_at": at(60)},
        {"id": 2, "created_at": at(0), "started_at": at(61), "finished_at": at(120)},
    ]
    steps = {1: [step(0, 0, "observe", 1.5)], 2: [step(0, 0, "observe", 61.5)]}
    assert sf.tasks_per_hour(tasks) == pytest.approx(60.0)
    assert sf.task_walls(tasks) == {1: 59.0, 2: 59.0}
    # Only the task that found the one worker idle counts: the second waited behind it.
    assert sf.first_step_latency(tasks, steps, processes=1) == [1.5]
    assert sf.first_step_latency(tasks, steps, processes=2) == [1.5, 61.5]


def test_every_row_is_a_ratio_of_its_baseline_and_missing_figures_show_a_dash():
    rows = sf.summary_rows(
        {
            "constrained_tok_s": 9.5,
            "free_tok_s": 10.0,
            "constrained_over_free": 0.93,
            "worker_decode_tok_s": 8.0,
            "turn_s": 20.0,
            "old_turn_s": 50.0,
            "tasks_per_hour_2": 60.0,
            "tasks_per_hour_1": 40.0,
            "lone_turn_s": 12.0,
            "one_thread_turn_s": 18.0,
            "old_prompt_turn_s": 12.5,
            "old_timed_turn_s": 25.0,
        }
    )
    by_figure = {row.figure: row for row in rows}
    assert len(rows) == 12
    assert by_figure["constrained decode tok/s (lazy grammar), plain process"].ratio == "0.93×"
    assert by_figure["decode tok/s inside a worker (1 process, whole tasks)"].ratio == "0.80×"
    assert by_figure["median wall time per turn"].cells() == (
        "median wall time per turn",
        "20.0 s",
        "old path 50.0 s",
        "0.40×",
    )
    assert by_figure["tasks per hour, 2 worker processes"].ratio == "1.50×"
    assert by_figure["median turn, 1 process taking the idle cores"].cells()[1:] == (
        "12.0 s",
        "1 process, 1 thread 18.0 s",
        "0.67×",
    )
    assert by_figure["median wall time per turn that calls the model"].ratio == "–"
    floor = by_figure["prompt evaluation per turn, old path (the part fewer generations leave)"]
    assert floor.cells()[1:] == ("12.5 s", "old path mean turn 25.0 s", "0.50×")
    assert by_figure["median wall time per solved task"].value == "–"
    assert by_figure["median wall time per solved task"].ratio == "–"
    assert sf.ratio(1.0, 0.0) is None and sf.ratio(None, 2.0) is None
    overhead = sf.summary_rows({"overhead_per_step_ms": 32.0, "wall_per_step_ms": 11_491.0})[4]
    assert overhead.ratio == "0.0028×"  # not rounded away to 0.00×
