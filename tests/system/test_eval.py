"""`elpis eval` end to end: a real stack (embedded Postgres and valkey, a Celery worker, the API) works a
suite submitted over REST, and each task is judged by the suite's own check on a fresh copy with the
task's diff applied, not by what the agent said. The scripted backend makes the agent's moves fixed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, free_port

from elpis_api.eval_suite import SuiteError, judge, load_suite, solution_diff
from elpis_api.evaluate import count_repeated_actions

FIXTURE = ROOT / "tests" / "fixtures" / "eval_suite"
ELPIS = str(Path(sys.executable).parent / "elpis")


def test_eval_judges_by_the_suites_check_not_the_agents_status(tmp_path: Path) -> None:
    unset = ("ELPIS_DATABASE_URL", "ELPIS_BROKER_URL", "ELPIS_API_TOKEN")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(
        ELPIS_HOME=str(tmp_path / "home"),
        ELPIS_API_PORT=str(free_port()),
        ELPIS_FLOWER_PORT=str(free_port()),
        ELPIS_MODEL__BACKEND="scripted",
        ELPIS_MODEL__SCRIPT=str(FIXTURE / "overfit_script.json"),
        ELPIS_WORKER__CONCURRENCY="1",
        COLUMNS="160",
    )
    out = tmp_path / "run.json"
    proc = subprocess.run(
        [ELPIS, "eval", str(FIXTURE), "--out", str(out), "--modulation", "off"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = json.loads(out.read_text())
    by_id = {t["id"]: t for t in run["tasks"]}
    # The agent said it succeeded on both (its visible tests pass) ...
    assert {t["agent_status"] for t in run["tasks"]} == {"succeeded"}
    # ... but the hidden test of `adder` shows the fix was an overfit.
    assert by_id["adder"]["solved"] is False and "check exited" in by_id["adder"]["judge_reason"]
    assert by_id["adder-lenient"]["solved"] is True
    assert run["summary"]["solved"] == 1 and run["summary"]["agent_said_succeeded"] == 2
    assert run["modulation"] is False and run["summary"]["by_kind"] == {"one_line_bug": "1/2"}
    assert "solved 1/2 (50 %)" in proc.stdout and "adder-lenient" in proc.stdout
    # The run had a home of its own (fresh database: no memory of earlier runs is recalled).
    [home] = run["homes"]
    assert Path(home).parent == tmp_path / "home" / "eval-runs" and (Path(home) / "logs").is_dir()
    assert (Path(home) / "postgres").is_dir() and not (tmp_path / "home" / "postgres").exists()

    compared = subprocess.run(
        [ELPIS, "eval", "--compare", str(out), "--compare", str(out)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert compared.returncode == 0 and "1/2" in compared.stdout and "50 %" in compared.stdout


def test_judge_needs_the_diff_to_apply_and_the_check_to_pass() -> None:
    suite = load_suite(FIXTURE)
    adder = suite.tasks[0]
    assert not judge(adder, "").solved  # the unmodified repository fails its check
    fixed = judge(adder, _diff_of(adder, "def add(a, b):\n    return a + b\n"))
    assert fixed.solved and fixed.applied and fixed.exit_code == 0
    broken = judge(
        adder, "diff --git a/nope.py b/nope.py\n--- a/nope.py\n+++ b/nope.py\n@@ -1 +1 @@\n-x\n+y\n"
    )
    assert not broken.solved and not broken.applied and "does not apply" in broken.reason


def _diff_of(task, content: str) -> str:
    """The stored-diff form of replacing adder.py with `content` (through the suite's solution overlay)."""
    import shutil
    import tempfile

    tmp = Path(tempfile.mkdtemp())
    try:
        (tmp / "adder.py").write_text(content)
        return solution_diff(task.model_copy(update={"solution": tmp}))
    finally:
        shutil.rmtree(tmp)


def test_suite_errors_name_the_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "suite.yaml"
    bad.write_text("name: x\ntasks:\n  - id: a\n    kind: typo\n")
    with pytest.raises(SuiteError, match=r"suite.yaml: tasks\[0\]\.kind"):
        load_suite(tmp_path)
    (tmp_path / "repo").mkdir()
    task = "{id: a, kind: one_line_bug, repo: repo, instruction: i, test_command: t, check: c}"
    bad.write_text(f"name: x\ntasks:\n  - {task}\n  - {task}\n")
    with pytest.raises(SuiteError, match="duplicate id 'a'"):
        load_suite(bad)
    bad.write_text(f"name: x\ntasks:\n  - {task.replace('repo: repo', 'repo: nope')}\n")
    with pytest.raises(SuiteError, match=r"tasks\[0\]\.repo: nope is not a folder"):
        load_suite(bad)


def test_repeated_actions_are_counted_within_the_window() -> None:
    def call(turn: int, tool: str, **args: str) -> dict:
        return {"turn": turn, "kind": "tool_call", "tool_name": tool, "tool_args": args}

    steps = [call(1, "read_file", path="a"), call(2, "read_file", path="a"), call(3, "run_tests")]
    steps += [call(4, "run_tests"), call(9, "read_file", path="a")]
    assert count_repeated_actions(steps) == 2
