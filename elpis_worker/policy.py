"""The tool policy: what the next turn may do, from the strategy the emotion model chose and what the
turns so far did. Replanning shuts a failing tool out; wrapping up and confidence narrow the tools;
calls that failed or changed nothing since the workspace last changed may not be repeated. It also
gates each call before it runs (`refusal`) and decides whether a finish stands (`finish_verdict`): the
model's word is not enough, finishing needs the task's tests to pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from elpis_worker.tools import TOOL_SCHEMAS, ToolResult, is_check
from elpis_worker.turns import (
    REPLAN,
    Action,
    TurnSteps,
    banned_call,
    call_key,
    default_plan,
    diff_sha,
    normalized_args,
)
from models import StepKind
from models.records import EDIT_TOOLS, ToolResultDetail, TurnPlan

# Turns back that a failed or useless call stays banned (while the workspace does not change).
REPEAT_WINDOW = 3
# Turns after a replanning step during which the spiral does not trigger another one.
REPLAN_COOLDOWN = 3
# The edit tools, in the order the grammar lists tools.
EDITS = tuple(t for t in TOOL_SCHEMAS if t in EDIT_TOOLS)


@dataclass(frozen=True)
class ToolPolicy:
    exclude_repeats: bool  # tools.exclude_repeats: ban exact repeats of useless calls
    has_tests: bool  # the task has a test command (wrapping up may run it)
    check_on_review: bool = False  # tools.check_on_review: the review turn tries the change first

    def plan_next(
        self,
        turns: list[TurnSteps],
        turn: TurnSteps,
        strategy: str,
        detail: ToolResultDetail,
        tests_passing: bool | None,
        review: bool = False,
        recheck: bool = False,
        unfinished: bool = False,
    ) -> TurnPlan:
        """Turn the strategy into what the next turn may do. Replanning takes a reflect step and shuts
        the failing tool (unless it is an edit tool) out of the next think's grammar, so the agent
        cannot repeat it; wrapping up (unless the tests fail) narrows the tools to running the tests
        and finishing; confidence with passing tests and a change made narrows them to finish, or, on
        the `review` turn (an edit has just made the tests pass for the first time), to finishing and
        the edit tools: the change is checked against the task before the agent is done. With
        `check_on_review` the review turn may not finish yet: it tries the change with `python`, and the
        turn after decides (a failed check opens the edit tools); the edit tools stay open on it only
        while a part of the task is plainly not done yet (`unfinished`: the task names a file no change
        has touched), and not on a review that comes again because the first one did not check
        (`recheck`)."""
        plan = default_plan(strategy)
        plan.banned = self.banned_calls(turns, turn) if self.exclude_repeats else []
        plan.review = review
        if strategy == "replan":
            recent = [t for t in turns if turn.number - REPLAN_COOLDOWN < t.number <= turn.number]
            if any(t.get(REPLAN) for t in recent):
                return plan
            plan.replan = True
            failing = self.failing_tool(turns, turn)
            # An edit tool stays: the failed edits themselves are banned call by call, and without an
            # edit tool the replanned turn cannot fix anything (the eval's replans lost a turn that way).
            if failing is not None and failing not in EDIT_TOOLS:
                plan.excluded = [failing]
                plan.tools = [t for t in plan.tools if t != failing]
        elif strategy == "wrap_up" and tests_passing is not False:
            # With the tests failing, running them again or finishing cannot help: the last turns stay
            # open for a fix (the prompt line says the budget is nearly spent).
            plan.tools = ["run_tests", "finish"] if self.has_tests else ["finish"]
        elif self.check_on_review and tests_passing and checked(turn, detail):
            # After a check with the tests passing, what is left is to finish, or to fix what a failed
            # check found: no more checks (the eval's failed checks of right code were repeated, and the
            # code rewritten unchanged, until the budget ran out).
            # An error raised inside the code under check leaves only the edit tools: offered finish, the
            # model finished with transpose([]) raising IndexError (the task: "an empty matrix gives []").
            plan.tools = ["finish"] if detail.ok else [*EDITS] if detail.check_failed else ["finish", *EDITS]
        elif tests_passing and detail.check_failed:
            # An edit left the tests passing but the agent's failed check still failing: fix the code
            # again, or finish where the check's expectation is the wrong part. Where the code under check
            # still raises an error, no expectation can be wrong: only the edits (matrix_transpose's
            # `transpose([])` raised IndexError before and after its edit, and the model finished).
            plan.tools = [*EDITS] if detail.check_crashed else ["finish", *EDITS]
        elif review and self.check_on_review:
            # The change is tried before the agent may finish: asserts of what the task asks, on inputs
            # the tests do not use (the eval's commonest wrong success passes the visible test only).
            # Offered the edits again, capitalize_words's second review turn tried to edit the protected
            # test, and the turn after finished with `text.title()` unchecked. Offered them on the first
            # review turn, in one run (2026-11-30, 15 tasks) the model rewrote the fixed code unchanged
            # three times, tried to edit the protected test once and once wrote the bug back (apply_discount
            # read "a 20 % discount makes the price higher" as the rule): no edit there helped.
            plan.tools = ["python", *EDITS] if unfinished and not recheck else ["python"]
        elif strategy == "finish" and tests_passing and detail.diff_lines and detail.ok:
            # Not after a failed call: a check that failed, or an edit that was refused, asks for a fix.
            plan.tools = ["finish", *EDITS] if review else ["finish"]
        return plan

    def refusal(self, action: Action, plan: TurnPlan) -> ToolResult | None:
        """The result of a call this turn may not make, without running it: a reply that is not a valid
        tool call, or an exact repeat of a call the plan bans. None when the call may run."""
        if action.error is not None:
            return ToolResult(
                ok=False,
                output=f"your reply was not a valid tool call: {action.error}",
                error_kind="bad_args",
            )
        call = banned_call(action.tool, action.args, plan.banned)
        if call is not None:
            return ToolResult(
                ok=False,
                output=f"refused: the same {action.tool} call was made in turn {call.get('turn')} and "
                "failed or changed nothing, and nothing has changed since. Do something different.",
                error_kind="repeated",
            )
        return None

    def gates_finish(self, action: Action) -> bool:
        """Whether this call is a finish that must first be checked by the task's tests."""
        return action.tool == "finish" and self.has_tests

    @staticmethod
    def finish_verdict(check: ToolResult, done: ToolResult) -> ToolResult:
        """A gated finish, given the task's test run made for it (`check`) and the finish tool's own
        result (`done`, only used when the tests pass): refused while the tests fail."""
        if not check.tests_passed:
            return ToolResult(
                ok=False,
                output="finish refused: the task's tests still fail.\n" + check.output,
                exit_code=check.exit_code,
                error_kind="tests_failing",
                tests_run=True,
                tests_passed=False,
                failures=check.failures,
            )
        done.tests_run, done.tests_passed, done.failures = True, True, 0
        done.output = "finished; the task's tests pass"
        return done

    def banned_calls(self, turns: list[TurnSteps], upto: TurnSteps) -> list[dict[str, Any]]:
        """Calls of the last REPEAT_WINDOW turns that failed or changed nothing, and edits that failed, made
        since the workspace last changed: repeating one cannot give a different result, so the next think
        may not."""
        banned: list[dict[str, Any]] = []
        previous_sha = diff_sha("")
        for t in turns:
            result, call = t.get(StepKind.tool_result), t.get(StepKind.tool_call)
            if t.number > upto.number or result is None or call is None:
                continue
            detail = ToolResultDetail.read(result.detail) or ToolResultDetail()
            # A row older than diff_sha stored none: count it as no change.
            sha = detail.diff_sha or previous_sha
            changed, previous_sha = sha != previous_sha, sha
            if changed:
                banned = []
                continue
            if call.tool_name not in TOOL_SCHEMAS:
                continue
            # A failed edit stays banned for as long as the files stay as they are: made again, it fails
            # again (word_count_spaces wrote the same unchanged count_words in turns 1, 2 and 7).
            lasting = call.tool_name in EDIT_TOOLS and not detail.ok
            if upto.number - t.number >= REPEAT_WINDOW and not lasting:
                continue
            args = normalized_args(call.tool_name, call.tool_args or {})
            same = [b for b in banned if call_key(b["tool"], b["args"]) == call_key(call.tool_name, args)]
            if same:
                same[0]["repeats"] = same[0].get("repeats", 1) + 1
            else:
                banned.append({"tool": call.tool_name, "args": args, "turn": t.number})
        return banned

    def failing_tool(self, turns: list[TurnSteps], turn: TurnSteps) -> str | None:
        """The tool that kept failing lately (most failures in the recent window, latest on a tie)."""
        window = [t for t in turns if turn.number - REPLAN_COOLDOWN < t.number <= turn.number]
        failures: dict[str, int] = {}
        for t in window:
            result = t.get(StepKind.tool_result)
            if result is None or result.tool_name not in TOOL_SCHEMAS:
                continue
            detail = ToolResultDetail.read(result.detail)
            if detail is None or not detail.ok:
                failures[result.tool_name] = failures.get(result.tool_name, 0) + 1
        if not failures:
            return None
        best = max(failures.values())
        latest = [r.tool_name for t in reversed(window) if (r := t.get(StepKind.tool_result)) is not None]
        return next(name for name in latest if failures.get(name) == best)


def checked(turn: TurnSteps, detail: ToolResultDetail) -> bool:
    """Whether `turn` tried the change with `python`: code that asserts something, or that failed. Code
    that ran without an error and asserts nothing (a function redefined, a value printed) is no check,
    so it neither ends the review nor opens finish (tools.is_check)."""
    call = turn.get(StepKind.tool_call)
    if call is None or call.tool_name != "python":
        return False
    return not detail.ok or is_check(str((call.tool_args or {}).get("code", "")))
