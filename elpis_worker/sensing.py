"""What the emotion model is shown after a tool call (`emotion.Observation`): the call's outcome read
against the task's history, which the model itself never sees: the test run before it, the diff
before it, whether it repeats a call of the last few turns, the memory recalled this turn, and how much
of the budget is spent. Pure: steps in, records out.
"""

from __future__ import annotations

import json

from elpis_worker.emotion import AffectState, Observation
from elpis_worker.policy import REPEAT_WINDOW
from elpis_worker.turns import MEMORY, Action, TurnSteps, diff_sha
from models import Step, StepKind
from models.records import EmotionRecord, MemoryDetail, ObserveDetail, OutcomeDetail, ToolResultDetail


def tool_result(step: Step) -> ToolResultDetail:
    """A tool_result step's detail (every such step stores one)."""
    return ToolResultDetail.read(step.detail) or ToolResultDetail(ok=False)


def earlier_test_runs(
    turn: TurnSteps, turns: list[TurnSteps], observations: list[Step]
) -> list[OutcomeDetail]:
    """The test runs that describe the workspace before `turn`, oldest first: the opening's, then each
    earlier turn's. An undone edit's run no longer describes the workspace and is left out."""
    opening: list[OutcomeDetail] = [
        d for s in observations if (d := ObserveDetail.read(s.detail)) is not None and d.tests_run
    ]
    earlier = [tool_result(r) for t in turns if t.number < turn.number and (r := t.get(StepKind.tool_result))]
    return opening + [d for d in earlier if d.tests_run and not d.reverted]


def failing_states(turns: list[TurnSteps], observations: list[Step]) -> dict[str, int]:
    """The workspace states the task's tests were seen failing in, as the diff_sha of the workspace diff,
    each with the first turn that saw it: 0 for the opening run (a fresh clone: no diff), then each
    turn's test run (an undone edit's run described files that are gone, and is left out)."""
    states: dict[str, int] = {}
    if any((d := ObserveDetail.read(s.detail)) is not None and d.tests_passed is False for s in observations):
        states[diff_sha("")] = 0
    for turn in turns:
        result = turn.get(StepKind.tool_result)
        if result is None:
            continue
        detail = tool_result(result)
        if detail.tests_run and detail.tests_passed is False and not detail.reverted and detail.diff_sha:
            states.setdefault(detail.diff_sha, turn.number)
    return states


def affect_history(turns: list[TurnSteps]) -> list[AffectState]:
    """The affect after each turn that reached its emotion step, oldest first."""
    return [
        AffectState.from_dict(EmotionRecord.model_validate(step.emotion).after.model_dump())
        for t in turns
        if (step := t.get(StepKind.emotion)) is not None
    ]


def _exact_call(turn: TurnSteps) -> tuple[str, str] | None:
    call = turn.get(StepKind.tool_call)
    if call is None:
        return None
    return (call.tool_name or "", json.dumps(call.tool_args or {}, sort_keys=True))


def sense(
    turn: TurnSteps,
    turns: list[TurnSteps],
    action: Action,
    detail: ToolResultDetail,
    prev_tests: list[OutcomeDetail],
    budget_used: float,
) -> Observation:
    """What `turn`'s call (`action`, its result `detail`) did, for the emotion model; `prev_tests` are
    the test runs before the turn (`earlier_test_runs`)."""
    earlier = [r for t in turns if t.number < turn.number and (r := t.get(StepKind.tool_result))]
    recent = [_exact_call(t) for t in turns if turn.number - REPEAT_WINDOW <= t.number < turn.number]
    recalled = turn.get(MEMORY)
    return Observation(
        tool=action.tool,
        ok=detail.ok,
        error_kind=detail.error_kind,
        tests_run=detail.tests_run,
        tests_passed=detail.tests_passed,
        failures=detail.failures,
        prev_failures=prev_tests[-1].failures if prev_tests else None,
        repeated_action=(action.tool, json.dumps(action.args, sort_keys=True)) in recent,
        diff_lines=detail.diff_lines,
        prev_diff_lines=tool_result(earlier[-1]).diff_lines if earlier else 0,
        budget_used=budget_used,
        memory_signal=(MemoryDetail.read(recalled.detail) or MemoryDetail()).memory_signal
        if recalled is not None
        else 0.0,
    )
