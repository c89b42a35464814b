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


# Admin and configuration changes the other apps announce on the bus; each becomes an audit entry.
# (Quota and webhook changes are audited by their own services, with before/after.)
AUDITED_EVENT_PREFIXES = ("member.", "api_key.", "team.", "resource.", "agent.", "knowledge_base.")
NOT_AUDITED = ("knowledge_base.version",)  # content changes (documents), not configuration


def audit_from_event(*, schema: str, event: dict) -> None:
    """Called by core.events.publish for every event: record admin/config changes in the tenant's audit log."""
    kind = event.get("type", "")
    if not kind.startswith(AUDITED_EVENT_PREFIXES) or kind in NOT_AUDITED:
        return
    from django_tenants.utils import schema_context

    from accounts.models import User
    from core.context import current_request_id

    from .models import AuditEntry

    request_id = (event.get("request_id") or current_request_id.get())[:64]
    data = event.get("data") or {}
    actor = event.get("actor") or {}
    prefix = kind.split(".", 1)[0]
    target_id = data.get(f"{prefix}_id", data.get("kb_id", data.get("resource_id", "")))
    email = ""
    if actor.get("user_id"):
        email = User.objects.filter(pk=actor["user_id"]).values_list("email", flat=True).first() or ""
    with schema_context(schema):
        AuditEntry.objects.create(
            actor_id=actor.get("user_id"),
            actor_email=email,
            api_key_id=actor.get("api_key_id"),
            action=kind[:80],
            target_type=prefix[:60],
            target_id=str(target_id or "")[:64],
            after=data,
            request_id=request_id if request_id != "-" else "",
        )


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
