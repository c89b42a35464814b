"""Where quotas and metering plug into the apps below usage, connected in UsageConfig.ready() (`install`).

- knowledge: knowledge.usage.register_quota_check -> refuse an upload before its files are stored
  (kb_storage_bytes, documents_per_month); knowledge.usage.usage_changed -> ingestion metrics.
- agents: agents.signals.run_finished -> meter the run (usage_record_run: tokens, cost, the month's quotas).
- core.ratelimit: register_api_call_recorder -> count each API-key call (api_call_record).
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import connection

from agents.signals import run_finished
from core.metrics import metric_inc
from core.quotas import quota_check
from core.ratelimit import register_api_call_recorder
from knowledge import usage as knowledge_usage

from .services import api_call_record, usage_record_run

logger = logging.getLogger(__name__)


def knowledge_upload_quota_check(*, principal_user, documents: int, stored_bytes: int) -> None:
    """Called by knowledge.services.documents_ingest before anything is stored."""
    tenant = connection.tenant  # the upload runs in the tenant's request/task context
    quota_check(tenant=tenant, quota="kb_storage_bytes", amount=max(0, stored_bytes), user=principal_user)
    if documents > 0:
        quota_check(tenant=tenant, quota="documents_per_month", amount=documents, user=principal_user)


def knowledge_usage_changed(
    sender=None, *, schema: str, documents: int = 0, stored_bytes: int = 0, pages_processed: int = 0, **kwargs
) -> None:
    if pages_processed > 0:
        metric_inc("ingest_pages_total", amount=pages_processed, tenant=schema)
        metric_inc("documents_ingested_total", tenant=schema, status="ready")


def agent_run_finished(
    sender=None,
    *,
    schema: str,
    run_id: str,
    agent_id: int,
    user_id: int | None,
    api_key_id: int | None,
    provider: str,
    model: str,
    tokens_in: int,
    tokens_out: int,
    latency_ms: int,
    status: str,
    **kwargs: Any,
) -> None:
    """Meter a finished chat run (runs on the worker's DB thread, in the run's schema, outside a transaction)."""
    usage_record_run(
        tenant=schema,
        run_id=run_id,
        agent_id=agent_id,
        user=user_id,
        api_key=api_key_id,
        provider=provider,
        model=model,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        latency_ms=latency_ms,
        status=status,
    )


def install() -> None:
    knowledge_usage.register_quota_check(knowledge_upload_quota_check)
    knowledge_usage.usage_changed.connect(
        knowledge_usage_changed, weak=False, dispatch_uid="usage.knowledge_usage_changed"
    )
    run_finished.connect(agent_run_finished, weak=False, dispatch_uid="usage.agent_run_finished")
    register_api_call_recorder(api_call_record)
