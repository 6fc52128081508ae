"""Typed records stored in a step's JSON columns (`Step.sampling`, `Step.emotion`) and the names they
use. The agent writes them through these models (`.stored()`), readers parse them back with
`model_validate`, and the API returns them with these types, so the OpenAPI schema says what a step
holds. Stored records are read leniently (unknown keys ignored, missing optional keys default), so rows
written before a field existed still parse.
"""

from __future__ import annotations

import enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ToolName(enum.StrEnum):
    """The agent's tools (elpis_worker/tools.py defines each one's arguments)."""

    list_dir = "list_dir"
    read_file = "read_file"
    write_file = "write_file"
    edit_file = "edit_file"
    search = "search"
    run = "run"
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

    def stored(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)  # only the keys that apply
