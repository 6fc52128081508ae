"""A task's history as turns: the steps of each turn by kind, the action a think step chose, the plan
an emotion step left for the next turn, and what makes two tool calls the same call.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from elpis_worker.tools import TOOL_ARGS, TOOL_SCHEMAS
from models import Step, StepKind
from models.records import ReflectDetail, Strategy, TurnPlan


@dataclass
class Action:
    tool: str
    args: dict[str, Any]
    thought: str = ""
    error: str | None = None  # the model's reply was not a usable tool call


def loads_reply(text: str) -> Any:
    """A model's JSON reply. Control characters inside strings (a raw newline) are accepted: a model
    server's own schema-to-grammar converter may let them through (llama-cpp-python's does), and what
    they mean is plain."""
    return json.loads(text, strict=False)


def parse_action(text: str) -> Action:
    try:
        data = loads_reply(text)
    except json.JSONDecodeError as exc:
        return Action(
            "invalid", {}, error=f"reply is not JSON ({exc.msg}); it may have been cut by max_tokens"
        )
    if not isinstance(data, dict) or not isinstance(data.get("tool"), str):
        return Action("invalid", {}, error='reply has no "tool" field')
    args = data.get("args") if isinstance(data.get("args"), dict) else {}
    return Action(data["tool"], args, thought=str(data.get("thought", "")))


REPLAN = "replan"  # key of a turn's replanning reflect step (a reflect step with detail.replan)
MEMORY = StepKind.memory.value  # a turn's retrieval of long-term memories
# A turn's fresh look (an observe step after turn 0, recorded when the agent replans): the prompt starts
# over from it, leaving the earlier turns out.
FRESH_LOOK = StepKind.observe.value


@dataclass
class TurnSteps:
    number: int
    steps: dict[str, Step] = field(default_factory=dict)

    def get(self, kind: str) -> Step | None:
        return self.steps.get(kind)


def turn_key(step: Step) -> str:
    if step.kind == StepKind.reflect and step.detail and ReflectDetail.read(step.detail).replan:
        return REPLAN
    return step.kind.value


def group_turns(steps: list[Step]) -> list[TurnSteps]:
    turns: dict[int, TurnSteps] = {}
    for step in steps:
        turns.setdefault(step.turn, TurnSteps(step.turn)).steps[turn_key(step)] = step
    return [turns[n] for n in sorted(turns)]


def default_plan(strategy: str = "continue") -> TurnPlan:
    return TurnPlan(strategy=Strategy(strategy), tools=list(TOOL_SCHEMAS))


def stored_plan(data: dict[str, Any] | None, strategy: str = "continue") -> TurnPlan:
    """The plan a step stored (an emotion step's record, a replan's detail), else the default."""
    return TurnPlan.model_validate(data) if data else default_plan(strategy)


def call_key(tool: str, args: dict[str, Any]) -> tuple[str, str]:
    """What makes two calls the same attempt: the tool and its arguments with every run of whitespace
    as one space (seen in the eval: the same failing search sent again with one more trailing space
    each turn, slipping past an exact comparison)."""
    squeezed = {k: " ".join(v.split()) if isinstance(v, str) else v for k, v in args.items()}
    return tool, json.dumps(squeezed, sort_keys=True)


def banned_call(tool: str, args: dict[str, Any], banned: list[dict[str, Any]]) -> dict[str, Any] | None:
    key = call_key(tool, normalized_args(tool, args))
    return next((call for call in banned if call_key(call["tool"], call["args"]) == key), None)


def is_banned(action: Action, banned: list[dict[str, Any]]) -> bool:
    return banned_call(action.tool, action.args, banned) is not None


def diff_sha(diff: str) -> str:
    """Identifies a workspace state: two tool results with the same diff_sha left the same files."""
    return hashlib.sha1(diff.encode("utf-8", "replace")).hexdigest()[:16]


def normalized_args(tool: str, args: dict[str, Any]) -> dict[str, Any]:
    """Arguments with defaults filled in, so `list_dir {}` and `list_dir {"path": "."}` are the same call."""
    model = TOOL_ARGS.get(tool)
    if model is None:
        return args
    try:
        return model.model_validate(args).model_dump(exclude_none=True)
    except ValueError:
        return args


def finish_summary(
    files: list[str], why: str, tests_passed: bool | None, check: str | None, limit: int
) -> str:
    """The summary of a finish the agent writes itself (`generation.compose_finish`): the files changed,
    the reason the turn that changed them gave (its thought), the tests' last verdict and the check that
    passed (its first assert); at most `limit` characters, the reason shortened first."""
    changed = f"Changed {', '.join(files)}." if files else "Changed nothing."
    tests = {True: "The tests pass.", False: "The tests fail.", None: "No tests ran."}[tests_passed]
    lines = [line.strip() for line in (check or "").splitlines() if line.strip()]
    line = next((x for x in lines if x.startswith("assert")), lines[0] if lines else "")
    checked = f" My check passed: {line}" if line else ""
    reason = " ".join(why.split())
    if reason and reason[-1] not in ".!?":
        reason += "."
    fixed = len(changed) + len(" Why: ") + len(" ") + len(tests)
    if reason and limit - fixed - len(checked) < 40:
        checked = ""  # the reason matters more than the check's line
    room = limit - fixed - len(checked)
    if len(reason) > room:
        reason = reason[: max(0, room - 1)].rstrip() + "…"
    text = f"{changed} Why: {reason} {tests}{checked}" if reason else f"{changed} {tests}{checked}"
    return text[:limit]
