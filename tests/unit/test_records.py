"""The typed step records and the names they use agree with the code that produces them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from elpis_worker.emotion import STRATEGIES
from elpis_worker.tools import TOOL_ARGS
from models.records import EmotionRecord, ErrorKind, Sampling, Strategy, ToolName, TurnPlan

ROOT = Path(__file__).resolve().parents[2]


def test_tool_names_are_the_tools() -> None:
    assert list(TOOL_ARGS) == [t.value for t in ToolName]


def test_every_error_kind_the_worker_writes_is_named() -> None:
    """A new error kind written anywhere in the worker without being added to ErrorKind fails here
    (the documented set had drifted: tests_failing was missing)."""
    written = set()
    for path in (ROOT / "elpis_worker").glob("*.py"):
        written |= set(re.findall(r'error_kind\s*=\s*"(\w+)"', path.read_text()))
    assert written, "no error kinds found: has the pattern changed?"
    assert written <= {k.value for k in ErrorKind}, written - {k.value for k in ErrorKind}


def test_strategies_are_the_emotion_models() -> None:
    assert [s.value for s in STRATEGIES] == [s.value for s in Strategy]


def test_records_read_what_older_rows_stored_and_refuse_nonsense() -> None:
    # A row written before a field existed (no plan, no appraisals) still parses; unknown keys are ignored.
    old = {"after": {"valence": 0.1, "arousal": 0.2}, "modulation": {"strategy": "replan"}, "extra": 1}
    record = EmotionRecord.model_validate(old)
    assert record.plan is None and record.appraisals == [] and record.after.dominance == 0.0
    assert record.modulation.strategy == Strategy.replan and record.modulation.temperature is None
    with pytest.raises(ValueError, match="after"):
        EmotionRecord.model_validate({"before": {"valence": 0, "arousal": 0}})
    with pytest.raises(ValueError, match="tools"):
        TurnPlan.model_validate({"tools": ["rm_rf"]})
    with pytest.raises(ValueError, match="strategy"):
        Sampling.model_validate({"temperature": 0.2, "top_p": 0.9, "strategy": "panic"})


def test_sampling_stores_only_the_keys_that_apply() -> None:
    plain = Sampling(temperature=0.2, top_p=0.9, max_tokens=512, strategy=Strategy.continue_).stored()
    assert plain == {"temperature": 0.2, "top_p": 0.9, "max_tokens": 512, "strategy": "continue"}
    narrowed = Sampling(temperature=0.2, top_p=0.9, allowed_tools=[ToolName.finish]).stored()
    assert narrowed["allowed_tools"] == ["finish"]
