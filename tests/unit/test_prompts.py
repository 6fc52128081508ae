"""What the model reads, built from steps alone (no database): the conversation and its windowing."""

from __future__ import annotations

from configs.settings import load_settings
from elpis_worker.prompts import (
    REVIEW_DIFF_CHARS,
    SYSTEM_PROMPT,
    Conversation,
    compact_diff,
    cut_text,
    review_prompt,
)
from elpis_worker.turns import TurnSteps, group_turns
from models import Step, StepKind, Task


def turn_steps(number: int, tool: str) -> list[Step]:
    call = {"tool": tool, "args": {}}
    return [
        Step(
            turn=number,
            kind=StepKind.think,
            content=f'{{"thought": "t{number}", "tool": "{tool}", "args": {{}}}}',
        ),
        Step(turn=number, kind=StepKind.tool_call, tool_name=tool, tool_args=call["args"], content=tool),
        Step(
            turn=number,
            kind=StepKind.tool_result,
            tool_name=tool,
            tool_result=f"output of turn {number}",
            content="",
            detail={"ok": False, "error_kind": "nonzero_exit"},
        ),
        Step(turn=number, kind=StepKind.emotion, content=f"Affect after turn {number}."),
    ]


def conversation() -> Conversation:
    task = Task(instruction="Fix the failing test", test_command="python -m pytest -q", protected=[])
    return Conversation(task, load_settings(), lambda text: max(1, len(text) // 4))


def test_a_fresh_look_leaves_the_turns_before_it_out() -> None:
    steps = [s for n in (1, 2, 3) for s in turn_steps(n, "run_tests")]
    look = Step(
        turn=4, kind=StepKind.observe, tool_name="fresh_look", content="Fresh look after 3 turns: now."
    )
    opening = [
        Step(turn=0, kind=StepKind.observe, tool_name="repo_map", content="Repository map:\ncalc/ops.py")
    ]
    turns = group_turns(steps)
    current = TurnSteps(4)
    before = conversation().messages(opening, turns, current)
    assert before[0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert "Repository map" in before[1]["content"]
    shown = "\n".join(m["content"] for m in before)
    assert all(f"output of turn {n}" in shown for n in (1, 2, 3))

    current.steps[StepKind.observe.value] = look
    after = conversation().messages(opening, turns, current)
    # The system prompt and the opening stay (llama.cpp reuses their KV cache); the earlier turns go.
    assert after[:2] == before[:2]
    assert after[2:] == [{"role": "user", "content": look.content}]
    # A later turn sees the fresh look and what followed it, not what came before it.
    turns = group_turns([*steps, look, *turn_steps(4, "read_file")])
    later = conversation().messages(opening, turns, TurnSteps(5))
    shown = "\n".join(m["content"] for m in later)
    assert "output of turn 4" in shown and look.content in shown and "output of turn 3" not in shown


def test_a_cut_change_says_so_on_the_review_turn() -> None:
    """The review turn and the fresh look show the change up to a limit, and mark where they cut it."""
    assert cut_text("abc", 3) == "abc"
    assert cut_text("abcd", 3) == "abc\n[... cut ...]"
    long_diff = "+x = 1\n" * (REVIEW_DIFF_CHARS // 7 + 10)
    line = review_prompt("Fix it.", long_diff, check=True)
    assert "[... cut ...]" in line and "call python with a few asserts" in line and "call finish" not in line
    assert "(no change to the files)" in review_prompt("Fix it.", "", check=False)
    assert "If so, call finish" in review_prompt("Fix it.", "+x", check=False)
    probed = review_prompt("Fix it.", "+x", probe="f(1) -> 2\nf(2) -> 2\n")
    assert "variations of them" in probed and "\nf(1) -> 2\nf(2) -> 2\nIf one of them is not" in probed
    assert "variations" not in review_prompt("Fix it.", "+x", probe="")
    # With the check, the calls are listed for the model's asserts, without their results.
    listed = review_prompt("Fix it.", "+x", check=True, calls=["f(1)", "f(2)"])
    assert "one for each of these calls" in listed and "\nf(1)\nf(2)\nWhat the changed" in listed
    assert "make that change instead" in listed
    # A review turn that may not change files does not ask for a change.
    assert "make that change" not in review_prompt("Fix it.", "+x", check=True, calls=["f(1)"], edits=False)
    assert "make that change" not in review_prompt("Fix it.", "+x", check=True, edits=False)
    assert "->" not in listed and "variations of them (the tests check" not in listed


def test_the_review_turn_shows_the_change_without_gits_header_lines() -> None:
    diff = (
        "diff --git a/shop/cart.py b/shop/cart.py\nindex 1174b2d..cdf5b25 100644\n--- a/shop/cart.py\n"
        "+++ b/shop/cart.py\n@@ -5,2 +5,2 @@ def total(lines):\n-    return 1\n+    return 2\n"
        "diff --git a/shop/new.py b/shop/new.py\nnew file mode 100644\nindex 0000000..e69de29\n"
        "--- /dev/null\n+++ b/shop/new.py\n@@ -0,0 +1 @@\n+X = 1\n"
    )
    assert compact_diff(diff) == (
        "--- a/shop/cart.py\n+++ b/shop/cart.py\n@@ -5,2 +5,2 @@ def total(lines):\n-    return 1\n"
        "+    return 2\n--- /dev/null\n+++ b/shop/new.py\n@@ -0,0 +1 @@\n+X = 1"
    )
    line = review_prompt("Fix it.", diff, check=True)
    assert "index 1174b2d" not in line and "+++ b/shop/new.py" in line
