"""Threads and processes for the resident model, by measurement (issue 13, part 4).

Each layout runs P worker-like processes at once, each with its own copy of the model loaded with
`n_threads` (decoding) and `n_threads_batch` (prompt evaluation) threads, started together after every
process has loaded. Each process evaluates the same ~PROMPT-token prompt from an empty KV cache (prompt
evaluation), then decodes DECODE tokens one by one with greedy sampling (decoding; no grammar, no stop at
end-of-text), ROUNDS times. The figures are aggregate tokens/s over all processes, each as a ratio of the
baseline layout measured in the same run (one process with every core's thread). Not a test: it
asserts nothing, it measures.

    .venv/bin/python bench/bench_threads.py [--model PATH] [--prompt 600] [--decode 48] [--rounds 2]
        [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CORES = os.cpu_count() or 2
# (processes, decode threads, prompt threads); the first is the baseline.
LAYOUTS = [
    (1, CORES, CORES),
    (CORES, 1, 1),
    (1, 1, CORES),
    (CORES, 1, CORES),
]

_TEXT = (
    "def mean(values):\n    if not values:\n        raise ValueError('mean of nothing')\n"
    "    return sum(values) / len(values)\n\n"
)


def _worker(
    model: str, threads: int, batch: int, prompt: int, decode: int, rounds: int, barrier, out
) -> None:
    from llama_cpp import Llama

    llm = Llama(
        model_path=model, n_ctx=prompt + decode + 64, n_threads=threads, n_threads_batch=batch, verbose=False
    )
    tokens = llm.tokenize((_TEXT * 200).encode())[:prompt]
    barrier.wait()
    results = []
    for _ in range(rounds):
        llm.reset()
        started = time.perf_counter()
        llm.eval(tokens)
        evaluated = time.perf_counter()
        for _ in range(decode):
            token = llm.sample(temp=0.0)
            llm.eval([token])
        decoded = time.perf_counter()
        results.append((prompt / (evaluated - started), decode / (decoded - evaluated)))
        barrier.wait()  # every process starts each round together
    out.put(results)


def measure(model: str, layout: tuple[int, int, int], prompt: int, decode: int, rounds: int) -> dict:
    processes, threads, batch = layout
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(processes), ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(model, threads, batch, prompt, decode, rounds, barrier, out))
        for _ in range(processes)
    ]
    for p in procs:
        p.start()
    per_process = [out.get(timeout=1800) for _ in procs]
    for p in procs:
        p.join()
    # Aggregate per round (processes ran together), then the median over rounds.
    prompt_rates = [sum(r[i][0] for r in per_process) for i in range(rounds)]
    decode_rates = [sum(r[i][1] for r in per_process) for i in range(rounds)]
    return {
        "layout": f"{processes} process(es) x {threads} decode / {batch} prompt thread(s)",
        "processes": processes,
        "threads": threads,
        "threads_batch": batch,
        "prompt_tok_s": round(statistics.median(prompt_rates), 2),
        "decode_tok_s": round(statistics.median(decode_rates), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=os.environ.get("ELPIS_BENCH_MODEL"))
    parser.add_argument("--prompt", type=int, default=600)
    parser.add_argument("--decode", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    model = args.model
    if not model:
        from configs.settings import load_settings
        from elpis_worker.backend import resolve_model_path

        settings = load_settings()
        model = str(resolve_model_path(settings.model, settings))
    rows = [measure(model, layout, args.prompt, args.decode, args.rounds) for layout in LAYOUTS]
    base = rows[0]
    for row in rows:
        row["prompt_ratio"] = round(row["prompt_tok_s"] / base["prompt_tok_s"], 2)
        row["decode_ratio"] = round(row["decode_tok_s"] / base["decode_tok_s"], 2)
    print(
        f"model {Path(model).name}, {CORES} cores, prompt {args.prompt} tokens, decode {args.decode} tokens"
    )
    print("| layout | prompt eval tok/s (all processes) | ratio | decode tok/s (all processes) | ratio |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        print(
            f"| {row['layout']} | {row['prompt_tok_s']} | {row['prompt_ratio']}x | "
            f"{row['decode_tok_s']} | {row['decode_ratio']}x |"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                    "machine": f"{platform.machine()}, {CORES} cores, {platform.system()}",
                    "model": Path(model).name,
                    "prompt_tokens": args.prompt,
                    "decode_tokens": args.decode,
                    "rows": rows,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
