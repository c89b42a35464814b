"""Default usage sources for core.quotas: how much of a quota is in use, counted from the database.

Each runs inside the tenant's schema. Apps that own the data may register better ones with
core.quotas.register_usage_source (knowledge.usage / agents.usage are used when they provide them).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db.models import Q, Sum

from core.quotas import register_usage_source


def _optional(module: str, name: str):
    try:
        mod = __import__(module, fromlist=[name])
    except ImportError:
        return None
    return getattr(mod, name, None)


def active_agents(*, since: datetime | None, user_id: Any = None, api_key_id: Any = None) -> int:
    from agents.models import Agent

    qs = Agent.objects.all()
    if hasattr(Agent, "is_enabled"):
        qs = qs.filter(is_enabled=True)
    if user_id is not None:
        qs = qs.filter(owner_id=user_id)
    return qs.count()


def kb_storage_bytes(*, since: datetime | None, user_id: Any = None, api_key_id: Any = None) -> int:
    hook = _optional("knowledge.usage", "knowledge_usage")
    if hook is not None and user_id is None:
        return int(hook().stored_bytes)
    from knowledge.models import Document, DocumentStatus

    qs = Document.objects.exclude(status=DocumentStatus.DELETED)
    if user_id is not None:
        qs = qs.filter(uploaded_by_id=user_id)
    return int(qs.aggregate(total=Sum("size_bytes"))["total"] or 0)


def documents_per_month(*, since: datetime | None, user_id: Any = None, api_key_id: Any = None) -> int:
    if api_key_id is not None:
        return 0  # documents do not record the key; the Redis counter is the record for keys
    from knowledge.models import Document

    qs = Document.objects.filter(created_at__gte=since)
    if user_id is not None:
        qs = qs.filter(uploaded_by_id=user_id)
    return qs.count()


def _usage_filter(user_id: Any, api_key_id: Any) -> Q:
    q = Q()
    if user_id is not None:
        q &= Q(user_id=user_id)
    if api_key_id is not None:
        q &= Q(api_key_id=api_key_id)
    return q


def api_calls_per_month(*, since: datetime | None, user_id: Any = None, api_key_id: Any = None) -> int:
    from .models import ApiCallDaily

    qs = ApiCallDaily.objects.filter(_usage_filter(user_id, api_key_id), day__gte=since.date())
    return int(qs.aggregate(total=Sum("count"))["total"] or 0)


def llm_tokens_per_month(*, since: datetime | None, user_id: Any = None, api_key_id: Any = None) -> int:
    from .models import UsageRecord

    agg = UsageRecord.objects.filter(_usage_filter(user_id, api_key_id), created_at__gte=since).aggregate(
        i=Sum("tokens_in"), o=Sum("tokens_out")
    )
    return int((agg["i"] or 0) + (agg["o"] or 0))


def llm_cost_per_month(*, since: datetime | None, user_id: Any = None, api_key_id: Any = None) -> Decimal:
    from .models import UsageRecord

    agg = UsageRecord.objects.filter(_usage_filter(user_id, api_key_id), created_at__gte=since).aggregate(c=Sum("cost"))
    return agg["c"] or Decimal(0)


for _name, _fn in {
    "active_agents": active_agents,
    "kb_storage_bytes": kb_storage_bytes,
    "documents_per_month": documents_per_month,
    "api_calls_per_month": api_calls_per_month,
    "llm_tokens_per_month": llm_tokens_per_month,
    "llm_cost_per_month": llm_cost_per_month,
}.items():
    register_usage_source(_name, _fn, replace=False)  # an owning app's own source wins
