"""The tool policy on its own: what the next turn may do, from the strategy and the turns so far."""

from __future__ import annotations

import json

from elpis_worker.policy import ToolPolicy
from elpis_worker.tools import TOOL_SCHEMAS, ToolResult
from elpis_worker.turns import TurnSteps, diff_sha, parse_action
from models import Step, StepKind
from models.records import ToolResultDetail

UNCHANGED = diff_sha("")


def turn(number: int, tool: str, args: dict, ok: bool, sha: str = UNCHANGED) -> TurnSteps:
    call = Step(turn=number, kind=StepKind.tool_call, tool_name=tool, tool_args=args, content="")
    result = Step(
        turn=number,
        kind=StepKind.tool_result,
        tool_name=tool,
        content="",
        detail={"ok": ok, "diff_sha": sha},
    )
    return TurnSteps(number, {StepKind.tool_call.value: call, StepKind.tool_result.value: result})


POLICY = ToolPolicy(exclude_repeats=True, has_tests=True)
NONE = ToolResultDetail()
CHANGED, UNCHANGED_DIFF = ToolResultDetail(diff_lines=2), ToolResultDetail(diff_lines=0)


def test_a_replan_shuts_out_a_failing_tool_but_never_an_edit_tool() -> None:
    runs = [turn(n, "run_tests", {}, ok=False) for n in (1, 2, 3)]
    plan = POLICY.plan_next(runs, runs[-1], "replan", NONE, tests_passing=False)
    assert plan.replan and plan.excluded == ["run_tests"] and "run_tests" not in plan.tools

    edit = {"path": "a.py", "search": "x", "replace": "y"}
    edits = [turn(n, "edit_file", edit, ok=False) for n in (1, 2, 3)]
    plan = POLICY.plan_next(edits, edits[-1], "replan", NONE, tests_passing=False)
    assert plan.replan and plan.excluded == [] and "edit_file" in plan.tools
    # The failed edit itself may not be sent again, once, with how often it was repeated.
    assert [(b["tool"], b["repeats"]) for b in plan.banned] == [("edit_file", 3)]


def test_wrap_up_narrows_only_while_the_tests_do_not_fail() -> None:
    turns = [turn(1, "read_file", {"path": "a.py"}, ok=True)]
    assert POLICY.plan_next(turns, turns[0], "wrap_up", NONE, tests_passing=True).tools == [
        "run_tests",
        "finish",
    ]
    assert POLICY.plan_next(turns, turns[0], "wrap_up", NONE, tests_passing=False).tools == list(TOOL_SCHEMAS)
    untested = ToolPolicy(exclude_repeats=True, has_tests=False)
    assert untested.plan_next(turns, turns[0], "wrap_up", NONE, tests_passing=None).tools == ["finish"]


def test_finish_only_with_passing_tests_and_a_change() -> None:
    turns = [turn(1, "write_file", {"path": "a.py", "content": "x = 1\n"}, ok=True, sha="abc")]
    assert POLICY.plan_next(turns, turns[0], "finish", CHANGED, True).tools == ["finish"]
    assert POLICY.plan_next(turns, turns[0], "finish", UNCHANGED_DIFF, True).tools == list(TOOL_SCHEMAS)
    # The review turn (the tests just passed for the first time) may still change files.
    review = POLICY.plan_next(turns, turns[0], "finish", CHANGED, True, review=True)
    assert review.review and review.tools == ["finish", "write_file", "edit_file"]
    assert not POLICY.plan_next(turns, turns[0], "continue", CHANGED, True).review


def test_the_review_turn_tries_the_change_before_it_may_finish() -> None:
    """With check_on_review, the review turn offers python, not finish (and the edit tools only while the
    task names a file no change has touched); after a check that held the next turn narrows to finish,
    after one that failed to finish or a fix, whatever the strategy: no more checks."""
    checking = ToolPolicy(exclude_repeats=True, has_tests=True, check_on_review=True)
    turns = [turn(1, "write_file", {"path": "a.py", "content": "x = 1\n"}, ok=True, sha="abc")]
    review = checking.plan_next(turns, turns[0], "finish", CHANGED, True, review=True)
    assert review.review and review.tools == ["python"]
    unfinished = checking.plan_next(turns, turns[0], "finish", CHANGED, True, review=True, unfinished=True)
    assert unfinished.review and unfinished.tools == ["python", "write_file", "edit_file"]
    # Whatever the strategy, except a replan (which has its own turn) or wrapping up.
    assert checking.plan_next(turns, turns[0], "continue", CHANGED, True, review=True).tools == review.tools
    assert checking.plan_next(turns, turns[0], "wrap_up", CHANGED, True, review=True).tools == [
        "run_tests",
        "finish",
    ]
    # A python call that ran and asserts nothing is no check: it does not narrow the tools to finish, and
    # the review it dodged (the agent's _review_dodged) comes again.
    redefine = {"code": "def f(x):\n    return x\nprint(f(2))"}
    printed = [*turns, turn(2, "python", redefine, ok=True, sha="abc")]
    assert checking.plan_next(printed, printed[1], "continue", CHANGED, True).tools == list(TOOL_SCHEMAS)
    assert checking.plan_next(printed, printed[1], "finish", CHANGED, True, review=True).tools == review.tools
    # The review that comes again because the first did not check offers the check alone.
    again = checking.plan_next(
        printed, printed[1], "continue", CHANGED, True, review=True, recheck=True, unfinished=True
    )
    assert again.review and again.tools == ["python"]
    turns.append(turn(2, "python", {"code": "assert f(2) == 4"}, ok=True, sha="abc"))
    assert checking.plan_next(turns, turns[1], "finish", CHANGED, True).tools == ["finish"]
    failed = ToolResultDetail(ok=False, error_kind="nonzero_exit", diff_lines=2)
    assert checking.plan_next(turns, turns[1], "continue", CHANGED, True).tools == ["finish"]
    for strategy in ("finish", "continue"):
        assert checking.plan_next(turns, turns[1], strategy, failed, True).tools == [
            "finish",
            "write_file",
            "edit_file",
        ]
    # A check whose error came from the code under check leaves the edit tools only.
    raised = ToolResultDetail(ok=False, error_kind="nonzero_exit", diff_lines=2, check_failed=True)
    assert checking.plan_next(turns, turns[1], "finish", raised, True).tools == ["write_file", "edit_file"]
    # An edit after which the tests pass and the failed check, run again, still fails: fix or finish.
    edited = [*turns, turn(3, "edit_file", {"path": "a.py", "search": "x", "replace": "y"}, ok=True, sha="d")]
    still = ToolResultDetail(diff_lines=2, tests_run=True, tests_passed=True, check_failed=True)
    assert checking.plan_next(edited, edited[2], "finish", still, True).tools == [
        "finish",
        "write_file",
        "edit_file",
    ]
    # ... still failing with an error raised in the code under check: no expectation is wrong, so fix.
    crashed = still.model_copy(update={"check_crashed": True})
    assert checking.plan_next(edited, edited[2], "finish", crashed, True).tools == ["write_file", "edit_file"]
    # Not after a failed call otherwise: a refused edit with the tests passing leaves every tool open.
    refused = [
        *turns,
        turn(3, "edit_file", {"path": "a.py", "search": "x", "replace": "y"}, ok=False, sha="abc"),
    ]
    assert checking.plan_next(refused, refused[2], "finish", failed, True).tools == list(TOOL_SCHEMAS)


def test_a_failed_edit_stays_banned_while_the_files_stay_the_same() -> None:
    """Other calls that changed nothing are banned for REPEAT_WINDOW turns; a failed edit for as long as
    the workspace does not change."""
    write = {"path": "a.py", "content": "x = 1\n"}
    turns = [turn(1, "write_file", write, ok=False)]
    turns += [turn(n, "read_file", {"path": f"{n}.py"}, ok=True) for n in (2, 3, 4, 5)]
    banned = POLICY.banned_calls(turns, turns[-1])
    assert [(b["tool"], b["turn"]) for b in banned] == [
        ("write_file", 1),
        ("read_file", 3),
        ("read_file", 4),
        ("read_file", 5),
    ]
    turns.append(
        turn(6, "edit_file", {"path": "a.py", "search": "x", "replace": "y"}, ok=True, sha="changed")
    )
    assert POLICY.banned_calls(turns, turns[-1]) == []


def test_a_change_to_the_workspace_lifts_the_bans() -> None:
    read = {"path": "a.py"}
    turns = [turn(1, "read_file", read, ok=True), turn(2, "read_file", read, ok=True)]
    assert [b["tool"] for b in POLICY.banned_calls(turns, turns[-1])] == ["read_file"]
    turns.append(turn(3, "write_file", {"path": "a.py", "content": "x = 2\n"}, ok=True, sha="changed"))
    assert POLICY.banned_calls(turns, turns[-1]) == []
    off = ToolPolicy(exclude_repeats=False, has_tests=True)
    assert off.plan_next(turns[:2], turns[1], "continue", {}, None).banned == []


def test_a_reply_with_a_raw_newline_in_a_string_is_a_tool_call() -> None:
    """llama-cpp-python's server lets a string hold a raw newline under its own schema grammar (seen in
    CI through the openai backend); JSON forbids it, but the meaning is plain, so the call is taken."""
    action = parse_action('{"thought": "two\nlines", "tool": "run_tests", "args": {}}')
    assert action.error is None and action.tool == "run_tests" and action.thought == "two\nlines"
    assert parse_action('{"thought": "cut').error is not None


def test_the_gate_refuses_an_invalid_reply_and_a_banned_repeat_and_lets_others_run() -> None:
    edit = {"path": "a.py", "search": "x", "replace": "y"}
    failed = [turn(1, "edit_file", edit, ok=False)]
    plan = POLICY.plan_next(failed, failed[-1], "continue", NONE, tests_passing=False)

    invalid = POLICY.refusal(parse_action("not json"), plan)
    assert invalid is not None and not invalid.ok and invalid.error_kind == "bad_args"
    repeat = POLICY.refusal(parse_action(f'{{"tool": "edit_file", "args": {json.dumps(edit)}}}'), plan)
    assert repeat is not None and repeat.error_kind == "repeated" and "turn 1" in repeat.output
    other = {**edit, "replace": "z"}
    assert POLICY.refusal(parse_action(f'{{"tool": "edit_file", "args": {json.dumps(other)}}}'), plan) is None


def test_a_finish_stands_only_when_the_task_tests_pass() -> None:
    finish = parse_action('{"tool": "finish", "args": {"summary": "done"}}')
    assert POLICY.gates_finish(finish)
    assert not ToolPolicy(exclude_repeats=True, has_tests=False).gates_finish(finish)
    assert not POLICY.gates_finish(parse_action('{"tool": "run_tests", "args": {}}'))

    failing = ToolResult(
        ok=False, output="1 failed", exit_code=1, tests_run=True, tests_passed=False, failures=1
    )
    refused = POLICY.finish_verdict(failing, ToolResult(ok=True, output="", finished=True))
    assert not refused.ok and not refused.finished and refused.error_kind == "tests_failing"
    assert refused.output.startswith("finish refused") and "1 failed" in refused.output

    passing = ToolResult(ok=True, output="1 passed", exit_code=0, tests_run=True, tests_passed=True)
    done = POLICY.finish_verdict(passing, ToolResult(ok=True, output="", finished=True, summary="done"))
    assert done.ok and done.finished and done.tests_passed and done.failures == 0
