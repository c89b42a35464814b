"""Retrieval for agents: knowledge.retrieval.search per attached knowledge base, at a pinned version.

Engineer B's knowledge.retrieval provides the real hybrid search; while it is absent (or for a quick offline
path) a PostgreSQL full-text fallback over the chunks valid at that version answers instead.
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.postgres.search import SearchQuery, SearchRank
from django.db.models import F, Q

logger = logging.getLogger(__name__)


def _hit_dict(hit: Any) -> dict[str, Any]:
    get = hit.get if isinstance(hit, dict) else (lambda k, d=None: getattr(hit, k, d))
    return {
        "chunk_id": get("chunk_id"),
        "document_id": get("document_id"),
        "document_title": get("document_title", ""),
        "position": get("position", 0),
        "text": get("text", ""),
        "score": float(get("score", 0.0) or 0.0),
    }


def _fulltext_search(kb, query: str, top_k: int, version: int) -> list[dict[str, Any]]:
    from knowledge.models import Chunk

    search = SearchQuery(query, config="english", search_type="websearch")
    or_query = None
    for word in {w for w in query.split() if w.isalnum()}:
        term = SearchQuery(word, config="english")
        or_query = term if or_query is None else or_query | term
    rows = (
        Chunk.objects.filter(knowledge_base=kb, valid_from__lte=version)
        .filter(Q(valid_to__isnull=True) | Q(valid_to__gt=version))
        .filter(search_vector=or_query or search)
        .annotate(score=SearchRank(F("search_vector"), or_query or search), document_title=F("document__title"))
        .order_by("-score")[:top_k]
    )
    return [
        {
            "chunk_id": c.pk,
            "document_id": c.document_id,
            "document_title": c.document_title,
            "position": c.position,
            "text": c.text,
            "score": float(c.score),
        }
        for c in rows
    ]


def search_knowledge_bases(
    *, kbs: list, versions: dict[str, int], query: str, top_k: int = 5, min_score: float = 0.0
) -> list[dict[str, Any]]:
    """Search each knowledge base at its pinned version; merge by score. Call inside the tenant's context."""
    try:
        from knowledge.retrieval import search as kb_search
    except ImportError:
        kb_search = None
    hits: list[dict[str, Any]] = []
    for kb in kbs:
        version = versions.get(str(kb.pk), kb.current_version)
        if kb_search is not None:
            try:
                found = [_hit_dict(h) for h in kb_search(knowledge_base=kb, query=query, top_k=top_k, version=version)]
            except Exception:  # noqa: BLE001 - a failing search degrades to full text, it does not end the chat
                logger.exception("knowledge search failed for kb %s; using full-text fallback", kb.pk)
                found = _fulltext_search(kb, query, top_k, version)
        else:
            found = _fulltext_search(kb, query, top_k, version)
        for hit in found:
            hit["knowledge_base_id"] = kb.pk
        hits.extend(found)
    hits = [h for h in hits if h["score"] >= min_score]
    hits.sort(key=lambda h: h["score"], reverse=True)
    return hits[:top_k]
