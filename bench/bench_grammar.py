"""Constrained decoding against free decoding: llama-cpp-python's grammar in its sampler chain (every
vocabulary token checked for every token, `model.lazy_grammar: false`) against the lazy check of
elpis_worker.lazy_grammar (`model.lazy_grammar: true`), each as a ratio of free decoding measured in the
same run, on the same loaded model and the same cached ~1,000-token prompt.

    .venv/bin/python bench/bench_grammar.py [--model PATH] [--threads 2] [--repeats 12] [--json OUT]

The model is --model, else ELPIS_BENCH_MODEL, else the configured default model (model.path or
model.name). The prompt is the agent's system prompt and a short task history, asking for the next tool
call under the agent's think schema; it is evaluated once, then every call reuses it from the KV cache, so
a call's time is decoding (and sampling) only. The machine is shared, so each round makes one call of
each mode, in a rotating order, and each ratio is the median over rounds of the ratio within a round.
Every constrained reply that ended is parsed and validated against the schema (replies cut by max_tokens
are counted apart). Not a test: it asserts nothing, it measures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from configs.settings import load_settings  # noqa: E402
from elpis_worker import lazy_grammar  # noqa: E402
from elpis_worker.backend import LlamaBackend  # noqa: E402

MODES = ("free", "free, lazy loop", "eager grammar", "lazy grammar")
PROMPT_TOKENS = 1000

_MODULE = '''"""Small arithmetic helpers used by the report generator."""

def add(a, b):
    return a + b


def mean(values):
    if not values:
        raise ValueError("mean of nothing")
    return sum(values) / len(values)


def median(values):
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def percent(part, whole):
    return 100 * part // whole  # BUG: integer division drops the fraction
'''


def think_schema() -> dict[str, Any]:
    try:
        from elpis_worker.grammar import THINK_SCHEMA

        return THINK_SCHEMA
    except ImportError:
        from elpis_worker.grammar import think_schema as build

        return build()


def system_prompt() -> str:
    try:
        from elpis_worker.prompts import SYSTEM_PROMPT

        return SYSTEM_PROMPT
    except ImportError:
        return "You are a coding agent. Answer every turn with one JSON tool call."


def messages(backend: LlamaBackend, target: int) -> list[dict[str, str]]:
    """A task history padded with a directory listing until the prompt has about `target` tokens."""
    history = [
        {"role": "system", "content": system_prompt()},
        {
            "role": "user",
            "content": "Task: tests/test_stats.py::test_percent fails: percent(1, 3) returns 33, "
            "the test expects 33.33 (two decimals). Fix stats.py so the whole suite passes.",
        },
        {
            "role": "assistant",
            "content": json.dumps(
                {"thought": "Look at the module first.", "tool": "read_file", "args": {"path": "stats.py"}}
            ),
        },
        {"role": "user", "content": f"Result of read_file (ok):\n{_MODULE}"},
        {
            "role": "assistant",
            "content": json.dumps(
                {"thought": "Run the tests to see the failure.", "tool": "run_tests", "args": {}}
            ),
        },
    ]
    listing: list[str] = []
    while True:
        result = (
            "Result of run_tests (failed, exit 1):\n"
            "FAILED tests/test_stats.py::test_percent - assert 33 == 33.33\n"
            "1 failed, 11 passed in 0.08s\nFiles in the workspace:\n" + "\n".join(listing)
        )
        candidate = [*history, {"role": "user", "content": result}]
        size = len(lazy_grammar.chat_request(backend.llm, candidate, None).prompt_tokens)
        if size >= target or len(listing) > 400:
            return candidate
        n = len(listing)
        listing.append(f"reports/section_{n:03d}/figure_{n % 7}.py  {1200 + 37 * n} bytes")


def call(
    backend: LlamaBackend, mode: str, msgs: list[dict[str, str]], schema: dict[str, Any], args: Any
) -> dict[str, Any]:
    constrained = mode.endswith("grammar")
    max_tokens = args.max_tokens if constrained else args.free_max_tokens
    if mode in ("free", "eager grammar"):
        backend.lazy_grammar = False
        completion = backend.chat(
            msgs,
            schema=schema if constrained else None,
            temperature=args.temperature,
            top_p=args.top_p,
            max_tokens=max_tokens,
        )
        return {
            "tokens": completion.completion_tokens,
            "s": completion.duration_s,
            "text": completion.text,
            "cut": completion.completion_tokens >= max_tokens,
        }
    started = time.perf_counter()
    request = lazy_grammar.chat_request(backend.llm, msgs, schema if constrained else None)
    generation = lazy_grammar.generate(
        backend.llm,
        request,
        temperature=args.temperature,
        top_p=args.top_p,
        max_tokens=max_tokens,
        seed=backend._seeds.randrange(2**32),  # noqa: SLF001 - the seeds the backend itself would use
    )
    return {
        "tokens": generation.completion_tokens,
        "s": time.perf_counter() - started,
        "text": generation.text,
        "resampled": generation.resampled,
        "full_scans": generation.full_scans,
        "evaluated": generation.evaluated_prompt_tokens,
        "prompt_s": generation.prompt_eval_s,
        "cut": generation.finish_reason == "length",
    }


def valid(text: str, schema: dict[str, Any]) -> bool:
    try:
        jsonschema.validate(json.loads(text), schema)
    except (json.JSONDecodeError, jsonschema.ValidationError):
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=os.environ.get("ELPIS_BENCH_MODEL", ""))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=12, help="rounds: one call of each mode")
    parser.add_argument("--calls", type=int, default=1, help="calls per mode in each round")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument(
        "--free-max-tokens",
        type=int,
        default=64,
        help="free replies are cut here: about as long as a tool call, so both decode at the same depth",
    )
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--top-p", type=float, default=0.9)
    parser.add_argument("--json", type=Path, help="write the raw figures here")
    args = parser.parse_args()

    update: dict[str, Any] = {"threads": args.threads, "n_ctx": 4096, "seed": 0, "lazy_grammar": True}
    if args.model:
        update["path"] = args.model
    backend = LlamaBackend(load_settings().model.model_copy(update=update))
    schema = think_schema()
    msgs = messages(backend, PROMPT_TOKENS)
    prompt_tokens = len(lazy_grammar.chat_request(backend.llm, msgs, None).prompt_tokens)
    model = Path(backend.model_path).name
    print(f"model {model}, {args.threads} threads, prompt {prompt_tokens} tokens, schema: think schema")
    warm = call(backend, "lazy grammar", msgs, schema, args)  # evaluates the prompt once
    print(f"prompt evaluation (cold): {warm['evaluated']} tokens, {warm['s']:.1f} s")

    rates: dict[str, list[float]] = {m: [] for m in MODES}
    ratios: dict[str, list[float]] = {m: [] for m in MODES}
    tokens: dict[str, list[int]] = {m: [] for m in MODES}
    # per constrained mode: replies that parse and validate, replies that ended, replies cut by max_tokens
    checked = {m: [0, 0, 0] for m in MODES if m.endswith("grammar")}
    resampled = [0, 0, 0]  # rejected sampled tokens, of which full-vocabulary scans, constrained tokens
    evaluated: list[int] = []
    for repeat in range(args.repeats):
        order = MODES[repeat % len(MODES) :] + MODES[: repeat % len(MODES)]
        rate: dict[str, float] = {}
        for mode in order:
            runs = []
            for _ in range(args.calls):
                run = call(backend, mode, msgs, schema, args)
                for _retry in range(3):  # a free reply may end at once: no rate to measure
                    if run["tokens"]:
                        break
                    run = call(backend, mode, msgs, schema, args)
                runs.append(run)
            rate[mode] = sum(r["tokens"] for r in runs) / sum(r["s"] for r in runs)
            tokens[mode] += [r["tokens"] for r in runs]
            if mode in checked:
                checked[mode][0] += sum(valid(r["text"], schema) for r in runs if not r["cut"])
                checked[mode][1] += sum(not r["cut"] for r in runs)
                checked[mode][2] += sum(r["cut"] for r in runs)
            if mode == "lazy grammar":
                resampled[0] += sum(r["resampled"] for r in runs)
                resampled[1] += sum(r["full_scans"] for r in runs)
                resampled[2] += sum(r["tokens"] for r in runs)
                evaluated += [r["evaluated"] for r in runs]
        for mode in MODES:
            rates[mode].append(rate[mode])
            ratios[mode].append(rate[mode] / rate["free"])
        print(f"round {repeat + 1}: " + ", ".join(f"{m} {rate[m]:.1f}" for m in MODES), flush=True)

    print()
    print(
        f"| {model}, {args.threads} threads | decode tok/s (median) | × free | tokens per reply "
        f"| valid / ended (cut by max_tokens) |"
    )
    print("| --- | --- | --- | --- | --- |")
    for mode in MODES:
        ok = f"{checked[mode][0]}/{checked[mode][1]} ({checked[mode][2]})" if mode in checked else "–"
        print(
            f"| {mode} | {statistics.median(rates[mode]):.1f} | {statistics.median(ratios[mode]):.2f}× "
            f"| {statistics.median(tokens[mode]):.0f} | {ok} |"
        )
    print(
        f"\nlazy: {resampled[0]} of {resampled[2]} sampled tokens rejected by the grammar and resampled "
        f"({resampled[1]} of them with the whole vocabulary); "
        f"prompt tokens evaluated per warm call: median {statistics.median(evaluated):.0f}"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "date": datetime.now(UTC).isoformat(timespec="seconds"),
                    "machine": f"{os.cpu_count()} cores, {platform.machine()}",
                    "model": model,
                    "threads": args.threads,
                    "prompt_tokens": prompt_tokens,
                    "rates": rates,
                    "ratios": ratios,
                    "tokens": tokens,
                    "valid": checked,
                    "resampled": resampled,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
