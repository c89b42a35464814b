"""Retrieval for agents: knowledge.retrieval.search per attached knowledge base, at a pinned version.

A failing search raises knowledge.retrieval.SearchUnavailable (code search_unavailable): a run never answers
as if it had searched when it could not.
"""

from __future__ import annotations

from typing import Any

from knowledge.models import KnowledgeBase
from knowledge.retrieval import SearchHit, search


def _hit_dict(hit: SearchHit, knowledge_base_id: int) -> dict[str, Any]:
    return {
        "chunk_id": hit.chunk_id,
        "document_id": hit.document_id,
        "document_title": hit.document_title,
        "position": hit.position,
        "text": hit.text,
        "score": float(hit.score),
        "knowledge_base_id": knowledge_base_id,
        "page_start": hit.page_start,
        "page_end": hit.page_end,
        "section_path": hit.section_path,
    }


def search_knowledge_bases(
    *, kbs: list[KnowledgeBase], versions: dict[str, int], query: str, top_k: int = 5, min_score: float = 0.0
) -> list[dict[str, Any]]:
    """Search each knowledge base at its pinned version; merge by score. Call inside the tenant's context."""
    hits: list[dict[str, Any]] = []
    for kb in kbs:
        version = versions.get(str(kb.pk), kb.current_version)
        hits.extend(_hit_dict(h, kb.pk) for h in search(knowledge_base=kb, query=query, top_k=top_k, version=version))
    hits = [h for h in hits if h["score"] >= min_score]
    hits.sort(key=lambda h: h["score"], reverse=True)
    return hits[:top_k]
