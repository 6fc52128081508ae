"""What the emotion model is shown after a call, read from a task's steps alone (no database)."""

from __future__ import annotations

from elpis_worker.sensing import affect_history, earlier_test_runs, failing_states, sense
from elpis_worker.turns import Action, TurnSteps, diff_sha
from models import Step, StepKind
from models.records import ToolResultDetail


def turn(number: int, tool: str, args: dict, **detail: object) -> TurnSteps:
    call = Step(turn=number, kind=StepKind.tool_call, tool_name=tool, tool_args=args, content="")
    result = Step(turn=number, kind=StepKind.tool_result, tool_name=tool, content="", detail=detail)
    return TurnSteps(number, {StepKind.tool_call.value: call, StepKind.tool_result.value: result})


OPENING = Step(
    turn=0,
    kind=StepKind.observe,
    tool_name="run_tests",
    content="",
    detail={"ok": False, "tests_run": True, "tests_passed": False, "failures": 3},
)
EDIT = {"path": "a.py", "search": "x", "replace": "y"}


def test_the_run_before_a_call_is_the_last_that_still_describes_the_workspace() -> None:
    turns = [
        turn(1, "read_file", {"path": "a.py"}, ok=True),
        turn(2, "edit_file", EDIT, ok=True, tests_run=True, tests_passed=False, failures=1, diff_lines=2),
        # Made things worse and was undone: its run no longer describes the files.
        turn(
            3,
            "edit_file",
            EDIT,
            ok=False,
            tests_run=True,
            tests_passed=False,
            failures=5,
            reverted=True,
            diff_lines=2,
        ),
        turn(4, "edit_file", EDIT, ok=True, tests_run=True, tests_passed=True, failures=0, diff_lines=4),
    ]
    before_4 = earlier_test_runs(turns[3], turns, [OPENING])
    assert [d.failures for d in before_4] == [3, 1]  # the opening's, then turn 2's; turn 3's was undone
    assert [d.failures for d in earlier_test_runs(turns[0], turns, [OPENING])] == [3]
    assert earlier_test_runs(turns[0], turns, []) == []

    detail = ToolResultDetail(ok=True, tests_run=True, tests_passed=True, failures=0, diff_lines=4)
    obs = sense(turns[3], turns, Action("edit_file", EDIT), detail, before_4, budget_used=0.5)
    assert (obs.failures, obs.prev_failures) == (0, 1)
    assert obs.prev_diff_lines == 2  # turn 3's result: undone, so the diff as turn 2 left it
    assert obs.repeated_action  # the same edit as turns 2 and 3, within the window
    assert obs.budget_used == 0.5 and obs.memory_signal == 0.0


def test_failing_states_are_the_files_each_failing_run_saw_first() -> None:
    """The opening run saw the files as given (no diff) failing; then each turn's run that failed, once,
    with the first turn that saw it. A passing run, a run of an undone edit and a call with no run are no
    failing state."""
    failing = {"ok": True, "tests_run": True, "tests_passed": False}
    turns = [
        turn(1, "edit_file", EDIT, **failing, diff_sha="aaa"),
        turn(
            2, "edit_file", EDIT, ok=False, tests_run=True, tests_passed=False, reverted=True, diff_sha="aaa"
        ),
        turn(
            3, "edit_file", EDIT, ok=False, tests_run=True, tests_passed=False, reverted=True, diff_sha="bbb"
        ),
        turn(4, "read_file", {"path": "a.py"}, ok=True, diff_sha="ccc"),
        turn(5, "edit_file", EDIT, **failing, diff_sha="ddd"),
        turn(6, "run_tests", {}, **failing, diff_sha="aaa"),
        turn(7, "edit_file", EDIT, ok=True, tests_run=True, tests_passed=True, diff_sha="eee"),
    ]
    assert failing_states(turns, [OPENING]) == {diff_sha(""): 0, "aaa": 1, "ddd": 5}
    passed = Step(
        turn=0,
        kind=StepKind.observe,
        tool_name="run_tests",
        content="",
        detail={"ok": True, "tests_run": True, "tests_passed": True},
    )
    assert diff_sha("") not in failing_states(turns, [passed])
    assert diff_sha("") not in failing_states(turns, [])


def test_a_new_call_is_not_a_repeat_and_the_first_has_no_previous_run() -> None:
    turns = [turn(1, "list_dir", {"path": "."}, ok=True)]
    detail = ToolResultDetail(ok=True)
    obs = sense(turns[0], turns, Action("list_dir", {"path": "."}), detail, [], budget_used=0.1)
    assert not obs.repeated_action and obs.prev_failures is None and obs.prev_diff_lines == 0


def test_affect_history_reads_the_affect_after_each_finished_turn() -> None:
    after = {"valence": 0.25, "arousal": 0.5, "dominance": -0.125}
    emotion = Step(turn=1, kind=StepKind.emotion, content="", emotion={"before": after, "after": after})
    done = TurnSteps(1, {StepKind.emotion.value: emotion})
    unfinished = turn(2, "list_dir", {}, ok=True)
    history = affect_history([done, unfinished])
    assert len(history) == 1
    assert (history[0].valence, history[0].arousal, history[0].dominance) == (0.25, 0.5, -0.125)
