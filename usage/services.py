"""Writes for usage metering, quota sub-limits and the audit log (issue 6).

Other apps call:
    usage_record_run(tenant=..., run_id=..., agent_id=..., user=..., api_key=..., model=..., provider=...,
                     tokens_in=..., tokens_out=..., latency_ms=...)        # after each chat run
    audit_record(principal=..., action="agent.update", target=agent, before={...}, after={...})
"""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.forms.models import model_to_dict
from django_tenants.utils import schema_context

from core.context import current_request_id
from core.errors import InvalidInput, NotFound
from core.quotas import (
    QUOTAS,
    SUB_LIMIT_QUOTAS,
    quota_consume,
    quota_counters_warm,
    redis_client,
    tenant_limits,
    tenant_resolve,
    validate_limit,
)

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
    tenant,
    run_id: Any = "",
    agent_id: int | None = None,
    user=None,
    api_key=None,
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
    tenant = tenant_resolve(tenant)  # workers may pass the schema name
    cost = cost_estimate(model=model, tokens_in=tokens_in, tokens_out=tokens_out)
    for quota in ("llm_tokens_per_month", "llm_cost_per_month"):
        quota_counters_warm(tenant=tenant, quota=quota, user=user, api_key=api_key)
    with schema_context(tenant.schema_name):
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
    quota_consume(
        tenant=tenant, quota="llm_tokens_per_month", amount=tokens_in + tokens_out, user=user, api_key=api_key
    )
    quota_consume(tenant=tenant, quota="llm_cost_per_month", amount=cost, user=user, api_key=api_key)
    try:
        from core.metrics import metric_inc, metric_observe

        metric_inc("chat_runs_total", tenant=tenant.schema_name, status=status)
        metric_inc("llm_tokens_total", amount=tokens_in, tenant=tenant.schema_name, direction="in")
        metric_inc("llm_tokens_total", amount=tokens_out, tenant=tenant.schema_name, direction="out")
        if latency_ms is not None:
            metric_observe("chat_run_latency_seconds", latency_ms / 1000)
    except Exception:  # noqa: BLE001 - metrics never fail a run
        logger.debug("metrics not recorded", exc_info=True)
    return record


def _api_calls_key(schema: str, day: dt.date) -> str:
    return f"usage:{schema}:apicalls:{day.isoformat()}"


def api_call_record(*, tenant, user=None, api_key=None) -> None:
    """Count one API call (Redis hash per day; flushed into ApiCallDaily by usage_flush_api_calls)."""
    day = dt.datetime.now(dt.UTC).date()
    field = f"{getattr(user, 'pk', user) or ''}:{getattr(api_key, 'pk', api_key) or ''}"
    pipe = redis_client().pipeline()
    pipe.hincrby(_api_calls_key(tenant.schema_name, day), field, 1)
    pipe.expire(_api_calls_key(tenant.schema_name, day), 8 * 86400)
    pipe.sadd("usage:apicalls:schemas", tenant.schema_name)
    pipe.execute()


# Read and delete in one step, so a call counted while we flush is not lost.
_TAKE_LUA = "local v = redis.call('HGETALL', KEYS[1]); redis.call('DEL', KEYS[1]); return v"


def usage_flush_api_calls(*, schema: str | None = None, days: int = 2) -> int:
    """Move Redis API-call counters of the current schema into ApiCallDaily (upsert). Returns calls moved."""
    schema = schema or connection.schema_name
    r = redis_client()
    moved = 0
    today = dt.datetime.now(dt.UTC).date()
    for offset in range(days):
        day = today - dt.timedelta(days=offset)
        flat = r.eval(_TAKE_LUA, 1, _api_calls_key(schema, day))
        pairs = dict(zip(flat[::2], flat[1::2], strict=True))
        for field, count in pairs.items():
            user_part, _, key_part = field.decode().partition(":")
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


def _require_admin(principal) -> None:
    from iam.policy import principal_require_scope

    if not principal.is_admin:
        from core.errors import Forbidden

        raise Forbidden("Only organisation admins may change limits.")
    principal_require_scope(principal, "admin")


def sublimit_set(
    *, principal, quota: str, limit: Any, user_id: int | None = None, api_key_id: int | None = None
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
        from accounts.models import User
        from iam.policy import membership_for

        user = User.objects.filter(pk=user_id).first()
        if user is None or membership_for(user, principal.tenant) is None:
            raise NotFound("No such member.")
    else:
        from iam.models import ApiKey

        if not ApiKey.objects.filter(pk=api_key_id).exists():
            raise NotFound("No such API key.")
    with transaction.atomic():
        existing = (
            QuotaSubLimit.objects.select_for_update()
            .filter(quota=quota, user_id=user_id, api_key_id=api_key_id)
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


def sublimit_delete(*, principal, sublimit: QuotaSubLimit) -> None:
    _require_admin(principal)
    with transaction.atomic():
        before = _sublimit_dict(sublimit)
        audit_record(principal=principal, action="quota.sublimit.delete", target=sublimit, before=before, after=None)
        sublimit.delete()


def _sublimit_dict(row: QuotaSubLimit) -> dict:
    return {
        "quota": row.quota,
        "user_id": row.user_id,
        "api_key_id": row.api_key_id,
        "limit": str(Decimal(row.limit).quantize(Decimal("0.0001"))),
    }


# --- Audit ----------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    return str(value)


def audit_snapshot(obj: Any, *, exclude: tuple[str, ...] = ("password", "secret", "key_hash")) -> dict:
    """A JSON-able before/after picture of a model instance (secrets left out)."""
    data = model_to_dict(obj)
    return {k: _jsonable(v) for k, v in data.items() if not any(word in k for word in exclude)}


def audit_record(
    *,
    action: str,
    principal=None,
    actor=None,
    target: Any = None,
    target_type: str = "",
    target_id: Any = "",
    before: Any = None,
    after: Any = None,
    request=None,
) -> AuditEntry:
    """Append one audit entry in the current tenant schema (call inside the change's transaction)."""
    if getattr(connection, "schema_name", "public") == "public":
        raise RuntimeError("audit entries are per tenant: record inside a tenant context")
    actor = actor if actor is not None else getattr(principal, "user", None)
    api_key = getattr(principal, "api_key", None)
    api_key_id = getattr(api_key, "pk", None)
    if principal is None and actor is None:  # a service called without a principal: the request's caller
        from accounts.models import User
        from core.observability import current_actor

        who = current_actor.get() or {}
        actor = User.objects.filter(pk=who["user_id"]).first() if who.get("user_id") else None
        api_key_id = who.get("api_key_id")
    if target is not None:
        target_type = target_type or target._meta.label_lower
        target_id = target_id or target.pk
    ip = None
    if request is not None:
        ip = request.META.get("REMOTE_ADDR") or None
    return AuditEntry.objects.create(
        actor_id=getattr(actor, "pk", None),
        actor_email=getattr(actor, "email", "")[:254] if actor is not None else "",
        api_key_id=api_key_id,
        action=action[:80],
        target_type=target_type[:60],
        target_id=str(target_id or "")[:64],
        target_repr=str(target)[:200] if target is not None else "",
        before=_jsonable(before),
        after=_jsonable(after),
        request_id=(current_request_id.get() or "")[:64] if current_request_id.get() != "-" else "",
        ip=ip,
    )
