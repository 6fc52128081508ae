"""Would speculative decoding pay here? The cost of evaluating n tokens in one batch against one token.

Speculative decoding (a draft model, or prompt lookup: drafting the tokens that followed the last few
tokens where they occurred earlier in the prompt) verifies n drafted tokens in one batch. It pays when a
batch of n costs much less than n single-token decodes, which holds where decoding is bound by memory
bandwidth (a GPU, a many-core CPU) and not where it is bound by arithmetic. This measures that ratio on the
configured model at the workers' thread count, each batch evaluated after the same ~1,000 tokens held in the
KV cache, with logits for every position (as verification needs), best of a few repeats.

    .venv/bin/python bench/bench_batch.py [--model PATH] [--threads 1] [--repeats 4] [--json OUT]

The model is --model, else ELPIS_BENCH_MODEL, else the configured default model. Not a test: it asserts
nothing, it measures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from configs.settings import load_settings  # noqa: E402
from elpis_worker.backend import LlamaBackend  # noqa: E402

CONTEXT_TOKENS = 1000
SIZES = (1, 2, 4, 8, 16, 32)


def batch_seconds(llm: Any, tokens: list[int], size: int, repeats: int) -> float:
    """The best time to evaluate `size` tokens after the first CONTEXT_TOKENS, all positions' logits."""
    import llama_cpp

    memory = llama_cpp.llama_get_memory(llm.ctx)
    best = float("inf")
    for _ in range(repeats):
        llama_cpp.llama_memory_seq_rm(memory, 0, CONTEXT_TOKENS, -1)
        llm.n_tokens = CONTEXT_TOKENS
        llm._batch.set_batch(  # noqa: SLF001 - one decode call with every position's logits
            batch=tokens[CONTEXT_TOKENS : CONTEXT_TOKENS + size], n_past=CONTEXT_TOKENS, logits_all=True
        )
        started = time.perf_counter()
        llm._ctx.decode(llm._batch)  # noqa: SLF001
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=os.environ.get("ELPIS_BENCH_MODEL", ""))
    parser.add_argument("--threads", type=int, default=1, help="the workers' default is 1 per process")
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--json", type=Path, help="write the raw figures here")
    args = parser.parse_args()

    update: dict[str, Any] = {"threads": args.threads, "n_ctx": 4096, "seed": 0}
    if args.model:
        update["path"] = args.model
    backend = LlamaBackend(load_settings().model.model_copy(update=update))
    llm = backend.llm
    text = (ROOT / "elpis_worker" / "lazy_grammar.py").read_text("utf-8")
    tokens = llm.tokenize(text.encode("utf-8"))[: CONTEXT_TOKENS + max(SIZES)]
    llm.reset()
    llm.eval(tokens[:CONTEXT_TOKENS])
    single = batch_seconds(llm, tokens, 1, args.repeats)
    print(f"model {Path(backend.model_path).name}, {args.threads} thread(s), after {CONTEXT_TOKENS} tokens")
    print("| tokens in the batch | ms | cost ÷ one token | cost ÷ that many single decodes |")
    print("| --- | --- | --- | --- |")
    rows = []
    for size in SIZES:
        seconds = single if size == 1 else batch_seconds(llm, tokens, size, args.repeats)
        ratio = seconds / single
        rows.append({"tokens": size, "ms": round(seconds * 1000, 1), "ratio": round(ratio, 2)})
        print(f"| {size} | {seconds * 1000:.1f} | {ratio:.2f}× | {ratio / size:.2f}× |")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                    "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                    "model": Path(backend.model_path).name,
                    "threads": args.threads,
                    "rows": rows,
                },
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
