"""Schema-constrained generation that checks the grammar lazily, as llama.cpp's own `common_sampler` does.

llama-cpp-python puts the grammar sampler in its sampler chain, so the grammar is checked against every
token of the vocabulary (151k for Qwen2.5) before every sampled token: under a JSON-schema grammar that
costs a third to a half of the decoding speed. Here a token is sampled from the unconstrained distribution
(the same top-k / typical / top-p / min-p / temperature chain) and only that one token is checked against
the grammar. Only when the grammar rejects it is the token sampled again from the grammar's valid tokens
(the grammar is shown the most likely few hundred first, and the whole vocabulary only when those cannot
decide), so every output is still a sentence of the grammar. When the model follows the format, as it
nearly always does, a constrained token costs what a free one does. Generation also stops as soon as the
JSON value is closed and the grammar may end, without decoding one more position for the end token.

The prompt is built by the model's own chat handler, exactly as `Llama.create_chat_completion` builds it,
and the evaluated tokens are recorded on the `Llama` the way `Llama.generate` records them, so the
KV-cache prefix reuse works across both paths and only the tokens that are new to a call are evaluated.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from configs.errors import ElpisError
from elpis_worker.cores import CHECK_EVERY

if TYPE_CHECKING:
    from llama_cpp import Llama, LlamaGrammar

    from elpis_worker.cores import CoreShare

__all__ = [
    "ChatRequest",
    "GrammarError",
    "LazyGeneration",
    "LazyGrammarSampler",
    "chat_request",
    "generate",
    "grammar_for_schema",
]

# llama.cpp's defaults in Llama.create_chat_completion, which the eager path uses as well.
DEFAULT_TOP_K = 40
DEFAULT_MIN_P = 0.05
DEFAULT_TYPICAL_P = 1.0
# How many of the most likely tokens a resample shows the grammar before it shows it the whole vocabulary.
PROBE = 512


class GrammarError(ElpisError, RuntimeError):
    """llama.cpp could not build a grammar sampler from the schema's GBNF."""


@dataclass(frozen=True)
class ChatRequest:
    """What `create_chat_completion` would send to `create_completion`: prompt tokens, grammar, stops."""

    prompt_tokens: list[int]
    grammar: LlamaGrammar | None
    stop: list[str]


@dataclass(frozen=True)
class LazyGeneration:
    text: str
    prompt_tokens: int
    completion_tokens: int
    # Prompt tokens actually run through the model; the rest were reused from the KV cache.
    evaluated_prompt_tokens: int
    # Sampled tokens the grammar rejected, each followed by one sample from the grammar's valid tokens.
    resampled: int
    # Resamples that had to show the grammar the whole vocabulary (the others showed it the PROBE best).
    full_scans: int
    finish_reason: Literal["stop", "length", "repeat"]
    # Seconds spent evaluating the prompt (the rest of the call is decoding and sampling).
    prompt_eval_s: float = 0.0
    # The most llama.cpp threads the call ran with (more than model.threads where it shared idle cores).
    threads: int | None = None


# llama-cpp-python's JSON-schema converter lets a string hold raw control characters (a newline), which
# JSON forbids and json.loads rejects; llama.cpp's own converter excludes them, and so does this grammar.
_LOOSE_CHAR = r'char ::= [^"\\] |'
_STRICT_CHAR = r'char ::= [^"\\\x7F\x00-\x1F] |'


@functools.lru_cache(maxsize=64)
def _grammar_for_json(schema_json: str) -> LlamaGrammar:
    from llama_cpp import llama_grammar

    try:
        gbnf = llama_grammar.json_schema_to_gbnf(schema_json)
    except Exception:  # noqa: BLE001 - what llama-cpp-python does with a schema it cannot convert
        gbnf = llama_grammar.JSON_GBNF
    return llama_grammar.LlamaGrammar.from_string(gbnf.replace(_LOOSE_CHAR, _STRICT_CHAR), verbose=False)


def grammar_for_schema(schema: dict[str, Any]) -> LlamaGrammar:
    """The GBNF grammar of a JSON schema, as `response_format={"type": "json_object", "schema": ...}`
    builds it (any JSON when the converter cannot handle the schema), with strings that json.loads
    accepts. Cached: the agent sends the same few schemas again and again."""
    return _grammar_for_json(json.dumps(schema))


class _Captured(Exception):  # noqa: N818 - control flow, never escapes chat_request
    def __init__(self, kwargs: dict[str, Any]) -> None:
        super().__init__("captured")
        self.kwargs = kwargs


class _CapturingLlama:
    """Stands in for the `Llama` a chat handler is given: everything is the real model's, except that
    `create_completion` stops the handler and hands back its arguments instead of generating."""

    def __init__(self, llm: Llama) -> None:
        self._llm = llm

    def __getattr__(self, name: str) -> Any:
        return getattr(self._llm, name)

    def create_completion(self, *args: Any, **kwargs: Any) -> Any:
        if args:
            kwargs = {"prompt": args[0], **kwargs}
        raise _Captured(kwargs)


def chat_request(llm: Llama, messages: list[dict[str, str]], schema: dict[str, Any] | None) -> ChatRequest:
    """The prompt tokens, grammar and stop strings `llm.create_chat_completion` would use for this call.

    Asking the model's own chat handler (its GGUF template, or the configured `chat_format`) keeps the
    prompt token-for-token identical to the eager path, which the KV-cache prefix reuse depends on."""
    from llama_cpp import llama_chat_format

    handler = (
        llm.chat_handler
        or llm._chat_handlers.get(llm.chat_format)  # noqa: SLF001 - the lookup create_chat_completion does
        or llama_chat_format.get_chat_completion_handler(llm.chat_format)
    )
    try:
        handler(llama=_CapturingLlama(llm), messages=messages)
    except _Captured as captured:
        kwargs = captured.kwargs
    else:
        raise RuntimeError(f"chat format {llm.chat_format!r} did not produce a completion request")
    prompt = kwargs["prompt"]
    tokens = (
        list(prompt)
        if not isinstance(prompt, str)
        else llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
    )
    stop = kwargs.get("stop") or []
    return ChatRequest(
        prompt_tokens=[int(t) for t in tokens],
        grammar=grammar_for_schema(schema) if schema is not None else None,
        stop=[stop] if isinstance(stop, str) else list(stop),
    )


_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)], align=True)


class LazyGrammarSampler:
    """An unconstrained sampler chain and a grammar sampler beside it, consulted one token at a time.

    The chain is the one `Llama._init_sampler` builds without the grammar (and without the repetition
    penalties, which the eager path leaves at their no-op defaults): top-k, typical, top-p, min-p,
    temperature, then a seeded draw; temperature 0 is greedy. Owns native samplers: call `close()`."""

    def __init__(
        self,
        llm: Llama,
        grammar: LlamaGrammar | None,
        *,
        temperature: float,
        top_p: float,
        seed: int,
        top_k: int = DEFAULT_TOP_K,
        min_p: float = DEFAULT_MIN_P,
        typical_p: float = DEFAULT_TYPICAL_P,
    ) -> None:
        import llama_cpp

        self._lib = llama_cpp
        self._ctx = llm.ctx
        self._vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self.n_vocab = llm.n_vocab()
        self.chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        self.grammar = None
        seed &= 0xFFFFFFFF
        if temperature < 0:
            softmax = getattr(llama_cpp, "llama_sampler_init_softmax", None)  # gone in newer llama.cpp
            steps = [*([softmax()] if softmax else []), llama_cpp.llama_sampler_init_dist(seed)]
        elif temperature == 0:
            steps = [llama_cpp.llama_sampler_init_greedy()]
        else:
            steps = [
                llama_cpp.llama_sampler_init_top_k(top_k),
                llama_cpp.llama_sampler_init_typical(typical_p, 1),
                llama_cpp.llama_sampler_init_top_p(top_p, 1),
                llama_cpp.llama_sampler_init_min_p(min_p, 1),
                llama_cpp.llama_sampler_init_temp(temperature),
                llama_cpp.llama_sampler_init_dist(seed),
            ]
        for step in steps:
            llama_cpp.llama_sampler_chain_add(self.chain, step)  # the chain owns and frees them
        if grammar is not None:
            self.grammar = llama_cpp.llama_sampler_init_grammar(
                self._vocab, grammar._grammar.encode("utf-8"), grammar._root.encode("utf-8")
            )
            if not self.grammar:
                self.close()
                raise GrammarError("llama.cpp rejected the GBNF grammar built from the JSON schema")
        # One candidate, for the cheap check; the whole vocabulary only for a resample.
        self._one = (llama_cpp.llama_token_data * 1)()
        self._one_array = llama_cpp.llama_token_data_array(self._one, 1, -1, False)
        self._all: np.ndarray | None = None
        self._ids = np.arange(self.n_vocab, dtype=np.int32)
        # A resample needs the top-k valid tokens (greedy: the best one); without a top-k cut, all of them.
        self._needed = 1 if temperature == 0 else (top_k if temperature > 0 and top_k > 0 else 0)
        # min-p drops every token whose logit is below the best one's plus log(min_p).
        self._min_p_margin = math.log(min_p) if temperature > 0 and 0 < min_p < 1 else -math.inf
        self._probe = (
            llama_cpp.llama_sampler_init_top_k(PROBE) if self._needed and self.grammar is not None else None
        )
        self.resampled = 0
        self.full_scans = 0

    def close(self) -> None:
        for name in ("chain", "grammar", "_probe"):
            sampler = getattr(self, name, None)
            if sampler:
                self._lib.llama_sampler_free(sampler)
            setattr(self, name, None)

    def __enter__(self) -> LazyGrammarSampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def allows(self, token: int) -> bool:
        """Whether the grammar accepts `token` next (an end-of-generation token: whether it may end here)."""
        if self.grammar is None:
            return True
        one = self._one[0]
        one.id, one.logit, one.p = token, 1.0, 0.0
        self._one_array.data = self._one
        self._one_array.size, self._one_array.selected, self._one_array.sorted = 1, -1, False
        self._lib.llama_sampler_apply(self.grammar, ctypes.byref(self._one_array))
        return math.isfinite(self._one_array.data[0].logit)

    def sample(self) -> int:
        """Sample the next token from the last evaluated position's logits; the grammar is consulted for
        the sampled token only, and only if it rejects it is the token sampled again under the grammar."""
        lib = self._lib
        # llama_sampler_sample builds the candidates in C and runs the chain; it also "accepts" the token
        # into the chain, which is a no-op for every sampler in it.
        token = int(lib.llama_sampler_sample(self.chain, self._ctx, -1))
        if self.allows(token):
            return token
        self.resampled += 1
        return self._constrained_sample()

    def _candidates(self) -> Any:
        """The whole vocabulary with the last position's logits, as a llama_token_data_array."""
        lib = self._lib
        if self._all is None:
            self._all = np.zeros(self.n_vocab, dtype=_TOKEN_DATA)
        candidates = self._all
        logits = np.ctypeslib.as_array(lib.llama_get_logits_ith(self._ctx, -1), shape=(self.n_vocab,))
        candidates["id"] = self._ids
        candidates["logit"] = logits
        candidates["p"] = 0.0
        return lib.llama_token_data_array(
            candidates.ctypes.data_as(lib.llama_token_data_p), self.n_vocab, -1, False
        )

    def _constrained_sample(self) -> int:
        """Sample from the chain over the grammar's valid tokens, as llama-cpp-python's eager chain does.

        The grammar is first shown only the PROBE most likely tokens. That suffices when at least top-k
        of them are valid (greedy: one), because they are then the top-k valid tokens of the whole
        vocabulary; or when every token it did not see has a logit too low for min-p to keep next to the
        best valid token. Only otherwise is it shown the whole vocabulary."""
        lib = self._lib
        array = self._candidates()
        if self._probe:
            lib.llama_sampler_apply(self._probe, ctypes.byref(array))
            probed = np.ctypeslib.as_array(array.data, shape=(array.size,))
            floor = float(probed["logit"].min())  # no unseen token has a higher logit
            lib.llama_sampler_apply(self.grammar, ctypes.byref(array))
            valid = probed["logit"][np.isfinite(probed["logit"])]
            if valid.size and (valid.size >= self._needed or floor < valid.max() + self._min_p_margin):
                array.sorted = False  # the grammar's -inf logits break the order: let top-k sort again
                return self._select(array)
            array = self._candidates()
        self.full_scans += 1
        lib.llama_sampler_apply(self.grammar, ctypes.byref(array))
        return self._select(array)

    def _select(self, array: Any) -> int:
        self._lib.llama_sampler_apply(self.chain, ctypes.byref(array))
        if array.selected < 0 or not math.isfinite(array.data[array.selected].logit):
            raise GrammarError("the grammar allows no token here")
        return int(array.data[array.selected].id)

    def accept(self, token: int) -> None:
        if self.grammar is not None:
            self._lib.llama_sampler_accept(self.grammar, token)
        self._lib.llama_sampler_accept(self.chain, token)

    def is_eog(self, token: int) -> bool:
        return bool(self._lib.llama_vocab_is_eog(self._vocab, token))


def _common_prefix(held: np.ndarray, tokens: list[int]) -> int:
    limit = min(len(held), len(tokens))
    if not limit:
        return 0
    mismatch = np.flatnonzero(held[:limit] != np.asarray(tokens[:limit], dtype=held.dtype))
    return int(mismatch[0]) if mismatch.size else limit


def _splice_held(llm: Llama, held: np.ndarray, tokens: list[int], common: int) -> tuple[list[int], int]:
    """`tokens` with the span after `common` that spells the same bytes as the tokens the model holds
    there replaced by those held tokens, and the new length of the shared prefix.

    The model's last reply comes back in the next prompt as text, and tokenizing that text rarely gives
    the tokens it was sampled as (a grammar splits `{"` and the like where BPE would merge them), so the
    cache would be lost from the reply's first token on. Text-identical, the sampled tokens are as valid
    a spelling of the prompt, and they are in the KV cache already."""
    i, j = common, common
    held_bytes = new_bytes = b""
    best = (common, common)
    while i < len(held) and j < len(tokens):
        if len(held_bytes) <= len(new_bytes):
            held_bytes += llm.detokenize([int(held[i])], special=True)
            i += 1
        else:
            new_bytes += llm.detokenize([tokens[j]], special=True)
            j += 1
        shorter = min(len(held_bytes), len(new_bytes))
        if held_bytes[:shorter] != new_bytes[:shorter]:
            break
        if held_bytes == new_bytes:
            best = (i, j)
    i, j = best
    if i == common:
        return tokens, common
    spliced = [*tokens[:common], *(int(t) for t in held[common:i]), *tokens[j:]]
    return spliced, _common_prefix(held, spliced)


def _evaluate_prompt(llm: Llama, tokens: list[int]) -> tuple[list[int], int]:
    """Evaluate `tokens` after the longest prefix the model already holds, as `Llama.generate` does
    (spliced with the held spelling of the same text, see `_splice_held`); returns the prompt as
    evaluated and how many of its tokens were. At least the last one is, so its logits are fresh."""
    import llama_cpp

    held = llm.input_ids[: llm.n_tokens]
    common = _common_prefix(held, tokens)
    if common < min(len(held), len(tokens)):
        tokens, common = _splice_held(llm, held, tokens, common)
    reuse = min(common, len(tokens) - 1)
    if reuse > 0:
        memory = llama_cpp.llama_get_memory(llm.ctx)
        if not llama_cpp.llama_memory_seq_rm(memory, 0, reuse, -1):
            reuse = 0  # a recurrent model cannot drop a suffix: start over
    if reuse == 0:
        llm.reset()
    llm.n_tokens = reuse
    llm.eval(tokens[reuse:])
    return tokens, len(tokens) - reuse


def _closed(text: bytes) -> bool:
    """A JSON object, array or string that the grammar lets end here cannot go on with more than
    whitespace, so generation stops without sampling the end-of-generation token."""
    return text.rstrip()[-1:] in (b"}", b"]", b'"')


# A reply stuck repeating itself is stopped: the last REPEAT_WINDOW tokens are one run of at most
# REPEAT_CYCLE tokens over and over (seen in the eval: `* self.rate` written until max_tokens cut the
# reply, five turns running, each 600 tokens of decoding for an unusable reply).
REPEAT_WINDOW = 96
REPEAT_CYCLE = 16


def repeating_tail(tokens: list[int]) -> bool:
    """Whether `tokens` ends in REPEAT_WINDOW tokens that repeat one run of at most REPEAT_CYCLE."""
    if len(tokens) < REPEAT_WINDOW:
        return False
    tail = tokens[-REPEAT_WINDOW:]
    return any(tail[cycle:] == tail[:-cycle] for cycle in range(1, REPEAT_CYCLE + 1))


def generate(
    llm: Llama,
    request: ChatRequest,
    *,
    temperature: float,
    top_p: float,
    max_tokens: int,
    seed: int,
    cores: CoreShare | None = None,
) -> LazyGeneration:
    """Generate for `request` with lazy grammar checks; the text is a sentence of the grammar unless
    `max_tokens` (or the context window) cut it short, which `finish_reason == "length"` says, or it
    was stopped for repeating itself (`"repeat"`). With `cores`, the call takes the host's idle cores
    (elpis_worker.cores), looking again every CHECK_EVERY tokens."""
    with cores.generating() if cores is not None else contextlib.nullcontext():
        return _generate(llm, request, temperature, top_p, max_tokens, seed, cores)


def _generate(
    llm: Llama,
    request: ChatRequest,
    temperature: float,
    top_p: float,
    max_tokens: int,
    seed: int,
    cores: CoreShare | None,
) -> LazyGeneration:
    prompt = request.prompt_tokens
    n_ctx = llm.n_ctx()
    if len(prompt) >= n_ctx:
        raise ValueError(f"Requested tokens ({len(prompt)}) exceed context window of {n_ctx}")
    threads = cores.fit(llm) if cores is not None else None
    stops = [s.encode("utf-8") for s in request.stop if s]
    started = time.perf_counter()
    prompt, evaluated = _evaluate_prompt(llm, prompt)
    prompt_eval_s = time.perf_counter() - started
    budget = max_tokens if max_tokens and max_tokens > 0 else n_ctx
    budget = min(budget, n_ctx - len(prompt))
    completion: list[int] = []
    text = b""
    finish: Literal["stop", "length", "repeat"] = "length"
    with LazyGrammarSampler(llm, request.grammar, temperature=temperature, top_p=top_p, seed=seed) as sampler:
        while len(completion) < budget:
            token = sampler.sample()
            if sampler.is_eog(token):
                finish = "stop"
                break
            sampler.accept(token)
            completion.append(token)
            text += llm.detokenize([token])
            hit = [text.index(s) for s in stops if s in text]
            if hit:
                text = text[: min(hit)]
                finish = "stop"
                break
            if request.grammar is not None and _closed(text) and sampler.allows(llm.token_eos()):
                finish = "stop"
                break
            if repeating_tail(completion):
                finish = "repeat"
                break
            if len(completion) < budget:
                if cores is not None and len(completion) % CHECK_EVERY == 0:
                    threads = max(threads or 0, cores.fit(llm))
                llm.eval([token])
        resampled, full_scans = sampler.resampled, sampler.full_scans
    return LazyGeneration(
        text=text.decode("utf-8", errors="ignore"),
        prompt_tokens=len(prompt),
        completion_tokens=len(completion),
        evaluated_prompt_tokens=evaluated,
        resampled=resampled,
        full_scans=full_scans,
        finish_reason=finish,
        prompt_eval_s=prompt_eval_s,
        threads=threads,
    )
