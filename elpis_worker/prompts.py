"""What the model reads: the system prompt (identical for every task, so llama.cpp reuses its KV cache
across tasks), the line that asks for the next tool call, and a tool result as the prompt shows it.
"""

from __future__ import annotations

import json

from elpis_worker.tools import TOOL_DESCRIPTIONS, TOOL_SCHEMAS
from models.records import OutcomeDetail, TurnPlan

# Characters of a tool's output placed in the prompt (the step keeps the whole, already capped, output).
PROMPT_OUTPUT_CHARS = 1500


def _system_prompt() -> str:
    tools = "\n".join(f"- {desc}" for desc in TOOL_DESCRIPTIONS.values())
    return (
        "You are Elpis, a careful coding agent working inside a git repository.\n"
        "Before your first step you are shown the repository map, the test output and the source of the "
        "files involved. Read them, find the cause, and fix it in the source code. To fix or add a "
        "function, call write_file with the file's path and just that complete function (or class): it "
        "replaces the definition of that name and keeps the rest of the file; a new name is added at the "
        "end. write_file also creates new files. edit_file replaces exact lines. The tests run after "
        "every change; when they pass, call finish. Make the change right for every input the task "
        "describes (empty input, other values), not only for the values in the test.\n"
        "Never change the tests unless the task asks for it. Do not repeat a call that failed: "
        "try something different.\n"
        f"Tools:\n{tools}\n"
        'Answer every turn with one JSON object {"thought": "...", "tool": "<tool>", "args": {...}}; '
        "the thought is one or two short sentences: the cause and the change that fixes it."
    )


# Identical for every task, so llama.cpp can reuse its KV cache for it across tasks too.
SYSTEM_PROMPT = _system_prompt()


REPLAN_PROMPT = (
    "Replan before the next tool call: restate the goal, say what failed, and pick a different approach. "
    "Answer as JSON."
)


# Characters of the task's instruction repeated on the review turn.
REVIEW_INSTRUCTION_CHARS = 600


def review_prompt(instruction: str) -> str:
    """The review turn's line: the task once more, and the question a fix for the visible test's values
    only fails (the hidden checks of the eval test other inputs)."""
    task = (
        instruction
        if len(instruction) <= REVIEW_INSTRUCTION_CHARS
        else instruction[:REVIEW_INSTRUCTION_CHARS] + " [...]"
    )
    return (
        f"Before you finish, check the change against the task once more: {task}\n"
        "Does the code do that for every input the task names (empty input, other values, spacing, a "
        "setting instead of a fixed value), not only for the values in the test? If it does, call "
        "finish; if not, fix it."
    )


def next_prompt(plan: TurnPlan) -> str:
    lines = []
    banned = plan.banned
    if banned:
        calls = "; ".join(f"{b['tool']} {json.dumps(b['args'])[:80]}" for b in banned)
        lines.append(f"Not allowed now (failed or changed nothing, and nothing changed since): {calls}.")
    if plan.tools != list(TOOL_SCHEMAS):
        lines.append(f"Next tool call as JSON. Allowed now: {', '.join(plan.tools)}.")
    else:
        lines.append("Next tool call as JSON.")
    return "\n".join(lines)


def render_result(tool: str, detail: OutcomeDetail, output: str, ask_reflection: bool = True) -> str:
    if len(output) > PROMPT_OUTPUT_CHARS:
        half = PROMPT_OUTPUT_CHARS // 2
        output = f"{output[:half]}\n[... cut ...]\n{output[-half:]}"
    status = "ok" if detail.ok else f"error: {detail.error_kind or 'failed'}"
    code = getattr(detail, "exit_code", None)
    head = f"Result of {tool} ({status}{'' if code is None else f', exit {code}'}):"
    tail = "\nReflect on this result as JSON." if ask_reflection else ""
    return f"{head}\n{output}{tail}"
