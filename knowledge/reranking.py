"""Reranking: a cross-encoder reads the query with each fused candidate and re-orders the best few.

    reranker = reranker_for(search_settings_for(kb)["reranker"])   # None: off
    hits = rerank_hits(reranker, query, hits, top_k)                # best top_k, rerank_score set

Operators configure rerankers by name (settings.KNOWLEDGE_RERANKERS); a knowledge base picks one by name in
its search_settings ("reranker"), "none" turns it off, and without a name it gets
settings.KNOWLEDGE_DEFAULT_RERANKER (unset: off). Users pick names, never code or URLs. Backends:

    {"local":  {"backend": "cross-encoder", "path": "/models/ms-marco-MiniLM-L6-v2"},
     "cohere": {"backend": "http", "url": "https://api.cohere.com/v2/rerank", "model": "rerank-v3.5",
                "timeout": 5},
     "custom": "dotted.path.to.factory"}   # the operator's own code: called once, returns a Reranker

- "cross-encoder": a sentence-transformers CrossEncoder from a local directory, on CPU, offline; loaded on
  first use, once per process.
- "http": the Cohere/Jina `/rerank` wire format (POST {model, query, documents, top_n} ->
  {results: [{index, relevance_score}]}), key from settings.KNOWLEDGE_RERANK_API_KEYS[name] as a Bearer token.
  The URL is the operator's, like an embeddings server's, so it is not SSRF-guarded.

A reranker that fails (timeout, refused, a malformed answer, model files missing) does not fail the search:
the fused order is still a good answer, and a user asking a question prefers it to an error. It is never
silent either: the hits carry no rerank_score, the search API answers `"reranked": false`, a warning is
logged and rerank_failures_total counted. Keys never reach a log line.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from core.errors import InvalidInput
from core.metrics import metric_inc, metric_observe
from core.tenancy import current_schema

logger = logging.getLogger(__name__)

OFF = "none"  # a knowledge base's explicit "no reranker", even when the operator set a default


class RerankerUnavailable(Exception):
    """The reranker could not score (caught by rerank_hits: the search answers in fused order)."""


class Reranker(Protocol):
    name: str

    def rerank(self, query: str, documents: list[str], top_n: int) -> list[tuple[int, float]]:
        """The best `top_n` documents as (index into documents, relevance score), best first."""
        ...


class _Passage(Protocol):
    text: str
    rerank_score: float | None


P = TypeVar("P", bound=_Passage)


# --- Backends ---------------------------------------------------------------------------------------------


def _best(scores: list[float], top_n: int) -> list[tuple[int, float]]:
    return sorted(enumerate(scores), key=lambda pair: (-pair[1], pair[0]))[:top_n]


class CrossEncoderReranker:
    """A sentence-transformers CrossEncoder from a local directory, loaded on first use (seconds, ~100 MB)."""

    def __init__(self, name: str, *, path: str, batch_size: int = 32):
        self.name = name
        self.path = Path(path)
        self.batch_size = batch_size
        self._model: Any = None
        self._lock = threading.Lock()

    def _loaded(self) -> Any:
        with self._lock:
            if self._model is None:
                if not (self.path / "config.json").exists():
                    raise RerankerUnavailable(f"No cross-encoder model at {self.path}.")
                os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub at run time
                # Imported here, like the embedders: torch takes seconds to import; only rerankers in use pay.
                from sentence_transformers import CrossEncoder

                self._model = CrossEncoder(str(self.path), device="cpu", local_files_only=True)
            return self._model

    def rerank(self, query: str, documents: list[str], top_n: int) -> list[tuple[int, float]]:
        pairs = [(query, d) for d in documents]
        scores = self._loaded().predict(pairs, batch_size=self.batch_size, show_progress_bar=False)
        return _best([float(s) for s in scores], top_n)


class HttpReranker:
    """A Cohere/Jina-compatible `/rerank` endpoint (also vLLM, Infinity, TEI behind a compatible route)."""

    def __init__(self, name: str, *, url: str, model: str = "", api_key: str = "", timeout: float | None = None):
        self.name = name
        self.url = url
        self.model = model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # One pooled client per process (keep-alive); no retries: a slow reranker must not make search slow.
        self._client = httpx.Client(
            headers=headers, timeout=timeout or float(settings.KNOWLEDGE_RERANK_TIMEOUT), follow_redirects=False
        )

    def rerank(self, query: str, documents: list[str], top_n: int) -> list[tuple[int, float]]:
        payload = {"model": self.model, "query": query, "documents": documents, "top_n": top_n}
        try:
            response = self._client.post(self.url, json=payload)
        except httpx.TimeoutException as exc:
            raise RerankerUnavailable(f"timed out after {self._client.timeout.read} s") from exc
        except httpx.HTTPError as exc:
            raise RerankerUnavailable(f"request failed ({type(exc).__name__})") from exc
        if not response.is_success:
            raise RerankerUnavailable(f"answered HTTP {response.status_code}")
        try:
            results = [(int(r["index"]), float(r["relevance_score"])) for r in response.json()["results"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise RerankerUnavailable("answered without a valid results list") from exc
        indices = [index for index, _ in results]
        if len(set(indices)) != len(indices) or not all(0 <= i < len(documents) for i in indices):
            raise RerankerUnavailable("answered indices that do not match the documents sent")
        return sorted(results, key=lambda pair: (-pair[1], pair[0]))[:top_n]


def _build(name: str, config: str | dict[str, Any]) -> Reranker:
    if isinstance(config, str):  # the operator's own code: a factory returning a Reranker
        factory: Callable[[], Reranker] = import_string(config)
        return factory()
    backend = config.get("backend")
    if backend == "cross-encoder":
        return CrossEncoderReranker(name, path=str(config["path"]), batch_size=int(config.get("batch_size", 32)))
    if backend == "http":
        keys = settings.KNOWLEDGE_RERANK_API_KEYS or {}
        return HttpReranker(
            name,
            url=str(config["url"]),
            model=str(config.get("model", "")),
            api_key=str(keys.get(name, "")),
            timeout=float(config["timeout"]) if config.get("timeout") else None,
        )
    raise ImproperlyConfigured(f"KNOWLEDGE_RERANKERS[{name!r}]: unknown backend {backend!r} (cross-encoder, http).")


@functools.cache
def reranker_named(name: str) -> Reranker:
    """The configured reranker `name`, built once per process (a pooled HTTP client, a model loaded once)."""
    config = (settings.KNOWLEDGE_RERANKERS or {}).get(name)
    if not config:
        raise InvalidInput(f"Unknown reranker {name!r}.", field="reranker")
    return _build(name, config)


def reranker_for(name: str | None) -> Reranker | None:
    """The reranker a knowledge base's `reranker` setting selects: its name, "none" (off), or unset (the
    operator's default, if any)."""
    chosen = settings.KNOWLEDGE_DEFAULT_RERANKER if name is None else name
    if not chosen or chosen == OFF:
        return None
    return reranker_named(chosen)


# --- Applying it to search hits ---------------------------------------------------------------------------


def rerank_hits(reranker: Reranker | None, query: str, hits: list[P], top_k: int) -> list[P]:
    """The best `top_k` of `hits` by the reranker (rerank_score set), or the first `top_k` as fused when there
    is no reranker or it fails (rerank_score stays None: see rerank_applied)."""
    if reranker is None or not hits:
        return hits[:top_k]
    start = time.perf_counter()
    try:
        best = reranker.rerank(query, [hit.text for hit in hits], min(top_k, len(hits)))
    except Exception as exc:  # noqa: BLE001 - whatever broke, the fused order still answers (module docstring)
        expected = isinstance(exc, RerankerUnavailable)  # an unexpected error gets its traceback
        reason = str(exc) if expected else type(exc).__name__
        logger.warning("reranker %s failed, answering in fused order: %s", reranker.name, reason, exc_info=not expected)
        metric_inc("rerank_failures_total", tenant=current_schema(), reranker=reranker.name)
        return hits[:top_k]
    metric_observe("rerank_seconds", time.perf_counter() - start, reranker=reranker.name)
    ranked = []
    for index, score in best:
        hit = hits[index]
        hit.rerank_score = round(score, 6)
        ranked.append(hit)
    return ranked


def rerank_applied(hits: list[P]) -> bool:
    """Whether these hits come in the reranker's order (every hit scored by it)."""
    return bool(hits) and all(hit.rerank_score is not None for hit in hits)
