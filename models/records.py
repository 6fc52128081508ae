"""Typed records stored in a step's JSON columns (`Step.sampling`, `Step.emotion`, `Step.detail`) and
the names they use. The agent writes them through these models (`.stored()`), readers parse them back with
`model_validate` (a detail with `read` or `step_detail`), and the API returns them with these types, so
the OpenAPI schema says what a step holds. Stored records are read leniently (missing optional keys
default; unknown keys are ignored, or kept in a detail), so rows written before a field existed still
parse.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class ToolName(enum.StrEnum):
    """The agent's tools (elpis_worker/tools.py defines each one's arguments)."""

    list_dir = "list_dir"
    read_file = "read_file"
    write_file = "write_file"
    edit_file = "edit_file"
    search = "search"
    run = "run"
    python = "python"
    run_tests = "run_tests"
    finish = "finish"


EDIT_TOOLS = frozenset({ToolName.write_file, ToolName.edit_file})


class ErrorKind(enum.StrEnum):
    """Why a tool call failed (a tool_result step's detail.error_kind)."""

    escape = "escape"  # a path outside the workspace
    not_found = "not_found"
    bad_args = "bad_args"  # arguments the tool's schema refuses, or a reply that is no tool call
    timeout = "timeout"
    nonzero_exit = "nonzero_exit"
    unknown_tool = "unknown_tool"
    protected = "protected"  # a path the task declared protected
    syntax_error = "syntax_error"  # an edit that leaves a Python file unparsable (refused)
    tests_failing = "tests_failing"  # finish refused while the task's tests fail
    repeated = "repeated"  # a call excluded for repeating one that failed or changed nothing
    os_error = "os_error"  # the host refused (disk full...)
    regression = "regression"  # an edit that broke passing tests, undone
    no_change = "no_change"  # an edit whose result is what the file already holds
    revisited = "revisited"  # an edit back to files the tests were seen failing with, undone


class Strategy(enum.StrEnum):
    """What the emotion model has the next turn do (elpis_worker/emotion.py: modulate)."""

    continue_ = "continue"
    replan = "replan"
    finish = "finish"
    wrap_up = "wrap_up"


class Record(BaseModel):
    """A stored record, lenient on read."""

    model_config = ConfigDict(extra="ignore", validate_assignment=True)

    def stored(self) -> dict[str, Any]:
        """The JSON written to the column."""
        return self.model_dump(mode="json")


class Affect(Record):
    """An affect state: valence, arousal and dominance in -1..1 and the mood they name."""

    valence: float
    arousal: float
    dominance: float = 0.0
    mood: str | None = None


class Appraisal(Record):
    """One rule of the appraisal table that fired, with the change it made."""

    rule: str
    d_valence: float = 0.0
    d_arousal: float = 0.0
    d_dominance: float = 0.0
    reason: str = ""


class Trajectory(Record):
    velocity: dict[str, float] = Field(default_factory=dict)
    trend: str = "stable"  # improving | declining | stable | oscillating
    spiral: str | None = None  # frustration | anxiety
    distance: float = 0.0
    distress_turns: int = 0


class Modulation(Record):
    """What the affect did to sampling and strategy, with the reasons."""

    temperature: float | None = None
    top_p: float | None = None
    strategy: Strategy = Strategy.continue_
    prompt_line: str = ""
    reasons: list[str] = Field(default_factory=list)
    mood: str | None = None
    trajectory: Trajectory | None = None


class TurnPlan(Record):
    """What the next turn may do: its strategy, whether it replans first, the tools its grammar allows,
    the tools shut out, and the exact calls it may not repeat."""

    strategy: Strategy = Strategy.continue_
    replan: bool = False
    tools: list[ToolName] = Field(default_factory=lambda: list(ToolName))
    excluded: list[ToolName] = Field(default_factory=list)
    banned: list[dict[str, Any]] = Field(default_factory=list)
    # The tests just passed for the first time: the turn checks the change against the task first.
    review: bool = False


class EmotionRecord(Record):
    """An emotion step's `emotion`: the state before and after the turn, the appraisals that moved it,
    the trajectory, the modulation and the plan for the next turn."""

    before: Affect | None = None
    after: Affect
    appraisals: list[Appraisal] = Field(default_factory=list)
    trajectory: Trajectory | None = None
    modulation: Modulation | None = None
    plan: TurnPlan | None = None


class Sampling(Record):
    """How a generation was sampled (think and reflect steps), or the sampling an emotion step set."""

    temperature: float
    top_p: float
    max_tokens: int | None = None
    strategy: Strategy | None = None
    merged: bool | None = None  # a reflection given in the same reply as the tool call
    resampled: int | None = None  # extra samples taken because the reply repeated a banned call
    temperature_used: float | None = None  # the temperature of the last of those samples
    allowed_tools: list[ToolName] | None = None  # set only when the grammar narrowed the tools
    banned_calls: list[dict[str, Any]] | None = None
    seed: int | None = None  # the seed the (last) sample was drawn with (elpis_worker.backend.call_seed)

    def stored(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)  # only the keys that apply


# --- a step's detail -------------------------------------------------------------------------------


class StepDetail(Record):
    """A step's `detail`: the facts a reader needs about the step (test counts, error kind, diff size,
    parse errors...), one model per kind of step. Lenient both ways, so old rows and newer writers both
    read: keys no model names are kept (and returned by the API), and only the keys the writer set are
    stored, so the stored JSON is what it was before these models existed."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    def stored(self) -> dict[str, Any]:
        return self.model_dump(mode="json", include=set(self.model_fields_set))

    @classmethod
    def read(cls, data: dict[str, Any] | None) -> Self | None:
        """The stored detail as this model; None where the step stored none."""
        return None if data is None else cls.model_validate(data)


class OutcomeDetail(StepDetail):
    """Whether a call worked and, where it ran the task's tests, their verdict."""

    ok: bool = True
    error_kind: ErrorKind | None = None
    tests_run: bool = False
    tests_passed: bool | None = None
    failures: int | None = None


class ToolResultDetail(OutcomeDetail):
    """A `tool_result` step's detail."""

    exit_code: int | None = None
    diff_lines: int | None = None  # the workspace diff's size after the call
    diff_sha: str | None = None  # identifies the workspace state (elpis_worker/turns.py: diff_sha)
    finished: bool = False  # a finish the tests accepted: the task is done
    summary: str | None = None
    reverted: bool = False  # an edit that broke passing tests, undone
    # A `python` check whose error was raised inside the code under check, or an edit after which the
    # tests pass but the agent's last failed check, run again, still fails.
    check_failed: bool = False
    # ... and fails with an error raised inside the code under check (not a deliberate raise, not an
    # assert): the code, not the check's expectation, is what is wrong.
    check_crashed: bool = False


class ObserveDetail(OutcomeDetail):
    """An `observe` step's detail: the tests' verdict (the `run_tests` observation) or the files whose
    source was shown (`read_sources`); the repository map stores none of it."""

    files: list[str] | None = None


class ThinkDetail(StepDetail):
    """A `think` step's detail: the reply's thought, why it was no usable call, how it ended."""

    thought: str | None = None
    parse_error: str | None = None
    finish_reason: str | None = None  # "stop", or "length" when max_tokens cut the reply
    merged: bool = False  # the reply also carried the reflection on the previous result
    # The reply was written by the agent, not generated: a turn whose only call is finish (compose_finish).
    composed: bool = False
    # Prompt tokens the model evaluated for this call; the rest came from its KV cache.
    evaluated_prompt_tokens: int | None = None
    # Milliseconds of the call spent evaluating the prompt (the rest is decoding); None where unknown.
    prompt_eval_ms: float | None = None
    # The most llama.cpp threads the call ran with (model.share_idle_cores); None where unknown.
    threads: int | None = None


class ReflectDetail(StepDetail):
    """A `reflect` step's detail: a replan (with the plan it set) or a reflection given in the same reply
    as the next tool call (with the whole reply, so a resumed turn can record the think step from it).
    A plain reflection stores none."""

    replan: bool = False
    plan: TurnPlan | None = None
    reasons: list[str] | None = None
    merged: bool = False
    completion: str | None = None
    progress: bool | None = None
    # Set where the reflection was its own generation (not a one-call reply), as on ThinkDetail.
    evaluated_prompt_tokens: int | None = None
    prompt_eval_ms: float | None = None
    threads: int | None = None

    @field_validator("progress", mode="before")
    @classmethod
    def _progress(cls, value: Any) -> Any:
        # The grammar makes it a boolean; a server that ignores the schema may send anything else.
        return value if value is None or isinstance(value, bool) else None


class RecalledMemory(Record):
    """One long-term memory a `memory` step recalled, with how it scored."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    id: int
    kind: str
    outcome: str | None = None
    score: float
    similarity: float


class MemoryDetail(StepDetail):
    """A `memory` step's detail: what was recalled and why, or why nothing could be."""

    memories: list[RecalledMemory] = Field(default_factory=list)
    memory_signal: float = 0.0  # in -1..1: past successes (+) or failures (-) among what was recalled
    error: str | None = None
    reason: str | None = None  # "task start" or "replan"
    query: str | None = None


DETAILS: dict[str, type[StepDetail]] = {
    "observe": ObserveDetail,
    "think": ThinkDetail,
    "tool_result": ToolResultDetail,
    "reflect": ReflectDetail,
    "memory": MemoryDetail,
}
"""The detail model of each kind of step that stores one (a tool call and an emotion update store none)."""


# What the API returns as a step's detail: its kind's model, chosen by the step's kind (`step_detail`), not
# guessed from the keys (every field has a default); the stored JSON where no model reads it. Tried left to
# right: a dict is the stored JSON, a model instance matches its own class only.
StepDetailOut = Annotated[
    dict[str, Any] | ObserveDetail | ThinkDetail | ToolResultDetail | ReflectDetail | MemoryDetail,
    Field(union_mode="left_to_right"),
]


def step_detail(kind: str, data: dict[str, Any] | None) -> StepDetail | dict[str, Any] | None:
    """A stored detail as its kind's model; as stored where the kind has none, or where the stored JSON
    does not fit it (a row older than the model)."""
    model = DETAILS.get(str(kind))
    if model is None or not isinstance(data, dict):
        return data
    try:
        return model.model_validate(data)
    except ValidationError:
        return data
