"""The agent loop: think -> tool call -> tool result -> reflect -> emotion update, one `step` row each.

The loop holds no state that is not also in Postgres: the conversation, the affect state and the
workspace are all rebuilt from the persisted steps (and the task's last workspace diff), so a task
whose worker died is resumed by the next worker exactly where it stopped. A worker that is shutting
down stops the loop between two steps (`WorkerShuttingDown`, elpis_worker/shutdown.py) and the task is
resumed the same way.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from configs.settings import Settings
from elpis_worker.backend import Completion, ModelBackend, call_seed
from elpis_worker.emotion import AffectState, EmotionEngine, Modulation, baseline_from_config
from elpis_worker.execution import ToolRunner
from elpis_worker.grammar import (
    REFLECT_SCHEMA,
    REFLECTION_PROPERTIES,
    REPLAN_SCHEMA,
    THINK_REFLECT_SCHEMA,
    THINK_SCHEMA,
    think_schema,
)
from elpis_worker.observe import (
    ObservationPlan,
    diff_files,
    observe,
    sources_shown,
    tests_shown,
    untouched_named_files,
)
from elpis_worker.policy import ToolPolicy, checked
from elpis_worker.probe import probe_calls
from elpis_worker.prompts import (
    RECHECK_PROMPT,
    REPLAN_PROMPT,
    Conversation,
    check_failed_prompt,
    cut_text,
    next_prompt,
    review_prompt,
)
from elpis_worker.sandbox import Sandbox
from elpis_worker.sensing import affect_history, earlier_test_runs, failing_states, sense, tool_result
from elpis_worker.shutdown import WorkerShuttingDown, stop_requested
from elpis_worker.store import Cancelled, LostClaim, TaskStore
from elpis_worker.tools import (
    ASSERT_FAILED,
    SUMMARY_CHARS,
    TOOL_SCHEMAS,
    Toolbox,
)
from elpis_worker.turns import (
    FRESH_LOOK,
    MEMORY,
    REPLAN,
    Action,
    TurnSteps,
    default_plan,
    diff_sha,
    finish_summary,
    group_turns,
    is_banned,
    loads_reply,
    parse_action,
    turn_key,
)
from elpis_worker.workspace import WorkspaceError, diff_stats, prepare_workspace, workspace_diff
from models import Step, StepKind, Task, TaskStatus
from models.records import (
    EDIT_TOOLS,
    Affect,
    Appraisal,
    EmotionRecord,
    MemoryDetail,
    ObserveDetail,
    OutcomeDetail,
    ReflectDetail,
    Sampling,
    Strategy,
    ThinkDetail,
    ToolResultDetail,
    Trajectory,
    TurnPlan,
)
from models.records import Modulation as ModulationRecord

log = logging.getLogger(__name__)

PHASES = (StepKind.think, StepKind.tool_call, StepKind.tool_result, StepKind.reflect, StepKind.emotion)
# Extra samples of a think whose call is a banned one the grammar could not express.
RESAMPLE_BANNED = 2
# Their temperature: high enough to leave the banned call, low enough that a small model's code stays
# intact (at 1.2 the 1.5B model's edits came out garbled).
RESAMPLE_TEMPERATURE_MAX = 0.9
# What the first turn may do when the observations already show the failure and its source: the edit
# tools, in the tools' own order.
REPAIR_TOOLS = tuple(name for name in TOOL_SCHEMAS if name in EDIT_TOOLS)


# Characters of the change so far shown by a fresh look.
FRESH_LOOK_DIFF_CHARS = 1500


def _think_detail(step: Step) -> ThinkDetail:
    return ThinkDetail.read(step.detail) or ThinkDetail()


def _reflect_detail(step: Step) -> ReflectDetail:
    return ReflectDetail.read(step.detail) or ReflectDetail()


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


@dataclass(frozen=True)
class Budget:
    max_steps: int
    max_tokens: int
    max_seconds: float

    @classmethod
    def for_task(cls, task: Task, settings: Settings) -> Budget:
        merged = settings.budget.model_dump() | (task.budget or {})
        return cls(int(merged["max_steps"]), int(merged["max_tokens"]), float(merged["max_seconds"]))


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


def _spent_on(kept: Completion, discarded: list[Completion]) -> Completion:
    """The kept reply, with the tokens and time of the samples refused before it added: the step records
    what its call cost (a refused sample's time is not framework overhead, nor free)."""
    if not discarded:
        return kept
    every = [*discarded, kept]

    def total(values: list[Any]) -> Any:
        return None if any(v is None for v in values) else sum(values)

    return replace(
        kept,
        completion_tokens=sum(c.completion_tokens for c in every),
        duration_s=sum(c.duration_s for c in every),
        evaluated_prompt_tokens=total([c.evaluated_prompt_tokens for c in every]),
        prompt_eval_s=total([c.prompt_eval_s for c in every]),
    )


class Agent:
    def __init__(self, store: TaskStore, backend: ModelBackend, settings: Settings, task_id: int) -> None:
        """Everything the loop reads is set here (the task, its budget and deadline, the workspace and
        its tools, the affect model); `run` prepares the workspace and works the task."""
        self.store, self.backend, self.settings, self.task_id = store, backend, settings, task_id
        self.gen = settings.generation
        self.baseline = baseline_from_config(settings.emotions.baseline.model_dump())
        self.engine = EmotionEngine(
            self.baseline, settings.emotions.decay_rate, modulation=settings.emotions.modulation
        )
        self.task = task = store.load_task(task_id)
        self.budget = Budget.for_task(task, settings)
        started = task.started_at or datetime.now(UTC)
        self.deadline = (
            time.monotonic() + self.budget.max_seconds - (datetime.now(UTC) - started).total_seconds()
        )
        self.root = settings.workspace_root / f"task-{task.id}"
        self.policy = ToolPolicy(
            settings.tools.exclude_repeats,
            has_tests=bool(task.test_command),
            check_on_review=settings.tools.check_on_review,
        )
        self.conversation = Conversation(task, settings, backend.count_tokens)
        tools = settings.tools
        # The tools of the task's workspace (`run` prepares it before the first call).
        self.toolbox = Toolbox(
            self.root,
            task.test_command,
            tools.command_timeout,
            tools.output_cap,
            tools.read_cap,
            protected=list(task.protected or []),
            sandbox=Sandbox.from_settings(settings),
        )
        self.runner = ToolRunner(
            self.toolbox,
            self.policy,
            store,
            task.id,
            undo_regressions=tools.undo_regressions,
            undo_revisits=tools.undo_revisits,
        )
        # The persisted history, loaded by the loop (a resumed task starts from what is stored).
        self.observations: list[Step] = []
        self.turns: list[TurnSteps] = []

    # --- entry point ----------------------------------------------------------------------
    def run(self) -> TaskStatus:
        task, root = self.task, self.root
        try:
            prepare_workspace(task.repo, task.ref, root, diff=task.workspace_diff)
        except WorkspaceError as exc:
            return self.store.finish(task.id, TaskStatus.failed, reason=f"workspace: {exc}")
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
        steps = self.store.load_steps(self.task_id)
        # The opening's observations are turn 0; a later observe step is a turn's fresh look.
        self.observations = [s for s in steps if s.kind == StepKind.observe and s.turn == 0]
        self._observe()
        turns = group_turns([s for s in steps if s.kind != StepKind.observe or s.turn > 0])
        self.turns = turns
        finished: Action | None = None
        # Resume: a turn that was interrupted is completed first, from the phase it reached.
        for t in turns:
            result = t.get(StepKind.tool_result)
            if result is not None and tool_result(result).finished and t.get(StepKind.emotion):
                finished = self._action_of(t)
        while finished is None:
            last = turns[-1] if turns else None
            if last is not None and last.get(StepKind.emotion) is None:
                current = last
            else:
                exhausted = self._budget_exhausted(len(turns))
                if exhausted:
                    self._stop_if_worker_stopping("the final test run")
                    return self._conclude(None, exhausted)
                current = TurnSteps(len(turns) + 1)
                turns.append(current)
            action, done = self._run_turn(current)
            if done:
                finished = action
        self._stop_if_worker_stopping("the final test run")
        return self._conclude(finished, None)

    # --- look before thinking -------------------------------------------------------------------
    def _observe(self) -> None:
        """Record, as `observe` steps, what the first prompt shows: the repository map, the task's tests
        run once (failure trimmed to its traceback), and the source of the files the traceback or the
        instruction names. A resumed task redoes only the observations it had not recorded."""
        done = {s.tool_name for s in self.observations}
        for name in ObservationPlan.for_task(self.task.test_command):
            if name in done:
                continue
            self._stop_if_worker_stopping(f"observation {name}")
            started = time.perf_counter()
            tests = next((s for s in self.observations if s.tool_name == ObservationPlan.TESTS), None)
            seen = observe(
                name,
                self.root,
                self.task.instruction,
                self.task.test_command,
                lambda: self.toolbox.call("run_tests", {}),
                (tests.tool_result or "") if tests else "",
            )
            if seen.tests is not None:
                run = seen.tests
                self.store.record_tests(self.task_id, run.tests_passed, run.exit_code, run.output)
            step = self.store.append_step(
                self.task_id,
                StepKind.observe,
                0,
                content=seen.content,
                tool_name=name,
                tool_result=seen.output,
                exit_code=seen.exit_code,
                duration_ms=(time.perf_counter() - started) * 1000,
                detail=seen.detail.stored(),
            )
            self.observations.append(step)
            log.info(
                "task %s step %s observe %s",
                self.task_id,
                step.seq,
                name,
                extra={"task_id": self.task_id, "seq": step.seq},
            )

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
        stop = self._stop_if_worker_stopping
        # Memories are recalled at the start of a task and again when the agent replans.
        if (turn.number == 1 or plan.replan) and turn.get(MEMORY) is None:
            stop(f"turn {turn.number}'s memory recall")
            self._recall(turn, "task start" if turn.number == 1 else "replan")
        if plan.replan and self.gen.fresh_look_on_replan and turn.get(FRESH_LOOK) is None:
            stop(f"turn {turn.number}'s fresh look")
            self._fresh_look(turn)
        if plan.replan and turn.get(REPLAN) is None:
            stop(f"turn {turn.number}'s replan")
            self._replan(turn, modulation, plan)
        think = turn.get(StepKind.think)
        if think is None:
            stop(f"turn {turn.number}'s think")
            think = self._think(turn, state, modulation, plan)
        action = parse_action(think.content)
        merged = _think_detail(think).merged
        if turn.get(StepKind.tool_call) is None:
            stop(f"turn {turn.number}'s tool call")
            self._record(
                turn,
                StepKind.tool_call,
                content=f"{action.tool} {json.dumps(action.args)[:200]}",
                tool_name=action.tool,
                tool_args=action.args,
            )
        result_step = turn.get(StepKind.tool_result)
        if result_step is None:
            stop(f"turn {turn.number}'s {action.tool}")
            result_step = self._execute(turn, action, plan)
        # In one-call mode the next turn's reply carries the reflection on this result.
        if turn.get(StepKind.reflect) is None and not merged:
            stop(f"turn {turn.number}'s reflection")
            self._reflect(turn, modulation)
        if turn.get(StepKind.emotion) is None:
            stop(f"turn {turn.number}'s emotion update")
            self._update_emotion(turn, state, action, result_step)
        return action, tool_result(result_step).finished

    def _seed(self, turn: TurnSteps, phase: str, attempt: int = 0) -> int:
        """The seed of this task's `phase` call in `turn` (call_seed): the same wherever the task runs."""
        return call_seed(self.settings.model.seed, self.task_id, turn.number, phase, attempt)

    def _stop_if_worker_stopping(self, next_step: str) -> None:
        """Between two steps: when the worker is shutting down, start no other step. Everything done so
        far is persisted, so the next worker resumes the task from here."""
        if stop_requested():
            raise WorkerShuttingDown(f"task {self.task_id}: worker shutting down before {next_step}")

    def _record(
        self, turn: TurnSteps, kind: StepKind, *, workspace_diff: str | None = None, **fields: Any
    ) -> Step:
        step = self.store.append_step(
            self.task_id, kind, turn.number, workspace_diff=workspace_diff, **fields
        )
        turn.steps[turn_key(step)] = step
        log.info(
            "task %s step %s %s",
            self.task_id,
            step.seq,
            kind.value,
            extra={"task_id": self.task_id, "seq": step.seq},
        )
        return step

    def _affect_before(self, turn_number: int) -> tuple[AffectState, Modulation, TurnPlan]:
        """The state, modulation and plan left by the previous turn's emotion step (baseline first)."""
        previous = [t for t in self.turns if t.number < turn_number and t.get(StepKind.emotion)]
        if previous:
            record = EmotionRecord.model_validate(previous[-1].get(StepKind.emotion).emotion)
            state = AffectState.from_dict(record.after.model_dump())
            mod = record.modulation
            # A record without a sampling value (older rows) falls back to the configured one.
            temperature, top_p = (mod.temperature, mod.top_p) if mod else (None, None)
            modulation = Modulation(
                temperature=self.gen.temperature if temperature is None else temperature,
                top_p=self.gen.top_p if top_p is None else top_p,
                strategy=mod.strategy.value if mod else Strategy.continue_.value,
                prompt_line=mod.prompt_line if mod else "",
                reasons=list(mod.reasons) if mod else [],
            )
            return state, modulation, record.plan or default_plan(modulation.strategy)
        state = self.baseline
        modulation = self.engine.modulate(state, [state], self.gen.temperature, self.gen.top_p)
        plan = default_plan(modulation.strategy)
        if self._sources_observed():
            # Agentless: localisation is done (the failure and its source are in the prompt), so the
            # first turn is the repair; every tool is back from the second turn on.
            plan.tools = list(REPAIR_TOOLS)
        return state, modulation, plan

    def _sources_observed(self) -> bool:
        if not self.settings.tools.repair_first:
            return False
        sources = next((s for s in self.observations if s.tool_name == ObservationPlan.SOURCES), None)
        return bool(sources is not None and (ObserveDetail.read(sources.detail) or ObserveDetail()).files)

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
            detail, content = MemoryDetail(memories=[], memory_signal=0.0, error=str(exc)), ""
        detail.reason, detail.query = reason, query[:500]
        return self._record(
            turn,
            StepKind.memory,
            content=content,
            duration_ms=(time.perf_counter() - started) * 1000,
            detail=detail.stored(),
        )

    def _last_failure_output(self, turn: TurnSteps) -> str:
        for t in reversed([t for t in self.turns if t.number < turn.number]):
            result = t.get(StepKind.tool_result)
            if result is not None and not tool_result(result).ok:
                return (result.tool_result or "")[-300:]
        return ""

    def _fresh_look(self, turn: TurnSteps) -> Step:
        """The replanning strategy's clean slate, recorded as an `observe` step of this turn: the task's
        tests as they last ran, the files changed so far and those the failure runs through, as they are
        now, and the change so far. The prompt starts over from here (the earlier turns are left out):
        a small model stuck on a wrong fix copies the attempts in front of it (seen in the eval, the
        same rewrite turn after turn), and its first turn, made from a clean view, is its best."""
        started = time.perf_counter()
        task = self.store.load_task(self.task_id)
        diff = workspace_diff(self.root)
        lines = [
            f"Fresh look after {turn.number - 1} turns: the earlier turns are left out; this is where "
            "things stand now."
        ]
        output = task.test_output or ""
        if self.task.test_command and task.test_output is not None:
            lines.append(tests_shown(task.test_passed, self.task.test_command, output, self.root))
        files, sources = sources_shown(output, self.task.instruction, self.root, first=diff_files(diff))
        if files:
            lines.append(f"Source of the files involved, as they are now:\n{sources}")
        lines.append(f"The change so far:\n{cut_text(diff.strip(), FRESH_LOOK_DIFF_CHARS) or '(none)'}")
        previous = next((t for t in self.turns if t.number == turn.number - 1), None)
        emotion = previous.get(StepKind.emotion) if previous is not None else None
        if emotion is not None and emotion.content:
            # The line the left-out turn ended with: the affect and the request to replan.
            lines.append(emotion.content)
        return self._record(
            turn,
            StepKind.observe,
            content="\n".join(lines),
            tool_name=ObservationPlan.FRESH_LOOK,
            duration_ms=(time.perf_counter() - started) * 1000,
            detail=ObserveDetail(files=files).stored(),
        )

    def _replan(self, turn: TurnSteps, modulation: Modulation, plan: TurnPlan) -> Step:
        """The frustration strategy: restate the goal, name what failed, choose another approach."""
        return self._reflect(
            turn,
            modulation,
            schema=REPLAN_SCHEMA,
            max_tokens=self.gen.reflect_max_tokens * 2,
            detail=ReflectDetail(replan=True, plan=plan, reasons=modulation.reasons),
        )

    def _think(self, turn: TurnSteps, state: AffectState, modulation: Modulation, plan: TurnPlan) -> Step:
        restricted = plan.tools != list(TOOL_SCHEMAS)
        banned = plan.banned
        merged = self.gen.one_call_per_turn
        # The first turn has no tool result to reflect on: its reply is the action alone.
        reflecting = merged and turn.number > 1
        earlier = turn.get(StepKind.reflect)
        temperature, resampled = modulation.temperature, 0
        max_tokens = self.gen.max_tokens + (self.gen.reflect_max_tokens if reflecting else 0)
        stored = _reflect_detail(earlier).completion if earlier else None
        composed = self.gen.compose_finish and plan.tools == ["finish"]
        seed: int | None = None
        if reflecting and stored is not None:
            # Resumed between the two writes of one generation: the think step comes from the same reply.
            completion = Completion(stored, 0, 0, 0.0)
            seed = (earlier.sampling or {}).get("seed") if earlier else None
        elif composed:
            completion = self._composed_finish(turn, reflecting)
        else:
            if restricted or banned:
                schema = think_schema(plan.tools, banned, reflect=reflecting)
            else:
                schema = THINK_REFLECT_SCHEMA if reflecting else THINK_SCHEMA
            messages = self._messages(upto=turn)
            discarded: list[Completion] = []
            while True:
                seed = self._seed(turn, "think", resampled)
                completion = self.backend.chat(
                    messages,
                    schema=schema,
                    temperature=temperature,
                    top_p=modulation.top_p,
                    max_tokens=max_tokens,
                    seed=seed,
                )
                # A banned call no grammar pattern could express (long or multi-line arguments) is
                # rejected here instead and sampled again, hotter: the turn is not spent on a refusal.
                # So is a reply the backend stopped for repeating itself over and over.
                looped = completion.finish_reason == "repeat"
                if resampled >= RESAMPLE_BANNED or not (
                    looped or is_banned(parse_action(completion.text), banned)
                ):
                    break
                discarded.append(completion)
                resampled += 1
                temperature = min(RESAMPLE_TEMPERATURE_MAX, max(0.6, temperature + 0.3))
                why = "kept repeating itself" if looped else "repeated a banned call"
                log.info("task %s: think %s; sampling again", self.task_id, why)
            completion = _spent_on(completion, discarded)
        action = parse_action(completion.text)
        if action.error and completion.finish_reason == "length":
            action.error = f"reply was cut by max_tokens ({max_tokens}) before its JSON closed"
        elif action.error and completion.finish_reason == "repeat":
            action.error = "reply was stopped: it kept repeating the same text; write it once"
        reflect_tokens = 0
        if reflecting and earlier is None:
            reflect_tokens = self._record_reflection(turn, completion, modulation, seed)
        reflect_share = reflect_tokens / completion.completion_tokens if completion.completion_tokens else 0.0
        sampling = Sampling(
            temperature=modulation.temperature,
            top_p=modulation.top_p,
            max_tokens=self.gen.max_tokens,
            strategy=plan.strategy,
            resampled=resampled or None,
            temperature_used=temperature if resampled else None,
            allowed_tools=plan.tools if restricted else None,
            banned_calls=banned or None,
            seed=seed,
        )
        return self._record(
            turn,
            StepKind.think,
            content=completion.text,
            tool_name=action.tool,
            tool_args=action.args,
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=max(0, completion.completion_tokens - reflect_tokens),
            duration_ms=completion.duration_s * 1000 * (1 - reflect_share),
            sampling=sampling.stored(),
            emotion=Affect.model_validate(state.as_dict()).stored(),
            detail=ThinkDetail(
                thought=action.thought,
                parse_error=action.error,
                finish_reason=completion.finish_reason,
                merged=merged,
                composed=composed,
                # Prompt tokens llama.cpp evaluated for this call; the rest came from its KV cache.
                evaluated_prompt_tokens=completion.evaluated_prompt_tokens,
                # Of the generation's time, what prompt evaluation took (the rest of a one-call reply's
                # time is decoding, shared with its reflect step): bench/bench_summary.py splits turns.
                prompt_eval_ms=_ms(completion.prompt_eval_s),
                threads=completion.threads,
            ).stored(),
        )

    def _composed_finish(self, turn: TurnSteps, reflecting: bool) -> Completion:
        """The reply of a turn that may only finish, written by the agent (`generation.compose_finish`):
        the model would spend a generation (the last result's evaluation, then some 50 tokens) on a choice
        it does not have, and its summaries copied the prompt's last line. The summary states the files
        changed, the reason the turn that last changed them gave, the tests' last verdict and the check
        that passed; the progress flag is whether the last call succeeded. The finish still runs the
        tests before the task counts as done."""
        earlier = [t for t in self.turns if t.number < turn.number]
        last = tool_result(earlier[-1].get(StepKind.tool_result)) if earlier else None
        why, check = "", None
        for t in reversed(earlier):
            call, result = t.get(StepKind.tool_call), t.get(StepKind.tool_result)
            if call is None or result is None:
                continue
            detail = tool_result(result)
            if check is None and detail.ok and checked(t, detail):
                check = (call.tool_args or {}).get("code")
            think = t.get(StepKind.think)
            if call.tool_name in EDIT_TOOLS and detail.ok and not detail.reverted and think is not None:
                why = _think_detail(think).thought or ""
                break
        tests = earlier_test_runs(turn, self.turns, self.observations)
        summary = finish_summary(
            diff_files(workspace_diff(self.root)),
            why,
            tests[-1].tests_passed if tests else None,
            check,
            SUMMARY_CHARS,
        )
        reply = {"progress": bool(last is not None and last.ok)} if reflecting else {}
        reply |= {"tool": "finish", "args": {"summary": summary}}
        return Completion(json.dumps(reply), 0, 0, 0.0, evaluated_prompt_tokens=0, prompt_eval_s=0.0)

    def _record_reflection(
        self, turn: TurnSteps, completion: Completion, modulation: Modulation, seed: int | None
    ) -> int:
        """The reflection fields of a one-call reply as this turn's reflect step; returns its share of the
        completion tokens. The whole reply is kept so a resume can record the think step from it."""
        try:
            data = loads_reply(completion.text)
        except json.JSONDecodeError:
            data = {}
        reflection = {k: data[k] for k in REFLECTION_PROPERTIES if isinstance(data, dict) and k in data}
        if reflection and isinstance(data.get("thought"), str):
            # The thought that follows the progress flag is the turn's assessment of where things stand.
            reflection["assessment"] = data["thought"]
        content = json.dumps(reflection)
        tokens = min(completion.completion_tokens, self.backend.count_tokens(content)) if reflection else 0
        share = tokens / completion.completion_tokens if completion.completion_tokens else 0.0
        self._record(
            turn,
            StepKind.reflect,
            content=content,
            completion_tokens=tokens,
            duration_ms=completion.duration_s * 1000 * share,
            sampling=Sampling(
                temperature=modulation.temperature, top_p=modulation.top_p, merged=True, seed=seed
            ).stored(),
            detail=ReflectDetail(
                merged=True, completion=completion.text, progress=reflection.get("progress")
            ).stored(),
        )
        return tokens

    def _execute(self, turn: TurnSteps, action: Action, plan: TurnPlan) -> Step:
        started = time.perf_counter()
        result = self.runner.call(
            action,
            plan,
            failed_check=self._failed_check(),
            failing_states=failing_states(self.turns, self.observations),
        )
        duration = (time.perf_counter() - started) * 1000
        diff = workspace_diff(self.root) if result.changed_files else None
        current_diff = diff if diff is not None else (self.store.load_task(self.task_id).workspace_diff or "")
        detail = ToolResultDetail(
            ok=result.ok,
            error_kind=result.error_kind,
            exit_code=result.exit_code,
            tests_run=result.tests_run,
            tests_passed=result.tests_passed,
            failures=result.failures,
            diff_lines=diff_stats(current_diff),
            diff_sha=diff_sha(current_diff),
            finished=result.finished,
            summary=result.summary,
            reverted=result.reverted,
            check_failed=result.check_failed,
            check_crashed=result.check_crashed,
        )
        step = self._record(
            turn,
            StepKind.tool_result,
            workspace_diff=diff,
            content=result.output[:200],
            tool_name=action.tool,
            tool_result=result.output,
            exit_code=result.exit_code,
            duration_ms=duration,
            detail=detail.stored(),
        )
        if result.tests_run and not result.reverted:
            output = result.test_output if result.test_output is not None else result.output
            self.store.record_tests(self.task_id, result.tests_passed, result.exit_code, output)
        return step

    def _reflect(
        self,
        turn: TurnSteps,
        modulation: Modulation,
        schema: dict[str, Any] = REFLECT_SCHEMA,
        max_tokens: int | None = None,
        detail: ReflectDetail | None = None,
    ) -> Step:
        """A reflect step: the self-assessment after a tool result, or (with REPLAN_SCHEMA) a replan."""
        max_tokens = max_tokens or self.gen.reflect_max_tokens
        seed = self._seed(turn, "replan" if detail is not None and detail.replan else "reflect")
        completion = self.backend.chat(
            self._messages(upto=turn),
            schema=schema,
            temperature=modulation.temperature,
            top_p=modulation.top_p,
            max_tokens=max_tokens,
            seed=seed,
        )
        if completion.prompt_eval_s is not None:
            detail = (detail or ReflectDetail()).model_copy(
                update={
                    "evaluated_prompt_tokens": completion.evaluated_prompt_tokens,
                    "prompt_eval_ms": _ms(completion.prompt_eval_s),
                    "threads": completion.threads,
                }
            )
        return self._record(
            turn,
            StepKind.reflect,
            content=completion.text,
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            duration_ms=completion.duration_s * 1000,
            sampling=Sampling(
                temperature=modulation.temperature, top_p=modulation.top_p, max_tokens=max_tokens, seed=seed
            ).stored(),
            detail=detail.stored() if detail is not None else None,
        )

    def _update_emotion(self, turn: TurnSteps, before: AffectState, action: Action, result: Step) -> Step:
        detail = tool_result(result)
        prev_tests = earlier_test_runs(turn, self.turns, self.observations)
        budget_used = self._budget_used(turn.number)
        obs = sense(turn, self.turns, action, detail, prev_tests, budget_used)
        after, appraisals = self.engine.update(before, obs)
        history = affect_history(self.turns) + [after]
        tests_passing = (
            detail.tests_passed if detail.tests_run else (prev_tests[-1].tests_passed if prev_tests else None)
        )
        modulation = self.engine.modulate(
            after,
            history,
            self.gen.temperature,
            self.gen.top_p,
            tests_passing=tests_passing,
            budget_used=budget_used,
        )
        first_pass = self._first_pass(turn, detail, prev_tests)
        dodged = not first_pass and self._review_dodged(turn, tests_passing)
        review = first_pass or dodged
        untouched = (
            untouched_named_files(self.task.instruction, self.root, workspace_diff(self.root))
            if action.tool in EDIT_TOOLS and detail.ok and detail.diff_lines
            else []
        )
        plan = self.policy.plan_next(
            self.turns,
            turn,
            modulation.strategy,
            detail,
            tests_passing,
            review,
            recheck=dodged,
            unfinished=bool(untouched),
        )
        affect_line = modulation.line_for(plan.tools)
        lines = [affect_line] if affect_line else []
        if plan.review and not plan.replan:
            # A review that comes again (dodged, so the check is on) says only what is owed: the first
            # one's line, with the task and the change, is the message before.
            edits = any(t in EDIT_TOOLS for t in plan.tools)
            lines.append(RECHECK_PROMPT if dodged else self._review_line(edits))
        if not plan.replan and (failed_check := check_failed_prompt(action.tool, detail, tests_passing)):
            lines.append(failed_check)
        if not plan.replan and untouched:
            lines.append(f"The task also names {', '.join(untouched)}: no change has touched it yet.")
        lines.append(REPLAN_PROMPT if plan.replan else next_prompt(plan))
        return self._record(
            turn,
            StepKind.emotion,
            content="\n".join(lines),
            emotion=EmotionRecord(
                before=Affect.model_validate(before.as_dict()),
                after=Affect.model_validate(after.as_dict()),
                appraisals=[Appraisal.model_validate(a.as_dict()) for a in appraisals],
                trajectory=Trajectory.model_validate(modulation.trajectory.as_dict())
                if modulation.trajectory
                else None,
                modulation=ModulationRecord.model_validate(modulation.as_dict()),
                plan=plan,
            ).stored(),
            sampling=Sampling(
                temperature=modulation.temperature, top_p=modulation.top_p, strategy=modulation.strategy
            ).stored(),
        )

    def _failed_check(self) -> str | None:
        """The code of the last `python` check whose asserts failed or whose error came from the code under
        check, unless a later check passed; read from the persisted turns."""
        for turn in reversed(self.turns):
            call, result = turn.get(StepKind.tool_call), turn.get(StepKind.tool_result)
            if call is None or result is None or call.tool_name != "python":
                continue
            detail = tool_result(result)
            if detail.ok:
                return None
            if detail.exit_code == ASSERT_FAILED or detail.check_failed:
                return (call.tool_args or {}).get("code")
        return None

    def _review_line(self, edits: bool = True) -> str:
        """The review turn's line: with the check, the probe's calls for the model to assert the task's
        results of; without it, what the changed code gives for them (tools.probe_on_review). `edits`:
        whether the turn may also change files."""
        diff = workspace_diff(self.root)
        check, probing = self.policy.check_on_review, self.settings.tools.probe_on_review
        if check:
            calls = [expr for _, expr in probe_calls(self.root, diff)] if probing else []
            return review_prompt(self.task.instruction, diff, check=True, calls=calls, edits=edits)
        probe = self.toolbox.probe() if probing else ""
        return review_prompt(self.task.instruction, diff, probe=probe)

    def _first_pass(self, turn: TurnSteps, detail: ToolResultDetail, prev_tests: list[OutcomeDetail]) -> bool:
        """Whether this turn's edit made the task's tests pass for the first time (the review turn
        follows, with tools.review_before_finish)."""
        if not self.settings.tools.review_before_finish or turn.get(StepKind.tool_call) is None:
            return False
        edited = turn.get(StepKind.tool_call).tool_name in EDIT_TOOLS
        passed_now = bool(detail.tests_run and detail.tests_passed)
        return edited and passed_now and not any(d.tests_passed for d in prev_tests)

    def _review_dodged(self, turn: TurnSteps, tests_passing: bool | None) -> bool:
        """Whether the review turn, offered its check, did something else (another edit, or a rewrite that
        changed nothing) and the tests still pass: the check is owed for the code as it is now, so the
        review comes once more (not after a second review turn, nor once a check has run; `python` code that
        ran and asserts nothing is no check, policy.checked). Seen in the eval: blog_slug_urls's review
        turn wrote slugify a second time, word_count_spaces's rewrote the function unchanged, and the turns
        after could finish unchecked (`'  Python   Tips  '` gave `'--python---tips--'`; `count_words('')`
        gave 1); capitalize_words's only redefined the function in `python`."""
        if not self.policy.check_on_review or not tests_passing or turn.get(StepKind.tool_call) is None:
            return False
        tried = [turn, *(t for t in self.turns if t.number < turn.number)]
        if any(checked(t, tool_result(r)) for t in tried if (r := t.get(StepKind.tool_result)) is not None):
            return False
        reviewed = self._affect_before(turn.number)[2].review
        return reviewed and not self._affect_before(turn.number - 1)[2].review

    @staticmethod
    def _action_of(turn: TurnSteps) -> Action:
        call = turn.get(StepKind.tool_call)
        return Action(call.tool_name or "invalid", call.tool_args or {})

    # --- the prompt -------------------------------------------------------------------------
    def _messages(self, upto: TurnSteps) -> list[dict[str, str]]:
        """The prompt for the call `upto` is about to make, rebuilt from the persisted steps only."""
        _, modulation, _ = self._affect_before(1)
        first = self.turns[0] if self.turns else None
        return self.conversation.messages(
            self.observations,
            self.turns,
            upto,
            opening_line=modulation.prompt_line,
            recalled=first.get(MEMORY) if first is not None and first.number == 1 else None,
            repair_first=self._sources_observed(),
        )

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
        # What was stored: a cancel that arrived during the final test run wins over the outcome.
        return self.store.finish(self.task_id, status, reason=reason, summary=summary, workspace_diff=diff)


def run_agent(store: TaskStore, backend: ModelBackend, settings: Settings, task_id: int) -> TaskStatus | None:
    try:
        return Agent(store, backend, settings, task_id).run()
    except LostClaim as exc:
        log.warning("%s; stopping without further writes", exc)
        return None
