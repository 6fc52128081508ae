"""The affect state changes what the agent does, seen through a real worker process and Postgres."""

from __future__ import annotations

from helpers import SAMPLES, steps_of, wait_finished

from elpis_worker.emotion import STUCK_TEMPERATURE_MAX
from elpis_worker.prompts import REPLAN_PROMPT
from models import StepKind

STUBBORN = [
    # An agent that keeps re-running the failing tests; "instead" is what it does when the grammar
    # no longer allows run_tests.
    {
        "thought": "Run the tests again.",
        "tool": "run_tests",
        "args": {},
        "instead": {
            "thought": "Read the code instead.",
            "tool": "read_file",
            "args": {"path": "calc/ops.py"},
        },
    }
] * 6


def run_stubborn(api, start_worker, scripted, db_url, script=None, **env):
    # The emotion model on its own: the grammar's repeat exclusion (which would stop the second identical
    # run_tests at once) is off unless a test turns it on, and sampling starts from 0.5.
    env = {"ELPIS_TOOLS__EXCLUDE_REPEATS": "false", "ELPIS_GENERATION__TEMPERATURE": "0.5", **env}
    worker = start_worker(
        ELPIS_MODEL__BACKEND="scripted", ELPIS_MODEL__SCRIPT=str(scripted(script or STUBBORN)), **env
    )
    api.app.state.enqueue = lambda task_id: None
    body = {
        "tasks": [
            {
                "repo": str(SAMPLES / "calc"),
                "instruction": "Fix the failing test",
                "test_command": "python -m pytest -q",
                "budget": {"max_steps": 6},
            }
        ]
    }
    task_id = api.post("/v1/batches", json=body).json()["tasks"][0]["id"]
    worker.send(task_id)
    wait_finished(db_url, task_id)
    return task_id, steps_of(db_url, task_id)


def test_failing_tests_build_frustration_then_a_strategy_switch(api, start_worker, scripted, db_url):
    task_id, steps = run_stubborn(api, start_worker, scripted, db_url)
    emotions = [s.emotion for s in steps if s.kind == StepKind.emotion]
    valence = [e["after"]["valence"] for e in emotions]
    arousal = [e["after"]["arousal"] for e in emotions]
    # Three failing runs in a row: valence falls and arousal rises each time, into frustration.
    assert valence[0] > valence[1] > valence[2] and arousal[0] < arousal[1] < arousal[2]
    assert emotions[2]["after"]["mood"] == "frustrated"
    assert emotions[2]["trajectory"]["spiral"] == "frustration"
    # Not after a single bad step: the first two turns do not switch strategy.
    assert [e["plan"]["replan"] for e in emotions[:2]] == [False, False]
    assert emotions[2]["plan"]["replan"] and emotions[2]["plan"]["excluded"] == ["run_tests"]

    # Replanning recalls memories again (the first recall is at the task's start).
    assert [s.detail["reason"] for s in steps if s.kind == StepKind.memory] == ["task start", "replan"]
    replans = [s for s in steps if s.kind == StepKind.reflect and (s.detail or {}).get("replan")]
    assert len(replans) == 1 and replans[0].turn == 4
    assert set(json_keys(replans[0].content)) == {"goal", "failed", "new_approach"}
    # Before it, a fresh look at where things stand, from which the replan's prompt starts over.
    (look,) = (s for s in steps if s.kind == StepKind.observe and s.turn > 0)
    assert look.turn == 4 and look.tool_name == "fresh_look" and look.seq < replans[0].seq
    assert look.content.startswith("Fresh look after 3 turns") and "The tests fail now" in look.content
    assert "--- calc/ops.py" in look.content and look.content.endswith(
        emotions[2]["modulation"]["prompt_line"] + "\n" + REPLAN_PROMPT
    )
    calls = [s.tool_name for s in steps if s.kind == StepKind.tool_call]
    assert calls[:4] == ["run_tests", "run_tests", "run_tests", "read_file"]  # a different tool call
    think4 = next(s for s in steps if s.kind == StepKind.think and s.turn == 4)
    assert "run_tests" not in think4.sampling["allowed_tools"]
    # Sampling followed the state: the first setback steadies it (cooler than it started); distress
    # that lasts opens it (stuck: the same approach keeps failing), up to the cap.
    temps = [s.sampling["temperature"] for s in steps if s.kind == StepKind.think]
    assert temps[0] == 0.5 and temps[1] < temps[0] < temps[2]
    assert temps[2] == temps[3] == STUCK_TEMPERATURE_MAX

    trajectory = api.get(f"/v1/tasks/{task_id}/emotions").json()["items"]
    assert [round(i["valence"], 4) for i in trajectory] == [round(v, 4) for v in valence]
    assert trajectory[2]["spiral"] == "frustration" and trajectory[2]["replan_next"] is True


def test_a_replan_after_failed_edits_keeps_the_edit_tools(api, start_worker, scripted, db_url):
    """Failed edits make a spiral like failing tests do, but the replanned turn keeps edit_file: the
    failed calls are banned one by one, and a repair with no edit tool cannot repair anything."""
    missing = {"path": "calc/ops.py", "search": "    return a - b - 0", "replace": "    return a - b"}
    script = [{"thought": "Fix subtract.", "tool": "edit_file", "args": missing}] * 6
    _, steps = run_stubborn(api, start_worker, scripted, db_url, script=script)
    emotions = [s.emotion for s in steps if s.kind == StepKind.emotion]
    replanned = [e["plan"] for e in emotions if e["plan"]["replan"]]
    assert replanned, [e["trajectory"] for e in emotions]
    assert replanned[0]["excluded"] == [] and "edit_file" in replanned[0]["tools"]
    turn = next(s.turn for s in steps if s.kind == StepKind.reflect and (s.detail or {}).get("replan"))
    think = next(s for s in steps if s.kind == StepKind.think and s.turn == turn)
    assert "allowed_tools" not in think.sampling  # set only when the grammar narrows the tools


def test_without_modulation_the_agent_keeps_looping(api, start_worker, scripted, db_url):
    _, steps = run_stubborn(api, start_worker, scripted, db_url, ELPIS_EMOTIONS__MODULATION="false")
    calls = [s.tool_name for s in steps if s.kind == StepKind.tool_call]
    assert calls == ["run_tests"] * 6
    assert not [s for s in steps if (s.detail or {}).get("replan")]
    assert not [s for s in steps if s.kind == StepKind.observe and s.turn > 0]  # no fresh look either
    assert {s.sampling["temperature"] for s in steps if s.kind == StepKind.think} == {0.5}
    # The state is still measured and persisted: it just does not steer.
    assert steps[-1].emotion["after"]["mood"] in {"frustrated", "anxious"}


def test_the_repeat_exclusion_stops_the_loop_without_a_spiral(api, start_worker, scripted, db_url):
    """With modulation off, the grammar alone keeps the stubborn agent from re-running the failing tests
    while nothing has changed: its second turn must do something else."""
    _, steps = run_stubborn(
        api,
        start_worker,
        scripted,
        db_url,
        ELPIS_EMOTIONS__MODULATION="false",
        ELPIS_TOOLS__EXCLUDE_REPEATS="true",
    )
    calls = [s.tool_name for s in steps if s.kind == StepKind.tool_call]
    assert calls[:2] == ["run_tests", "read_file"]
    think2 = next(s for s in steps if s.kind == StepKind.think and s.turn == 2)
    assert think2.sampling["banned_calls"][0]["tool"] == "run_tests"
    assert "run_tests" not in [b["tool"] for b in think2.sampling.get("banned_calls", [])[1:]]


def json_keys(text: str) -> list[str]:
    import json

    return list(json.loads(text))
