"""Reads for knowledge bases, documents, chunks and versions. Authorization through iam.policy only."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from django.db.models import Q, QuerySet
from django.utils import timezone

from core.errors import InvalidInput, NotFound
from iam.policy import Principal, passage_grant_for, resource_get_for_principal, resource_queryset_for

from .models import Chunk, Document, DocumentStatus, KnowledgeBase, KnowledgeBaseVersion


def knowledge_base_list(*, principal: Principal) -> QuerySet[KnowledgeBase]:
    return resource_queryset_for(principal, KnowledgeBase.objects.all())


def knowledge_base_get(*, principal: Principal, kb_id: int | str, action: str = "view") -> KnowledgeBase:
    """The knowledge base, or NotFound (invisible) / Forbidden (visible, action not allowed)."""
    return resource_get_for_principal(principal, KnowledgeBase.objects.all(), kb_id, action)


def document_list(*, kb: KnowledgeBase, status: str | None = None, include_deleted: bool = False) -> QuerySet[Document]:
    qs = Document.objects.filter(knowledge_base=kb)
    if status:
        qs = qs.filter(status=status)
    elif not include_deleted:
        qs = qs.exclude(status=DocumentStatus.DELETED)
    return qs.order_by("-created_at", "-id")


def document_get(*, kb: KnowledgeBase, document_id: int | str) -> Document:
    document = Document.objects.filter(knowledge_base=kb, pk=document_id).first()
    if document is None:
        raise NotFound("Not found.")
    return document


def document_passages_for(
    *, principal: Principal, kb_id: Any, document_id: Any, version: int | None = None
) -> tuple[KnowledgeBase, Document, QuerySet[Chunk]]:
    """A document's passages as far as the principal may open them: all of them (current, or at `version`) if it
    may view the knowledge base, else only the chunks cited to it in a chat (iam.policy.passage_grant_for, which
    ignores `version`: a citation names the exact chunk). NotFound when there is nothing it may open."""
    try:
        kb = KnowledgeBase.objects.filter(pk=kb_id).first()  # loaded unfiltered: the policy decides just below
    except (TypeError, ValueError):
        kb = None
    if kb is None:
        raise NotFound("Not found.")
    grant = passage_grant_for(principal, kb, document_id)
    if grant is not None and not grant:
        raise NotFound("Not found.")
    document = document_get(kb=kb, document_id=document_id)
    if grant is None:
        chunks = chunks_at(kb=kb, version=version).filter(document=document)
    else:
        chunks = Chunk.objects.filter(knowledge_base=kb, document=document, pk__in=grant)
    return kb, document, chunks.order_by("position")


def valid_at(version: int) -> Q:
    """Chunks visible in `version` (valid_from <= v < valid_to)."""
    return Q(valid_from__lte=version) & (Q(valid_to__isnull=True) | Q(valid_to__gt=version))


def chunks_at(*, kb: KnowledgeBase, version: int | None = None) -> QuerySet[Chunk]:
    qs = Chunk.objects.filter(knowledge_base=kb)
    return qs.filter(valid_to__isnull=True) if version is None else qs.filter(valid_at(version))


def version_list(*, kb: KnowledgeBase) -> QuerySet[KnowledgeBaseVersion]:
    return KnowledgeBaseVersion.objects.filter(knowledge_base=kb).order_by("-number")


def version_get(*, kb: KnowledgeBase, number: int) -> KnowledgeBaseVersion:
    version = KnowledgeBaseVersion.objects.filter(knowledge_base=kb, number=number).first()
    if version is None:
        raise NotFound(f"Version {number} does not exist or is no longer retained.")
    return version


def version_at(*, kb: KnowledgeBase, at: datetime) -> KnowledgeBaseVersion:
    """The version that was current at `at`: the latest one created at or before it. InvalidInput when `at` is in
    the future, before the first version, or older than what the knowledge base retains."""
    if at > timezone.now():
        raise InvalidInput("That time is in the future; choose a time in the past.", field="at")
    versions = KnowledgeBaseVersion.objects.filter(knowledge_base=kb)
    version = versions.filter(created_at__lte=at).order_by("-created_at", "-number").first()
    if version is None:
        oldest = versions.order_by("number").first()
        if oldest is not None and oldest.number > 1:
            raise InvalidInput("That time is older than the oldest version this knowledge base retains.", field="at")
        raise InvalidInput("That time is before the knowledge base's first version.", field="at")
    return version


def version_diff(*, kb: KnowledgeBase, base: int, target: int, limit: int = 50) -> dict[str, Any]:
    """What changed from version `base` to version `target`: chunks added/removed, per document."""
    for number in (base, target):
        if number != 0:
            version_get(kb=kb, number=number)
    in_base = chunks_at(kb=kb, version=base).values("content_hash", "position", "document_id")
    in_target = chunks_at(kb=kb, version=target).values("content_hash", "position", "document_id")

    def key(row: Mapping[str, Any]) -> tuple[int, int, str]:
        return (row["document_id"], row["position"], row["content_hash"])

    base_keys = {key(r) for r in in_base}
    target_keys = {key(r) for r in in_target}
    added, removed = target_keys - base_keys, base_keys - target_keys
    titles = dict(Document.objects.filter(knowledge_base=kb).values_list("id", "title"))
    per_document: dict[int, dict[str, Any]] = {}
    for label, keys in (("added", added), ("removed", removed)):
        for document_id, _, _ in keys:
            entry = per_document.setdefault(
                document_id, {"document_id": document_id, "title": titles.get(document_id), "added": 0, "removed": 0}
            )
            entry[label] += 1

    def sample(keys: set[tuple[int, int, str]], version: int) -> list[dict[str, Any]]:
        rows = []
        for document_id, position, digest in sorted(keys)[:limit]:
            chunk = (
                chunks_at(kb=kb, version=version)
                .filter(document_id=document_id, position=position, content_hash=digest)
                .first()
            )
            if chunk is not None:
                rows.append({"document_id": document_id, "position": position, "text": chunk.text[:300]})
        return rows

    return {
        "base": base,
        "target": target,
        "added": len(added),
        "removed": len(removed),
        "documents": sorted(per_document.values(), key=lambda e: e["document_id"]),
        "added_chunks": sample(added, target),
        "removed_chunks": sample(removed, base),
    }


def parse_version(value: str | int | None) -> int | None:
    if value in (None, ""):
        return None
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise InvalidInput("version must be an integer.", field="version") from exc
