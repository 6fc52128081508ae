"""The summary a finish the agent writes itself (elpis_worker.turns.finish_summary): what it states and
how it fits the finish tool's cap."""

from __future__ import annotations

from elpis_worker.tools import SUMMARY_CHARS, FinishArgs
from elpis_worker.turns import finish_summary


def test_the_summary_states_the_files_the_reason_the_tests_and_the_check():
    text = finish_summary(
        ["bank/account.py"],
        "withdraw must refuse an amount above the balance, so > becomes >=",
        True,
        "from bank.account import Account\nassert Account(5).withdraw(3) == 2\nassert Account().balance == 0",
        SUMMARY_CHARS,
    )
    assert text == (
        "Changed bank/account.py. Why: withdraw must refuse an amount above the balance, so > becomes >=. "
        "The tests pass. My check passed: assert Account(5).withdraw(3) == 2"
    )


def test_a_long_reason_is_cut_before_the_verdict_and_the_whole_fits_the_finish_tool():
    text = finish_summary(["a.py", "b.py"], "because " * 80, False, "assert f(1) == 2", SUMMARY_CHARS)
    assert len(text) <= SUMMARY_CHARS
    assert text.startswith("Changed a.py, b.py. Why: because because")
    assert "…" in text and text.endswith("The tests fail. My check passed: assert f(1) == 2")
    FinishArgs.model_validate({"summary": text})  # the finish tool takes it as it is


def test_without_a_change_reason_tests_or_check_it_says_so():
    assert finish_summary([], "", None, None, SUMMARY_CHARS) == "Changed nothing. No tests ran."
