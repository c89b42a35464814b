"""Reads for knowledge bases, documents, chunks and versions. Authorization through iam.policy only."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from core.errors import InvalidInput, NotFound
from iam.policy import Principal, resource_get_for_principal, resource_queryset_for

from .models import Chunk, Document, DocumentStatus, KnowledgeBase, KnowledgeBaseVersion


def knowledge_base_list(*, principal: Principal) -> QuerySet[KnowledgeBase]:
    return resource_queryset_for(principal, KnowledgeBase.objects.all())


def knowledge_base_get(*, principal: Principal, kb_id, action: str = "view") -> KnowledgeBase:
    """The knowledge base, or NotFound (invisible) / Forbidden (visible, action not allowed)."""
    return resource_get_for_principal(principal, KnowledgeBase.objects.all(), kb_id, action)


def document_list(*, kb: KnowledgeBase, status: str | None = None, include_deleted: bool = False):
    qs = Document.objects.filter(knowledge_base=kb)
    if status:
        qs = qs.filter(status=status)
    elif not include_deleted:
        qs = qs.exclude(status=DocumentStatus.DELETED)
    return qs.order_by("-created_at", "-id")


def document_get(*, kb: KnowledgeBase, document_id) -> Document:
    document = Document.objects.filter(knowledge_base=kb, pk=document_id).first()
    if document is None:
        raise NotFound("Not found.")
    return document


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


def version_diff(*, kb: KnowledgeBase, base: int, target: int, limit: int = 50) -> dict:
    """What changed from version `base` to version `target`: chunks added/removed, per document."""
    for number in (base, target):
        if number != 0:
            version_get(kb=kb, number=number)
    in_base = chunks_at(kb=kb, version=base).values("content_hash", "position", "document_id")
    in_target = chunks_at(kb=kb, version=target).values("content_hash", "position", "document_id")
    key = lambda row: (row["document_id"], row["position"], row["content_hash"])  # noqa: E731
    base_keys = {key(r) for r in in_base}
    target_keys = {key(r) for r in in_target}
    added, removed = target_keys - base_keys, base_keys - target_keys
    titles = dict(Document.objects.filter(knowledge_base=kb).values_list("id", "title"))
    per_document: dict[int, dict] = {}
    for label, keys in (("added", added), ("removed", removed)):
        for document_id, _, _ in keys:
            entry = per_document.setdefault(
                document_id, {"document_id": document_id, "title": titles.get(document_id), "added": 0, "removed": 0}
            )
            entry[label] += 1

    def sample(keys, version):
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


def parse_version(value) -> int | None:
    if value in (None, ""):
        return None
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise InvalidInput("version must be an integer.", field="version") from exc
