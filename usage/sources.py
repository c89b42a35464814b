"""What core.quotas enforces and counts, read from the database: each tenant's limits (plan, staff override,
tenant admins' sub-limits) and how much of each quota is in use.

`register()` hands them to the kernel (UsageConfig.ready()). Usage sits above tenants, knowledge and agents in the
layers, so it reads their models here and the kernel never imports an app. Usage sources run inside the tenant's
schema.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import Q, Sum

from agents.models import Agent
from core.quotas import QUOTAS, LimitsProvider, register_limits_provider, register_usage_source
from knowledge.models import Document, DocumentStatus
from knowledge.usage import knowledge_usage
from tenants.models import Plan, Tenant, TenantQuota

from .models import ApiCallDaily, QuotaSubLimit, UsageRecord

# --- Limits ---------------------------------------------------------------------------------------


def tenant_limits_load(tenant: Tenant) -> dict[str, Any]:
    """Effective limits: the staff override's non-empty fields, else the tenant's plan (an empty plan field means
    unlimited), else the default plan, else settings.DEFAULT_PLAN_LIMITS. Rate limits: plan, then override."""
    defaults = dict(settings.DEFAULT_PLAN_LIMITS)
    limits: dict[str, Any] = {name: defaults.get(name) for name in QUOTAS}
    rate_limits: dict[str, str] = {}
    override = TenantQuota.objects.select_related("plan").filter(tenant_id=tenant.pk).first()
    plan = override.plan if override and override.plan_id else Plan.objects.filter(is_default=True).first()
    for source in (plan, override):
        if source is None:
            continue
        for name, spec in QUOTAS.items():
            value = getattr(source, spec.plan_field)
            if value is not None or source is plan:
                limits[name] = value
        rate_limits.update(source.rate_limits or {})
    limits["_rate_limits"] = rate_limits
    limits["_plan"] = plan.slug if plan else None
    return limits


def sub_limits_load() -> dict[tuple[str, Any, Any], Any]:
    """{(quota, user_id, api_key_id): limit} of the current tenant schema."""
    rows = QuotaSubLimit.objects.values_list("quota", "user_id", "api_key_id", "limit")
    return {(quota, user_id, api_key_id): limit for quota, user_id, api_key_id, limit in rows}


def tenant_for_schema(schema: str) -> Tenant:
    return Tenant.objects.get(schema_name=schema)


# --- Usage ----------------------------------------------------------------------------------------


def active_agents(*, since: datetime | None, user_id: Any = None, api_key_id: Any = None) -> int:
    qs = Agent.objects.filter(is_enabled=True)
    if user_id is not None:
        qs = qs.filter(owner_id=user_id)
    return qs.count()


def kb_storage_bytes(*, since: datetime | None, user_id: Any = None, api_key_id: Any = None) -> int:
    if user_id is None:
        return int(knowledge_usage().stored_bytes)  # what knowledge itself counts as stored
    qs = Document.objects.exclude(status=DocumentStatus.DELETED).filter(uploaded_by_id=user_id)
    return int(qs.aggregate(total=Sum("size_bytes"))["total"] or 0)


def documents_per_month(*, since: datetime | None, user_id: Any = None, api_key_id: Any = None) -> int:
    if api_key_id is not None:
        return 0  # documents do not record the key; the Redis counter is the record for keys
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
    qs = ApiCallDaily.objects.filter(_usage_filter(user_id, api_key_id), day__gte=since.date())
    return int(qs.aggregate(total=Sum("count"))["total"] or 0)


def llm_tokens_per_month(*, since: datetime | None, user_id: Any = None, api_key_id: Any = None) -> int:
    agg = UsageRecord.objects.filter(_usage_filter(user_id, api_key_id), created_at__gte=since).aggregate(
        i=Sum("tokens_in"), o=Sum("tokens_out")
    )
    return int((agg["i"] or 0) + (agg["o"] or 0))


def llm_cost_per_month(*, since: datetime | None, user_id: Any = None, api_key_id: Any = None) -> Decimal:
    agg = UsageRecord.objects.filter(_usage_filter(user_id, api_key_id), created_at__gte=since).aggregate(c=Sum("cost"))
    return agg["c"] or Decimal(0)


USAGE_SOURCES = {
    "active_agents": active_agents,
    "kb_storage_bytes": kb_storage_bytes,
    "documents_per_month": documents_per_month,
    "api_calls_per_month": api_calls_per_month,
    "llm_tokens_per_month": llm_tokens_per_month,
    "llm_cost_per_month": llm_cost_per_month,
}


def register() -> None:
    """Give core.quotas its limits and usage figures (called once, from UsageConfig.ready())."""
    register_limits_provider(
        LimitsProvider(
            tenant_limits=tenant_limits_load, sub_limits=sub_limits_load, tenant_for_schema=tenant_for_schema
        )
    )
    for quota, source in USAGE_SOURCES.items():
        register_usage_source(quota, source)
