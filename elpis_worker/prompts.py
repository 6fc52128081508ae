"""What the model reads: the system prompt (identical for every task, so llama.cpp reuses its KV cache
across tasks), the line that asks for the next tool call, a tool result as the prompt shows it, and the
conversation built from a task's persisted steps, windowed to fit the context.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from configs.settings import Settings
from elpis_worker.tools import ASSERT_FAILED, TOOL_DESCRIPTIONS, TOOL_SCHEMAS
from elpis_worker.turns import FRESH_LOOK, MEMORY, REPLAN, TurnSteps, stored_plan
from models import Step, StepKind, Task
from models.records import OutcomeDetail, ReflectDetail, ThinkDetail, ToolResultDetail, TurnPlan

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
        "end. To add or change a file's module docstring, call write_file with just the docstring, in "
        "triple quotes. write_file also creates new files. edit_file replaces exact lines. The tests run "
        "after every change; when they pass, call finish. Make the change right for every input the task "
        "describes (empty input, other values), not only for the values in the test.\n"
        "Never change the tests unless the task asks for it. Do not repeat a call that failed: "
        "try something different.\n"
        f"Tools:\n{tools}\n"
        'Answer every turn with one JSON object {"thought": "...", "tool": "<tool>", "args": {...}}; '
        "the thought is one or two short sentences: the cause and the change that fixes it."
    )


# Identical for every task, so llama.cpp can reuse its KV cache for it across tasks too.
SYSTEM_PROMPT = _system_prompt()

# A worker process's warm-up call (model.warmup). It starts with the system prompt every task's prompt
# starts with, so the process's first task finds that prefix in the KV cache, as later tasks do.
WARMUP_MESSAGES = [
    {"role": "system", "content": SYSTEM_PROMPT},
    {"role": "user", "content": "Say OK."},
]


REPLAN_PROMPT = (
    "Replan before the next tool call: restate the goal, say what failed, and pick a different approach. "
    "Answer as JSON."
)


# Characters of the task's instruction, and of the change, shown on the review turn.
REVIEW_INSTRUCTION_CHARS = 600
REVIEW_DIFF_CHARS = 1500


def cut_text(text: str, limit: int) -> str:
    """`text` up to `limit` characters, with a marker where it was cut (so the model knows there is more)."""
    return text if len(text) <= limit else text[:limit] + "\n[... cut ...]"


# A `git diff`'s header lines that say nothing a reader of the change needs: which blobs, which modes.
_DIFF_NOISE = re.compile(r"^(?:diff --git |index [0-9a-f]+\.\.|(?:new|deleted) file mode |similarity index )")


def compact_diff(diff: str) -> str:
    """`diff` without git's header lines: each file is named by its `---`/`+++` lines, the hunks follow. On
    the review turn those lines were some 40 prompt tokens per file, evaluated on every review line."""
    return "\n".join(line for line in diff.splitlines() if not _DIFF_NOISE.match(line))


def review_prompt(
    instruction: str,
    diff: str,
    check: bool = False,
    probe: str = "",
    calls: Sequence[str] = (),
    edits: bool = True,
) -> str:
    """The review turn's line: the task once more beside the change made, and the two questions a fix
    that only satisfies the visible test fails (the eval's hidden checks test other inputs and the other
    parts of the task). It names no example inputs: told "empty input, a setting", the 1.5B model added
    `if fahrenheit == 'setting': return 1` to a correct conversion. With `check` (tools.check_on_review)
    the turn may not finish: it asks the model to try the change with asserts of its own, of `calls` where
    there are any (the tests' calls of the changed functions and variations of them, elpis_worker.probe):
    it works out what each must return from the task, the worker runs them. Shown the results instead,
    the 1.5B model copied them into its asserts (`capitalize_words('  hello   world ') == '  Hello
    World '` against "words separated by single spaces"). Without the check, `probe` shows the results
    (what the changed code gives for those calls). With the check, `edits` says whether the turn may also
    change files (a part of the task not done yet); the change is shown as `compact_diff` gives it."""
    task = (
        instruction
        if len(instruction) <= REVIEW_INSTRUCTION_CHARS
        else instruction[:REVIEW_INSTRUCTION_CHARS] + " [...]"
    )
    change = cut_text(compact_diff(diff).strip(), REVIEW_DIFF_CHARS) or "(no change to the files)"
    missing = " If a part of the task is missing, make that change instead." if edits else ""
    head = f"The tests pass. Before you finish, check the change against the task once more: {task}\n"
    head += f"The change so far:\n{change}\n"
    if probe:
        head += (
            "What the changed code gives now, for the tests' calls and variations of them (the tests check "
            f"only some of these; compare each with what the task asks):\n{probe.strip()}\n"
            "If one of them is not what the task asks, fix the code for it.\n"
        )
    if check and calls:
        listed = "\n".join(calls)
        return head + (
            "Try it: call python with one assert per line, one for each of these calls (the tests' own and "
            "variations of them), each comparing the call with what the task says it must return (work it "
            f"out from the task, not from the code):\n{listed}\nWhat the changed files define is already "
            "imported." + missing
        )
    if check:
        return head + (
            "Try it: call python with a few asserts, one per line, each comparing a call's result with what "
            "the task says it must be, for the results the task states and for inputs the tests do not use; "
            "what the changed files define is already imported." + missing
        )
    return head + (
        "Is every part of the task done, and does the code follow the general rule the task describes "
        "rather than special cases for particular values? If so, call finish; if a part is missing, make "
        "that change."
    )


# The line of a review turn that comes again because the first did not check (the first's line, with the
# task and the change, is the message before): repeated whole, it was some 250 tokens to evaluate again.
RECHECK_PROMPT = (
    "That was no check of the change. Call python now with a few asserts, one per line, each comparing a "
    "call's result with what the task above says it must be."
)


def check_failed_prompt(tool: str, detail: ToolResultDetail, tests_passing: bool | None) -> str | None:
    """The line after a `python` check that failed while the task's tests pass: the check itself may be
    the wrong part. Seen in the eval: a right capitalize_words checked with `assert
    capitalize_words('aBcDeF') == 'AbcDeF'`, a right Cart checked with `Cart().add(...).total()` (add
    returns None), and the turns that followed spent on rewriting the same code and repeating the
    check until the budget ran out."""
    if tool == "python" and detail.check_failed and tests_passing:
        return "The check failed while the tests pass: the code under check raised an error. Fix the code."
    if detail.check_crashed and tests_passing:
        return (
            "The tests pass, but your check still fails with this change: the code under check still "
            "raises an error for an input the check tried. Fix the code for that input."
        )
    if detail.check_failed and tests_passing:
        return (
            "The tests pass, but your check still fails with this change. If the code is wrong for an "
            "input the check tried, fix it; if every failed assert expected a wrong value, call finish."
        )
    if tool != "python" or detail.ok or not tests_passing:
        return None
    if detail.exit_code == ASSERT_FAILED:
        return (
            "The check failed while the tests pass. Take each failed assert in turn: if the code is wrong "
            "for its input, fix the code; call finish only if every failed assert expected a wrong value."
        )
    return (
        "The check failed while the tests pass. If the code is wrong for that input, fix it; if the "
        "check's own code is wrong, call finish."
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


@dataclass(frozen=True)
class Conversation:
    """A task's messages, rebuilt from its persisted steps only, so a resumed task sends the same prompt.
    The prefix stays stable from call to call (the system prompt, the opening message, earlier turns
    verbatim; the latest message ends with the affect line), so llama.cpp re-evaluates only what is new."""

    task: Task
    settings: Settings
    count_tokens: Callable[[str], int]

    def messages(
        self,
        observations: list[Step],
        turns: list[TurnSteps],
        upto: TurnSteps,
        *,
        opening_line: str = "",
        recalled: Step | None = None,
        repair_first: bool = False,
    ) -> list[dict[str, str]]:
        """The turns before `upto`, then whatever `upto` has persisted so far (its phases run in order,
        so that is exactly what precedes the call being made). Earlier turns are dropped from the front
        while the whole does not fit the context."""
        opening = self.opening(observations, recalled, opening_line, repair_first)
        earlier = [t for t in turns if t.number < upto.number]
        # A fresh look (recorded when the agent replans) says where things stand: the turns before it
        # are left out, so the replan is not built on a copy of the attempts that failed.
        looks = [t.number for t in [*earlier, upto] if t.get(FRESH_LOOK) is not None]
        if looks:
            earlier = [t for t in earlier if t.number >= looks[-1]]
        window = self.window(earlier)
        budget_tokens = self.settings.model.n_ctx - self.settings.generation.max_tokens - 64
        current = self.turn_messages(upto, stop_after_result=True)
        while True:
            messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": opening}]
            for t in window:
                messages.extend(self.turn_messages(t))
            messages.extend(current)
            size = sum(self.count_tokens(m["content"]) + 8 for m in messages)
            if size <= budget_tokens or not window:
                return messages
            window = window[1:]

    def opening(self, observations: list[Step], recalled: Step | None, line: str, repair_first: bool) -> str:
        """The first user message: the task, what the worker observed, the memories recalled at the
        start, the baseline affect line and what the first call should be."""
        task = self.task
        lines = [f"Task: {task.instruction}"]
        if task.test_command:
            lines.append(f"Test command (run_tests runs it): {task.test_command}")
        if task.protected:
            lines.append(f"Protected (no tool may change these): {', '.join(task.protected)}")
        lines.extend(step.content for step in observations)
        if recalled is not None and recalled.content:
            lines.append(recalled.content)
        if line:
            lines.append(line)
        if repair_first:
            lines.append("First tool call as JSON: make the change with write_file or edit_file.")
        else:
            lines.append("First tool call as JSON.")
        return "\n".join(lines)

    def window(self, turns: list[TurnSteps]) -> list[TurnSteps]:
        """The last `memory.stm_capacity` turns, cut in blocks of half the capacity so the prompt prefix
        stays the same for several turns in a row (llama.cpp then re-evaluates only the new suffix)."""
        capacity = self.settings.memory.stm_capacity
        excess = len(turns) - capacity
        if excess <= 0:
            return turns
        block = max(1, capacity // 2)
        drop = -(-excess // block) * block
        return turns[drop:]

    def reply_shown(self, think: Step) -> str:
        """A think step's reply as later prompts show it: the tool call alone unless
        generation.history_thoughts (an unusable reply verbatim, so the model sees what was wrong)."""
        if self.settings.generation.history_thoughts or think.tool_name in (None, "invalid"):
            return think.content or ""
        return json.dumps({"tool": think.tool_name, "args": think.tool_args or {}})

    def turn_messages(self, turn: TurnSteps, stop_after_result: bool = False) -> list[dict[str, str]]:
        out = []
        recalled, replan = turn.get(MEMORY), turn.get(REPLAN)
        if recalled is not None and recalled.content and turn.number > 1:
            out.append({"role": "user", "content": recalled.content})
        look = turn.get(FRESH_LOOK)
        if look is not None:
            out.append({"role": "user", "content": look.content})
        if replan is not None:
            plan = (ReflectDetail.read(replan.detail) or ReflectDetail()).plan or stored_plan(None)
            out.append({"role": "assistant", "content": replan.content})
            out.append({"role": "user", "content": next_prompt(plan)})
        think, result = turn.get(StepKind.think), turn.get(StepKind.tool_result)
        reflect, emotion = turn.get(StepKind.reflect), turn.get(StepKind.emotion)
        merged = think is not None and (ThinkDetail.read(think.detail) or ThinkDetail()).merged
        if think is not None:
            out.append({"role": "assistant", "content": self.reply_shown(think)})
        detail = (ToolResultDetail.read(result.detail) or ToolResultDetail(ok=False)) if result else None
        if merged:
            # One user message per turn: the result, then the affect line and what may come next.
            if result is not None and detail is not None:
                text = render_result(result.tool_name or "", detail, result.tool_result or "", False)
                if emotion is not None and not stop_after_result:
                    text += "\n" + emotion.content
                out.append({"role": "user", "content": text})
            return out
        if result is not None and detail is not None:
            text = render_result(result.tool_name or "", detail, result.tool_result or "")
            out.append({"role": "user", "content": text})
        if stop_after_result:
            return out
        if reflect is not None:
            out.append({"role": "assistant", "content": reflect.content})
        if emotion is not None:
            out.append({"role": "user", "content": emotion.content})
        return out
