"""Writes for usage metering, quota sub-limits and the audit log.

Metering is connected in UsageConfig.ready() (usage.hooks): usage_record_run on agents' run_finished signal,
api_call_record as core.ratelimit's API-call recorder.
Audit entries are recorded through core.audit (audit_record); audit_entry_store is where they are kept.
"""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Model
from redis.client import Pipeline

from core.audit import AuditRecord, audit_record
from core.errors import InvalidInput, NotFound
from core.metrics import metric_inc, metric_observe
from core.quotas import (
    QUOTAS,
    SUB_LIMIT_QUOTAS,
    quota_consume,
    quota_counters_warm,
    tenant_limits,
    tenant_resolve,
    validate_limit,
)
from core.redis_clients import redis_client, redis_write_later, reply_text
from core.tenancy import TenantRecord, current_schema, in_tenant, tenant_key
from iam.policy import Principal, principal_require_scope
from iam.selectors import api_key_list, member_list

from .models import ApiCallDaily, AuditEntry, QuotaSubLimit, UsageRecord

logger = logging.getLogger(__name__)
MILLION = Decimal(1_000_000)


# --- Cost -----------------------------------------------------------------------------------------


def model_price(model: str) -> tuple[Decimal, Decimal]:
    """USD per 1M tokens (input, output). Exact name, else the longest known prefix, else the default."""
    prices: dict[str, list[float]] = getattr(settings, "LLM_PRICES", {})
    name = (model or "").lower()
    price = prices.get(name)
    if price is None:
        matches = [key for key in prices if name.startswith(key.lower())]
        price = prices[max(matches, key=len)] if matches else getattr(settings, "LLM_DEFAULT_PRICE", [0, 0])
    return Decimal(str(price[0])), Decimal(str(price[1]))


def cost_estimate(*, model: str, tokens_in: int, tokens_out: int) -> Decimal:
    price_in, price_out = model_price(model)
    return ((price_in * tokens_in + price_out * tokens_out) / MILLION).quantize(Decimal("0.000001"))


# --- Metering -------------------------------------------------------------------------------------


def usage_record_run(
    *,
    tenant: TenantRecord | str,  # workers may pass the schema name
    run_id: object = "",
    agent_id: int | None = None,
    user: Model | int | None = None,  # the user, or their id
    api_key: Model | int | None = None,  # the iam.ApiKey, or its id
    provider: str = "",
    model: str = "",
    tokens_in: int = 0,
    tokens_out: int = 0,
    latency_ms: int | None = None,
    status: str = "ok",
) -> UsageRecord:
    """Record one chat run (tokens, model, latency, estimated cost) and count it against the month's quotas."""
    if tokens_in < 0 or tokens_out < 0:
        raise InvalidInput("Token counts cannot be negative.")
    org: TenantRecord = tenant_resolve(tenant)
    cost = cost_estimate(model=model, tokens_in=tokens_in, tokens_out=tokens_out)
    for quota in ("llm_tokens_per_month", "llm_cost_per_month"):
        quota_counters_warm(tenant=org, quota=quota, user=user, api_key=api_key)
    with in_tenant(org.schema_name):
        record = UsageRecord.objects.create(
            run_id=str(run_id or ""),
            agent_id=agent_id,
            user_id=getattr(user, "pk", user),
            api_key_id=getattr(api_key, "pk", api_key),
            provider=provider[:60],
            model=model[:200],
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            latency_ms=latency_ms,
            cost=cost,
            status=status[:20],
        )
    quota_consume(tenant=org, quota="llm_tokens_per_month", amount=tokens_in + tokens_out, user=user, api_key=api_key)
    quota_consume(tenant=org, quota="llm_cost_per_month", amount=cost, user=user, api_key=api_key)
    try:
        metric_inc("chat_runs_total", tenant=org.schema_name, status=status)
        metric_inc("llm_tokens_total", amount=tokens_in, tenant=org.schema_name, direction="in")
        metric_inc("llm_tokens_total", amount=tokens_out, tenant=org.schema_name, direction="out")
        if latency_ms is not None:
            metric_observe("chat_run_latency_seconds", latency_ms / 1000)
    except Exception:  # noqa: BLE001 - metrics never fail a run
        logger.debug("metrics not recorded", exc_info=True)
    return record


def _api_calls_key(schema: str, day: dt.date) -> str:
    return tenant_key("usage", "apicalls", day.isoformat(), schema=schema)


def api_call_record(
    *, tenant: TenantRecord, user: Model | int | None = None, api_key: Model | int | None = None
) -> None:
    """Count one API call (Redis hash per day; flushed into ApiCallDaily by usage_flush_api_calls)."""
    day = dt.datetime.now(dt.UTC).date()
    field = f"{getattr(user, 'pk', user) or ''}:{getattr(api_key, 'pk', api_key) or ''}"
    key, schema = _api_calls_key(tenant.schema_name, day), tenant.schema_name

    def queue(pipe: Pipeline) -> None:
        pipe.hincrby(key, field, 1)
        pipe.expire(key, 8 * 86400)
        pipe.sadd("usage:apicalls:schemas", schema)

    redis_write_later(queue)  # with the request's other counters (core.redis_clients)


# Read and delete in one step, so a call counted while we flush is not lost.
_TAKE_LUA = "local v = redis.call('HGETALL', KEYS[1]); redis.call('DEL', KEYS[1]); return v"


def usage_flush_api_calls(*, schema: str | None = None, days: int = 2) -> int:
    """Move Redis API-call counters of the current schema into ApiCallDaily (upsert). Returns calls moved."""
    schema = schema or current_schema()
    r = redis_client()
    moved = 0
    today = dt.datetime.now(dt.UTC).date()
    for offset in range(days):
        day = today - dt.timedelta(days=offset)
        flat = r.eval(_TAKE_LUA, 1, _api_calls_key(schema, day))
        pairs = dict(zip(flat[::2], flat[1::2], strict=True))
        for field, count in pairs.items():
            user_part, _, key_part = reply_text(field).partition(":")
            user_id = int(user_part) if user_part else None
            api_key_id = int(key_part) if key_part else None
            count = int(count)
            with transaction.atomic():
                row, created = ApiCallDaily.objects.get_or_create(
                    day=day, user_id=user_id, api_key_id=api_key_id, defaults={"count": count}
                )
                if not created:
                    ApiCallDaily.objects.filter(pk=row.pk).update(count=F("count") + count)
            moved += count
    return moved


# --- Sub-limits -----------------------------------------------------------------------------------


def _require_admin(principal: Principal) -> None:
    principal_require_scope(principal, "admin")  # an admin, and for API keys the admin scope


def sublimit_set(
    *, principal: Principal, quota: str, limit: Any, user_id: int | None = None, api_key_id: int | None = None
) -> QuotaSubLimit:
    """Create or change a per-user or per-API-key limit. It must fit inside the tenant's own limit."""
    _require_admin(principal)
    if quota not in SUB_LIMIT_QUOTAS:
        raise InvalidInput(f"'{quota}' cannot have per-user or per-key limits.", field="quota")
    if (user_id is None) == (api_key_id is None):
        raise InvalidInput("Give exactly one of user_id or api_key_id.", field="user_id")
    value = validate_limit(quota, limit)
    if value is None:
        raise InvalidInput("A sub-limit needs a number; delete it to remove the limit.", field="limit")
    tenant_limit = tenant_limits(principal.tenant)[quota]
    if tenant_limit is not None and value > Decimal(str(tenant_limit)):
        raise InvalidInput(
            f"The limit cannot exceed your plan's {quota} limit ({tenant_limit} {QUOTAS[quota].unit}).",
            field="limit",
        )
    if user_id is not None:
        if not member_list(principal.tenant).filter(user_id=user_id, user__is_active=True).exists():
            raise NotFound("No such member.")
    elif api_key_id is None or not api_key_list(principal=principal).filter(pk=api_key_id).exists():
        raise NotFound("No such API key.")
    with transaction.atomic():
        existing = (
            QuotaSubLimit.objects.select_for_update()
            # user=None is IS NULL (the stubs refuse None for user_id)
            .filter(quota=quota, user=user_id, api_key_id=api_key_id)
            .first()
        )
        before = _sublimit_dict(existing) if existing else None
        if existing is None:
            existing = QuotaSubLimit(quota=quota, user_id=user_id, api_key_id=api_key_id, created_by=principal.user)
        existing.limit = value
        existing.save()
        audit_record(
            principal=principal,
            action="quota.sublimit.set",
            target=existing,
            before=before,
            after=_sublimit_dict(existing),
        )
    return existing


def sublimit_delete(*, principal: Principal, sublimit: QuotaSubLimit) -> None:
    _require_admin(principal)
    with transaction.atomic():
        before = _sublimit_dict(sublimit)
        audit_record(principal=principal, action="quota.sublimit.delete", target=sublimit, before=before, after=None)
        sublimit.delete()


def _sublimit_dict(row: QuotaSubLimit) -> dict[str, Any]:
    return {
        "quota": row.quota,
        "user_id": row.user_id,
        "api_key_id": row.api_key_id,
        "limit": str(Decimal(row.limit).quantize(Decimal("0.0001"))),
    }


# --- Audit ----------------------------------------------------------------------------------------


def audit_entry_store(record: AuditRecord) -> AuditEntry:
    """core.audit's sink (registered in UsageConfig.ready()): one immutable entry in the current tenant schema."""
    if getattr(connection, "schema_name", "public") == "public":
        raise RuntimeError("audit entries are per tenant: record inside a tenant context")
    actor = record.actor
    name = ""
    if actor is not None and actor.user_id is None:
        name = f"{actor.name} ({actor.os_user})" if actor.os_user else actor.name
    return AuditEntry.objects.create(
        actor_id=actor.user_id if actor is not None else None,
        actor_email=actor.email[:254] if actor is not None else "",
        actor_name=name[:200],
        api_key_id=actor.api_key_id if actor is not None else None,
        action=record.action[:80],
        target_type=record.target_type[:60],
        target_id=record.target_id[:64],
        target_repr=record.target_repr[:200],
        before=record.before,
        after=record.after,
        request_id=record.request_id[:64],
        ip=actor.ip if actor is not None else None,
    )
