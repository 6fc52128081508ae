"""The agent loop: think -> tool call -> tool result -> reflect -> emotion update, one `step` row each.

The loop holds no state that is not also in Postgres: the conversation, the affect state and the
workspace are all rebuilt from the persisted steps (and the task's last workspace diff), so a task
whose worker died is resumed by the next worker exactly where it stopped.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from configs.settings import Settings
from elpis_worker.backend import ModelBackend
from elpis_worker.emotion import AffectState, EmotionEngine, Modulation, Observation, baseline_from_config
from elpis_worker.store import Cancelled, LostClaim, TaskStore
from elpis_worker.tools import TOOL_DESCRIPTIONS, TOOL_SCHEMAS, Toolbox, ToolResult
from elpis_worker.workspace import WorkspaceError, diff_stats, prepare_workspace, workspace_diff
from models import Step, StepKind, Task, TaskStatus

log = logging.getLogger(__name__)

PHASES = (StepKind.think, StepKind.tool_call, StepKind.tool_result, StepKind.reflect, StepKind.emotion)
# Characters of a tool's output placed in the prompt (the step keeps the whole, already capped, output).
PROMPT_OUTPUT_CHARS = 900
REPEAT_WINDOW = 3


def _system_prompt() -> str:
    tools = "\n".join(f"- {name}: {desc}" for name, desc in TOOL_DESCRIPTIONS.items())
    return (
        "You are Elpis, a careful coding agent working inside a git repository.\n"
        "Work in small steps: look at the code, run the tests, change files, run the tests again.\n"
        f"Tools:\n{tools}\n"
        'Answer every turn with one JSON object {"thought": "...", "tool": "<tool>", "args": {...}}.\n'
        "When the change is made and the tests pass, call finish with a one-line summary."
    )


# Identical for every task, so llama.cpp can reuse its KV cache for it across tasks too.
SYSTEM_PROMPT = _system_prompt()


def think_schema(tools: list[str] | None = None) -> dict[str, Any]:
    """One alternative per allowed tool, so the tool name and its arguments always match. Restricting
    the tools is how a strategy switch is enforced: the grammar cannot produce an excluded tool."""
    allowed = tools or list(TOOL_SCHEMAS)
    return {
        "anyOf": [
            {
                "type": "object",
                "properties": {
                    "thought": {"type": "string", "maxLength": 200},
                    "tool": {"const": name},
                    "args": schema,
                },
                "required": ["thought", "tool", "args"],
                "additionalProperties": False,
            }
            for name, schema in TOOL_SCHEMAS.items()
            if name in allowed
        ]
    }


REFLECT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "progress": {"type": "boolean"},
        "assessment": {"type": "string", "maxLength": 200},
        "next": {"type": "string", "maxLength": 160},
    },
    "required": ["progress", "assessment", "next"],
    "additionalProperties": False,
}
THINK_SCHEMA = think_schema()
REPLAN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "goal": {"type": "string", "maxLength": 200},
        "failed": {"type": "string", "maxLength": 200},
        "new_approach": {"type": "string", "maxLength": 200},
    },
    "required": ["goal", "failed", "new_approach"],
    "additionalProperties": False,
}
REPLAN_PROMPT = (
    "Replan before the next tool call: restate the goal, say what failed, and pick a different approach. "
    "Answer as JSON."
)
# Turns after a replanning step during which the spiral does not trigger another one.
REPLAN_COOLDOWN = 3


@dataclass(frozen=True)
class Budget:
    max_steps: int
    max_tokens: int
    max_seconds: float

    @classmethod
    def for_task(cls, task: Task, settings: Settings) -> Budget:
        merged = settings.budget.model_dump() | (task.budget or {})
        return cls(int(merged["max_steps"]), int(merged["max_tokens"]), float(merged["max_seconds"]))


@dataclass
class Action:
    tool: str
    args: dict[str, Any]
    thought: str = ""
    error: str | None = None  # the model's reply was not a usable tool call


def parse_action(text: str) -> Action:
    try:
        data = json.loads(text)
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


@dataclass
class TurnSteps:
    number: int
    steps: dict[str, Step] = field(default_factory=dict)

    def get(self, kind: str) -> Step | None:
        return self.steps.get(kind)


def _turn_key(step: Step) -> str:
    if step.kind == StepKind.reflect and (step.detail or {}).get(REPLAN):
        return REPLAN
    return step.kind.value


def group_turns(steps: list[Step]) -> list[TurnSteps]:
    turns: dict[int, TurnSteps] = {}
    for step in steps:
        turns.setdefault(step.turn, TurnSteps(step.turn)).steps[_turn_key(step)] = step
    return [turns[n] for n in sorted(turns)]


def default_plan(strategy: str = "continue") -> dict[str, Any]:
    return {"strategy": strategy, "replan": False, "tools": list(TOOL_SCHEMAS), "excluded": []}


def next_prompt(plan: dict[str, Any]) -> str:
    if plan["tools"] != list(TOOL_SCHEMAS):
        return f"Next tool call as JSON. Allowed now: {', '.join(plan['tools'])}."
    return "Next tool call as JSON."


def render_result(tool: str, detail: dict[str, Any], output: str) -> str:
    if len(output) > PROMPT_OUTPUT_CHARS:
        half = PROMPT_OUTPUT_CHARS // 2
        output = f"{output[:half]}\n[... cut ...]\n{output[-half:]}"
    status = "ok" if detail.get("ok") else f"error: {detail.get('error_kind') or 'failed'}"
    code = detail.get("exit_code")
    head = f"Result of {tool} ({status}{'' if code is None else f', exit {code}'}):"
    return f"{head}\n{output}\nReflect on this result as JSON."


class Heartbeat:
    """Refreshes the task's heartbeat from a thread while the loop works (a think may take seconds)."""

    def __init__(self, store: TaskStore, task_id: int, interval: float) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(store, task_id, interval), daemon=True)

    def _run(self, store: TaskStore, task_id: int, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                if not store.heartbeat(task_id):
                    return
            except Exception:  # noqa: BLE001 - a missed beat is retried at the next interval
                log.warning("heartbeat for task %s failed", task_id, exc_info=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class Agent:
    def __init__(self, store: TaskStore, backend: ModelBackend, settings: Settings, task_id: int) -> None:
        self.store, self.backend, self.settings, self.task_id = store, backend, settings, task_id
        self.gen = settings.generation
        self.baseline = baseline_from_config(settings.emotions.baseline.model_dump())
        self.engine = EmotionEngine(
            self.baseline, settings.emotions.decay_rate, modulation=settings.emotions.modulation
        )

    # --- entry point ----------------------------------------------------------------------
    def run(self) -> TaskStatus:
        task = self.store.load_task(self.task_id)
        self.task = task
        self.budget = Budget.for_task(task, self.settings)
        started = task.started_at or datetime.now(UTC)
        self.deadline = (
            time.monotonic() + self.budget.max_seconds - (datetime.now(UTC) - started).total_seconds()
        )
        root = self.settings.workspace_root / f"task-{task.id}"
        try:
            prepare_workspace(task.repo, task.ref, root, diff=task.workspace_diff)
        except WorkspaceError as exc:
            self.store.finish(task.id, TaskStatus.failed, reason=f"workspace: {exc}")
            return TaskStatus.failed
        self.root = root
        self.toolbox = Toolbox(
            root,
            task.test_command,
            self.settings.tools.command_timeout,
            self.settings.tools.output_cap,
            self.settings.tools.read_cap,
        )
        try:
            with Heartbeat(self.store, task.id, self.settings.worker.heartbeat_interval):
                return self._loop()
        except Cancelled:
            self.store.finish(
                task.id,
                TaskStatus.cancelled,
                reason="cancelled by request",
                workspace_diff=workspace_diff(root),
            )
            return TaskStatus.cancelled

    # --- the loop -------------------------------------------------------------------------
    def _loop(self) -> TaskStatus:
        turns = group_turns(self.store.load_steps(self.task_id))
        self.turns = turns
        finished: Action | None = None
        # Resume: a turn that was interrupted is completed first, from the phase it reached.
        for t in turns:
            result = t.get(StepKind.tool_result)
            if result is not None and (result.detail or {}).get("finished") and t.get(StepKind.emotion):
                finished = self._action_of(t)
        while finished is None:
            last = turns[-1] if turns else None
            if last is not None and last.get(StepKind.emotion) is None:
                current = last
            else:
                exhausted = self._budget_exhausted(len(turns))
                if exhausted:
                    return self._conclude(None, exhausted)
                current = TurnSteps(len(turns) + 1)
                turns.append(current)
            action, done = self._run_turn(current)
            if done:
                finished = action
        return self._conclude(finished, None)

    def _budget_exhausted(self, turns_done: int) -> str | None:
        if turns_done >= self.budget.max_steps:
            return f"budget exhausted: {self.budget.max_steps} steps (turns) used"
        task = self.store.load_task(self.task_id)
        if task.prompt_tokens + task.completion_tokens >= self.budget.max_tokens:
            return f"budget exhausted: {self.budget.max_tokens} tokens used"
        if time.monotonic() >= self.deadline:
            return f"budget exhausted: {self.budget.max_seconds:.0f} s wall time"
        return None

    def _budget_used(self, turns_done: int) -> float:
        task = self.store.load_task(self.task_id)
        elapsed = self.budget.max_seconds - (self.deadline - time.monotonic())
        return max(
            0.0,
            min(
                1.0,
                max(
                    turns_done / self.budget.max_steps,
                    (task.prompt_tokens + task.completion_tokens) / self.budget.max_tokens,
                    elapsed / self.budget.max_seconds,
                ),
            ),
        )

    # --- one turn -------------------------------------------------------------------------
    def _run_turn(self, turn: TurnSteps) -> tuple[Action, bool]:
        """One turn, resumed from whichever phase was last persisted. Returns the action and whether
        the task is finished (a finish the tests accepted)."""
        state, modulation, plan = self._affect_before(turn.number)
        # Memories are recalled at the start of a task and again when the agent replans.
        if (turn.number == 1 or plan["replan"]) and turn.get(MEMORY) is None:
            self._recall(turn, "task start" if turn.number == 1 else "replan")
        if plan["replan"] and turn.get(REPLAN) is None:
            self._replan(turn, modulation, plan)
        think = turn.get(StepKind.think) or self._think(turn, state, modulation, plan)
        action = parse_action(think.content)
        if turn.get(StepKind.tool_call) is None:
            self._record(
                turn,
                StepKind.tool_call,
                content=f"{action.tool} {json.dumps(action.args)[:200]}",
                tool_name=action.tool,
                tool_args=action.args,
            )
        result_step = turn.get(StepKind.tool_result) or self._execute(turn, action)
        if turn.get(StepKind.reflect) is None:
            self._reflect(turn, modulation)
        if turn.get(StepKind.emotion) is None:
            self._update_emotion(turn, state, action, result_step)
        return action, bool((result_step.detail or {}).get("finished"))

    def _record(
        self, turn: TurnSteps, kind: StepKind, *, workspace_diff: str | None = None, **fields: Any
    ) -> Step:
        step = self.store.append_step(
            self.task_id, kind, turn.number, workspace_diff=workspace_diff, **fields
        )
        turn.steps[_turn_key(step)] = step
        log.info(
            "task %s step %s %s",
            self.task_id,
            step.seq,
            kind.value,
            extra={"task_id": self.task_id, "seq": step.seq},
        )
        return step

    def _affect_before(self, turn_number: int) -> tuple[AffectState, Modulation, dict[str, Any]]:
        """The state, modulation and plan left by the previous turn's emotion step (baseline first)."""
        previous = [t for t in self.turns if t.number < turn_number and t.get(StepKind.emotion)]
        if previous:
            data = previous[-1].get(StepKind.emotion).emotion or {}
            state = AffectState.from_dict(data["after"])
            mod = data.get("modulation") or {}
            modulation = Modulation(
                temperature=float(mod.get("temperature", self.gen.temperature)),
                top_p=float(mod.get("top_p", self.gen.top_p)),
                strategy=str(mod.get("strategy", "continue")),
                prompt_line=str(mod.get("prompt_line", "")),
                reasons=list(mod.get("reasons", [])),
            )
            return state, modulation, data.get("plan") or default_plan(modulation.strategy)
        state = self.baseline
        modulation = self.engine.modulate(state, [state], self.gen.temperature, self.gen.top_p)
        return state, modulation, default_plan(modulation.strategy)

    def _history(self) -> list[AffectState]:
        return [
            AffectState.from_dict(t.get(StepKind.emotion).emotion["after"])
            for t in self.turns
            if t.get(StepKind.emotion)
        ]

    def _recall(self, turn: TurnSteps, reason: str) -> Step:
        """Retrieve long-term memories for this task into the prompt, within the token budget, and
        record what was recalled (and how it scored) as a `memory` step."""
        from elpis_worker.embedding import EmbeddingLoadError, EmbeddingMismatchError
        from elpis_worker.memory import render_memories, retrieval_detail, retrieve_for_task

        query = self.task.instruction
        if reason == "replan":
            failed = self._last_failure_output(turn)
            query = f"{query}\n{failed}" if failed else query
        started = time.perf_counter()
        try:
            memories = retrieve_for_task(
                self.store.url,
                repo=self.task.repo,
                query=query,
                token_budget=self.settings.memory.retrieval_token_budget,
                count_tokens=self.backend.count_tokens,
                settings=self.settings.memory,
            )
            detail = retrieval_detail(memories)
            content = render_memories(memories)
        except (EmbeddingLoadError, EmbeddingMismatchError) as exc:
            # The task goes on without memories; the step says why none were recalled.
            log.error("task %s: memory retrieval failed: %s", self.task_id, exc)
            detail, content = {"memories": [], "memory_signal": 0.0, "error": str(exc)}, ""
        detail |= {"reason": reason, "query": query[:500]}
        return self._record(
            turn,
            StepKind.memory,
            content=content,
            duration_ms=(time.perf_counter() - started) * 1000,
            detail=detail,
        )

    def _last_failure_output(self, turn: TurnSteps) -> str:
        for t in reversed([t for t in self.turns if t.number < turn.number]):
            result = t.get(StepKind.tool_result)
            if result is not None and not (result.detail or {}).get("ok"):
                return (result.tool_result or "")[-300:]
        return ""

    def _replan(self, turn: TurnSteps, modulation: Modulation, plan: dict[str, Any]) -> Step:
        """The frustration strategy: restate the goal, name what failed, choose another approach."""
        return self._reflect(
            turn,
            modulation,
            schema=REPLAN_SCHEMA,
            max_tokens=self.gen.reflect_max_tokens * 2,
            detail={REPLAN: True, "plan": plan, "reasons": modulation.reasons},
        )

    def _think(
        self, turn: TurnSteps, state: AffectState, modulation: Modulation, plan: dict[str, Any]
    ) -> Step:
        messages = self._messages(upto=turn)
        restricted = plan["tools"] != list(TOOL_SCHEMAS)
        completion = self.backend.chat(
            messages,
            schema=think_schema(plan["tools"]) if restricted else THINK_SCHEMA,
            temperature=modulation.temperature,
            top_p=modulation.top_p,
            max_tokens=self.gen.max_tokens,
        )
        action = parse_action(completion.text)
        sampling = {
            "temperature": modulation.temperature,
            "top_p": modulation.top_p,
            "max_tokens": self.gen.max_tokens,
            "strategy": plan["strategy"],
        }
        if restricted:
            sampling["allowed_tools"] = plan["tools"]
        return self._record(
            turn,
            StepKind.think,
            content=completion.text,
            tool_name=action.tool,
            tool_args=action.args,
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            duration_ms=completion.duration_s * 1000,
            sampling=sampling,
            emotion=state.as_dict(),
            detail={"thought": action.thought, "parse_error": action.error},
        )

    def _call_tool(self, action: Action) -> ToolResult:
        if action.error is not None:
            return ToolResult(
                ok=False,
                output=f"your reply was not a valid tool call: {action.error}",
                error_kind="bad_args",
            )
        if action.tool == "finish" and self.task.test_command:
            # The model's word is not enough: finishing is accepted only when the task's tests pass.
            check = self.toolbox.call("run_tests", {})
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
            done = self.toolbox.call("finish", action.args)
            done.tests_run, done.tests_passed, done.failures = True, True, 0
            done.output = "finished; the task's tests pass"
            return done
        return self.toolbox.call(action.tool, action.args)

    def _execute(self, turn: TurnSteps, action: Action) -> Step:
        started = time.perf_counter()
        result = self._call_tool(action)
        duration = (time.perf_counter() - started) * 1000
        diff = workspace_diff(self.root) if result.changed_files else None
        current_diff = diff if diff is not None else (self.store.load_task(self.task_id).workspace_diff or "")
        detail = {
            "ok": result.ok,
            "error_kind": result.error_kind,
            "exit_code": result.exit_code,
            "tests_run": result.tests_run,
            "tests_passed": result.tests_passed,
            "failures": result.failures,
            "diff_lines": diff_stats(current_diff),
            "finished": result.finished,
            "summary": result.summary,
        }
        step = self._record(
            turn,
            StepKind.tool_result,
            workspace_diff=diff,
            content=result.output[:200],
            tool_name=action.tool,
            tool_result=result.output,
            exit_code=result.exit_code,
            duration_ms=duration,
            detail=detail,
        )
        if result.tests_run:
            self.store.record_tests(self.task_id, result.tests_passed, result.exit_code, result.output)
        return step

    def _reflect(
        self,
        turn: TurnSteps,
        modulation: Modulation,
        schema: dict[str, Any] = REFLECT_SCHEMA,
        max_tokens: int | None = None,
        detail: dict[str, Any] | None = None,
    ) -> Step:
        """A reflect step: the self-assessment after a tool result, or (with REPLAN_SCHEMA) a replan."""
        max_tokens = max_tokens or self.gen.reflect_max_tokens
        completion = self.backend.chat(
            self._messages(upto=turn),
            schema=schema,
            temperature=modulation.temperature,
            top_p=modulation.top_p,
            max_tokens=max_tokens,
        )
        return self._record(
            turn,
            StepKind.reflect,
            content=completion.text,
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            duration_ms=completion.duration_s * 1000,
            sampling={
                "temperature": modulation.temperature,
                "top_p": modulation.top_p,
                "max_tokens": max_tokens,
            },
            detail=detail,
        )

    def _update_emotion(self, turn: TurnSteps, before: AffectState, action: Action, result: Step) -> Step:
        detail = result.detail or {}
        previous_results = [
            t.get(StepKind.tool_result)
            for t in self.turns
            if t.number < turn.number and t.get(StepKind.tool_result)
        ]
        prev_tests = [r.detail for r in previous_results if (r.detail or {}).get("tests_run")]
        recent = [
            self._action_key(t) for t in self.turns if turn.number - REPEAT_WINDOW <= t.number < turn.number
        ]
        budget_used = self._budget_used(turn.number)
        obs = Observation(
            tool=action.tool,
            ok=bool(detail.get("ok")),
            error_kind=detail.get("error_kind"),
            tests_run=bool(detail.get("tests_run")),
            tests_passed=detail.get("tests_passed"),
            failures=detail.get("failures"),
            prev_failures=prev_tests[-1].get("failures") if prev_tests else None,
            repeated_action=(action.tool, json.dumps(action.args, sort_keys=True)) in recent,
            diff_lines=detail.get("diff_lines"),
            prev_diff_lines=(previous_results[-1].detail or {}).get("diff_lines") if previous_results else 0,
            budget_used=budget_used,
            memory_signal=float(
                ((turn.get(MEMORY) and turn.get(MEMORY).detail) or {}).get("memory_signal", 0.0)
            ),
        )
        after, appraisals = self.engine.update(before, obs)
        history = self._history() + [after]
        tests_passing = (
            detail.get("tests_passed")
            if detail.get("tests_run")
            else (prev_tests[-1].get("tests_passed") if prev_tests else None)
        )
        modulation = self.engine.modulate(
            after,
            history,
            self.gen.temperature,
            self.gen.top_p,
            tests_passing=tests_passing,
            budget_used=budget_used,
        )
        plan = self._plan_next(turn, modulation, detail, tests_passing)
        lines = [modulation.prompt_line] if modulation.prompt_line else []
        lines.append(REPLAN_PROMPT if plan["replan"] else next_prompt(plan))
        return self._record(
            turn,
            StepKind.emotion,
            content="\n".join(lines),
            emotion={
                "before": before.as_dict(),
                "after": after.as_dict(),
                "appraisals": [a.as_dict() for a in appraisals],
                "trajectory": modulation.trajectory.as_dict() if modulation.trajectory else None,
                "modulation": modulation.as_dict(),
                "plan": plan,
            },
            sampling={
                "temperature": modulation.temperature,
                "top_p": modulation.top_p,
                "strategy": modulation.strategy,
            },
        )

    def _plan_next(
        self, turn: TurnSteps, modulation: Modulation, detail: dict[str, Any], tests_passing: bool | None
    ) -> dict[str, Any]:
        """Turn the strategy into what the next turn may do. Replanning takes a reflect step and shuts
        the failing tool out of the next think's grammar, so the agent cannot repeat it; wrapping up
        narrows the tools to running the tests and finishing; confidence with passing tests and a
        change made narrows them to finish."""
        plan = default_plan(modulation.strategy)
        if modulation.strategy == "replan":
            recent = [t for t in self.turns if turn.number - REPLAN_COOLDOWN < t.number <= turn.number]
            if any(t.get(REPLAN) for t in recent):
                return plan
            plan["replan"] = True
            failing = self._failing_tool(turn)
            if failing is not None:
                plan["excluded"] = [failing]
                plan["tools"] = [t for t in plan["tools"] if t != failing]
        elif modulation.strategy == "wrap_up":
            plan["tools"] = ["run_tests", "finish"] if self.task.test_command else ["finish"]
        elif modulation.strategy == "finish" and tests_passing and detail.get("diff_lines"):
            plan["tools"] = ["finish"]
        return plan

    def _failing_tool(self, turn: TurnSteps) -> str | None:
        """The tool that kept failing lately (most failures in the recent window, latest on a tie)."""
        window = [t for t in self.turns if turn.number - REPLAN_COOLDOWN < t.number <= turn.number]
        failures: dict[str, int] = {}
        for t in window:
            result = t.get(StepKind.tool_result)
            if (
                result is not None
                and not (result.detail or {}).get("ok")
                and result.tool_name in TOOL_SCHEMAS
            ):
                failures[result.tool_name] = failures.get(result.tool_name, 0) + 1
        if not failures:
            return None
        best = max(failures.values())
        latest = [r.tool_name for t in reversed(window) if (r := t.get(StepKind.tool_result)) is not None]
        return next(name for name in latest if failures.get(name) == best)

    @staticmethod
    def _action_of(turn: TurnSteps) -> Action:
        call = turn.get(StepKind.tool_call)
        return Action(call.tool_name or "invalid", call.tool_args or {})

    @staticmethod
    def _action_key(turn: TurnSteps) -> tuple[str, str] | None:
        call = turn.get(StepKind.tool_call)
        if call is None:
            return None
        return (call.tool_name or "", json.dumps(call.tool_args or {}, sort_keys=True))

    # --- the prompt -------------------------------------------------------------------------
    def _first_message(self) -> str:
        task = self.task
        lines = [f"Task: {task.instruction}"]
        if task.test_command:
            lines.append(f"Test command (run_tests runs it): {task.test_command}")
        first = self.turns[0] if self.turns else None
        recalled = first.get(MEMORY) if first is not None and first.number == 1 else None
        if recalled is not None and recalled.content:
            lines.append(recalled.content)
        _, modulation, _ = self._affect_before(1)
        if modulation.prompt_line:
            lines.append(modulation.prompt_line)
        lines.append("First tool call as JSON.")
        return "\n".join(lines)

    def _window(self, turns: list[TurnSteps]) -> list[TurnSteps]:
        """The last `memory.stm_capacity` turns, cut in blocks of half the capacity so the prompt prefix
        stays the same for several turns in a row (llama.cpp then re-evaluates only the new suffix)."""
        capacity = self.settings.memory.stm_capacity
        excess = len(turns) - capacity
        if excess <= 0:
            return turns
        block = max(1, capacity // 2)
        drop = -(-excess // block) * block
        return turns[drop:]

    def _messages(self, upto: TurnSteps) -> list[dict[str, str]]:
        """Rebuilt from the persisted steps only, so a resumed task sends the same prompt: the turns
        before `upto`, then whatever `upto` has persisted so far (its phases run in order, so that is
        exactly what precedes the call being made). The latest message ends with the affect line; older
        messages are kept verbatim (stable prefix)."""
        done = [t for t in self.turns if t.number < upto.number]
        window = self._window(done)
        budget_tokens = self.settings.model.n_ctx - self.gen.max_tokens - 64
        current = self._turn_messages(upto, stop_after_result=True)
        while True:
            messages = [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": self._first_message()},
            ]
            for t in window:
                messages.extend(self._turn_messages(t))
            messages.extend(current)
            size = sum(self.backend.count_tokens(m["content"]) + 8 for m in messages)
            if size <= budget_tokens or not window:
                return messages
            window = window[1:]

    @staticmethod
    def _turn_messages(turn: TurnSteps, stop_after_result: bool = False) -> list[dict[str, str]]:
        out = []
        recalled, replan = turn.get(MEMORY), turn.get(REPLAN)
        if recalled is not None and recalled.content and turn.number > 1:
            out.append({"role": "user", "content": recalled.content})
        if replan is not None:
            out.append({"role": "assistant", "content": replan.content})
            out.append(
                {"role": "user", "content": next_prompt((replan.detail or {}).get("plan") or default_plan())}
            )
        think, result = turn.get(StepKind.think), turn.get(StepKind.tool_result)
        if think is not None:
            out.append({"role": "assistant", "content": think.content})
        if result is not None:
            out.append(
                {
                    "role": "user",
                    "content": render_result(
                        result.tool_name or "", result.detail or {}, result.tool_result or ""
                    ),
                }
            )
        if stop_after_result:
            return out
        reflect, emotion = turn.get(StepKind.reflect), turn.get(StepKind.emotion)
        if reflect is not None:
            out.append({"role": "assistant", "content": reflect.content})
        if emotion is not None:
            out.append({"role": "user", "content": emotion.content})
        return out

    # --- the end ----------------------------------------------------------------------------
    def _conclude(self, finished: Action | None, exhausted: str | None) -> TaskStatus:
        """Verify with the task's own test command (the model's word is not enough), store the
        outcome and the final diff."""
        diff = workspace_diff(self.root)
        summary = (finished.args.get("summary") if finished else None) or None
        passed: bool | None = None
        if self.task.test_command:
            result = self.toolbox.call("run_tests", {})
            passed = bool(result.tests_passed)
            self.store.record_tests(self.task_id, passed, result.exit_code, result.output)
        if finished is not None and passed is not False:
            status, reason = TaskStatus.succeeded, None
        elif finished is not None:
            status, reason = TaskStatus.failed, "finished, but the task's tests still fail"
        else:
            status, reason = TaskStatus.failed, exhausted
            if passed:
                status, reason = TaskStatus.succeeded, None
                summary = summary or f"tests pass ({exhausted}, the agent did not call finish)"
        self.store.finish(self.task_id, status, reason=reason, summary=summary, workspace_diff=diff)
        return status


def run_agent(store: TaskStore, backend: ModelBackend, settings: Settings, task_id: int) -> TaskStatus | None:
    try:
        return Agent(store, backend, settings, task_id).run()
    except LostClaim as exc:
        log.warning("%s; stopping without further writes", exc)
        return None
