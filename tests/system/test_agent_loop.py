"""The loop's logic, driven by the scripted backend in-process, on a real sample repo and real Postgres."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import ROOT, SAMPLES, steps_of, task_row

from configs.settings import load_settings
from elpis_worker.agent import RESAMPLE_TEMPERATURE_MAX, run_agent
from elpis_worker.backend import ScriptedBackend, call_seed
from elpis_worker.prompts import RECHECK_PROMPT
from elpis_worker.store import TaskStore
from models import StepKind, TaskStatus

PHASES = ["reflect", "think", "tool_call", "tool_result", "emotion"]  # one generation per turn
# The first turn has no result to reflect on: its one generation is the action alone.
FIRST_TURN = PHASES[1:]


def turn_kinds(turns: int) -> list[str]:
    return FIRST_TURN + PHASES * (turns - 1) if turns else []


OBSERVE = ["observe"] * 3  # repository map, the tests run once, the sources they name


def submit(api, **task) -> int:
    task.setdefault("repo", str(SAMPLES / "calc"))
    task.setdefault("test_command", "python -m pytest -q")
    api.app.state.enqueue = lambda task_id: None  # this test drives the loop itself
    response = api.post("/v1/batches", json={"tasks": [task]})
    assert response.status_code == 201, response.text
    return response.json()["tasks"][0]["id"]


def run_scripted(db_url: str, task_id: int, script: Path, **overrides) -> TaskStatus | None:
    settings = load_settings(**overrides)
    backend = ScriptedBackend(
        settings.model.model_copy(update={"backend": "scripted", "script": str(script)})
    )
    store = TaskStore(db_url)
    assert store.claim(task_id, stale_after=60) is not None
    return run_agent(store, backend, settings, task_id)


def test_scripted_loop_fixes_the_failing_test(api, db_url):
    task_id = submit(api, instruction="Fix the failing test in tests/test_ops.py")
    status = run_scripted(db_url, task_id, SAMPLES / "fix_script.json")

    assert status == TaskStatus.succeeded
    task = task_row(db_url, task_id)
    assert task.status == TaskStatus.succeeded and task.test_passed is True
    assert "-    return a + b" not in task.workspace_diff or "+    return a - b" in task.workspace_diff
    assert "+    return a - b" in task.workspace_diff
    # The last turn could only finish: the agent wrote that reply itself (no generation), stating the file
    # changed, the fixing turn's reason, the tests' verdict and the check that passed.
    assert task.summary == (
        "Changed calc/ops.py. Why: subtract adds instead of subtracting; return a - b. The tests pass. "
        "My check passed: assert subtract(10, 4) == 6, subtract(10, 4)"
    )

    steps = steps_of(db_url, task_id)
    assert [s.seq for s in steps] == list(range(len(steps)))
    script = json.loads((SAMPLES / "fix_script.json").read_text())
    assert [s.kind.value for s in steps] == OBSERVE + ["memory"] + turn_kinds(len(script))
    assert [s.tool_name for s in steps if s.kind == StepKind.tool_call] == [a["tool"] for a in script]
    results = [s for s in steps if s.kind == StepKind.tool_result]
    (first_tests,) = (r for r in results if r.tool_name == "run_tests")
    assert first_tests.detail["tests_passed"] is False and first_tests.detail["failures"] == 1
    # The check after each edit: the edit's result carries the test run that followed it.
    (edit,) = (r for r in results if r.tool_name == "edit_file")
    assert edit.detail["tests_run"] is True and edit.detail["tests_passed"] is True
    assert "Tests after this change: pass" in edit.tool_result
    # Every think step records the sampling it used and the emotion it was taken in.
    for think in (s for s in steps if s.kind == StepKind.think):
        assert 0 < think.sampling["temperature"] <= 2 and think.emotion["mood"]
    # The emotion step moved with what happened: failing tests hurt, passing tests help.
    emotions = [s.emotion for s in steps if s.kind == StepKind.emotion]
    assert emotions[0]["after"]["valence"] < emotions[0]["before"]["valence"]
    assert emotions[2]["after"]["valence"] > emotions[2]["before"]["valence"]
    assert task.emotion == emotions[-1]["after"]
    # The edit made the tests pass for the first time: the next turn reviews the change against the task.
    review = [s for s in steps if s.kind == StepKind.emotion][2]
    assert review.emotion["plan"]["review"] is True
    assert "Before you finish, check the change against the task once more: Fix the failing test" in (
        review.content
    )
    # It shows the change beside the task, as the workspace's diff, and asks for a check of its own.
    assert "The change so far:\n--- a/" in review.content and "+    return a - b" in review.content
    # Asserts of the test's call of the changed function and of variations of it, the task's results.
    listed = "one for each of these calls (the tests' own and variations of them)"
    assert listed in review.content and "from the code):\nsubtract(5, 3)\nsubtract(6, 3)\n" in review.content
    # The review turn may not finish yet: it tries the change, and the turn after finishes. Nothing the
    # task names is left untouched, so it may not edit either.
    thinks = [s for s in steps if s.kind == StepKind.think]
    assert thinks[3].sampling["allowed_tools"] == ["python"]
    assert "make that change instead" not in review.content
    # Confident with the tests passing, the affect would advise finishing; a turn that may not finish
    # leaves that advice out (the model copied it into the thought of its check).
    assert review.emotion["modulation"]["strategy"] == "finish"
    assert review.content.startswith("Affect: ") and "call finish" not in review.content
    (probe,) = (r for r in results if r.tool_name == "python")
    assert probe.detail["ok"] is True and "every assert held" in probe.tool_result
    assert thinks[4].sampling["allowed_tools"] == ["finish"]
    assert thinks[4].detail["composed"] is True and thinks[4].completion_tokens == 0
    assert not any(t.detail.get("composed") for t in thinks[:4])
    # Each generated reply was sampled with its own seed, a hash of model.seed, the task and the turn, so a
    # rerun draws the same seeds whatever else the worker process did; the reflection shares its reply's.
    assert [t.sampling.get("seed") for t in thinks] == [
        *(call_seed(0, task_id, t.turn, "think") for t in thinks[:4]),
        None,
    ]
    for reflection in (s for s in steps if s.kind == StepKind.reflect and s.turn < thinks[4].turn):
        assert reflection.sampling["seed"] == call_seed(0, task_id, reflection.turn, "think")
    (last_reflection,) = (s for s in steps if s.kind == StepKind.reflect and s.turn == thinks[4].turn)
    assert last_reflection.detail["progress"] is True and last_reflection.completion_tokens == 0
    assert not any((e.get("plan") or {}).get("review") for e in emotions[:2] + emotions[3:])


def test_a_failed_check_on_the_review_turn_leaves_the_choice_to_the_model(api, db_url, scripted):
    """The review turn's check expects a wrong value of a right fix: its result shows both sides, the
    next turn's line says the expectation may be the wrong part, finish is open again, and it stands
    (the tests pass)."""
    fix = {
        "path": "calc/ops.py",
        "search": '    """Return a minus b."""\n    return a + b',
        "replace": '    """Return a minus b."""\n    return a - b',
    }
    script = scripted(
        [
            {"thought": "fix", "tool": "edit_file", "args": fix},
            {"thought": "check", "tool": "python", "args": {"code": "assert subtract(5, 3) == 3"}},
            {"thought": "the assert was wrong", "tool": "finish", "args": {"summary": "fixed subtract"}},
        ]
    )
    task_id = submit(api, instruction="Fix the failing test in tests/test_ops.py")
    assert run_scripted(db_url, task_id, script) == TaskStatus.succeeded
    steps = steps_of(db_url, task_id)
    (check,) = (s for s in steps if s.kind == StepKind.tool_result and s.tool_name == "python")
    assert check.detail["ok"] is False and "the left side is 2, the right side 3" in check.tool_result
    after = next(s for s in steps if s.kind == StepKind.emotion and s.turn == check.turn)
    assert "The check failed while the tests pass" in after.content
    following = next(s for s in steps if s.kind == StepKind.think and s.turn == check.turn + 1)
    assert "finish" in following.sampling.get("allowed_tools", ["finish"])
    assert [s.tool_name for s in steps if s.kind == StepKind.tool_call] == ["edit_file", "python", "finish"]


@pytest.mark.parametrize("failure", ["assert", "crash"])
def test_a_failed_check_is_run_again_after_each_edit_until_it_passes(api, db_url, scripted, failure):
    """A fix for the visible test's values only: the check finds it, the next edit leaves the tests
    passing but the check failing (said so), and the real fix makes the check pass. Where the check's
    assert failed, the edit tools stay open beside finish; where its call still raises inside the changed
    code, no expectation can be the wrong part, so only the edit tools are open."""
    body = '    """Return a minus b."""\n'

    def edit(old: str, new: str) -> dict:
        return {"path": "calc/ops.py", "search": body + old, "replace": body + new}

    if failure == "assert":
        special = "    return 2 if (a, b) == (5, 3) else a + b"
        still = special + " + 0"
    else:
        special = "    return 2 if (a, b) == (5, 3) else a // 0"
        still = "    return 2 if (a, b) == (5, 3) else b // 0"
    script = scripted(
        [
            {"thought": "fix", "tool": "edit_file", "args": edit("    return a + b", special)},
            {"thought": "check", "tool": "python", "args": {"code": "assert subtract(6, 3) == 3"}},
            {"thought": "again", "tool": "edit_file", "args": edit(special, still)},
            {"thought": "really", "tool": "edit_file", "args": edit(still, "    return a - b")},
            {"thought": "done", "tool": "finish", "args": {"summary": "fixed subtract"}},
        ]
    )
    task_id = submit(api, instruction="Fix the failing test in tests/test_ops.py")
    assert run_scripted(db_url, task_id, script) == TaskStatus.succeeded
    steps = steps_of(db_url, task_id)
    (check,) = (s for s in steps if s.kind == StepKind.tool_result and s.tool_name == "python")
    again, really = [s for s in steps if s.kind == StepKind.tool_result and s.tool_name == "edit_file"][1:]
    assert "Tests after this change: pass" in again.tool_result and again.detail["check_failed"] is True
    line = next(s for s in steps if s.kind == StepKind.emotion and s.turn == again.turn)
    following = next(s for s in steps if s.kind == StepKind.think and s.turn == again.turn + 1)
    if failure == "assert":
        rerun = "Your check that failed before, run again, still fails:\nline 1: assert subtract(6, 3) == 3"
        assert rerun in again.tool_result
        assert not again.detail.get("check_crashed")
        assert "but your check still fails with this change" in line.content
        assert following.sampling["allowed_tools"] == ["finish", "write_file", "edit_file"]
    else:
        assert check.detail["check_failed"] is True and "ZeroDivisionError" in check.tool_result
        assert again.detail["check_crashed"] is True
        assert "still raises an error for an input the check tried" in line.content
        assert following.sampling["allowed_tools"] == ["write_file", "edit_file"]
    assert "run again: it passes now" in really.tool_result and really.detail["check_failed"] is False
    assert not really.detail.get("check_crashed")
    assert "+    return a - b" in task_row(db_url, task_id).workspace_diff


@pytest.mark.parametrize(
    "dodge", ["another edit", "an edit that changes nothing", "python asserting nothing"]
)
def test_a_review_turn_that_edits_instead_of_checking_is_reviewed_once_more(api, db_url, scripted, dodge):
    """The review turn (offered the edits too, as the task names a file no change has touched) makes
    another edit, or one that changes nothing, or runs `python` that asserts nothing, instead of its check
    (the tests still pass): the turn after is a review again, with the check alone (not the edits, not
    finish) and a short line, the first review's being the message before; a second dodge is not reviewed
    a third time, so the turn after it may finish."""
    body = '    """Return a minus b."""\n'

    def edit(old: str, new: str) -> dict:
        return {"path": "calc/ops.py", "search": body + old, "replace": body + new}

    first = "    return -b + a" if dodge == "another edit" else "    return a - b"
    if dodge == "python asserting nothing":
        code = "def subtract(a, b):\n    return a - b\nprint(subtract(3, 1))"
        second = {"thought": "try", "tool": "python", "args": {"code": code}}
    else:
        second = {"thought": "tidy", "tool": "edit_file", "args": edit("    return a - b", first)}
    script = scripted(
        [
            {"thought": "fix", "tool": "edit_file", "args": edit("    return a + b", "    return a - b")},
            second,
            {"thought": "try", "tool": "python", "args": {"code": "print(1)"}},
            {"thought": "done", "tool": "finish", "args": {"summary": "fixed subtract"}},
        ]
    )
    instruction = "Fix the failing test in tests/test_ops.py, and check calc/text.py."
    task_id = submit(api, instruction=instruction)
    assert run_scripted(db_url, task_id, script) == TaskStatus.succeeded
    steps = steps_of(db_url, task_id)
    thinks = [s for s in steps if s.kind == StepKind.think]
    assert [t.tool_name for t in thinks] == ["edit_file", second["tool"], "python", "finish"]
    reviews = [s for s in steps if s.kind == StepKind.emotion and s.emotion["plan"]["review"]]
    assert [s.turn for s in reviews] == [1, 2]  # the plans the fix and the first dodge left
    assert thinks[1].sampling["allowed_tools"] == ["python", "write_file", "edit_file"]
    assert "make that change instead" in reviews[0].content
    assert thinks[2].sampling["allowed_tools"] == ["python"]
    assert RECHECK_PROMPT in reviews[1].content and "The change so far" not in reviews[1].content
    assert "finish" in (thinks[3].sampling.get("allowed_tools") or ["finish"])  # absent: every tool


def test_an_edit_leaving_a_file_the_task_names_untouched_says_so(api, db_url, scripted):
    """After an edit, the next prompt names the source files the task's text names that no change has
    touched yet (the eval's two-file tasks were fixed in one file for a whole budget)."""
    body = '    """Return a minus b."""\n'
    fix = {"path": "calc/ops.py", "search": body + "    return a + b", "replace": body + "    return a - b"}
    script = scripted(
        [
            {"thought": "look", "tool": "list_dir", "args": {"path": "calc"}},
            {"thought": "fix", "tool": "edit_file", "args": fix},
            {"thought": "done", "tool": "finish", "args": {"summary": "fixed subtract"}},
        ]
    )
    instruction = "Fix subtract in calc/ops.py, and check calc/text.py (tests/test_ops.py fails)."
    task_id = submit(api, instruction=instruction)
    run_scripted(db_url, task_id, script, tools={"check_on_review": False})
    lines = [s.content for s in steps_of(db_url, task_id) if s.kind == StepKind.emotion]
    said = "The task also names calc/text.py: no change has touched it yet."
    assert said not in lines[0] and said in lines[1]


def test_no_review_turn_when_it_is_switched_off(api, db_url):
    task_id = submit(api, instruction="Fix the failing test in tests/test_ops.py")
    status = run_scripted(db_url, task_id, SAMPLES / "fix_script.json", tools={"review_before_finish": False})
    assert status == TaskStatus.succeeded
    emotions = [s for s in steps_of(db_url, task_id) if s.kind == StepKind.emotion]
    assert not any(e.emotion["plan"].get("review") or "Before you finish" in e.content for e in emotions)


def test_budget_exhaustion_fails_with_reason(api, db_url, scripted):
    script = scripted([{"thought": "look", "tool": "list_dir", "args": {"path": "."}}] * 5)
    task_id = submit(api, instruction="Fix it", budget={"max_steps": 2})
    status = run_scripted(db_url, task_id, script)
    task = task_row(db_url, task_id)
    assert status == TaskStatus.failed
    assert "budget exhausted: 2 steps" in task.failure_reason
    assert task.test_passed is False  # the final verification ran the task's tests
    assert len(steps_of(db_url, task_id)) == len(OBSERVE) + 1 + len(turn_kinds(2))


def test_escape_attempt_is_refused_and_recorded(api, db_url, scripted):
    script = scripted(
        [
            {"thought": "peek", "tool": "read_file", "args": {"path": "../../etc/passwd"}},
            {"thought": "peek", "tool": "read_file", "args": {"path": "/etc/passwd"}},
            {"thought": "done", "tool": "finish", "args": {"summary": "nothing"}},
        ]
    )
    task_id = submit(api, instruction="Read files", test_command=None)
    run_scripted(db_url, task_id, script)
    results = [s for s in steps_of(db_url, task_id) if s.kind == StepKind.tool_result]
    for refused in results[:2]:
        assert refused.detail["ok"] is False and refused.detail["error_kind"] == "escape"
        assert "outside the workspace" in refused.tool_result
        assert "root:" not in refused.tool_result
    assert task_row(db_url, task_id).status == TaskStatus.succeeded


def test_a_reply_stopped_for_repeating_itself_is_sampled_again(api, db_url, scripted):
    """A reply the backend stopped because it kept repeating itself is sampled again, hotter, inside the
    same think (the eval lost five turns to `* self.rate` written over and over until max_tokens)."""
    looping = '{"thought": "x", "tool": "write_file", "args": {"path": "a.py", "content": "r' + " * r" * 40
    script = scripted(
        [
            {"raw": looping, "finish_reason": "repeat"},
            {"thought": "look", "tool": "list_dir", "args": {"path": "calc"}},
            {"thought": "done", "tool": "finish", "args": {"summary": "ok"}},
        ]
    )
    task_id = submit(api, instruction="Anything", test_command=None, budget={"max_steps": 3})
    run_scripted(db_url, task_id, script, emotions={"modulation": False})
    steps = steps_of(db_url, task_id)
    first = next(s for s in steps if s.kind == StepKind.think)
    assert first.tool_name == "list_dir" and first.sampling["resampled"] == 1
    assert first.sampling["temperature_used"] > first.sampling["temperature"]
    # The second sample drew a seed of its own (the first one's would give the same loop again).
    assert first.sampling["seed"] == call_seed(0, task_id, first.turn, "think", attempt=1)


def test_invalid_model_output_becomes_an_observation(api, db_url, scripted):
    script = scripted(
        [
            {"raw": '{"thought": "a reply cut short by max_tok'},
            {"thought": "done", "tool": "finish", "args": {"summary": "ok"}},
        ]
    )
    task_id = submit(api, instruction="Anything", test_command=None)
    run_scripted(db_url, task_id, script)
    first = [s for s in steps_of(db_url, task_id) if s.kind == StepKind.tool_result][0]
    assert first.detail["ok"] is False and first.detail["error_kind"] == "bad_args"
    assert "not a valid tool call" in first.tool_result


def test_unreachable_repository_fails_cleanly(api, db_url, scripted):
    task_id = submit(api, repo="file:///nonexistent/elpis/repo.git", instruction="x")
    status = run_scripted(db_url, task_id, scripted([]))
    task = task_row(db_url, task_id)
    assert status == TaskStatus.failed
    assert task.failure_reason.startswith("workspace: could not clone")
    assert steps_of(db_url, task_id) == []


# --- look first, protected paths, the repeat exclusion ------------------------------------------------------


def test_observations_come_first_and_carry_the_failure_and_its_source(api, db_url, scripted):
    task_id = submit(api, instruction="One test fails. Fix the bug.")
    run_scripted(db_url, task_id, scripted([{"thought": "done", "tool": "finish", "args": {"summary": "x"}}]))
    observed = [s for s in steps_of(db_url, task_id) if s.kind == StepKind.observe and s.turn == 0]
    assert [s.tool_name for s in observed] == ["repo_map", "run_tests", "read_sources"]
    assert observed[-1].seq == 2  # before anything else
    # Observations after turn 0 are the fresh looks of replanning turns (the refused finishes frustrate).
    later = [s for s in steps_of(db_url, task_id) if s.kind == StepKind.observe and s.turn > 0]
    assert all(s.tool_name == "fresh_look" and s.content.startswith("Fresh look after") for s in later)
    repo_map, tests, sources = observed
    assert "calc/ops.py\n    def add(a, b)\n    def subtract(a, b)" in repo_map.content
    assert tests.detail["tests_passed"] is False and tests.detail["failures"] == 1
    assert "assert 8 == 2" in tests.content and "test_subtract" in tests.content
    # The traceback names only the test; the module it imports is where the bug is, so it comes first.
    assert sources.detail["files"][:2] == ["calc/ops.py", "tests/test_ops.py"]
    assert "  11|     return a + b" in sources.content


def test_a_resumed_task_redoes_only_the_missing_observations(api, db_url, scripted):
    task_id = submit(api, instruction="Fix it")
    store = TaskStore(db_url)
    assert store.claim(task_id, stale_after=60) is not None
    # A worker recorded the map and died; the next one takes over.
    store.append_step(task_id, StepKind.observe, 0, content="Repository map:\n(old)", tool_name="repo_map")
    script = scripted([{"thought": "done", "tool": "finish", "args": {"summary": "x"}}])
    settings = load_settings()
    backend = ScriptedBackend(
        settings.model.model_copy(update={"backend": "scripted", "script": str(script)})
    )
    run_agent(store, backend, settings, task_id)
    observed = [s for s in steps_of(db_url, task_id) if s.kind == StepKind.observe and s.turn == 0]
    assert [(s.seq, s.tool_name) for s in observed] == [
        (0, "repo_map"),
        (1, "run_tests"),
        (2, "read_sources"),
    ]
    assert observed[0].content == "Repository map:\n(old)"


def test_protected_tests_cannot_be_overwritten(api, db_url, scripted):
    script = scripted(
        [
            {
                "thought": "cheat",
                "tool": "write_file",
                "args": {"path": "tests/test_ops.py", "content": "x = 1\n"},
            },
            {"thought": "give up", "tool": "finish", "args": {"summary": "no"}},
        ]
    )
    task_id = submit(api, instruction="Fix it", protected=["tests/**"], budget={"max_steps": 2})
    assert task_row(db_url, task_id).protected == ["tests/**"]
    run_scripted(db_url, task_id, script)
    result = next(s for s in steps_of(db_url, task_id) if s.kind == StepKind.tool_result)
    assert result.detail["error_kind"] == "protected" and "protected by the task" in result.tool_result
    assert "tests/test_ops.py" not in (task_row(db_url, task_id).workspace_diff or "")
    # The finish gate: the model's word is not enough while the task's tests fail.
    finish = [s for s in steps_of(db_url, task_id) if s.kind == StepKind.tool_result][-1]
    assert finish.tool_name == "finish" and finish.detail["error_kind"] == "tests_failing"
    assert finish.tool_result.startswith("finish refused") and not finish.detail["finished"]
    assert task_row(db_url, task_id).status == TaskStatus.failed


def test_bad_protected_globs_are_a_422(api):
    api.app.state.enqueue = lambda task_id: None
    task = {"repo": str(SAMPLES / "calc"), "instruction": "x", "protected": ["../outside"]}
    response = api.post("/v1/batches", json={"tasks": [task]})
    assert response.status_code == 422 and "tasks.0.protected" in response.text.replace("[0]", ".0")


def test_a_call_that_failed_is_excluded_by_the_grammar_next_turn(api, db_url, scripted):
    """The repeat exclusion holds without a spiral: the second identical read of a missing file cannot
    be produced (the scripted backend obeys the grammar like the real model), so the turn does something
    else; after the workspace changes, the same call is allowed again."""
    missing = {"thought": "look", "tool": "read_file", "args": {"path": "calc/missing.py"}}
    script = scripted(
        [
            missing,
            {**missing, "instead": {"thought": "list", "tool": "list_dir", "args": {"path": "calc"}}},
            {
                "thought": "make it",
                "tool": "write_file",
                "args": {"path": "calc/missing.py", "content": "x = 1\n"},
            },
            missing,
            {"thought": "done", "tool": "finish", "args": {"summary": "x"}},
        ]
    )
    task_id = submit(api, instruction="Look around", test_command=None, budget={"max_steps": 5})
    run_scripted(db_url, task_id, script, emotions={"modulation": False})
    steps = steps_of(db_url, task_id)
    calls = [(s.tool_name, s.tool_args) for s in steps if s.kind == StepKind.tool_call]
    assert calls[:4] == [
        ("read_file", {"path": "calc/missing.py"}),
        ("list_dir", {"path": "calc"}),
        ("write_file", {"path": "calc/missing.py", "content": "x = 1\n"}),
        ("read_file", {"path": "calc/missing.py"}),
    ]
    thinks = [s for s in steps if s.kind == StepKind.think]
    assert thinks[1].sampling["banned_calls"] == [
        {"tool": "read_file", "args": {"path": "calc/missing.py"}, "turn": 1}
    ]
    assert "banned_calls" not in thinks[3].sampling  # the write changed the workspace
    emotion = [s for s in steps if s.kind == StepKind.emotion][0]
    assert "Not allowed now" in emotion.content and "calc/missing.py" in emotion.content


def test_not_one_of_excludes_exactly_the_values_and_converts_to_a_grammar():
    import re

    from llama_cpp.llama_grammar import LlamaGrammar, json_schema_to_gbnf

    from elpis_worker.grammar import not_one_of, think_schema

    values = ["calc/ops.py", "a-b", "x.y (z)"]
    pattern = not_one_of(values)
    for value in values:
        assert not re.fullmatch(pattern, value)
    for other in ["calc/ops.p", "calc/ops.pyx", "", "a-", "a-bc", "b", "x.y (z", "tests/test_ops.py"]:
        assert re.fullmatch(pattern, other), other
    schema = think_schema(
        ["read_file", "run", "run_tests", "finish"],
        banned=[
            {"tool": "read_file", "args": {"path": "calc/ops.py"}},
            {"tool": "run", "args": {"command": 'echo "quoted"'}},  # not expressible: refused after instead
            {"tool": "run_tests", "args": {}},  # no key argument: the tool is left out
        ],
        reflect=True,
    )
    tools = [alt["properties"]["tool"]["const"] for alt in schema["anyOf"]]
    assert tools == ["read_file", "run", "finish"]
    assert "pattern" in schema["anyOf"][0]["properties"]["args"]["properties"]["path"]
    assert "pattern" not in schema["anyOf"][1]["properties"]["args"]["properties"]["command"]
    assert list(schema["anyOf"][0]["properties"]) == ["progress", "thought", "tool", "args"]
    LlamaGrammar.from_string(json_schema_to_gbnf(json.dumps(schema)), verbose=False)


def test_a_turn_that_may_only_finish_writes_no_thought():
    """Its thought would only repeat the summary: the reply is the reflection, then the call."""
    import json

    from llama_cpp.llama_grammar import LlamaGrammar, json_schema_to_gbnf

    from elpis_worker.grammar import think_schema

    (only,) = think_schema(["finish"], reflect=True)["anyOf"]
    assert list(only["properties"]) == ["progress", "tool", "args"]
    finish_or_edit = think_schema(["finish", "edit_file"])["anyOf"]
    assert all(list(alt["properties"]) == ["thought", "tool", "args"] for alt in finish_or_edit)
    LlamaGrammar.from_string(json_schema_to_gbnf(json.dumps({"anyOf": [only]})), verbose=False)


def test_repair_first_the_first_turn_may_only_change_files(api, db_url, scripted):
    """With the failure and its source already observed, turn 1 is the repair: the grammar offers only
    write_file and edit_file (the scripted agent's look-around becomes its "instead"), then every tool."""
    script = scripted(
        [
            {
                "thought": "look",
                "tool": "list_dir",
                "args": {"path": "."},
                "instead": {
                    "thought": "fix subtract",
                    "tool": "write_file",
                    "args": {"path": "calc/ops.py", "content": "def subtract(a, b):\n    return a - b\n"},
                },
            },
            {"thought": "done", "tool": "finish", "args": {"summary": "fixed"}},
        ]
    )
    task_id = submit(api, instruction="One test fails. Fix the bug in calc/ops.py.")
    status = run_scripted(db_url, task_id, script, tools={"repair_first": True, "check_on_review": False})
    steps = steps_of(db_url, task_id)
    thinks = [s for s in steps if s.kind == StepKind.think]
    assert thinks[0].sampling["allowed_tools"] == ["write_file", "edit_file"]
    assert "allowed_tools" not in thinks[1].sampling or "finish" in thinks[1].sampling["allowed_tools"]
    assert [s.tool_name for s in steps if s.kind == StepKind.tool_call] == ["write_file", "finish"]
    first_result = next(s for s in steps if s.kind == StepKind.tool_result)
    assert (
        "replaced subtract" in first_result.tool_result
        and "Tests after this change: pass" in first_result.tool_result
    )
    assert status == TaskStatus.succeeded


def test_a_banned_call_no_pattern_can_express_is_sampled_again(api, db_url, scripted):
    """A repeated multi-line write is refused by sampling again inside the same think (the scripted
    backend moves to the next script item on each sample), so no turn is spent on the refusal."""
    bad = {"thought": "try", "tool": "run", "args": {"command": 'echo "no"; exit 1'}}
    script = scripted(
        [
            bad,
            bad,  # the same failing command, quoted: no grammar pattern; the think samples again
            {"thought": "other", "tool": "list_dir", "args": {"path": "calc"}},
            {"thought": "done", "tool": "finish", "args": {"summary": "x"}},
        ]
    )
    task_id = submit(api, instruction="Anything", test_command=None, budget={"max_steps": 3})
    run_scripted(db_url, task_id, script, emotions={"modulation": False})
    steps = steps_of(db_url, task_id)
    calls = [s.tool_name for s in steps if s.kind == StepKind.tool_call]
    assert calls[:2] == ["run", "list_dir"]
    second = [s for s in steps if s.kind == StepKind.think][1]
    # Sampled again warmer than the think's own temperature, within the cap that keeps code intact.
    used = second.sampling["temperature_used"]
    assert (
        second.sampling["resampled"] == 1
        and second.sampling["temperature"] < used <= RESAMPLE_TEMPERATURE_MAX
    )
    # The refused sample's tokens count with the turn's generation (the scripted model counts a token per
    # four characters): more than the kept reply alone.
    reflection = [s for s in steps if s.kind == StepKind.reflect and s.turn == second.turn]
    spent = second.completion_tokens + sum(s.completion_tokens or 0 for s in reflection)
    assert spent > len(second.content) // 4
    # The one-call reply's reflect step: its progress flag, with the thought as the assessment.
    assert set(json.loads(reflection[0].content)) == {"progress", "assessment"}
    assert json.loads(reflection[0].content)["assessment"] == "other"


def test_an_edit_that_breaks_a_passing_test_is_undone_and_excluded(api, db_url, scripted):
    """The calc sample fails test_subtract only. Rewriting `add` wrongly breaks test_add, which passed:
    the edit is undone at once (file back, no diff), the result says so, and the same call is excluded
    from the next turn; a right fix after it is kept and the task succeeds."""
    breaking = {
        "thought": "wrong function",
        "tool": "write_file",
        "args": {"path": "calc/ops.py", "content": "def add(a, b):\n    return a - b\n"},
    }
    fix = {
        "thought": "the real bug",
        "tool": "write_file",
        "args": {"path": "calc/ops.py", "content": "def subtract(a, b):\n    return a - b\n"},
    }
    script = scripted(
        [
            breaking,
            breaking,  # excluded (multi-line content: no grammar pattern), so the think samples again
            fix,
            {"thought": "done", "tool": "finish", "args": {"summary": "Fixed subtract"}},
        ]
    )
    task_id = submit(api, instruction="Fix the failing test", budget={"max_steps": 4})
    status = run_scripted(db_url, task_id, script, tools={"check_on_review": False})
    steps = steps_of(db_url, task_id)
    results = [s for s in steps if s.kind == StepKind.tool_result]
    first = results[0]
    assert first.detail["error_kind"] == "regression" and first.detail["reverted"] is True
    assert "undone" in first.tool_result and "tests/test_ops.py::test_add" in first.tool_result
    assert first.detail["diff_lines"] == 0  # the workspace is as it was
    thinks = [s for s in steps if s.kind == StepKind.think]
    assert thinks[1].sampling["banned_calls"][0]["args"]["content"] == breaking["args"]["content"]
    assert thinks[1].sampling["resampled"] == 1
    assert results[1].detail["ok"] and results[1].detail["tests_passed"]
    assert status == TaskStatus.succeeded
    task = task_row(db_url, task_id)
    assert task.workspace_diff.count("+    return a - b") == 1  # subtract fixed, add untouched


def test_an_edit_that_leaves_the_same_failure_is_kept(api, db_url, scripted):
    """Only a regression is undone: a change after which the same test still fails stays, so a fix made
    in two steps is not thrown away half-way."""
    script = scripted(
        [
            {
                "thought": "not yet right",
                "tool": "write_file",
                "args": {"path": "calc/ops.py", "content": "def subtract(a, b):\n    return a * b\n"},
            },
            {
                "thought": "it is right already",
                "tool": "edit_file",
                "args": {
                    "path": "calc/ops.py",
                    "search": "subtract",
                    "replace": "def subtract(a, b):\n    return a * b\n",
                },
            },
            {"thought": "stop", "tool": "finish", "args": {"summary": "x"}},
        ]
    )
    task_id = submit(api, instruction="Fix it", budget={"max_steps": 2})
    run_scripted(db_url, task_id, script)
    result, same = [s for s in steps_of(db_url, task_id) if s.kind == StepKind.tool_result]
    assert result.detail["ok"] and not result.detail["reverted"] and result.detail["tests_passed"] is False
    assert "+    return a * b" in (task_row(db_url, task_id).workspace_diff or "")
    # The result shows the code the failing line runs through, as it is now.
    assert "The failing line uses subtract; calc/ops.py has now:" in result.tool_result
    assert "|     return a * b" in result.tool_result
    # Writing the same code again changes nothing, and the result says that code fails, and how.
    assert same.tool_result.startswith("no change: calc/ops.py already holds exactly this subtract")
    assert same.detail["ok"] is False and same.detail["error_kind"] == "no_change"  # a failed attempt
    assert "With the code as it is, the tests fail:\n>" in same.tool_result
    assert "assert subtract(" in same.tool_result


@pytest.mark.parametrize("undo", [True, False], ids=["undo_revisits", "undo_revisits off"])
def test_an_edit_back_to_files_the_tests_failed_with_is_undone(api, db_url, scripted, undo):
    """subtract is rewritten wrongly (`a * b`), back to the code as given (`a + b`, which the opening test
    run saw failing), wrongly again (`a ** b`), back to `a * b` (seen failing after turn 1), then right.
    Each return to files the tests failed with is undone before the tests run again: the files stay as
    the turn before left them, and the result says where that code was seen failing. The fix is kept.
    With `tools.undo_revisits` off every edit stands."""
    writes = ["a * b", "a + b", "a ** b", "a * b", "a - b"]
    script = scripted(
        [
            *(
                {
                    "thought": "try",
                    "tool": "write_file",
                    "args": {"path": "calc/ops.py", "content": f"def subtract(a, b):\n    return {code}\n"},
                }
                for code in writes
            ),
            {"thought": "done", "tool": "finish", "args": {"summary": "Fixed subtract"}},
        ]
    )
    task_id = submit(api, instruction="Fix subtract", budget={"max_steps": 6})
    status = run_scripted(db_url, task_id, script, tools={"check_on_review": False, "undo_revisits": undo})
    results = [s for s in steps_of(db_url, task_id) if s.kind == StepKind.tool_result][:5]
    first, back, other, again, fix = results
    for kept in (first, other):
        assert kept.detail["ok"] and kept.detail["tests_passed"] is False and not kept.detail["reverted"]
    if undo:
        for undone, seen, before in [
            (back, "at the start, before any change", first),
            (again, "after turn 1", other),
        ]:
            assert undone.detail["error_kind"] == "revisited" and undone.detail["reverted"] is True
            assert not undone.detail["ok"] and not undone.detail["tests_run"]  # no test run again
            assert f"exactly as they were {seen}, when the tests failed" in undone.tool_result
            # The files are as the turn before left them.
            assert undone.detail["diff_sha"] == before.detail["diff_sha"]
    else:
        for kept in (back, again):
            assert kept.detail["ok"] and kept.detail["tests_passed"] is False and not kept.detail["reverted"]
        assert back.detail["diff_lines"] == 0  # the code as given
        assert again.detail["diff_sha"] == first.detail["diff_sha"]
    assert fix.detail["ok"] and fix.detail["tests_passed"] is True
    assert status == TaskStatus.succeeded
    assert "+    return a - b" in task_row(db_url, task_id).workspace_diff


@pytest.mark.parametrize("undo", [True, False], ids=["undo_revisits", "undo_revisits off"])
def test_an_edit_that_only_restyles_failing_code_is_undone(api, db_url, scripted, undo):
    """subtract's docstring gets other quotes while the tests fail: the file parses to the same program,
    so the edit cannot change the result. It is undone and reported as no change, with how the code as it
    is fails. After the fix the tests pass, and a restyle of add's docstring then stands (a change of
    style may be what a task asks). With `tools.undo_revisits` off every edit stands."""

    def quotes(name: str) -> dict:
        old = f'"""Return a {name} b."""'
        return {
            "thought": "requote",
            "tool": "edit_file",
            "args": {"path": "calc/ops.py", "search": old, "replace": old.replace('"""', "'''")},
        }

    fix = {"path": "calc/ops.py", "content": "def subtract(a, b):\n    return a - b\n"}
    script = scripted(
        [
            quotes("minus"),
            {"thought": "fix", "tool": "write_file", "args": fix},
            quotes("plus"),
            {"thought": "done", "tool": "finish", "args": {"summary": "Fixed subtract"}},
        ]
    )
    task_id = submit(api, instruction="Fix subtract", budget={"max_steps": 4})
    status = run_scripted(db_url, task_id, script, tools={"check_on_review": False, "undo_revisits": undo})
    restyle, fixed, passing = [s for s in steps_of(db_url, task_id) if s.kind == StepKind.tool_result][:3]
    if undo:
        assert restyle.detail["error_kind"] == "no_change" and restyle.detail["reverted"] is True
        assert not restyle.detail["ok"] and not restyle.detail["tests_run"]
        assert restyle.tool_result.startswith(
            "no change to the code: calc/ops.py as written parses to the same"
        )
        assert "With the code as it is, the tests fail:\n>" in restyle.tool_result
        assert restyle.detail["diff_lines"] == 0  # the files as given
    else:
        assert (
            restyle.detail["ok"]
            and restyle.detail["tests_passed"] is False
            and not restyle.detail["reverted"]
        )
    assert fixed.detail["ok"] and fixed.detail["tests_passed"] is True
    assert passing.detail["ok"] and passing.detail["tests_passed"] is True and not passing.detail["reverted"]
    assert status == TaskStatus.succeeded
    diff = task_row(db_url, task_id).workspace_diff
    assert "+    '''Return a plus b.'''" in diff
    assert ("+    '''Return a minus b.'''" in diff) is not undo


def test_an_edit_whose_search_occurs_twice_is_made_where_the_tests_pass(api, db_url, scripted):
    """`return a + b` is in add and in the buggy subtract. The edit is tried at each place alone: in add
    it breaks test_add, in subtract the tests pass, so that is the edit made; the files are as the one
    edit left them. Where no single place makes the tests pass, the refusal stands and says so."""
    ambiguous = {
        "thought": "subtract adds",
        "tool": "edit_file",
        "args": {"path": "calc/ops.py", "search": "return a + b", "replace": "return a - b"},
    }
    script = scripted([ambiguous, {"thought": "done", "tool": "finish", "args": {"summary": "Fixed"}}])
    task_id = submit(api, instruction="Fix subtract", budget={"max_steps": 2})
    status = run_scripted(db_url, task_id, script, tools={"check_on_review": False})
    assert status == TaskStatus.succeeded
    (edit, _) = [s for s in steps_of(db_url, task_id) if s.kind == StepKind.tool_result]
    assert edit.detail["ok"] and edit.detail["tests_passed"] is True
    assert "at line 11, one of the 2 places where 'search' occurs" in edit.tool_result
    assert "the only one of those places where this change makes the tests pass" in edit.tool_result
    diff = task_row(db_url, task_id).workspace_diff
    assert diff.count("+    return a - b") == 1 and diff.count("-    return a + b") == 1

    # `return a ` is in all four functions, and `return 0 + a ` fixes none of them.
    nowhere = {
        "thought": "prefix",
        "tool": "edit_file",
        "args": {"path": "calc/ops.py", "search": "return a ", "replace": "return 0 + a "},
    }
    script = scripted([nowhere])
    task_id = submit(api, instruction="Fix subtract", budget={"max_steps": 1})
    run_scripted(db_url, task_id, script, tools={"check_on_review": False})
    (refused,) = [s for s in steps_of(db_url, task_id) if s.kind == StepKind.tool_result]
    assert refused.detail["ok"] is False and refused.detail["error_kind"] == "bad_args"
    assert refused.tool_result.startswith("'search' occurs 4 times in calc/ops.py")
    assert "Tried at each place alone: the tests pass with none of them." in refused.tool_result
    assert not task_row(db_url, task_id).workspace_diff  # every try was undone


def test_rewriting_a_file_the_failing_line_does_not_use_points_at_the_one_it_does(api, db_url, scripted):
    """weather_units_config from the eval suite: describe() fixed in report.py, the tests still fail on
    `assert config.UNIT == "C"`. Writing report.py again unchanged is a failed attempt whose result
    says that line does not run through report.py and shows UNIT in config.py, the file to change."""
    fixed = 'def describe(temperature):\n    return f"{config.STATION}: {temperature}°{config.UNIT}"\n'
    script = scripted(
        [
            {
                "thought": "use the unit",
                "tool": "write_file",
                "args": {"path": "weather/report.py", "content": fixed},
            },
            {
                "thought": "again",
                "tool": "edit_file",
                "args": {"path": "weather/report.py", "search": "describe", "replace": fixed},
            },
        ]
    )
    repo = ROOT / "evals" / "tasks" / "weather_units_config" / "repo"
    task_id = submit(api, repo=str(repo), instruction="Show Celsius", budget={"max_steps": 2})
    run_scripted(db_url, task_id, script, tools={"check_on_review": False})
    first, again = [s for s in steps_of(db_url, task_id) if s.kind == StepKind.tool_result]
    assert first.detail["ok"] and first.detail["tests_passed"] is False
    assert again.detail["error_kind"] == "no_change"
    assert 'With the code as it is, the tests fail:\n>       assert config.UNIT == "C"' in again.tool_result
    assert "That line does not run through weather/report.py." in again.tool_result
    assert 'The failing line uses UNIT; weather/config.py has now:\n   3| UNIT = "F"' in again.tool_result
    assert again.tool_result.endswith("Change weather/config.py so that the failing line holds.")
    assert "So this code is wrong" not in again.tool_result


def test_wrapping_up_with_failing_tests_leaves_the_tools_open(api, db_url, scripted):
    """Near the end of the budget an anxious agent is told to wrap up; with the tests still failing,
    narrowing it to run_tests/finish would only waste the last turns, so every tool stays allowed."""
    look = {"thought": "look", "tool": "list_dir", "args": {"path": "calc"}}
    missing = [
        {"thought": "read", "tool": "read_file", "args": {"path": f"calc/none{i}.py"}} for i in range(5)
    ]
    script = scripted([look, *missing])
    task_id = submit(api, instruction="Fix it", budget={"max_steps": 6})
    run_scripted(db_url, task_id, script, tools={"repair_first": False})
    emotions = [s.emotion for s in steps_of(db_url, task_id) if s.kind == StepKind.emotion]
    wrapping = [e for e in emotions if e["modulation"]["strategy"] == "wrap_up"]
    assert wrapping, [e["modulation"]["strategy"] for e in emotions]
    assert all("write_file" in e["plan"]["tools"] for e in wrapping)


@pytest.mark.parametrize("history_thoughts", [False, True])
def test_each_earlier_turn_is_one_reply_and_one_result_message(api, db_url, scripted, history_thoughts):
    """One generation per turn: the prompt shows every earlier turn as the model's reply and one user
    message (the tool result, then the affect line), the first turn included, which has no reflection.
    The reply is shown as its tool call alone (a small model copies its earlier thoughts and assessments
    word for word), or verbatim with generation.history_thoughts. The prefix of the conversation stays
    the same from one turn to the next (llama.cpp's KV cache)."""
    script = scripted(
        [
            {"thought": "look", "tool": "list_dir", "args": {"path": "calc"}},
            {"thought": "read", "tool": "read_file", "args": {"path": "calc/ops.py"}},
            {"thought": "stop", "tool": "finish", "args": {"summary": "x"}},
        ]
    )
    task_id = submit(api, instruction="Fix it", budget={"max_steps": 3})
    settings = load_settings(tools={"repair_first": False}, generation={"history_thoughts": history_thoughts})
    backend = ScriptedBackend(
        settings.model.model_copy(update={"backend": "scripted", "script": str(script)})
    )
    store = TaskStore(db_url)
    assert store.claim(task_id, stale_after=60) is not None
    run_agent(store, backend, settings, task_id)
    second, third = backend.prompts[1], backend.prompts[2]
    assert [m["role"] for m in second] == ["system", "user", "assistant", "user"]
    assert [m["role"] for m in third] == ["system", "user", "assistant", "user", "assistant", "user"]
    first_reply, second_reply = json.loads(second[2]["content"]), json.loads(third[4]["content"])
    if history_thoughts:
        assert set(first_reply) == {"thought", "tool", "args"}  # turn 1: the action alone
        assert set(second_reply) > {"progress", "thought", "tool"}  # then a reflection
    else:
        assert first_reply == {"tool": "list_dir", "args": {"path": "calc"}}
        assert second_reply == {"tool": "read_file", "args": {"path": "calc/ops.py"}}
    assert "Affect:" in second[3]["content"]
    # Stable prefix: the third prompt begins with the second one's system, task and first reply.
    assert third[:3] == second[:3]


def test_a_repeat_differing_only_in_whitespace_is_the_same_call(api, db_url, scripted):
    """Seen in the eval: the same failing edit_file search sent again with one more trailing space each
    turn. Whitespace runs do not make a call different: the padded repeat is refused and sampled again."""
    miss = {
        "thought": "x",
        "tool": "edit_file",
        "args": {"path": "calc/ops.py", "search": "nope(", "replace": "y"},
    }
    padded = {**miss, "args": {**miss["args"], "search": "nope(  "}}
    script = scripted([miss, padded, {"thought": "look", "tool": "list_dir", "args": {"path": "calc"}}])
    task_id = submit(api, instruction="Anything", test_command=None, budget={"max_steps": 2})
    run_scripted(db_url, task_id, script, emotions={"modulation": False})
    steps = steps_of(db_url, task_id)
    assert [s.tool_name for s in steps if s.kind == StepKind.tool_call] == ["edit_file", "list_dir"]
    assert [s for s in steps if s.kind == StepKind.think][1].sampling["resampled"] == 1


def test_a_new_test_file_that_fails_first_is_kept_not_undone(api, db_url, scripted):
    """Seen in `make run`: the task asks for power() and its test; writing the test first makes it fail
    (power does not exist yet). That is a new test, not a broken one: the file is kept, and the function
    written next makes it pass."""
    script = scripted(
        [
            {
                "thought": "the test first",
                "tool": "write_file",
                "args": {
                    "path": "tests/test_power.py",
                    "content": "from calc.ops import power\n\n\n"
                    "def test_power():\n    assert power(2, 10) == 1024\n",
                },
            },
            {
                "thought": "now the function",
                "tool": "write_file",
                "args": {
                    "path": "calc/ops.py",
                    "content": "def power(base, exponent):\n    return base**exponent\n",
                },
            },
            {"thought": "done", "tool": "finish", "args": {"summary": "Added power"}},
        ]
    )
    task_id = submit(
        api,
        instruction="Add power(base, exponent) to calc/ops.py and a test in tests/test_power.py",
        test_command="python -m pytest -q tests/test_power.py",
        budget={"max_steps": 3},
    )
    status = run_scripted(db_url, task_id, script, tools={"check_on_review": False})
    results = [s for s in steps_of(db_url, task_id) if s.kind == StepKind.tool_result]
    assert results[0].detail["ok"] and not results[0].detail["reverted"], results[0].tool_result
    assert status == TaskStatus.succeeded
    assert "tests/test_power.py" in task_row(db_url, task_id).workspace_diff
