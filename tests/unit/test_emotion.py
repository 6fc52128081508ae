"""The affect model: bounds, decay, determinism, the rule table and the modulation it drives."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elpis_worker.emotion import (
    APPRAISAL_RULES,
    MOODS,
    STRATEGY_ADVICE,
    STUCK_TEMPERATURE_MAX,
    STUCK_TEMPERATURE_STEP,
    STUCK_TURNS,
    AffectState,
    EmotionEngine,
    Modulation,
    Observation,
    Trajectory,
    appraise,
    baseline_from_config,
    distress,
    mood_table_markdown,
    rule_table_markdown,
    trajectory,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "emotions.md"
BASE = AffectState(0.1, 0.2)  # the config.yaml default
TOOLS = ("list_dir", "read_file", "write_file", "search", "run", "run_tests", "finish")
ERROR_KINDS = ("timeout", "escape", "not_found", "bad_args", "nonzero_exit", "os_error", "unknown_tool")

unit = st.floats(min_value=-1.0, max_value=1.0, allow_nan=False)
states = st.builds(AffectState, unit, unit, unit)
counts = st.none() | st.integers(min_value=0, max_value=500)
observations = st.builds(
    Observation,
    tool=st.sampled_from(TOOLS) | st.text(max_size=12),
    ok=st.booleans(),
    error_kind=st.none() | st.sampled_from(ERROR_KINDS) | st.text(max_size=8),
    tests_run=st.booleans(),
    tests_passed=st.none() | st.booleans(),
    failures=counts,
    prev_failures=counts,
    repeated_action=st.booleans(),
    diff_lines=st.none() | st.integers(min_value=0, max_value=100_000),
    prev_diff_lines=st.none() | st.integers(min_value=0, max_value=100_000),
    # a little outside the documented ranges too: measured fractions can overshoot
    budget_used=st.floats(min_value=-0.5, max_value=2.0, allow_nan=False),
    memory_signal=st.floats(min_value=-2.0, max_value=2.0, allow_nan=False),
)
engines = st.builds(
    EmotionEngine,
    baseline=states,
    decay_rate=st.floats(min_value=0.0, max_value=1.0),
    intensity=st.floats(min_value=0.1, max_value=10.0),
)


def in_bounds(s: AffectState) -> bool:
    return all(-1.0 <= x <= 1.0 and math.isfinite(x) for x in s.vector())


def failing_run(failures: int = 3, prev: int | None = 3) -> Observation:
    return Observation(
        "run_tests",
        ok=False,
        error_kind="nonzero_exit",
        tests_run=True,
        tests_passed=False,
        failures=failures,
        prev_failures=prev,
        diff_lines=10,
        prev_diff_lines=10,
    )


def replay(engine: EmotionEngine, events: list[Observation], start: AffectState) -> list[AffectState]:
    history, state = [], start
    for obs in events:
        state, _ = engine.update(state, obs)
        history.append(state)
    return history


# --- properties -----------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(engine=engines, start=states, events=st.lists(observations, max_size=40))
def test_state_stays_in_bounds_for_any_events(
    engine: EmotionEngine, start: AffectState, events: list[Observation]
) -> None:
    state = start
    for obs in events:
        state, appraisals = engine.update(state, obs)
        assert in_bounds(state), (obs, state)
        assert appraisals, "every observation is appraised by at least one rule"
        mod = engine.modulate(
            state, [state], 0.7, 0.9, tests_passing=obs.tests_passed, budget_used=obs.budget_used
        )
        assert 0.05 <= mod.temperature <= 1.5 and 0.5 <= mod.top_p <= 1.0
        assert mod.strategy in ("continue", "replan", "finish", "wrap_up")


@settings(max_examples=200, deadline=None)
@given(baseline=states, start=states, rate=st.floats(min_value=0.01, max_value=1.0))
def test_decay_alone_converges_monotonically_to_baseline(
    baseline: AffectState, start: AffectState, rate: float
) -> None:
    engine = EmotionEngine(baseline, rate)
    # distance shrinks by (1 - rate) per step; add margin for float rounding
    steps = math.ceil(math.log(1e-4 / (2 * math.sqrt(3))) / math.log1p(-rate)) if rate < 1 else 1
    state, previous = start, start.distance(baseline)
    for _ in range(steps):
        state = engine.decay(state)
        now = state.distance(baseline)
        assert now <= previous + 1e-12
        if previous > 1e-9:
            assert now < previous
        previous = now
    assert previous < 1e-3


@settings(max_examples=100, deadline=None)
@given(engine=engines, events=st.lists(observations, max_size=25))
def test_same_events_same_trajectory(engine: EmotionEngine, events: list[Observation]) -> None:
    first = replay(engine, events, engine.baseline)
    twin = EmotionEngine(engine.baseline, engine.decay_rate, intensity=engine.intensity)
    second = replay(twin, events, twin.baseline)
    assert first == second
    assert trajectory(first, engine.baseline) == trajectory(second, engine.baseline)
    for i in range(1, len(first) + 1):
        assert engine.modulate(first[i - 1], first[:i], 0.7, 0.9) == twin.modulate(
            second[i - 1], second[:i], 0.7, 0.9
        )


@settings(max_examples=200, deadline=None)
@given(state=states)
def test_as_dict_round_trips(state: AffectState) -> None:
    record = state.as_dict()
    assert set(record) == {"valence", "arousal", "dominance", "mood"}
    back = AffectState.from_dict(record)
    for name in ("valence", "arousal", "dominance"):
        assert abs(getattr(back, name) - getattr(state, name)) <= 5e-5
    assert back.as_dict() == record
    assert record["mood"] in MOODS


# --- appraisal ------------------------------------------------------------------------------------


def rules(obs: Observation) -> list[str]:
    return [a.rule for a in appraise(obs)]


def test_rule_table_is_the_code() -> None:
    names = [r.rule for r in APPRAISAL_RULES]
    assert len(names) == len(set(names))
    for r in APPRAISAL_RULES:
        assert all(abs(x) <= 1 for x in (r.d_valence, r.d_arousal, r.d_dominance))
    fired = appraise(failing_run(prev=None))
    assert [(a.rule, a.d_valence, a.d_arousal, a.d_dominance) for a in fired] == [
        ("tests_failed", -0.20, 0.15, -0.05)
    ]


@pytest.mark.parametrize(
    ("obs", "expected"),
    [
        (Observation("read_file", ok=True), ["tool_ok"]),
        (Observation("read_file", ok=False, error_kind="not_found"), ["tool_error"]),
        (Observation("run", ok=False, error_kind="timeout"), ["tool_timeout"]),
        (Observation("read_file", ok=False, error_kind="escape"), ["workspace_escape"]),
        (failing_run(prev=None), ["tests_failed"]),
        (failing_run(3, 3), ["no_progress"]),
        (failing_run(1, 3), ["fewer_failures"]),
        (failing_run(5, 3), ["more_failures"]),
        (
            Observation("run_tests", ok=True, tests_run=True, tests_passed=True, failures=0, prev_failures=2),
            ["tests_passed"],
        ),
        # a test run that timed out is a broken tool, not a verdict
        (Observation("run_tests", ok=False, error_kind="timeout", tests_run=True), ["tool_timeout"]),
        (Observation("read_file", ok=True, repeated_action=True), ["tool_ok", "repeated_action"]),
        (Observation("write_file", ok=True, diff_lines=12, prev_diff_lines=4), ["tool_ok", "diff_grew"]),
        (Observation("write_file", ok=True, diff_lines=12, prev_diff_lines=None), ["tool_ok", "diff_grew"]),
        (Observation("write_file", ok=True, diff_lines=0, prev_diff_lines=30), ["tool_ok", "diff_emptied"]),
        (Observation("write_file", ok=True, diff_lines=8, prev_diff_lines=8), ["tool_ok", "no_change"]),
        (Observation("read_file", ok=True, diff_lines=8, prev_diff_lines=8), ["tool_ok"]),
        (Observation("read_file", ok=True, budget_used=0.5), ["tool_ok"]),
        (Observation("read_file", ok=True, budget_used=0.8), ["tool_ok", "budget_pressure"]),
        (Observation("read_file", ok=True, memory_signal=0.5), ["tool_ok", "memory_success"]),
        (Observation("read_file", ok=True, memory_signal=-0.5), ["tool_ok", "memory_failure"]),
    ],
)
def test_rules_fire_as_documented(obs: Observation, expected: list[str]) -> None:
    assert rules(obs) == expected


def test_timeout_and_escape_are_worse_than_a_plain_error() -> None:
    plain = appraise(Observation("run", ok=False, error_kind="nonzero_exit"))[0]
    for kind in ("timeout", "escape"):
        worse = appraise(Observation("run", ok=False, error_kind=kind))[0]
        assert worse.d_valence < plain.d_valence < 0
        assert worse.d_dominance < plain.d_dominance < 0


def test_budget_pressure_grows_with_budget_used() -> None:
    def pressure(used: float) -> float:
        return next(
            a.d_arousal
            for a in appraise(Observation("read_file", True, budget_used=used))
            if a.rule == "budget_pressure"
        )

    assert 0 < pressure(0.6) < pressure(0.8) < pressure(1.0) == pytest.approx(0.25)
    assert pressure(5.0) == pressure(1.0)  # overshoot is clamped
    assert "budget_pressure" not in rules(Observation("read_file", True, budget_used=float("nan")))


def test_memory_signal_is_proportional_and_signed() -> None:
    weak = appraise(Observation("read_file", True, memory_signal=0.2))[-1]
    strong = appraise(Observation("read_file", True, memory_signal=1.0))[-1]
    bad = appraise(Observation("read_file", True, memory_signal=-1.0))[-1]
    assert 0 < weak.d_valence < strong.d_valence
    assert bad.d_valence < 0 < bad.d_arousal


def test_more_of_the_failures_fixed_is_more_progress() -> None:
    one_of_ten = appraise(failing_run(9, 10))[0]
    all_but_one = appraise(failing_run(1, 10))[0]
    assert 0 < one_of_ten.d_valence < all_but_one.d_valence


# --- update ---------------------------------------------------------------------------------------


def test_failing_test_run_lowers_valence_and_raises_arousal() -> None:
    engine = EmotionEngine(BASE, 0.15)
    after, appraisals = engine.update(BASE, failing_run(prev=None))
    assert [a.rule for a in appraisals] == ["tests_failed"]
    assert after.valence < BASE.valence - 0.1
    assert after.arousal > BASE.arousal + 0.05
    # worked by hand: saturation then decay
    v = 0.1 - 0.2 * (1 + 0.1)
    assert after.valence == pytest.approx(v + 0.15 * (0.1 - v))


def test_fewer_failures_raises_valence() -> None:
    engine = EmotionEngine(BASE, 0.15)
    stuck = AffectState(-0.3, 0.5, -0.1)
    progress, _ = engine.update(stuck, failing_run(2, 5))
    same, _ = engine.update(stuck, failing_run(5, 5))
    assert progress.valence > stuck.valence
    assert progress.valence > same.valence


def test_passing_tests_raise_valence_and_confidence() -> None:
    engine = EmotionEngine(BASE, 0.15)
    after, _ = engine.update(
        BASE, Observation("run_tests", True, tests_run=True, tests_passed=True, failures=0)
    )
    assert after.valence > 0.3 and after.dominance > 0.3 and after.arousal < BASE.arousal


def test_saturation_keeps_extremes_inside() -> None:
    engine = EmotionEngine(BASE, 0.0, intensity=10.0)
    worst = Observation(
        "run",
        ok=False,
        error_kind="escape",
        repeated_action=True,
        diff_lines=0,
        prev_diff_lines=40,
        budget_used=1.0,
        memory_signal=-1.0,
    )
    state = AffectState(-0.99, 0.99, -0.99)
    after, _ = engine.update(state, worst)
    assert in_bounds(after) and after.valence <= state.valence


def test_decay_formula_and_zero_rate() -> None:
    engine = EmotionEngine(BASE, 0.25)
    s = engine.decay(AffectState(-0.9, 0.9, 0.5))
    assert s.valence == pytest.approx(-0.9 + 0.25 * (0.1 + 0.9))
    assert s.arousal == pytest.approx(0.9 + 0.25 * (0.2 - 0.9))
    assert s.dominance == pytest.approx(0.5 * 0.75)
    frozen = EmotionEngine(BASE, 0.0)
    assert frozen.decay(AffectState(-0.9, 0.9, 0.5)) == AffectState(-0.9, 0.9, 0.5)


# --- trajectory and modulation --------------------------------------------------------------------


def test_repeated_failures_form_a_spiral_and_only_then_replan() -> None:
    engine = EmotionEngine(BASE, 0.15)
    history: list[AffectState] = []
    state = BASE
    strategies, spirals = [], []
    for obs in [failing_run(prev=None), failing_run(), failing_run(), failing_run()]:
        state, _ = engine.update(state, obs)
        history.append(state)
        mod = engine.modulate(state, history, 0.7, 0.9, tests_passing=False)
        strategies.append(mod.strategy)
        spirals.append(trajectory(history, BASE).spiral)
    assert spirals == [None, None, "frustration", "frustration"]
    assert strategies == ["continue", "continue", "replan", "replan"]
    assert state.mood() == "frustrated"
    assert trajectory(history, BASE).trend == "declining"


def test_a_single_bad_step_is_not_a_spiral() -> None:
    engine = EmotionEngine(BASE, 0.15)
    bad = Observation("run_tests", False, "nonzero_exit", True, False, 5, 3, repeated_action=True)
    state, _ = engine.update(BASE, bad)
    assert state.mood() == "frustrated"
    assert trajectory([BASE, state], BASE).spiral is None
    assert engine.modulate(state, [BASE, state], 0.7, 0.9).strategy == "continue"


def test_recovery_ends_the_spiral() -> None:
    engine = EmotionEngine(BASE, 0.15)
    history = replay(engine, [failing_run(prev=None)] + [failing_run()] * 3, BASE)
    assert trajectory(history, BASE).spiral == "frustration"
    better, _ = engine.update(history[-1], failing_run(1, 3))
    history.append(better)
    traj = trajectory(history, BASE)
    assert traj.spiral is None and traj.velocity["valence"] > 0


def test_frustration_past_threshold_replans_without_a_spiral() -> None:
    engine = EmotionEngine(BASE, 0.15, frustration_threshold=0.3)
    deep = AffectState(-0.5, 0.6, 0.0)
    assert distress(deep, BASE) >= 0.3
    assert engine.modulate(deep, [deep], 0.7, 0.9).strategy == "replan"
    assert (
        EmotionEngine(BASE, 0.15, frustration_threshold=0.9).modulate(deep, [deep], 0.7, 0.9).strategy
        == "continue"
    )


def test_anxiety_spiral_from_timeouts_and_budget() -> None:
    engine = EmotionEngine(BASE, 0.15)
    events = [Observation("run", False, "timeout", budget_used=i / 10) for i in range(1, 9)]
    history = replay(engine, events, BASE)
    assert history[-1].mood() == "anxious"
    assert trajectory(history, BASE).spiral == "anxiety"
    assert engine.modulate(history[-1], history, 0.7, 0.9, budget_used=0.5).strategy == "replan"
    assert engine.modulate(history[-1], history, 0.7, 0.9, budget_used=0.8).strategy == "wrap_up"


def test_trajectory_of_short_histories() -> None:
    empty = trajectory([], BASE)
    assert empty == Trajectory(
        velocity={"valence": 0.0, "arousal": 0.0, "dominance": 0.0}, trend="stable", spiral=None
    )
    one = trajectory([AffectState(-0.5, 0.5)], BASE)
    assert one.spiral is None and one.trend == "stable" and one.distress_turns == 1
    two = trajectory([BASE, AffectState(0.5, 0.2)], BASE)
    assert two.velocity["valence"] == pytest.approx(0.4) and two.trend == "improving"
    assert set(two.as_dict()) == {"velocity", "trend", "spiral", "distance", "distress_turns"}


def test_oscillation_is_recognised() -> None:
    zigzag = [AffectState(v, 0.2) for v in (0.1, -0.2, 0.2, -0.2)]
    assert trajectory(zigzag, BASE).trend == "oscillating"


def test_temperature_frustrated_below_base_below_calm_positive() -> None:
    engine = EmotionEngine(BASE, 0.15)
    frustrated = AffectState(-0.6, 0.7, 0.0)
    calm = AffectState(0.6, -0.4, 0.1)
    assert frustrated.mood() == "frustrated" and calm.mood() == "calm"
    hot = engine.modulate(frustrated, [frustrated], 0.7, 0.9)
    rest = engine.modulate(BASE, [BASE], 0.7, 0.9)
    cool = engine.modulate(calm, [calm], 0.7, 0.9)
    assert hot.temperature < rest.temperature < cool.temperature
    assert rest.temperature == pytest.approx(0.7) and rest.top_p == pytest.approx(0.9)
    assert hot.top_p < 0.9 < cool.top_p


def test_distress_that_lasts_opens_sampling_step_by_step_to_a_cap() -> None:
    """One bad turn steadies sampling; from STUCK_TURNS turns of distress on the steady approach has
    failed, so temperature rises STUCK_TEMPERATURE_STEP per further turn up to STUCK_TEMPERATURE_MAX."""
    engine = EmotionEngine(BASE, 0.15)
    distressed = AffectState(-0.5, 0.6, 0.0)
    temps = [engine.modulate(distressed, [distressed] * n, 0.2, 0.9).temperature for n in range(1, 6)]
    assert temps[0] < 0.2
    assert temps[1:] == pytest.approx(
        [min(STUCK_TEMPERATURE_MAX, 0.2 + STUCK_TEMPERATURE_STEP * k) for k in range(1, 5)]
    )
    assert temps[-1] == STUCK_TEMPERATURE_MAX
    stuck = engine.modulate(distressed, [distressed] * STUCK_TURNS, 0.2, 0.9)
    assert stuck.top_p >= 0.9 and any(r.startswith("stuck:") for r in stuck.reasons)
    # A recovered state is not stuck, and a base above the cap is left to the usual rule.
    assert engine.modulate(BASE, [distressed, distressed, BASE], 0.2, 0.9).temperature == pytest.approx(0.2)
    assert engine.modulate(distressed, [distressed] * 4, 1.2, 0.9).temperature < 1.2


def test_sampling_is_clamped() -> None:
    engine = EmotionEngine(BASE, 0.15)
    assert engine.modulate(AffectState(1.0, -1.0), [], 1.4, 0.99).temperature == 1.5
    low = engine.modulate(AffectState(-1.0, 1.0), [], 0.05, 0.5)
    assert low.temperature == 0.05 and low.top_p == 0.5


def test_confident_with_passing_tests_finishes() -> None:
    engine = EmotionEngine(BASE, 0.15)
    state, _ = engine.update(
        BASE, Observation("run_tests", True, tests_run=True, tests_passed=True, failures=0)
    )
    assert engine.modulate(state, [state], 0.7, 0.9, tests_passing=True).strategy == "finish"
    assert engine.modulate(state, [state], 0.7, 0.9, tests_passing=None).strategy == "continue"
    unsure = AffectState(0.4, 0.3, 0.1)
    assert engine.modulate(unsure, [unsure], 0.7, 0.9, tests_passing=True).strategy == "continue"


def test_anxious_near_the_end_of_budget_wraps_up() -> None:
    engine = EmotionEngine(BASE, 0.15)
    anxious = AffectState(-0.2, 0.5, -0.5)
    assert anxious.mood() == "anxious"
    assert engine.modulate(anxious, [anxious], 0.7, 0.9, budget_used=0.8).strategy == "wrap_up"
    assert engine.modulate(anxious, [anxious], 0.7, 0.9, budget_used=0.3).strategy != "wrap_up"


def test_prompt_line_names_mood_and_numbers() -> None:
    engine = EmotionEngine(BASE, 0.15)
    history = replay(engine, [failing_run(prev=None)] + [failing_run()] * 3, BASE)
    mod = engine.modulate(history[-1], history, 0.7, 0.9)
    s = history[-1]
    assert mod.prompt_line.startswith(f"Affect: frustrated (v={s.valence:.2f}, a={s.arousal:.2f}, ")
    assert "different approach" in mod.prompt_line
    assert any("spiral" in r for r in mod.reasons)
    assert mod.as_dict()["strategy"] == "replan" and mod.as_dict()["trajectory"]["spiral"] == "frustration"


def test_the_advice_to_finish_is_left_out_where_the_turn_may_not_finish() -> None:
    engine = EmotionEngine(BASE, 0.15)
    state, _ = engine.update(
        BASE, Observation("run_tests", True, tests_run=True, tests_passed=True, failures=0)
    )
    mod = engine.modulate(state, [state], 0.7, 0.9, tests_passing=True)
    assert mod.strategy == "finish" and mod.prompt_line.endswith(STRATEGY_ADVICE["finish"])
    assert mod.line_for(["finish", "python"]) == mod.prompt_line
    checking = mod.line_for(["python"])  # a review turn that must check the change first
    numbers = f"v={state.valence:.2f}, a={state.arousal:.2f}, d={state.dominance:.2f}"
    assert checking == f"Affect: {mod.mood} ({numbers})."
    # Other strategies' advice stays whatever the turn allows.
    history = replay(engine, [failing_run(prev=None)] + [failing_run()] * 3, BASE)
    replan = engine.modulate(history[-1], history, 0.7, 0.9)
    assert replan.line_for(["python"]) == replan.prompt_line and "different approach" in replan.prompt_line


def test_modulation_off_returns_base_sampling_unchanged() -> None:
    engine = EmotionEngine(BASE, 0.15, modulation=False)
    history = replay(engine, [failing_run(prev=None)] + [failing_run()] * 5, BASE)
    mod = engine.modulate(history[-1], history, 0.73, 0.91, tests_passing=False, budget_used=0.9)
    assert (mod.temperature, mod.top_p, mod.strategy, mod.prompt_line, mod.reasons) == (
        0.73,
        0.91,
        "continue",
        "",
        ["modulation off"],
    )
    assert mod.trajectory is not None and mod.trajectory.spiral == "frustration"  # still measured
    # the state itself moves the same with the switch off
    assert history == replay(EmotionEngine(BASE, 0.15), [failing_run(prev=None)] + [failing_run()] * 5, BASE)


def test_modulation_is_constructible_by_keyword_as_the_loop_does() -> None:
    mod = Modulation(temperature=0.7, top_p=0.9, strategy="continue", prompt_line="", reasons=[])
    assert mod.as_dict()["trajectory"] is None


# --- moods and records ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("point", "mood"),
    [
        ((0.0, 0.0, 0.0), "neutral"),
        ((0.08, -0.1, 0.9), "neutral"),  # inside the radius dominance does not matter
        ((0.1, 0.2, 0.0), "curious"),  # the default baseline
        ((0.4, 0.5, 0.0), "curious"),
        ((0.4, 0.5, 0.6), "confident"),
        ((0.6, -0.3, 0.5), "satisfied"),
        ((0.4, -0.4, 0.0), "calm"),
        ((-0.5, 0.6, 0.0), "frustrated"),
        ((-0.5, 0.6, -0.5), "anxious"),
        ((-0.4, -0.4, 0.0), "bored"),
        ((-0.4, -0.5, -0.6), "tired"),
        ((0.0, 0.15, 0.0), "curious"),  # boundaries: the radius is exclusive, v = 0 counts as pleasant
        ((-0.3, 0.3, -0.25), "frustrated"),
        ((0.3, 0.3, 0.3), "confident"),
    ],
)
def test_moods_map_as_documented(point: tuple[float, float, float], mood: str) -> None:
    assert AffectState(*point).mood() == mood


def test_from_dict_is_tolerant_and_strict_where_it_matters() -> None:
    assert AffectState.from_dict({"valence": 0.2, "arousal": -0.1}) == AffectState(0.2, -0.1, 0.0)
    assert AffectState.from_dict(
        {"valence": "0.2", "arousal": 0, "dominance": None, "mood": "x", "extra": 1}
    ) == (AffectState(0.2, 0.0, 0.0))
    with pytest.raises(ValueError, match="arousal"):
        AffectState.from_dict({"valence": 0.2})
    with pytest.raises(ValueError, match="valence"):
        AffectState(1.5, 0.0)
    with pytest.raises(ValueError, match="dominance"):
        AffectState(0.0, 0.0, float("nan"))


def test_as_dict_is_rounded() -> None:
    record = AffectState(0.123456, -0.987654, 0.5).as_dict()
    assert record == {"valence": 0.1235, "arousal": -0.9877, "dominance": 0.5, "mood": "satisfied"}


def test_baseline_from_config() -> None:
    assert baseline_from_config({"valence": 0.1, "arousal": 0.2}) == AffectState(0.1, 0.2, 0.0)
    assert baseline_from_config({"valence": 0.1, "arousal": 0.2, "dominance": -0.3}).dominance == -0.3

    class Point:  # what settings.emotions.baseline looks like
        valence, arousal = 0.3, -0.2

    assert baseline_from_config(Point()) == AffectState(0.3, -0.2)
    with pytest.raises(ValueError, match=r"emotions\.baseline\.arousal"):
        baseline_from_config({"valence": 0.1})
    with pytest.raises(ValueError, match=r"emotions\.baseline\.valence"):
        baseline_from_config({"valence": 2, "arousal": 0})


def test_engine_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="decay_rate"):
        EmotionEngine(BASE, 1.5)
    with pytest.raises(ValueError, match="spiral_window"):
        EmotionEngine(BASE, 0.1, spiral_window=0)
    engine = EmotionEngine.from_config(
        {"baseline": {"valence": 0.0, "arousal": 0.1}, "decay_rate": 0.3, "modulation": False}
    )
    assert (engine.baseline, engine.decay_rate, engine.modulation) == (AffectState(0.0, 0.1), 0.3, False)


def test_docs_carry_the_tables_from_the_code() -> None:
    text = DOCS.read_text(encoding="utf-8")
    assert rule_table_markdown() in text, "regenerate the rule table in docs/emotions.md"
    assert mood_table_markdown() in text, "regenerate the mood table in docs/emotions.md"
