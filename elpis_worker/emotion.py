"""The agent's affect model: a point in pleasure-arousal-dominance space that moves with what happens.

The state is Russell's (1980) circumplex of affect, valence x arousal, extended with Mehrabian's
dominance axis (PAD, 1996), which here doubles as the agent's confidence. Each turn the loop measures
what happened in the workspace (an `Observation`), `appraise` turns it into deltas through a fixed rule
table (`APPRAISAL_RULES`), `EmotionEngine.update` applies them with saturation and decays the result
toward a baseline, and `EmotionEngine.modulate` turns the state and its recent `trajectory` into
sampling parameters, a strategy and one prompt line.

Everything here is pure and deterministic (stdlib only, no clock, no randomness), so a task's affect
can be replayed exactly from its persisted observations. The tables are module constants and
`rule_table_markdown` / `mood_table_markdown` render them, so docs/emotions.md cannot drift from the code.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from models.records import EDIT_TOOLS, Strategy

DIMENSIONS = ("valence", "arousal", "dominance")

# Mood boundaries. Positive moods need earned confidence (the agent starts at dominance 0, and most
# good events only nudge it), while "anxious"/"tired" need a real loss of control, hence the asymmetry.
CONFIDENT_DOMINANCE = 0.3
ANXIOUS_DOMINANCE = -0.25
# Inside this radius of the origin (in the valence-arousal plane) no mood is strong enough to name.
NEUTRAL_RADIUS = 0.15

# Trajectory: how many recent turns make a trend or a spiral, the smallest valence change that counts
# as movement, and the distress level below which a turn does not count toward a spiral.
SPIRAL_WINDOW = 3
TREND_EPS = 0.02
SPIRAL_FLOOR = 0.1

# Sampling bounds: modulation may steady or loosen sampling, but never make it fully greedy (which
# invites loops) or so hot that a small model stops emitting valid tool-call JSON.
TEMPERATURE_RANGE = (0.05, 1.5)
TOP_P_RANGE = (0.5, 1.0)
# How far distress pulls sampling down and ease pushes it up (see `distress` and `ease`).
STEADY_TEMPERATURE = 0.5
EXPLORE_TEMPERATURE = 0.5
STEADY_TOP_P = 0.2
EXPLORE_TOP_P = 0.1
# Distress that lasts means the steady approach is not working: from STUCK_TURNS consecutive turns of
# distress on, sampling opens instead, STUCK_TEMPERATURE_STEP above the base per further turn up to
# STUCK_TEMPERATURE_MAX, so a small model stops re-sampling the same wrong fix (seen in the eval: the
# identical failing edit three turns running at temperature 0.17). The ceiling stays well below 1: at
# 1.0 the 1.5B model garbled its edits (eval of 2026-11-28, modulation on: 13/35 against 18/35 off).
STUCK_TURNS = 2
STUCK_TEMPERATURE_STEP = 0.2
STUCK_TEMPERATURE_MAX = 0.7

# Budget fraction at which budget pressure starts.
BUDGET_PRESSURE_START = 0.5


# --------------------------------------------------------------------------------------------------
# State and moods
# --------------------------------------------------------------------------------------------------


def _clamp(x: float, lo: float = -1.0, hi: float = 1.0) -> float:
    return lo if x < lo else hi if x > hi else x


@dataclass(frozen=True)
class MoodRegion:
    """One named mood: a quadrant of the valence-arousal plane split by a dominance threshold."""

    mood: str
    valence: str  # "+" means valence >= 0, "-" means valence < 0
    arousal: str  # "+" means arousal >= 0, "-" means arousal < 0
    dominance_min: float  # inclusive
    dominance_max: float  # exclusive
    octant: str  # the Mehrabian PAD octant it corresponds to
    meaning: str

    def contains(self, valence: float, arousal: float, dominance: float) -> bool:
        return (
            (valence >= 0) == (self.valence == "+")
            and (arousal >= 0) == (self.arousal == "+")
            and self.dominance_min <= dominance < self.dominance_max
        )


NEUTRAL_MOOD = "neutral"
MOOD_REGIONS: tuple[MoodRegion, ...] = (
    MoodRegion(
        "confident",
        "+",
        "+",
        CONFIDENT_DOMINANCE,
        math.inf,
        "exuberant (+P +A +D)",
        "engaged and in control: the work is going well",
    ),
    MoodRegion(
        "curious",
        "+",
        "+",
        -math.inf,
        CONFIDENT_DOMINANCE,
        "dependent (+P +A -D)",
        "interested and engaged, not yet sure of the answer (the default baseline)",
    ),
    MoodRegion(
        "satisfied",
        "+",
        "-",
        CONFIDENT_DOMINANCE,
        math.inf,
        "relaxed (+P -A +D)",
        "settled after a success and in control",
    ),
    MoodRegion(
        "calm", "+", "-", -math.inf, CONFIDENT_DOMINANCE, "docile (+P -A -D)", "at ease, nothing pressing"
    ),
    MoodRegion(
        "frustrated",
        "-",
        "+",
        ANXIOUS_DOMINANCE,
        math.inf,
        "hostile (-P +A +D)",
        "blocked but still pushing: things keep failing",
    ),
    MoodRegion(
        "anxious",
        "-",
        "+",
        -math.inf,
        ANXIOUS_DOMINANCE,
        "anxious (-P +A -D)",
        "under pressure and losing control (budget, timeouts, refusals)",
    ),
    MoodRegion(
        "bored",
        "-",
        "-",
        ANXIOUS_DOMINANCE,
        math.inf,
        "disdainful (-P -A +D)",
        "disengaged: actions change nothing",
    ),
    MoodRegion(
        "tired", "-", "-", -math.inf, ANXIOUS_DOMINANCE, "bored (-P -A -D)", "worn down after a long struggle"
    ),
)
MOODS: tuple[str, ...] = (NEUTRAL_MOOD, *(r.mood for r in MOOD_REGIONS))


def mood_of(valence: float, arousal: float, dominance: float = 0.0) -> str:
    """Name the mood of a point (see `MOOD_REGIONS`); near the origin it is "neutral"."""
    if math.hypot(valence, arousal) < NEUTRAL_RADIUS:
        return NEUTRAL_MOOD
    for region in MOOD_REGIONS:
        if region.contains(valence, arousal, dominance):
            return region.mood
    raise AssertionError(f"mood regions do not cover ({valence}, {arousal}, {dominance})")  # pragma: no cover


@dataclass(frozen=True)
class AffectState:
    """A point in PAD space; every dimension is in [-1, 1] (checked, so a bad caller fails loudly)."""

    valence: float
    arousal: float
    dominance: float = 0.0

    def __post_init__(self) -> None:
        for name in DIMENSIONS:
            raw = getattr(self, name)
            if isinstance(raw, bool) or not isinstance(raw, int | float):
                raise TypeError(f"AffectState.{name} must be a number, got {raw!r}")
            value = float(raw)
            if not math.isfinite(value) or not -1.0 <= value <= 1.0:
                raise ValueError(f"AffectState.{name} must be in [-1, 1], got {raw!r}")
            object.__setattr__(self, name, value)

    @classmethod
    def clamped(cls, valence: float, arousal: float, dominance: float = 0.0) -> AffectState:
        """Build a state from values that may have left [-1, 1] through float arithmetic."""
        return cls(_clamp(valence), _clamp(arousal), _clamp(dominance))

    def vector(self) -> tuple[float, float, float]:
        return (self.valence, self.arousal, self.dominance)

    def distance(self, other: AffectState) -> float:
        """Euclidean distance in PAD space (at most 2*sqrt(3))."""
        return math.dist(self.vector(), other.vector())

    def mood(self) -> str:
        return mood_of(self.valence, self.arousal, self.dominance)

    def as_dict(self) -> dict[str, float | str]:
        """Rounded to 4 dp; the mood is that of the rounded numbers, so a stored record agrees with itself."""
        v, a, d = (round(x, 4) for x in self.vector())
        return {"valence": v, "arousal": a, "dominance": d, "mood": mood_of(v, a, d)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AffectState:
        """Read `as_dict` output (or any mapping with valence/arousal); extra keys are ignored."""
        missing = [k for k in ("valence", "arousal") if d.get(k) is None]
        if missing:
            raise ValueError(f"an affect state needs 'valence' and 'arousal'; missing {', '.join(missing)}")
        dominance = d.get("dominance")
        try:
            return cls(
                float(d["valence"]), float(d["arousal"]), 0.0 if dominance is None else float(dominance)
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"bad affect state {dict(d)!r}: {exc}") from None


def baseline_from_config(d: Mapping[str, Any] | Any) -> AffectState:
    """The resting state from `emotions.baseline` (a mapping or settings object); dominance defaults to 0."""
    if not isinstance(d, Mapping):
        d = {name: getattr(d, name) for name in DIMENSIONS if hasattr(d, name)}
    values: dict[str, float] = {}
    for name in DIMENSIONS:
        raw = d.get(name, 0.0 if name == "dominance" else None)
        if raw is None:
            raise ValueError(f"emotions.baseline.{name} is required (a number in [-1, 1])")
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise ValueError(f"emotions.baseline.{name} must be a number in [-1, 1], got {raw!r}") from None
        if not math.isfinite(value) or not -1.0 <= value <= 1.0:
            raise ValueError(f"emotions.baseline.{name} must be in [-1, 1], got {raw!r}")
        values[name] = value
    return AffectState(**values)


def distress(state: AffectState, baseline: AffectState) -> float:
    """How far the state has moved toward unpleasant-and-aroused from the baseline, in [0, 1].

    The geometric mean of the valence drop and the arousal rise: zero unless both happened, so
    calm disappointment or pleasant excitement is not distress.
    """
    drop = max(0.0, baseline.valence - state.valence)
    rise = max(0.0, state.arousal - baseline.arousal)
    return min(1.0, math.sqrt(drop * rise))


def ease(state: AffectState, baseline: AffectState) -> float:
    """The mirror of `distress`: how far the state has moved toward pleasant-and-calm, in [0, 1]."""
    gain = max(0.0, state.valence - baseline.valence)
    settle = max(0.0, baseline.arousal - state.arousal)
    return min(1.0, math.sqrt(gain * settle))


# --------------------------------------------------------------------------------------------------
# Observations and appraisal
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Observation:
    """What happened in one agent turn, measured from the workspace, not from model text."""

    tool: str  # tool name the agent called (list_dir, read_file, write_file, search, run, run_tests, finish)
    ok: bool  # tool succeeded (exit code 0 / no error)
    error_kind: str | None = None  # "timeout", "escape", "not_found", "bad_args", "nonzero_exit", ...
    tests_run: bool = False
    tests_passed: bool | None = None
    failures: int | None = None  # failing tests this run (None if unknown)
    prev_failures: int | None = None  # failing tests in the previous test run of this task (None if none)
    repeated_action: bool = False  # identical tool+args as a recent turn (agent looping)
    diff_lines: int | None = None  # size of workspace diff after the turn
    prev_diff_lines: int | None = None
    budget_used: float = 0.0  # max(steps, tokens, seconds used / allowed) in [0, 1]
    memory_signal: float = 0.0  # + a recalled similar success, - a recalled similar failure, in [-1, 1]


@dataclass(frozen=True)
class AppraisalRule:
    """One row of the appraisal table: base deltas, when the rule fires and how its deltas are scaled."""

    rule: str
    d_valence: float
    d_arousal: float
    d_dominance: float
    when: str
    scale: str = "1"
    reason: str = ""


@dataclass(frozen=True)
class Appraisal:
    rule: str  # name of the rule that fired, e.g. "tool_error", "tests_failed", "fewer_failures"
    d_valence: float
    d_arousal: float
    d_dominance: float
    reason: str  # one human sentence

    def as_dict(self) -> dict[str, float | str]:
        return {
            "rule": self.rule,
            "d_valence": round(self.d_valence, 4),
            "d_arousal": round(self.d_arousal, 4),
            "d_dominance": round(self.d_dominance, 4),
            "reason": self.reason,
        }


# The rule table. Within a family at most one rule fires; families are independent and their deltas
# add up. Order here is the order `appraise` reports them in.
APPRAISAL_RULES: tuple[AppraisalRule, ...] = (
    # tool outcome: skipped when a test run gave a verdict and its only "error" was failing tests
    AppraisalRule("tool_ok", +0.02, -0.02, +0.02, "the tool succeeded", reason="The tool call worked."),
    AppraisalRule(
        "tool_error",
        -0.10,
        +0.10,
        -0.05,
        "the tool failed (not_found, bad_args, nonzero_exit, anything but timeout/escape)",
        reason="The tool call failed.",
    ),
    AppraisalRule(
        "tool_timeout",
        -0.15,
        +0.20,
        -0.10,
        "the tool failed with error_kind timeout",
        reason="The command timed out.",
    ),
    AppraisalRule(
        "workspace_escape",
        -0.20,
        +0.15,
        -0.20,
        "the tool was refused with error_kind escape",
        reason="The tool was refused for reaching outside the workspace.",
    ),
    # test outcome: only when tests ran and gave a verdict
    AppraisalRule("tests_passed", +0.35, -0.10, +0.40, "tests ran and passed", reason="The tests pass."),
    AppraisalRule(
        "fewer_failures",
        +0.20,
        -0.05,
        +0.10,
        "tests failed, but fewer than in the previous run",
        scale="0.5 + 0.5 * (prev_failures - failures) / prev_failures",
        reason="Tests still fail, but fewer than before: progress.",
    ),
    AppraisalRule(
        "more_failures",
        -0.30,
        +0.25,
        -0.10,
        "tests failed, more than in the previous run",
        reason="More tests fail than before: the last change made things worse.",
    ),
    AppraisalRule(
        "no_progress",
        -0.30,
        +0.25,
        -0.05,
        "tests failed, as many as in the previous run",
        reason="The same number of tests still fail: no progress.",
    ),
    AppraisalRule(
        "tests_failed",
        -0.20,
        +0.15,
        -0.05,
        "tests failed, no previous count to compare with",
        reason="The tests fail.",
    ),
    # behaviour
    AppraisalRule(
        "repeated_action",
        -0.15,
        +0.10,
        -0.10,
        "same tool and arguments as a recent turn",
        reason="The same action was repeated: the agent may be looping.",
    ),
    # workspace diff: only when diff_lines is known (a missing prev_diff_lines counts as 0)
    AppraisalRule(
        "diff_grew",
        +0.04,
        +0.02,
        +0.04,
        "the workspace diff grew",
        reason="The change set grew toward a fix.",
    ),
    AppraisalRule(
        "diff_emptied",
        -0.10,
        +0.05,
        -0.10,
        "the diff shrank to nothing",
        reason="The changes were undone: the diff is empty again.",
    ),
    AppraisalRule(
        "no_change",
        -0.05,
        -0.08,
        -0.03,
        "a write tool left the diff size unchanged",
        reason="The edit changed nothing.",
    ),
    # context
    AppraisalRule(
        "budget_pressure",
        -0.15,
        +0.25,
        -0.30,
        "budget_used > 0.5",
        scale="(budget_used - 0.5) / 0.5",
        reason="The budget is running out.",
    ),
    AppraisalRule(
        "memory_success",
        +0.15,
        -0.05,
        +0.15,
        "memory_signal > 0",
        scale="memory_signal",
        reason="A similar past success was recalled.",
    ),
    AppraisalRule(
        "memory_failure",
        -0.10,
        +0.10,
        -0.10,
        "memory_signal < 0",
        scale="-memory_signal",
        reason="A similar past failure was recalled.",
    ),
)
RULES_BY_NAME: dict[str, AppraisalRule] = {r.rule: r for r in APPRAISAL_RULES}


def _fire(name: str, scale: float = 1.0) -> Appraisal:
    r = RULES_BY_NAME[name]
    return Appraisal(r.rule, r.d_valence * scale, r.d_arousal * scale, r.d_dominance * scale, r.reason)


def _finite(x: float, lo: float, hi: float) -> float:
    """Sanitise a measured fraction: non-finite counts as 0, the rest is clamped."""
    return _clamp(float(x), lo, hi) if math.isfinite(x) else 0.0


def appraise(obs: Observation) -> list[Appraisal]:
    """Turn one observation into the appraisals of `APPRAISAL_RULES` that fire, in table order."""
    fired: list[Appraisal] = []
    verdict = obs.tests_run and obs.tests_passed is not None

    # A failing test run exits non-zero, and an undone edit ("regression") made the tests worse: both are
    # test results, not a broken tool.
    if not (verdict and (obs.ok or obs.error_kind in (None, "nonzero_exit", "regression"))):
        if obs.ok:
            fired.append(_fire("tool_ok"))
        elif obs.error_kind == "timeout":
            fired.append(_fire("tool_timeout"))
        elif obs.error_kind == "escape":
            fired.append(_fire("workspace_escape"))
        else:
            fired.append(_fire("tool_error"))

    if verdict:
        now, before = obs.failures, obs.prev_failures
        if obs.tests_passed:
            fired.append(_fire("tests_passed"))
        elif now is None or before is None:
            fired.append(_fire("tests_failed"))
        elif now < before:
            fixed = (before - now) / before if before > 0 else 1.0
            fired.append(_fire("fewer_failures", 0.5 + 0.5 * fixed))
        elif now > before:
            fired.append(_fire("more_failures"))
        else:
            fired.append(_fire("no_progress"))

    if obs.repeated_action:
        fired.append(_fire("repeated_action"))

    if obs.diff_lines is not None:
        before_diff = obs.prev_diff_lines or 0
        if obs.diff_lines > before_diff:
            fired.append(_fire("diff_grew"))
        elif obs.diff_lines <= 0 < before_diff:
            fired.append(_fire("diff_emptied"))
        elif obs.diff_lines == before_diff and obs.tool in EDIT_TOOLS:  # an edit that changed nothing
            fired.append(_fire("no_change"))

    budget = _finite(obs.budget_used, 0.0, 1.0)
    if budget > BUDGET_PRESSURE_START:
        fired.append(
            _fire("budget_pressure", (budget - BUDGET_PRESSURE_START) / (1.0 - BUDGET_PRESSURE_START))
        )

    memory = _finite(obs.memory_signal, -1.0, 1.0)
    if memory > 0:
        fired.append(_fire("memory_success", memory))
    elif memory < 0:
        fired.append(_fire("memory_failure", -memory))
    return fired


# --------------------------------------------------------------------------------------------------
# Trajectory
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trajectory:
    velocity: dict[str, float]  # per-dimension change over the last turn (zeros with fewer than 2 states)
    trend: str  # "improving" | "declining" | "stable" | "oscillating"
    spiral: str | None  # "frustration" | "anxiety" | None
    distance: float = 0.0  # distance of the newest state from the baseline
    distress_turns: int = 0  # consecutive newest states with distress >= SPIRAL_FLOOR

    def as_dict(self) -> dict[str, Any]:
        return {
            "velocity": {k: round(v, 4) for k, v in self.velocity.items()},
            "trend": self.trend,
            "spiral": self.spiral,
            "distance": round(self.distance, 4),
            "distress_turns": self.distress_turns,
        }


def _trend(history: Sequence[AffectState], window: int) -> str:
    tail = history[-(window + 1) :]
    steps = [b.valence - a.valence for a, b in zip(tail, tail[1:], strict=False)]
    if not steps:
        return "stable"
    last3 = steps[-3:]
    if len(last3) == 3 and all(abs(s) > TREND_EPS for s in last3):
        up = [s > 0 for s in last3]
        if up[0] != up[1] and up[1] != up[2]:
            return "oscillating"
    mean = sum(steps) / len(steps)
    if mean > TREND_EPS:
        return "improving"
    if mean < -TREND_EPS:
        return "declining"
    return "stable"


def trajectory(
    history: Sequence[AffectState], baseline: AffectState, window: int = SPIRAL_WINDOW
) -> Trajectory:
    """Where the state is heading, from the states of the last turns (oldest -> newest).

    trend: the mean valence change over the last `window` turns (beyond +-TREND_EPS: improving or
    declining), or "oscillating" when the last three changes alternate in sign, each beyond TREND_EPS.
    spiral: the newest `window` states (at least) are all in distress (see `distress`, >= SPIRAL_FLOOR),
    the distress now is at least what it was when that run began, and the last turn did not ease it by
    more than TREND_EPS: sustained movement away from the baseline, not one bad step and not a
    recovery. Its kind is "anxiety" when dominance is below ANXIOUS_DOMINANCE (losing control),
    otherwise "frustration".
    """
    states = list(history)
    if not states:
        return Trajectory(velocity=dict.fromkeys(DIMENSIONS, 0.0), trend="stable", spiral=None)
    last = states[-1]
    if len(states) >= 2:
        prev = states[-2]
        velocity = {name: getattr(last, name) - getattr(prev, name) for name in DIMENSIONS}
    else:
        velocity = dict.fromkeys(DIMENSIONS, 0.0)

    turns = 0
    for s in reversed(states):
        if distress(s, baseline) < SPIRAL_FLOOR:
            break
        turns += 1
    spiral = None
    now = distress(last, baseline)
    if (
        turns >= max(1, window)
        and now >= distress(states[-turns], baseline)
        and now >= distress(states[-2], baseline) - TREND_EPS
    ):
        spiral = "anxiety" if last.dominance < ANXIOUS_DOMINANCE else "frustration"
    return Trajectory(
        velocity=velocity,
        trend=_trend(states, max(1, window)),
        spiral=spiral,
        distance=last.distance(baseline),
        distress_turns=turns,
    )


# --------------------------------------------------------------------------------------------------
# Modulation
# --------------------------------------------------------------------------------------------------

STRATEGIES = tuple(Strategy)
STRATEGY_ADVICE: dict[str, str] = {
    "replan": "Progress has stalled: step back, re-read the last error and try a different approach.",
    "finish": "The tests pass: review the diff and call finish with a short summary.",
    "wrap_up": "The budget is nearly spent: make the most promising fix now; finish once the tests pass.",
}
MOOD_ADVICE: dict[str, str] = {
    "neutral": "Carry on with the next concrete step.",
    "curious": "Explore, but keep each step small and checkable.",
    "confident": "Keep going and confirm with the tests.",
    "satisfied": "Check the result with the tests before finishing.",
    "calm": "Carry on steadily.",
    "frustrated": "Slow down and check one assumption at a time.",
    "anxious": "Focus on the smallest change that could make the tests pass.",
    "bored": "Nothing is changing: make a concrete edit or run the tests.",
    "tired": "Pick the single most promising fix and test it.",
}


@dataclass(frozen=True)
class Modulation:
    temperature: float
    top_p: float
    strategy: str  # "continue" | "replan" | "finish" | "wrap_up"
    prompt_line: str  # one short line about the affect, appended to the latest message
    reasons: list[str]
    trajectory: Trajectory | None = None  # what the strategy was decided from (kept even with modulation off)
    mood: str = ""

    def line_for(self, tools: Sequence[str]) -> str:
        """The prompt line for a turn that may call only `tools`. The finish strategy's advice to call
        finish is left out where finish is not one of them: a review turn that must check the change
        first says so in its own line, and the 1.5B model copied "review the diff and call finish" into
        the thought of the check it was made to write (eval, bank_withdraw)."""
        advice = STRATEGY_ADVICE["finish"]
        if self.strategy == "finish" and "finish" not in tools and self.prompt_line.endswith(advice):
            return self.prompt_line.removesuffix(advice).rstrip()
        return self.prompt_line

    def as_dict(self) -> dict[str, Any]:
        return {
            "temperature": round(self.temperature, 4),
            "top_p": round(self.top_p, 4),
            "strategy": self.strategy,
            "prompt_line": self.prompt_line,
            "reasons": list(self.reasons),
            "mood": self.mood,
            "trajectory": self.trajectory.as_dict() if self.trajectory is not None else None,
        }


def _check_range(name: str, value: float, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number in [{lo}, {hi}], got {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value!r}")
    return float(value)


@dataclass
class EmotionEngine:
    """Appraise, apply, decay, modulate: the whole affect dynamics, parameterised and pure.

    baseline: the resting point the state decays toward (`emotions.baseline`).
    decay_rate: fraction of the distance to baseline removed each turn (`emotions.decay_rate`).
    modulation: False is the ablation switch (`emotions.modulation`): the state is still computed and
        recorded, but sampling, strategy and prompt are left alone.
    frustration_threshold: distress at or above which the agent replans even without a spiral.
    intensity: gain on the summed appraisal deltas before saturation.
    spiral_window: turns of sustained distress that make a spiral.
    finish_dominance: confidence needed, with passing tests, to suggest finishing.
    wrap_up_budget: budget fraction from which an anxious agent is told to wrap up.
    """

    baseline: AffectState
    decay_rate: float
    modulation: bool = True
    frustration_threshold: float = 0.5
    intensity: float = 1.0
    spiral_window: int = SPIRAL_WINDOW
    finish_dominance: float = CONFIDENT_DOMINANCE
    wrap_up_budget: float = 0.75

    def __post_init__(self) -> None:
        if not isinstance(self.baseline, AffectState):
            raise TypeError(
                f"baseline must be an AffectState (see baseline_from_config), got {self.baseline!r}"
            )
        self.decay_rate = _check_range("emotions.decay_rate", self.decay_rate, 0.0, 1.0)
        self.frustration_threshold = _check_range(
            "frustration_threshold", self.frustration_threshold, 0.0, 1.0
        )
        self.intensity = _check_range("intensity", self.intensity, 0.0, 10.0)
        self.finish_dominance = _check_range("finish_dominance", self.finish_dominance, -1.0, 1.0)
        self.wrap_up_budget = _check_range("wrap_up_budget", self.wrap_up_budget, 0.0, 1.0)
        if (
            isinstance(self.spiral_window, bool)
            or not isinstance(self.spiral_window, int)
            or self.spiral_window < 1
        ):
            raise ValueError(f"spiral_window must be an integer >= 1, got {self.spiral_window!r}")
        self.modulation = bool(self.modulation)

    @classmethod
    def from_config(cls, emotions: Mapping[str, Any] | Any, **overrides: Any) -> EmotionEngine:
        """Build from the `emotions` config section (a mapping or the settings object)."""
        section = emotions if isinstance(emotions, Mapping) else vars(emotions)
        base = section.get("baseline")
        return cls(
            baseline=baseline_from_config(base if base is not None else {"valence": 0.1, "arousal": 0.2}),
            decay_rate=section.get("decay_rate", 0.15),
            modulation=section.get("modulation", True),
            **overrides,
        )

    def initial_state(self) -> AffectState:
        return self.baseline

    def apply(self, state: AffectState, appraisals: Sequence[Appraisal]) -> AffectState:
        """Add the appraisals' deltas with saturation: the summed delta (times intensity, clipped to
        [-1, 1]) moves each dimension that fraction of its remaining headroom, x + d*(1 - x) upward or
        x + d*(1 + x) downward, so the state can approach but never leave [-1, 1]."""
        moved: list[float] = []
        for name in DIMENSIONS:
            total = _clamp(self.intensity * sum(getattr(a, f"d_{name}") for a in appraisals))
            x = getattr(state, name)
            moved.append(x + total * (1.0 - x) if total >= 0 else x + total * (1.0 + x))
        return AffectState.clamped(*moved)

    def decay(self, state: AffectState) -> AffectState:
        """One turn of relaxation toward baseline: x + rate * (baseline - x) per dimension."""
        r = self.decay_rate
        b = self.baseline
        return AffectState.clamped(
            state.valence + r * (b.valence - state.valence),
            state.arousal + r * (b.arousal - state.arousal),
            state.dominance + r * (b.dominance - state.dominance),
        )

    def update(self, state: AffectState, obs: Observation) -> tuple[AffectState, list[Appraisal]]:
        """Appraise obs, apply the deltas (see `apply`), then decay toward baseline. Pure, deterministic."""
        appraisals = appraise(obs)
        return self.decay(self.apply(state, appraisals)), appraisals

    def modulate(
        self,
        state: AffectState,
        history: Sequence[AffectState],
        base_temperature: float,
        base_top_p: float,
        tests_passing: bool | None = None,
        budget_used: float = 0.0,
    ) -> Modulation:
        """Sampling, strategy and a prompt line for the next turn.

        `history` is oldest -> newest and should end with `state`; if it does not, `state` is appended.
        Sampling: distress (unpleasant + aroused, relative to baseline) lowers temperature and top_p to
        steady the agent; ease (pleasant + calm) raises them to let it explore; at the baseline both are
        exactly the base values. Distress that lasts STUCK_TURNS turns or more opens sampling instead
        (the steady approach has failed: try something else). Strategy, first match wins: finish (tests
        pass, dominance >= finish_dominance, valence >= 0), wrap_up (anxious and budget_used >=
        wrap_up_budget), replan (a spiral, or distress >= frustration_threshold), else continue.
        """
        states = list(history)
        if not states or states[-1] != state:
            states.append(state)
        traj = trajectory(states, self.baseline, self.spiral_window)
        mood = state.mood()
        if not self.modulation:
            return Modulation(base_temperature, base_top_p, "continue", "", ["modulation off"], traj, mood)

        reasons: list[str] = []
        steady, relax = distress(state, self.baseline), ease(state, self.baseline)
        factor = 1.0 - STEADY_TEMPERATURE * steady + EXPLORE_TEMPERATURE * relax
        temperature = _clamp(base_temperature * factor, *TEMPERATURE_RANGE)
        top_p = _clamp(base_top_p - STEADY_TOP_P * steady + EXPLORE_TOP_P * relax, *TOP_P_RANGE)
        if steady > 0:
            reasons.append(
                f"distress {steady:.2f} steadies sampling: temperature {base_temperature:.2f} -> "
                f"{temperature:.2f}, top_p {base_top_p:.2f} -> {top_p:.2f}"
            )
        elif relax > 0:
            reasons.append(
                f"ease {relax:.2f} opens sampling: temperature {base_temperature:.2f} -> "
                f"{temperature:.2f}, top_p {base_top_p:.2f} -> {top_p:.2f}"
            )
        else:
            reasons.append(f"sampling at base (temperature {temperature:.2f}, top_p {top_p:.2f})")
        if traj.distress_turns >= STUCK_TURNS:
            stuck = min(
                STUCK_TEMPERATURE_MAX,
                base_temperature + STUCK_TEMPERATURE_STEP * (traj.distress_turns - STUCK_TURNS + 1),
            )
            if stuck > temperature:
                temperature, top_p = stuck, max(top_p, base_top_p)
                reasons.append(
                    f"stuck: distress for {traj.distress_turns} turns opens sampling to try something "
                    f"else: temperature -> {temperature:.2f}, top_p -> {top_p:.2f}"
                )

        budget = _finite(budget_used, 0.0, 1.0)
        if tests_passing is True and state.dominance >= self.finish_dominance and state.valence >= 0:
            strategy = "finish"
            reasons.append(
                f"finish: tests pass and confidence {state.dominance:.2f} >= {self.finish_dominance:.2f}"
            )
        elif (mood == "anxious" or traj.spiral == "anxiety") and budget >= self.wrap_up_budget:
            strategy = "wrap_up"
            reasons.append(f"wrap_up: anxious with {budget:.0%} of the budget used")
        elif traj.spiral is not None:
            strategy = "replan"
            reasons.append(f"replan: {traj.spiral} spiral over {traj.distress_turns} turns")
        elif steady >= self.frustration_threshold:
            strategy = "replan"
            reasons.append(f"replan: distress {steady:.2f} >= threshold {self.frustration_threshold:.2f}")
        else:
            strategy = "continue"
            reasons.append("continue: no strategy trigger")

        advice = STRATEGY_ADVICE.get(strategy) or MOOD_ADVICE[mood]
        prompt_line = (
            f"Affect: {mood} (v={state.valence:.2f}, a={state.arousal:.2f}, "
            f"d={state.dominance:.2f}). {advice}"
        )
        return Modulation(temperature, top_p, strategy, prompt_line, reasons, traj, mood)


# --------------------------------------------------------------------------------------------------
# Tables for the docs
# --------------------------------------------------------------------------------------------------


def _signed(x: float) -> str:
    return f"{x:+.2f}" if x else "0"


def rule_table_markdown() -> str:
    """`APPRAISAL_RULES` as the Markdown table in docs/emotions.md (a test keeps the two equal)."""
    lines = [
        "| rule | Δvalence | Δarousal | Δdominance | when | scaled by |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in APPRAISAL_RULES:
        lines.append(
            f"| `{r.rule}` | {_signed(r.d_valence)} | {_signed(r.d_arousal)} | "
            f"{_signed(r.d_dominance)} | {r.when} | {r.scale} |"
        )
    return "\n".join(lines)


def mood_table_markdown() -> str:
    """`MOOD_REGIONS` as the Markdown table in docs/emotions.md (a test keeps the two equal)."""

    def dom(r: MoodRegion) -> str:
        if r.dominance_min == -math.inf:
            return f"d < {r.dominance_max:+.2f}"
        return f"d ≥ {r.dominance_min:+.2f}"

    lines = [
        "| mood | valence | arousal | dominance | PAD octant (Mehrabian) | meaning |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| `{NEUTRAL_MOOD}` | √(v² + a²) < {NEUTRAL_RADIUS} | | any | centre "
        "| nothing strong enough to name |",
    ]
    for r in MOOD_REGIONS:
        v = "v ≥ 0" if r.valence == "+" else "v < 0"
        a = "a ≥ 0" if r.arousal == "+" else "a < 0"
        lines.append(f"| `{r.mood}` | {v} | {a} | {dom(r)} | {r.octant} | {r.meaning} |")
    return "\n".join(lines)
