"""The resident model behind a small interface: chat (optionally schema-constrained) and token count.

`LlamaBackend` (llama.cpp through llama-cpp-python) is the default everywhere. `OpenAIBackend` talks to a
model server (a GPU host) instead of keeping a model resident. `ScriptedBackend` replays a JSON script of
tool calls: a deterministic test double for the loop's logic, never the default.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from configs.errors import ElpisError
from configs.settings import ModelSettings, Settings
from elpis_worker.cores import CoreShare


class ModelLoadError(ElpisError, RuntimeError):
    """The configured model cannot be loaded; the message says what to change."""


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    duration_s: float
    # Prompt tokens the model actually evaluated (the rest came from the KV cache); None where unknown.
    evaluated_prompt_tokens: int | None = None
    # "stop" when the model ended the reply, "length" when max_tokens (or the context) cut it short;
    # None where the backend does not say.
    finish_reason: str | None = None
    # Seconds of duration_s spent evaluating the prompt (the rest is decoding); None where unknown.
    prompt_eval_s: float | None = None
    # The most llama.cpp threads the call ran with (model.share_idle_cores); None where unknown.
    threads: int | None = None


def call_seed(base: int, task_id: int, turn: int, phase: str, attempt: int = 0) -> int:
    """The sampling seed of one model call: a 32-bit hash of `model.seed` and where the call stands (the
    task, the turn, the phase: think, reflect or replan; the attempt, for a reply sampled again). The same
    task run again draws the same seeds whichever worker process takes it and whatever that process did
    before, so a rerun of the same code can reproduce its replies (and two runs of a bench compare the
    same trajectories) as far as the model gives the same logits."""
    key = f"{base}:{task_id}:{turn}:{phase}:{attempt}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=4).digest(), "big")


class ModelBackend(Protocol):
    name: str
    model_path: str

    def chat(
        self,
        messages: list[dict[str, str]],
        *,
        schema: dict[str, Any] | None,
        temperature: float,
        top_p: float,
        max_tokens: int,
        seed: int | None = None,
    ) -> Completion: ...

    def count_tokens(self, text: str) -> int: ...


def resolve_model_path(cfg: ModelSettings, settings: Settings | None = None) -> Path:
    """model.path when set, else the catalogue file of model.name (under `settings`' home, by default the
    process's settings). A model that is not there is an error that says how to pull it: loading never
    downloads, so a worker's start stays fast and predictable."""
    if not cfg.path:
        from configs import get_settings
        from elpis_worker import catalogue

        try:
            path = catalogue.model_file(settings or get_settings(), cfg.name)
            present = catalogue.is_present(settings or get_settings(), cfg.name)
        except catalogue.CatalogueError as exc:
            raise ModelLoadError(f"model.name: {exc}") from exc
        if not present:
            state = "is not downloaded" if not path.exists() else f"at {path} is incomplete"
            raise ModelLoadError(
                f"model {cfg.name} {state}: run `elpis models pull {cfg.name}` "
                "(`elpis up` pulls it), or set model.path / ELPIS_MODEL__PATH to a GGUF file"
            )
        return path
    path = Path(cfg.path).expanduser()
    if not path.is_file():
        raise ModelLoadError(
            f"model.path {path} is not a file: set model.path / ELPIS_MODEL__PATH to a GGUF file"
        )
    return path


class LlamaBackend:
    """llama.cpp model, loaded once per process. llama-cpp-python keeps the KV cache of the last prompt
    and evaluates only the new suffix of the next one, so callers keep prompt prefixes stable."""

    name = "llama"

    def __init__(self, cfg: ModelSettings) -> None:
        import random

        from llama_cpp import Llama  # imported here: the API process never needs it

        path = resolve_model_path(cfg)
        self.model_path = str(path)
        try:
            self.llm = Llama(
                model_path=self.model_path,
                n_ctx=cfg.n_ctx,
                n_threads=cfg.threads,
                n_threads_batch=cfg.threads,
                n_gpu_layers=cfg.gpu_layers,
                chat_format=cfg.chat_format or None,
                seed=cfg.seed,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"llama.cpp could not load {path}: {exc}") from exc
        self.n_ctx = cfg.n_ctx
        # Lazy grammar checks (elpis_worker.lazy_grammar) unless model.lazy_grammar is false, which keeps
        # llama-cpp-python's own sampler chain with the grammar over the whole vocabulary, for comparison.
        self.lazy_grammar = cfg.lazy_grammar
        self._seeds = random.Random(cfg.seed)
        # Idle cores of the host, taken while this process generates (elpis_worker.cores).
        self.cores = CoreShare(cfg.threads) if cfg.share_idle_cores and cfg.gpu_layers == 0 else None

    def chat(
        self,
        messages: list[dict[str, str]],
        *,
        schema: dict[str, Any] | None,
        temperature: float,
        top_p: float,
        max_tokens: int,
        seed: int | None = None,
    ) -> Completion:
        """One reply. `seed` (call_seed) samples it reproducibly; without one the call draws the next
        seed of this process's sequence (started from model.seed)."""
        from elpis_worker import lazy_grammar  # with llama_cpp: not for the API process

        started = time.perf_counter()
        seed = seed if seed is not None else self._seeds.randrange(2**32)
        if self.lazy_grammar:
            request = lazy_grammar.chat_request(self.llm, messages, schema)
            generation = lazy_grammar.generate(
                self.llm,
                request,
                temperature=temperature,
                top_p=top_p,
                max_tokens=max_tokens,
                seed=seed,
                cores=self.cores,
            )
            return Completion(
                text=generation.text,
                prompt_tokens=generation.prompt_tokens,
                completion_tokens=generation.completion_tokens,
                duration_s=time.perf_counter() - started,
                evaluated_prompt_tokens=generation.evaluated_prompt_tokens,
                finish_reason=generation.finish_reason,
                prompt_eval_s=generation.prompt_eval_s,
                threads=generation.threads,
            )
        kwargs: dict[str, Any] = {}
        if schema is not None:
            # The JSON schema as a GBNF grammar (the one the lazy path uses): the output always parses
            # (unless cut by max_tokens, which the loop treats as a bad tool call).
            kwargs["grammar"] = lazy_grammar.grammar_for_schema(schema)
        counted = _prompt_eval_counters(self.llm)
        result = self.llm.create_chat_completion(
            messages=messages,  # type: ignore[arg-type]
            temperature=temperature,
            top_p=top_p,
            max_tokens=max_tokens,
            seed=seed,
            **kwargs,
        )
        evaluated, eval_ms = (a - b for a, b in zip(_prompt_eval_counters(self.llm), counted, strict=True))
        known = evaluated >= 0 and eval_ms >= 0  # not reset in between
        usage = result.get("usage") or {}
        choice = result["choices"][0]  # type: ignore[index]
        return Completion(
            text=choice["message"].get("content") or "",
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            duration_s=time.perf_counter() - started,
            finish_reason=choice.get("finish_reason"),
            # What llama.cpp's own counters say this call's prompt evaluation was.
            evaluated_prompt_tokens=int(evaluated) if known else None,
            prompt_eval_s=eval_ms / 1000 if known else None,
        )

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))


def _prompt_eval_counters(llm: Any) -> tuple[float, float]:
    """llama.cpp's running totals for this context: prompt tokens evaluated in batches, and the
    milliseconds that took (its perf counters; a batch of one token counts as decoding there). The eager
    path reads them around `create_chat_completion`, whose reply does not say what it evaluated."""
    import llama_cpp

    data = llama_cpp.llama_perf_context(llm.ctx)
    return float(data.n_p_eval), float(data.t_p_eval_ms)


FRESH_LOOK_TURNS = re.compile(r"^Fresh look after (\d+) turns", re.MULTILINE)


class ScriptedBackend:
    """Test double: think calls replay the script's tool calls in order (position = number of tool calls
    already in the conversation, so a resumed task continues where it was). Like the real model it obeys
    the grammar: when the schema excludes the scripted tool, it takes the item's "instead" action or,
    failing that, the first allowed of list_dir / run_tests / python / finish. Other calls (reflect,
    replan) get an object filled from the schema. Deterministic; counts tokens as characters / 4."""

    name = "scripted"
    FALLBACKS = (
        {
            "thought": "That tool is not available now; look around.",
            "tool": "list_dir",
            "args": {"path": "."},
        },
        {"thought": "Check the tests.", "tool": "run_tests", "args": {}},
        # The review turn's check (tools.check_on_review), for a script written without one: it asserts,
        # as a check must (policy.checked).
        {"thought": "Try the change.", "tool": "python", "args": {"code": "print('checked')\nassert True"}},
        {"thought": "Wrap up.", "tool": "finish", "args": {"summary": "stopped by the scripted backend"}},
    )

    def __init__(self, cfg: ModelSettings) -> None:
        if not cfg.script:
            raise ModelLoadError(
                "model.backend is 'scripted' but model.script is empty: set ELPIS_MODEL__SCRIPT"
            )
        path = Path(cfg.script).expanduser()
        try:
            script = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelLoadError(f"model.script {path} is not a readable JSON list: {exc}") from exc
        if not isinstance(script, list) or not all(
            isinstance(item, dict) and ("tool" in item or "raw" in item) for item in script
        ):
            raise ModelLoadError(
                f"model.script {path} must be a JSON list of {{thought, tool, args}} objects"
            )
        self.script: list[dict[str, Any]] = script
        # Every conversation it was sent, in order, for tests of what the loop shows the model.
        self.prompts: list[list[dict[str, str]]] = []
        self._skips: dict[str, int] = {}
        self._last: tuple[str, int, int] | None = None
        self.model_path = str(path)

    def _action(
        self, position: int, allowed: list[str], alternatives: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        if position >= len(self.script):
            return {
                "thought": "The script is over.",
                "tool": "finish",
                "args": {"summary": "script exhausted"},
            }
        item = self.script[position]
        for candidate in (item, item.get("instead"), *self.FALLBACKS):
            if isinstance(candidate, dict) and (
                "raw" in candidate
                or (candidate.get("tool") in allowed and _fits(candidate, alternatives or []))
            ):
                return candidate
        raise ModelLoadError(f"scripted backend: no action allowed by the grammar at position {position}")

    def chat(
        self,
        messages: list[dict[str, str]],
        *,
        schema: dict[str, Any] | None,
        temperature: float,
        top_p: float,
        max_tokens: int,
        seed: int | None = None,
    ) -> Completion:
        started = time.perf_counter()
        self.prompts.append([dict(m) for m in messages])
        last = messages[-1]["content"] if messages else ""
        progress = "(ok" in last.split("\n", 1)[0]  # "Result of <tool> (ok, exit 0):"
        allowed = [alt["properties"]["tool"]["const"] for alt in (schema or {}).get("anyOf", [])]
        if allowed:
            done = sum(1 for m in messages if m["role"] == "assistant" and '"tool"' in m["content"])
            # A fresh look leaves the turns before it out of the conversation: count them back in.
            looks = [int(n) for m in messages for n in FRESH_LOOK_TURNS.findall(m["content"])]
            done += looks[-1] if looks else 0
            # Sampling the same conversation again (the loop rejected a banned call) gives the next
            # scripted item, as a real model's next sample would differ; later turns stay shifted.
            task_key = messages[1]["content"] if len(messages) > 1 else ""
            if self._last == (task_key, len(messages), done):
                self._skips[task_key] = self._skips.get(task_key, 0) + 1
            self._last = (task_key, len(messages), done)
            done += self._skips.get(task_key, 0)
            action = self._action(done, allowed, (schema or {}).get("anyOf"))
            # "raw" replays text verbatim: a reply cut short by max_tokens, which no grammar prevents.
            # A one-call turn's schema leads with reflection fields: fill them as a reflect call would.
            first = (schema or {})["anyOf"][0]["properties"]
            leading = {k: v for k, v in first.items() if k not in ("thought", "tool", "args")}
            reflection = _fill({"properties": leading}, progress)
            text = (
                action["raw"]
                if "raw" in action
                else json.dumps(
                    {
                        **reflection,
                        # A finish-only turn's grammar has no thought (grammar.think_schema).
                        **({"thought": action.get("thought", "")} if "thought" in first else {}),
                        "tool": action["tool"],
                        "args": action.get("args", {}),
                    }
                )
            )
        else:
            text = json.dumps(_fill(schema, progress))
        prompt = sum(len(m["content"]) for m in messages) // 4
        finish = action.get("finish_reason") if allowed else None
        return Completion(
            text, prompt, max(1, len(text) // 4), time.perf_counter() - started, finish_reason=finish
        )

    def count_tokens(self, text: str) -> int:
        return max(1, len(text) // 4)


def _fits(action: dict[str, Any], alternatives: list[dict[str, Any]]) -> bool:
    """Whether the grammar could produce `action`: its tool's string patterns (the repeat exclusion) hold."""
    for alternative in alternatives:
        if alternative["properties"]["tool"].get("const") != action.get("tool"):
            continue
        properties = alternative["properties"]["args"].get("properties", {})
        for key, prop in properties.items():
            value = (action.get("args") or {}).get(key)
            if "pattern" in prop and not (isinstance(value, str) and re.fullmatch(prop["pattern"], value)):
                return False
        return True
    return True


def _fill(schema: dict[str, Any] | None, progress: bool) -> dict[str, Any]:
    """A schema-shaped answer: booleans say whether the last result looked like progress."""
    out: dict[str, Any] = {}
    for key, prop in ((schema or {}).get("properties") or {}).items():
        if prop.get("type") == "boolean":
            out[key] = progress
        else:
            out[key] = f"scripted {key}: {'progress' if progress else 'no progress yet'}"
    return out


class ModelServerError(ElpisError, RuntimeError):
    """The model server did not answer, or answered with an error, after the configured retries."""


class OpenAIBackend:
    """A model served by another process, often on a GPU host (llama-server, vLLM, Ollama, llama-cpp-
    python's server), over the OpenAI chat-completions API: the worker keeps no model resident. The tool-
    call grammar goes as the request's JSON schema (`model.schema_format`: OpenAI's `json_schema`, or
    `json_object` with a `schema` as llama-cpp-python's server takes it), so replies parse as with the
    resident model. Transport errors, 5xx and 429 are retried with backoff; tokens are counted as
    characters / 3 (an over-estimate for code, which is what prompt windowing needs), since the API has
    no tokenizer endpoint."""

    name = "openai"
    RETRY_STATUS = frozenset({429, 500, 502, 503, 504})

    def __init__(self, cfg: ModelSettings) -> None:
        import httpx

        self.base_url = cfg.base_url.rstrip("/")
        self.model = cfg.server_model or cfg.name
        self.model_path = f"{self.base_url} ({self.model})"
        self.schema_format = cfg.schema_format
        self.retries = cfg.request_retries
        self.seed = cfg.seed
        key = cfg.api_key.get_secret_value()
        self.http = httpx.Client(
            base_url=self.base_url,
            timeout=cfg.request_timeout,
            headers={"Authorization": f"Bearer {key}"} if key else {},
        )

    def _response_format(self, schema: dict[str, Any]) -> dict[str, Any]:
        if self.schema_format == "json_object":
            return {"type": "json_object", "schema": schema}
        return {"type": "json_schema", "json_schema": {"name": "reply", "schema": schema, "strict": True}}

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        import httpx

        problem = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(30.0, 2.0 ** (attempt - 1)))
            try:
                response = self.http.post("/chat/completions", json=body)
            except httpx.HTTPError as exc:
                problem = f"cannot reach {self.base_url}: {exc}"
                continue
            if response.status_code in self.RETRY_STATUS:
                problem = f"{self.base_url} answered {response.status_code}: {response.text[:200]}"
                continue
            if response.status_code >= 400:
                raise ModelServerError(
                    f"{self.base_url} answered {response.status_code}: {response.text[:300]}"
                )
            try:
                return response.json()
            except ValueError:
                raise ModelServerError(f"{self.base_url} answered with something that is not JSON") from None
        raise ModelServerError(f"{problem} (after {self.retries + 1} tries)")

    def chat(
        self,
        messages: list[dict[str, str]],
        *,
        schema: dict[str, Any] | None,
        temperature: float,
        top_p: float,
        max_tokens: int,
        seed: int | None = None,
    ) -> Completion:
        started = time.perf_counter()
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": temperature,
            "top_p": top_p,
            "max_tokens": max_tokens,
            "seed": seed if seed is not None else self.seed,
        }
        if schema is not None:
            body["response_format"] = self._response_format(schema)
        result = self._post(body)
        try:
            choice = result["choices"][0]
            text = choice["message"].get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError):
            raise ModelServerError(
                f"{self.base_url} answered without a message: {str(result)[:300]}"
            ) from None
        usage = result.get("usage") or {}
        return Completion(
            text=text,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            duration_s=time.perf_counter() - started,
            finish_reason=choice.get("finish_reason") if isinstance(choice, dict) else None,
        )

    def count_tokens(self, text: str) -> int:
        return -(-len(text) // 3)


def load_backend(cfg: ModelSettings) -> ModelBackend:
    if cfg.backend == "scripted":
        return ScriptedBackend(cfg)
    if cfg.backend == "openai":
        return OpenAIBackend(cfg)
    return LlamaBackend(cfg)
