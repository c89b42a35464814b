"""Quota hooks for knowledge: what a tenant stores and processes, counted where it changes.

How the usage app hooks in (it sits above knowledge, so it registers here instead of being imported):

    from knowledge import usage

    usage.register_quota_check(fn)      # fn(*, principal_user, documents: int, stored_bytes: int) raises a
                                        # DomainError (e.g. QuotaExceeded) to refuse an upload before it is stored
    usage.usage_changed.connect(fn)     # signal, sent after commit: fn(sender, schema, documents, stored_bytes,
                                        # pages_processed, **kw) with *deltas* (negative on deletion)
    usage.knowledge_usage()             # exact totals for the current tenant (KnowledgeUsage)

Documents and bytes count what is currently stored (deleted documents no longer count);
processed pages only grow (each successful extraction adds its pages).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.db import connection, transaction
from django.db.models import Count, Sum
from django.dispatch import Signal

from .models import Document, DocumentStatus

usage_changed = Signal()
_quota_checks: list[Callable[..., None]] = []


@dataclass(frozen=True)
class KnowledgeUsage:
    documents: int
    stored_bytes: int
    pages_processed: int


def register_quota_check(check: Callable[..., None]) -> None:
    if check not in _quota_checks:
        _quota_checks.append(check)


def unregister_quota_check(check: Callable[..., None]) -> None:
    if check in _quota_checks:
        _quota_checks.remove(check)


def quota_check(*, user, documents: int, stored_bytes: int) -> None:
    """Called before new documents are stored; any registered check may raise to refuse them."""
    for check in list(_quota_checks):
        check(principal_user=user, documents=documents, stored_bytes=stored_bytes)


def usage_record(*, documents: int = 0, stored_bytes: int = 0, pages_processed: int = 0) -> None:
    """Announce a change (deltas) once the surrounding transaction commits."""
    if not (documents or stored_bytes or pages_processed):
        return
    schema = connection.schema_name
    transaction.on_commit(
        lambda: usage_changed.send(
            sender=KnowledgeUsage,
            schema=schema,
            documents=documents,
            stored_bytes=stored_bytes,
            pages_processed=pages_processed,
        )
    )


def knowledge_usage() -> KnowledgeUsage:
    """Exact totals for the current tenant schema."""

    stored = Document.objects.exclude(status=DocumentStatus.DELETED).exclude(storage_path="")
    totals = stored.aggregate(documents=Count("id"), stored_bytes=Sum("size_bytes"))
    pages = Document.objects.aggregate(pages=Sum("page_count"))["pages"] or 0
    return KnowledgeUsage(
        documents=totals["documents"] or 0, stored_bytes=totals["stored_bytes"] or 0, pages_processed=pages
    )
