"""Where quotas and metering plug into other apps without editing them (issue 6).

- knowledge: knowledge.usage.register_quota_check -> refuse an upload before its files are stored
  (kb_storage_bytes, documents_per_month); knowledge.usage.usage_changed -> ingestion metrics.
"""

from __future__ import annotations

import logging

from django.db import connection

logger = logging.getLogger(__name__)


def knowledge_upload_quota_check(*, principal_user, documents: int, stored_bytes: int) -> None:
    """Called by knowledge.services.documents_ingest before anything is stored."""
    from core.quotas import quota_check

    tenant = connection.tenant  # the upload runs in the tenant's request/task context
    quota_check(tenant=tenant, quota="kb_storage_bytes", amount=max(0, stored_bytes), user=principal_user)
    if documents > 0:
        quota_check(tenant=tenant, quota="documents_per_month", amount=documents, user=principal_user)


def knowledge_usage_changed(
    sender=None, *, schema: str, documents: int = 0, stored_bytes: int = 0, pages_processed: int = 0, **kwargs
) -> None:
    from core.metrics import metric_inc

    if pages_processed > 0:
        metric_inc("ingest_pages_total", amount=pages_processed, tenant=schema)
        metric_inc("documents_ingested_total", tenant=schema, status="ready")


def install() -> None:
    try:
        from knowledge import usage as knowledge_usage
    except ImportError:  # knowledge not built yet
        return
    if hasattr(knowledge_usage, "register_quota_check"):
        knowledge_usage.register_quota_check(knowledge_upload_quota_check)
    if hasattr(knowledge_usage, "usage_changed"):
        knowledge_usage.usage_changed.connect(
            knowledge_usage_changed, weak=False, dispatch_uid="usage.knowledge_usage_changed"
        )
