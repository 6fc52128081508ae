"""The typed step records and the names they use agree with the code that produces them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from elpis_worker.emotion import STRATEGIES
from elpis_worker.tools import TOOL_ARGS
from models.records import (
    DETAILS,
    EmotionRecord,
    ErrorKind,
    MemoryDetail,
    ObserveDetail,
    RecalledMemory,
    ReflectDetail,
    Sampling,
    Strategy,
    ThinkDetail,
    ToolName,
    ToolResultDetail,
    TurnPlan,
    step_detail,
)

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


def test_step_details_store_the_keys_the_agent_always_stored() -> None:
    """Old rows and new ones hold the same JSON: only the keys a writer set are stored."""
    result = ToolResultDetail(
        ok=False,
        error_kind="regression",
        exit_code=1,
        tests_run=True,
        tests_passed=False,
        failures=2,
        diff_lines=0,
        diff_sha="abc",
        finished=False,
        summary=None,
        reverted=True,
    ).stored()
    assert result["error_kind"] == "regression" and result["summary"] is None and len(result) == 11
    assert ObserveDetail().stored() == {}  # the repository map
    assert ObserveDetail(files=["a.py"]).stored() == {"files": ["a.py"]}
    plan = TurnPlan(strategy=Strategy.replan, tools=[ToolName.read_file])
    replan = ReflectDetail(replan=True, plan=plan, reasons=["stuck"]).stored()
    assert replan == {"replan": True, "plan": plan.stored(), "reasons": ["stuck"]}
    recalled = MemoryDetail(memories=[RecalledMemory(id=1, kind="episodic", score=0.5, similarity=0.7)])
    recalled.reason, recalled.query = "task start", "fix it"
    assert list(recalled.stored()) == ["memories", "reason", "query"]
    think = ThinkDetail(thought="t", parse_error=None, finish_reason="stop", merged=False).stored()
    assert think == {"thought": "t", "parse_error": None, "finish_reason": "stop", "merged": False}


def test_step_details_read_old_rows_keep_unknown_keys_and_fall_back() -> None:
    stored = {"ok": False, "error_kind": "timeout", "added_later": 3}
    detail = step_detail("tool_result", stored)
    assert isinstance(detail, ToolResultDetail) and detail.error_kind == ErrorKind.timeout
    assert detail.tests_run is False and detail.stored() == stored  # the unknown key survives
    assert ToolResultDetail.read(None) is None
    # A kind without a model, or JSON its model refuses, is returned as stored.
    assert step_detail("tool_call", {"x": 1}) == {"x": 1}
    assert step_detail("tool_result", {"error_kind": "no_such_kind"}) == {"error_kind": "no_such_kind"}
    assert set(DETAILS) == {"observe", "think", "tool_result", "reflect", "memory"}
    # A reply that ignored the grammar's boolean is not a reason to fail the step's write.
    assert ReflectDetail(merged=True, completion="{}", progress="maybe").progress is None


def test_the_api_returns_each_step_detail_as_its_kind_model() -> None:
    from elpis_api.schemas import StepOut

    row = dict(
        seq=1, turn=1, content="", tool_name=None, tool_args=None, tool_result=None, exit_code=None,
        prompt_tokens=None, completion_tokens=None, duration_ms=None, sampling=None, emotion=None,
        worker_id=None, created_at="2025-01-01T00:00:00Z",
    )  # fmt: skip
    for kind, stored, model in [
        ("observe", {}, ObserveDetail),  # every field has a default: the kind decides, not the keys
        ("think", {"thought": "x"}, ThinkDetail),
        ("tool_result", {"ok": True}, ToolResultDetail),
        ("tool_call", {"x": 1}, dict),
    ]:
        out = StepOut.model_validate(row | {"kind": kind, "detail": stored})
        assert type(out.detail) is model, kind
        again = StepOut.model_validate(out.model_dump(mode="json"))
        assert type(again.detail) is model, kind
