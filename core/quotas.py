"""Quotas and run admission: the ONE place where plan limits, tenant-admin sub-limits and concurrent runs are
enforced. The kernel imports no app: limits and usage figures come from providers the usage app registers in
UsageConfig.ready() (`register_limits_provider`, `register_usage_source`).

Call it where the resource is created or consumed, BEFORE the expensive work:

    from core.quotas import quota_check, quota_consume, chat_run_admit, chat_run_release

    # upload: refuse before the file is stored (reserves 1 document of this month's allowance)
    quota_check(tenant=request.tenant, quota="documents_per_month", amount=1, user=user, api_key=key)
    quota_check(tenant=request.tenant, quota="kb_storage_bytes", amount=upload.size, user=user)

    # agent create (gauge: current use is counted from the database)
    quota_check(principal=principal, quota="active_agents")

    # chat: refuse before the provider is called, then hold a run slot for the run's duration
    quota_check(principal=principal, quota="llm_tokens_per_month", amount=0)   # 0 = "is any left?"
    quota_check(principal=principal, quota="llm_cost_per_month", amount=0)
    slot = chat_run_admit(principal=principal, run_id=run.pk, agent_id=agent.pk, agent_limit=5, join_only=True)
    ... the worker runs it, then chat_run_release(schema=..., run_id=run.pk) from any process ...
    # afterwards the agents' run_finished signal meters tokens/cost (usage calls quota_consume)

Kinds of quota (QUOTAS below):
- monthly counters (documents_per_month, api_calls_per_month, llm_tokens_per_month, llm_cost_per_month):
  `amount > 0` atomically checks AND reserves the amount in Redis (tenant, user and key counters at once);
  `amount == 0` only checks that something is left. Counters are seeded from the database on a cold
  cache, so a Redis flush does not reset anyone's month. `quota_release` gives back a reservation
  when the work is abandoned.
- gauges (active_agents, kb_storage_bytes): the current use is counted from the database by a
  registered usage source (`register_usage_source`), or passed as `current=`; `amount` is what the
  caller is about to add. Nothing is reserved.
- concurrent_runs: the one ledger of running chat runs (sorted sets of leases in Redis, `runs:*`), held by
  `chat_run_admit` and freed by `chat_run_release`: per tenant (plan), user and API key (sub-limits), per agent
  (the agent's own limit), and the shared pool with its bounded FIFO wait queue. A lease outlives the run's time
  limit, so a run whose worker crashed frees its slot by itself.

Errors (one code per refusal, whatever the surface: REST, SSE, WebSocket): `QuotaExceeded` "quota_exceeded"
(HTTP 402 for the tenant's plan, 403 for a sub-limit set by a tenant admin; body names quota, limit, used,
requested, scope and resets_at); `ConcurrencyLimited` "concurrency_limited" (429 + Retry-After: too many runs at
once for this tenant, user, key or agent); `Overloaded` "overloaded" (503 + Retry-After: the shared chat pool and
its wait queue are full); rate limits are core.ratelimit's `RateLimited` "rate_limited".
Limits: NULL/None = unlimited. Warnings: crossing 80% / 100% of a tenant limit publishes one
`quota.warning` event per quota, level and period.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol, overload

import redis
from django.conf import settings
from django.db import connection
from django.db.models import Model

from .epochs import EpochCache, epoch_bump, epoch_get
from .errors import DomainError, ErrorCode, InvalidInput
from .events import QUOTA_WARNING, event_subject, publish
from .metrics import _field, metric_inc
from .redis_clients import async_redis_client, keys_delete_prefixed, redis_client
from .tenancy import TenantRecord, in_tenant

logger = logging.getLogger(__name__)

# Whom a quota call counts against: a user or an API key (the model instance or its id), or nobody.
Subject = Model | int | None


class _PrincipalLike(Protocol):
    """iam.policy.Principal, as the kernel sees it."""

    @property
    def tenant(self) -> TenantRecord: ...
    @property
    def user(self) -> Model: ...
    @property
    def api_key(self) -> Model | None: ...


MONTHLY = "monthly"
GAUGE = "gauge"
CONCURRENT = "concurrent"
COST_SCALE = 1_000_000  # cost counters are kept in micro-USD integers in Redis


@dataclass(frozen=True)
class QuotaSpec:
    name: str
    kind: str
    plan_field: str  # field on tenants.Plan / tenants.TenantQuota
    unit: str
    max_value: int
    decimal: bool = False


QUOTAS: dict[str, QuotaSpec] = {
    spec.name: spec
    for spec in (
        QuotaSpec("active_agents", GAUGE, "max_active_agents", "agents", 100_000),
        QuotaSpec("kb_storage_bytes", GAUGE, "max_kb_storage_bytes", "bytes", 10 * 1024**5),
        QuotaSpec("documents_per_month", MONTHLY, "max_documents_per_month", "documents", 100_000_000),
        QuotaSpec("api_calls_per_month", MONTHLY, "max_api_calls_per_month", "requests", 10_000_000_000),
        QuotaSpec("llm_tokens_per_month", MONTHLY, "max_llm_tokens_per_month", "tokens", 1_000_000_000_000),
        QuotaSpec("llm_cost_per_month", MONTHLY, "max_llm_cost_per_month", "USD", 100_000_000, decimal=True),
        QuotaSpec("concurrent_runs", CONCURRENT, "max_concurrent_runs", "runs", 10_000),
    )
}
# Sub-limits (per user / per API key) make sense for these; gauges need a per-user usage source.
SUB_LIMIT_QUOTAS = (
    "documents_per_month",
    "api_calls_per_month",
    "llm_tokens_per_month",
    "llm_cost_per_month",
    "concurrent_runs",
    "kb_storage_bytes",
    "active_agents",
)


# --- Errors -------------------------------------------------------------------------------------


class QuotaExceeded(DomainError):
    """A plan limit (402) or a tenant admin's sub-limit (403) would be exceeded."""

    code = ErrorCode.QUOTA_EXCEEDED
    status = 402

    def __init__(
        self,
        *,
        quota: str,
        limit: Any,
        used: Any,
        requested: Any,
        scope: str,
        resets_at: str | None,
    ):
        spec = QUOTAS[quota]
        who = {"tenant": "your organisation's plan", "user": "your user limit", "api_key": "this API key's limit"}
        message = f"Quota '{quota}' exceeded: {used} of {limit} {spec.unit} used under {who.get(scope, scope)}" + (
            f"; it resets at {resets_at}." if resets_at else "."
        )
        super().__init__(
            message,
            extra={
                "quota": quota,
                "limit": _jsonable(limit),
                "used": _jsonable(used),
                "requested": _jsonable(requested),
                "scope": scope,
                "resets_at": resets_at,
            },
        )
        # Plan limits are a billing matter (402); a sub-limit is a tenant admin's policy (403).
        self.status = 402 if scope == "tenant" else 403
        self.quota = quota


class ConcurrencyLimited(DomainError):
    """Too many runs at once for this tenant, user, API key or agent: try again shortly (every surface)."""

    code = ErrorCode.CONCURRENCY_LIMITED
    status = 429

    def __init__(self, message: str, *, retry_after: int, extra: dict[str, Any] | None = None):
        super().__init__(message, extra={"retry_after": retry_after, **(extra or {})})
        self.headers = {"Retry-After": str(retry_after)}


class Overloaded(DomainError):
    """The shared chat pool and its bounded wait queue are full."""

    code = ErrorCode.OVERLOADED
    status = 503

    def __init__(self, message: str, *, retry_after: int):
        super().__init__(message, extra={"retry_after": retry_after})
        self.headers = {"Retry-After": str(retry_after)}


def _jsonable(value: Any) -> Any:
    return str(value) if isinstance(value, Decimal) else value


# --- Redis --------------------------------------------------------------------------------------


# Check every counter, then increment all of them: tenant, user and key reservations are atomic.
# KEYS: counters. ARGV: amount, ttl, limit_1..limit_n (-1 = unlimited). Returns {index_refused, used}.
# {-1, i} = counter i is cold (missing): the caller seeds it from the database and calls again. Checking here
# instead of an EXISTS per key before the script saves a round trip per check when the counters are warm.
_RESERVE_LUA = """
for i, k in ipairs(KEYS) do
  if redis.call('EXISTS', k) == 0 then return {-1, i} end
end
local amount = tonumber(ARGV[1])
for i, k in ipairs(KEYS) do
  local used = tonumber(redis.call('GET', k) or '0')
  local lim = tonumber(ARGV[2 + i])
  if lim >= 0 and (used + amount > lim or (amount == 0 and used >= lim)) then
    return {i, used}
  end
end
if amount ~= 0 then
  for i, k in ipairs(KEYS) do
    redis.call('INCRBY', k, amount)
    redis.call('EXPIRE', k, tonumber(ARGV[2]))
  end
end
return {0, tonumber(redis.call('GET', KEYS[1]) or '0')}  -- the tenant's use, saving the caller a GET
"""


# --- Periods ------------------------------------------------------------------------------------


def month_start(now: datetime | None = None) -> datetime:
    now = now or datetime.now(UTC)
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def month_resets_at(now: datetime | None = None) -> datetime:
    start = month_start(now)
    return start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)


def _period(now: datetime | None = None) -> str:
    return month_start(now).strftime("%Y-%m")


# --- Limits -------------------------------------------------------------------------------------

# Limits (plans, staff overrides, sub-limits) are cached per process under one epoch (core.epochs): any change to
# those rows bumps it (usage.signals, tenants.signals), so every process sees the change at its next check.
LIMITS_EPOCH = "quota-limits"
_limits_cache: EpochCache[tuple[Any]] = EpochCache("QUOTA_LIMITS_CACHE_SECONDS")  # boxed: None is a limit
_EPOCH = object()  # the snapshot's memo of the epoch it read

# Inside `limits_snapshot()` each limit (and the epoch) is read once per block, so one chat start (two monthly
# checks + run admission) reads plan, override and sub-limits once instead of three times. A new block reads again.
_snapshot: contextvars.ContextVar[dict[object, Any] | None] = contextvars.ContextVar(
    "quota_limits_snapshot", default=None
)


@contextlib.contextmanager
def limits_snapshot() -> Iterator[None]:
    """Read each limit at most once inside this block (one consistent view for one request)."""
    token = _snapshot.set({}) if _snapshot.get() is None else None
    try:
        yield
    finally:
        if token is not None:
            _snapshot.reset(token)


def _cached(key: Any, loader: Callable[[], Any]) -> Any:
    memo = _snapshot.get()
    if memo is not None and key in memo:
        return memo[key]
    epoch = memo.get(_EPOCH) if memo is not None else None
    if epoch is None:
        epoch = epoch_get(LIMITS_EPOCH)
        if memo is not None:
            memo[_EPOCH] = epoch
    hit = _limits_cache.get(key, epoch)
    if hit is None:
        hit = (loader(),)  # boxed: a limit may be None (unlimited)
        _limits_cache.put(key, epoch, hit)
    if memo is not None:
        memo[key] = hit[0]
    return hit[0]


def limits_cache_forget() -> None:
    """Drop this process's cached limits without announcing a change (the rows they came from were rolled back)."""
    _limits_cache.clear()


def limits_cache_clear() -> None:
    """Limits changed: every process drops its cached limits at its next check (the epoch moves now and again on
    commit), and a limits_snapshot() block this change was made in sees it for the rest of the block."""
    epoch_bump(LIMITS_EPOCH)
    limits_cache_forget()
    memo = _snapshot.get()
    if memo is not None:
        memo.clear()


@dataclass(frozen=True)
class LimitsProvider:
    """Where limits come from; the usage app registers one in UsageConfig.ready() (usage.sources).

    - tenant_limits(tenant) -> {quota: limit or None (unlimited), ..., "_rate_limits": {group: rate},
      "_plan": plan slug or None}: the tenant's effective plan limits.
    - sub_limits() -> {(quota, user_id, api_key_id): limit}: tenant admins' sub-limits, called inside the
      tenant's schema (exactly one of user_id, api_key_id is set).
    - tenant_for_schema(schema) -> the tenant of that schema (workers often only know the schema).
    """

    tenant_limits: Callable[[Any], dict[str, Any]]
    sub_limits: Callable[[], dict[tuple[str, Any, Any], Any]]
    tenant_for_schema: Callable[[str], Any]


_provider: LimitsProvider | None = None


def register_limits_provider(provider: LimitsProvider) -> None:
    """Install the source of limits (one per process; the last registration wins)."""
    global _provider
    _provider = provider
    limits_cache_forget()


def _limits_provider() -> LimitsProvider:
    if _provider is None:
        raise RuntimeError("no quota limits provider registered (the usage app registers it in ready())")
    return _provider


def tenant_limits(tenant: TenantRecord) -> dict[str, Any]:
    """Effective limits of a tenant (staff override, else its plan, else the default plan, else settings)."""
    limits: dict[str, Any] = _cached(("tenant", tenant.pk), lambda: _limits_provider().tenant_limits(tenant))
    return limits


def _sub_limits(schema: str, quota: str, user_id: Any, api_key_id: Any) -> dict[str, Any]:
    """{"user": limit, "api_key": limit} set by tenant admins, cached under the limits epoch."""

    def load() -> dict[tuple[str, Any, Any], Any]:
        with _in_schema(schema):
            return _limits_provider().sub_limits()

    table = _cached(("sub", schema), load)
    found: dict[str, Any] = {}
    if user_id is not None and (quota, user_id, None) in table:
        found["user"] = table[(quota, user_id, None)]
    if api_key_id is not None and (quota, None, api_key_id) in table:
        found["api_key"] = table[(quota, None, api_key_id)]
    return found


def validate_limit(quota: str, limit: Any) -> Any:
    """Refuse unknown quotas, negative or absurd values. Returns the normalised limit (None = unlimited)."""
    spec = QUOTAS.get(quota)
    if spec is None:
        raise InvalidInput(f"Unknown quota '{quota}'. Known: {', '.join(QUOTAS)}.", field="quota")
    if limit is None:
        return None
    try:
        value = Decimal(str(limit)) if spec.decimal else int(str(limit))
    except (ArithmeticError, ValueError) as exc:
        raise InvalidInput(f"The limit for '{quota}' must be a number.", field="limit") from exc
    if isinstance(limit, bool) or value < 0:
        raise InvalidInput(f"The limit for '{quota}' cannot be negative.", field="limit")
    if value > spec.max_value:
        raise InvalidInput(f"The limit for '{quota}' is absurd (max {spec.max_value} {spec.unit}).", field="limit")
    return value


# --- Usage sources (database truth for gauges and for seeding cold counters) ----------------------

UsageSource = Callable[..., int | Decimal]
_sources: dict[str, UsageSource] = {}


def register_usage_source(quota: str, fn: UsageSource) -> None:
    """fn(*, since: datetime | None, user_id, api_key_id) -> current use, run inside the tenant's schema.

    Gauges get since=None; monthly counters get the month's start (to seed a cold counter). The usage app
    registers one per quota in UsageConfig.ready() (usage.sources).
    """
    if quota not in QUOTAS:
        raise ValueError(f"unknown quota {quota!r}")
    _sources[quota] = fn


def _source(quota: str) -> UsageSource | None:
    return _sources.get(quota)


@contextlib.contextmanager
def _in_schema(schema: str) -> Iterator[None]:
    if getattr(connection, "schema_name", None) == schema:
        yield
    else:
        with in_tenant(schema):
            yield


@overload
def tenant_resolve(tenant: TenantRecord | str) -> TenantRecord: ...
@overload
def tenant_resolve(tenant: None) -> None: ...
def tenant_resolve(tenant: TenantRecord | str | None) -> TenantRecord | None:
    """A Tenant from a Tenant or a schema name (workers often only know the schema)."""
    if isinstance(tenant, str):
        resolved: TenantRecord = _cached(("schema", tenant), lambda: _limits_provider().tenant_for_schema(tenant))
        return resolved
    return tenant


def _schema_of(tenant: object) -> str:
    schema: str | None = getattr(tenant, "schema_name", None)
    if not schema or schema == "public":
        raise RuntimeError("quotas are per tenant: pass the tenant the work belongs to")
    return schema


def _id(obj: Any) -> Any:
    return getattr(obj, "pk", obj)


def _to_units(spec: QuotaSpec, value: Any) -> int:
    if value is None:
        return -1
    return int(Decimal(str(value)) * COST_SCALE) if spec.decimal else int(value)


def _from_units(spec: QuotaSpec, units: int) -> Any:
    return (Decimal(units) / COST_SCALE).quantize(Decimal("0.000001")) if spec.decimal else units


def _counter_key(schema: str, quota: str, scope: str, period: str) -> str:
    return f"quota:{schema}:{quota}:{scope}:{period}"


def _seed_counter(r: redis.Redis, key: str, schema: str, spec: QuotaSpec, user_id: Any, api_key_id: Any) -> None:
    if r.exists(key):
        return
    value: Any = 0
    source = _source(spec.name)
    if source is not None:
        try:
            with _in_schema(schema):
                value = source(since=month_start(), user_id=user_id, api_key_id=api_key_id) or 0
        except Exception:  # noqa: BLE001 - a missing table must not block work; start from zero
            logger.exception("usage source for %s failed; counter starts at 0", spec.name)
    r.set(key, _to_units(spec, value), nx=True, ex=40 * 86400)


# --- Public API ---------------------------------------------------------------------------------


@dataclass
class QuotaUsage:
    quota: str
    limit: Any  # tenant limit (None = unlimited)
    used: Any  # tenant use after this call
    resets_at: str | None


def _subjects(
    principal: _PrincipalLike | None, tenant: TenantRecord | str | None, user: Subject, api_key: Subject
) -> tuple[Any, Subject, Subject]:
    """Tenant, user and API key a quota call counts against: explicit arguments win over the principal's."""
    if principal is None:
        return tenant, user, api_key
    return (
        tenant or principal.tenant,
        user if user is not None else principal.user,
        api_key if api_key is not None else getattr(principal, "api_key", None),
    )


def quota_check(
    *,
    quota: str,
    tenant: TenantRecord | str | None = None,
    amount: int | Decimal = 1,
    user: Subject = None,
    api_key: Subject = None,
    principal: _PrincipalLike | None = None,
    current: int | None = None,
) -> QuotaUsage:
    """Refuse (QuotaExceeded) if `amount` more of `quota` would exceed the tenant's, user's or key's limit.

    Monthly quotas with amount > 0 also reserve the amount atomically. Call before the expensive work.
    `principal` (iam.policy.Principal) may replace tenant/user/api_key. See the module docstring.
    """
    tenant, user, api_key = _subjects(principal, tenant, user, api_key)
    tenant = tenant_resolve(tenant)
    spec = QUOTAS.get(quota)
    if spec is None:
        raise ValueError(f"unknown quota {quota!r}")
    if amount < 0:
        raise ValueError("amount cannot be negative; use quota_release to give back a reservation")
    schema = _schema_of(tenant)
    user_id, api_key_id = _id(user), _id(api_key)
    tenant_limit = tenant_limits(tenant)[quota]
    subs = _sub_limits(schema, quota, user_id, api_key_id)
    if spec.kind == MONTHLY:
        return _check_monthly(schema, spec, tenant_limit, subs, amount, user_id, api_key_id)
    if spec.kind == GAUGE:
        return _check_gauge(schema, spec, tenant_limit, subs, amount, user_id, api_key_id, current)
    raise ValueError(f"{quota} is enforced by chat_run_admit")


def _check_monthly(
    schema: str,
    spec: QuotaSpec,
    tenant_limit: Any,
    subs: dict[str, Any],
    amount: int | Decimal,
    user_id: Any,
    api_key_id: Any,
) -> QuotaUsage:
    period = _period()
    resets = month_resets_at().isoformat()
    scopes = [("tenant", "t", tenant_limit, None, None)]
    if "user" in subs:
        scopes.append(("user", f"u{user_id}", subs["user"], user_id, None))
    if "api_key" in subs:
        scopes.append(("api_key", f"k{api_key_id}", subs["api_key"], None, api_key_id))
    r = redis_client()
    keys = [_counter_key(schema, spec.name, scope, period) for _, scope, _, _, _ in scopes]
    units = _to_units(spec, amount)
    limits = [_to_units(spec, limit) for _, _, limit, _, _ in scopes]
    for _attempt in range(3):
        refused, used = r.eval(_RESERVE_LUA, len(keys), *keys, units, 40 * 86400, *limits)
        if refused != -1:
            break
        # a cold counter: seed it from the database and check again
        for key, (_, _, _, uid, kid) in zip(keys, scopes, strict=True):
            _seed_counter(r, key, schema, spec, uid, kid)
    else:
        raise RuntimeError("quota counters keep disappearing from Redis (evicted?)")
    if refused:
        name, _, limit, _, _ = scopes[int(refused) - 1]
        _refusal_metric(schema, spec.name, name)
        if name == "tenant":
            _warn(schema, spec.name, 100, tenant_limit, _from_units(spec, int(used)), period)
        raise QuotaExceeded(
            quota=spec.name,
            limit=limit,
            used=_from_units(spec, int(used)),
            requested=amount,
            scope=name,
            resets_at=resets,
        )
    used_now = _from_units(spec, int(used))  # returned by the script
    if tenant_limit is not None and units:
        _maybe_warn(schema, spec.name, tenant_limit, used_now - amount, used_now, period)
    return QuotaUsage(spec.name, tenant_limit, used_now, resets)


def _check_gauge(
    schema: str,
    spec: QuotaSpec,
    tenant_limit: Any,
    subs: dict[str, Any],
    amount: int | Decimal,
    user_id: Any,
    api_key_id: Any,
    current: int | None,
) -> QuotaUsage:
    source = _source(spec.name)

    def use(uid: Any = None, kid: Any = None) -> int:
        if current is not None and uid is None and kid is None:
            return int(current)
        if source is None:
            return 0
        with _in_schema(schema):
            return int(source(since=None, user_id=uid, api_key_id=kid) or 0)

    checks = [("tenant", tenant_limit, None, None)]
    if "user" in subs:
        checks.append(("user", subs["user"], user_id, None))
    if "api_key" in subs:
        checks.append(("api_key", subs["api_key"], None, api_key_id))
    tenant_used = None
    for name, limit, uid, kid in checks:
        if limit is None:
            continue
        used = use(uid, kid)
        if name == "tenant":
            tenant_used = used
        if used + amount > limit or (amount == 0 and used >= limit):
            _refusal_metric(schema, spec.name, name)
            raise QuotaExceeded(quota=spec.name, limit=limit, used=used, requested=amount, scope=name, resets_at=None)
    if tenant_limit is not None and tenant_used is not None:
        _maybe_warn(schema, spec.name, tenant_limit, tenant_used, tenant_used + amount, "gauge")
    return QuotaUsage(spec.name, tenant_limit, tenant_used, None)


def quota_consume(
    *,
    quota: str,
    amount: int | Decimal,
    tenant: TenantRecord | str | None = None,
    user: Subject = None,
    api_key: Subject = None,
    principal: _PrincipalLike | None = None,
) -> None:
    """Record use after the fact (tokens/cost once a run finished). Never refuses; may overshoot by one run."""
    tenant, user, api_key = _subjects(principal, tenant, user, api_key)
    tenant = tenant_resolve(tenant)
    spec = QUOTAS[quota]
    if spec.kind != MONTHLY or not amount:
        return
    schema = _schema_of(tenant)
    period = _period()
    r = redis_client()
    user_id, api_key_id = _id(user), _id(api_key)
    units = _to_units(spec, amount)
    scopes = [("t", None, None)]
    if user_id is not None:
        scopes.append((f"u{user_id}", user_id, None))
    if api_key_id is not None:
        scopes.append((f"k{api_key_id}", None, api_key_id))
    after = 0
    for scope, uid, kid in scopes:
        key = _counter_key(schema, quota, scope, period)
        _seed_counter(r, key, schema, spec, uid, kid)
        value = r.incrby(key, units)
        if scope == "t":
            after = value
    limit = tenant_limits(tenant)[quota]
    if limit is not None:
        _maybe_warn(schema, quota, limit, _from_units(spec, after - units), _from_units(spec, after), period)


def quota_counters_forget(schema: str) -> int:
    """Drop the organisation's monthly counters, so the next check seeds them from the database again: a restore
    replaced the rows they count. Reservations in flight at that moment are forgotten with them."""
    return sum(
        keys_delete_prefixed(f"quota:{schema}:{name}:")  # every scope and period of _counter_key
        for name, spec in QUOTAS.items()
        if spec.kind == MONTHLY
    )


def quota_counters_warm(
    *, quota: str, tenant: TenantRecord | str | None = None, user: Subject = None, api_key: Subject = None
) -> None:
    """Seed cold monthly counters from the database BEFORE writing the row that records new use
    (otherwise the seed would already include it and quota_consume would count it twice)."""
    tenant = tenant_resolve(tenant)
    spec = QUOTAS[quota]
    if spec.kind != MONTHLY:
        return
    schema = _schema_of(tenant)
    period = _period()
    r = redis_client()
    user_id, api_key_id = _id(user), _id(api_key)
    for scope, uid, kid in (("t", None, None), (f"u{user_id}", user_id, None), (f"k{api_key_id}", None, api_key_id)):
        if scope == "t" or uid is not None or kid is not None:
            _seed_counter(r, _counter_key(schema, quota, scope, period), schema, spec, uid, kid)


def quota_release(
    *,
    quota: str,
    amount: int | Decimal,
    tenant: TenantRecord | None = None,
    user: Subject = None,
    api_key: Subject = None,
    principal: _PrincipalLike | None = None,
) -> None:
    """Give back a reservation made by quota_check (the work was refused or failed before it counted)."""
    tenant, user, api_key = _subjects(principal, tenant, user, api_key)
    spec = QUOTAS[quota]
    if spec.kind != MONTHLY or not amount:
        return
    schema = _schema_of(tenant)
    period = _period()
    r = redis_client()
    units = _to_units(spec, amount)
    for scope in ("t", f"u{_id(user)}" if user is not None else None, f"k{_id(api_key)}" if api_key else None):
        if scope:
            key = _counter_key(schema, quota, scope, period)
            if r.exists(key):
                r.decrby(key, units)


def quota_usage(*, tenant: TenantRecord, quota: str, user: Subject = None, api_key: Subject = None) -> Any:
    """Current use of one quota (tenant-wide, or for a user/key) without reserving anything."""
    spec = QUOTAS[quota]
    schema = _schema_of(tenant)
    user_id, api_key_id = _id(user), _id(api_key)
    if spec.kind == MONTHLY:
        scope = f"k{api_key_id}" if api_key_id is not None else f"u{user_id}" if user_id is not None else "t"
        key = _counter_key(schema, quota, scope, _period())
        r = redis_client()
        _seed_counter(r, key, schema, spec, user_id, api_key_id)
        return _from_units(spec, int(r.get(key) or 0))
    if spec.kind == GAUGE:
        source = _source(quota)
        if source is None:
            return 0
        with _in_schema(schema):
            return source(since=None, user_id=user_id, api_key_id=api_key_id) or 0
    return _active_runs(redis_client(), schema, "t")


def quota_overview(*, tenant: TenantRecord, user: Subject = None, api_key: Subject = None) -> list[dict[str, Any]]:
    """Every quota with its limit, use and reset time (for the usage page and API)."""
    limits = tenant_limits(tenant)
    out = []
    for name, spec in QUOTAS.items():
        used = quota_usage(tenant=tenant, quota=name, user=user, api_key=api_key)
        limit = limits[name]
        out.append(
            {
                "quota": name,
                "unit": spec.unit,
                "limit": _jsonable(limit),
                "used": _jsonable(used),
                "percent": round(float(used) * 100 / float(limit), 1) if limit else None,
                "resets_at": month_resets_at().isoformat() if spec.kind == MONTHLY else None,
            }
        )
    return out


# --- Warnings -----------------------------------------------------------------------------------

WARNING_LEVELS = (80, 100)


def _maybe_warn(schema: str, quota: str, limit: Any, before: Any, after: Any, period: str) -> None:
    if not limit:
        return
    for level in WARNING_LEVELS:
        threshold = Decimal(str(limit)) * level / 100
        if Decimal(str(before)) < threshold <= Decimal(str(after)):
            _warn(schema, quota, level, limit, after, period)


def _warn(schema: str, quota: str, level: int, limit: Any, used: Any, period: str) -> None:
    """One event per tenant, quota, level and period (SET NX), so a flood does not flood the bus."""
    flag = f"quota:{schema}:warned:{quota}:{level}:{period}"
    try:
        if not redis_client().set(flag, 1, nx=True, ex=40 * 86400 if period != "gauge" else 86400):
            return
        publish(
            QUOTA_WARNING,
            {"quota": quota, "level": level, "limit": _jsonable(limit), "used": _jsonable(used)},
            subject=event_subject("quota", quota),  # every member sees the organisation's quotas
            topic="quota",
            schema=schema,
        )
    except Exception:  # noqa: BLE001 - a missed warning must not fail the request
        logger.exception("quota warning for %s not published", quota)


def _refusal_metric(schema: str, quota: str, scope: str) -> None:
    """By quota and scope (tenant, user, api_key, agent, pool); the tenant label is bounded by core.metrics."""
    try:
        metric_inc("quota_refusals_total", tenant=schema, quota=quota, scope=scope)
    except Exception:  # noqa: BLE001
        logger.debug("metric not recorded", exc_info=True)


# --- Concurrent runs and the bounded chat queue -------------------------------------------------
#
# The one ledger of running chat runs. Each scope that limits runs (tenant, user, API key, agent) is a sorted set of
# the runs it holds, scored by the run's lease expiry; "runs:global:leases" is the shared pool and
# "runs:global:queue" the FIFO of runs waiting for a pool slot (scored by their last poll). Admission is one Lua
# script, so every web process and worker agrees. A run is freed by chat_run_release when it ends; if its worker
# dies instead, its lease expires and the next admission purges it, so no slot is held forever.

RUN_LEASE_SLACK_SECONDS = 60  # beyond the run's own time limit: the wait for a worker, saving the answer
QUEUE_POLL_STALE_SECONDS = 120  # a waiter that has not polled for this long has gone away

_ADMIT_LUA = """
-- KEYS: 1 pool leases, 2 wait queue, 3 the run's slot record, 4.. its scoped lease sets (tenant, user, key, agent)
-- ARGV: 1 now, 2 lease expiry, 3 run, 4 pool slots, 5 queue max, 6 enqueue (1/0), 7 key ttl, 8 slot record (JSON),
--       9 seconds after which a silent waiter is dropped, 10.. limit of each scoped set (-1 = unlimited)
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[9]))  -- waiters that stopped polling
for i = 4, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  local lim = tonumber(ARGV[i + 6])
  if lim >= 0 and redis.call('ZCARD', KEYS[i]) >= lim then
    redis.call('ZREM', KEYS[2], ARGV[3])
    return {-2, i - 3}
  end
end
local slots = tonumber(ARGV[4])
local rank = redis.call('ZRANK', KEYS[2], ARGV[3])
local free = slots - redis.call('ZCARD', KEYS[1])
-- Admit if a slot is free for this waiter's place in line (FIFO across tenants).
if free > 0 and (rank == false and redis.call('ZCARD', KEYS[2]) < free or rank ~= false and rank < free) then
  redis.call('ZREM', KEYS[2], ARGV[3])
  local ttl = tonumber(ARGV[7])
  for i = 1, #KEYS do
    if i ~= 2 and i ~= 3 then
      redis.call('ZADD', KEYS[i], ARGV[2], ARGV[3])
      -- an idle set goes away after its longest lease; a shorter run never cuts a longer one's time
      if redis.call('TTL', KEYS[i]) < ttl then redis.call('EXPIRE', KEYS[i], ttl) end
    end
  end
  redis.call('SET', KEYS[3], ARGV[8], 'EX', ttl)  -- which sets hold the run, for chat_run_release
  return {0, 0}
end
if rank == false then
  if ARGV[6] ~= '1' or redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[5]) then return {-1, 0} end
  redis.call('ZADD', KEYS[2], now, ARGV[3])
else
  redis.call('ZADD', KEYS[2], 'XX', now, ARGV[3])  -- heartbeat keeps our place (score refresh)
end
return {1, redis.call('ZRANK', KEYS[2], ARGV[3]) + 1}
"""

# Free a run's slot in every set that holds it (from its slot record), and its place in the queue.
_RELEASE_LUA = """
-- KEYS: 1 slot record, 2 wait queue, 3 pool leases, 4 tenant leases (used when the record has expired)
local raw = redis.call('GET', KEYS[1])
local keys = {KEYS[3], KEYS[4]}
if raw then keys = cjson.decode(raw) end
for _, key in ipairs(keys) do redis.call('ZREM', key, ARGV[1]) end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[1])
return 1
"""

_POOL_KEY = "runs:global:leases"
_QUEUE_KEY = "runs:global:queue"
_RUN_SCOPES = ("tenant", "user", "api_key", "agent")


def _run_member(schema: str, run_id: Any) -> str:
    return f"{schema}:{run_id}"


def _slot_record_key(member: str) -> str:
    return f"runs:slotkeys:{member}"


def _release_args(schema: str, run_id: Any) -> tuple[str, int, str, str, str, str, str]:
    member = _run_member(schema, run_id)
    return _RELEASE_LUA, 4, _slot_record_key(member), _QUEUE_KEY, _POOL_KEY, f"runs:{schema}:t", member


def _active_runs(r: redis.Redis, schema: str, scope: str) -> int:
    key = f"runs:{schema}:{scope}"
    r.zremrangebyscore(key, "-inf", time.time())
    return int(r.zcard(key))


@dataclass
class RunSlot:
    """A chat run's place in the ledger. position 0: it holds a slot until released (also a context manager);
    position n > 0 (join_only): it waits in the queue at place n and holds no slot yet."""

    schema: str
    run_id: str
    queued_seconds: float = 0.0
    released: bool = False
    position: int = 0

    def release(self) -> None:
        if not self.released:
            chat_run_release(schema=self.schema, run_id=self.run_id)
            self.released = True

    def __enter__(self) -> RunSlot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def chat_run_admit(
    *,
    run_id: Any = None,
    tenant: TenantRecord | str | None = None,
    user: Subject = None,
    api_key: Subject = None,
    principal: _PrincipalLike | None = None,
    agent_id: Any = None,
    agent_limit: int | None = None,
    run_seconds: float | None = None,
    wait_seconds: float | None = None,
    on_position: Callable[[int], None] | None = None,
    poll_interval: float = 0.1,
    join_only: bool = False,
) -> RunSlot:
    """Admit a chat run: enforce concurrent runs (tenant plan, user/key sub-limits, the agent's own `agent_limit`:
    ConcurrencyLimited, 429) and the shared pool (queue, Overloaded, 503).

    The slot's lease lasts the longer of settings.CHAT_RUN_LEASE_SECONDS and the run's time limit
    (`run_seconds`) plus RUN_LEASE_SLACK_SECONDS: never shorter than a live run, and a crashed one frees it.

    If the pool (settings.CHAT_POOL_SLOTS) is full the run waits in a bounded FIFO queue
    (settings.CHAT_QUEUE_MAX) for up to `wait_seconds` (settings.CHAT_QUEUE_WAIT_SECONDS), and
    `on_position(n)` is called whenever its place in line changes (send it to the client). A full
    queue or a wait that times out raises Overloaded (503 + Retry-After). Sync; from async code use
    `await sync_to_async(chat_run_admit, thread_sensitive=False)(...)`.

    join_only=True never waits (queued chat runs): one attempt that either admits (position 0), joins or keeps the
    run's place in the queue (returns a RunSlot with position n > 0, which holds no slot yet; call again to
    heartbeat/poll), or raises. The worker polls this way so waiting never blocks an event loop.
    """
    tenant, user, api_key = _subjects(principal, tenant, user, api_key)
    tenant = tenant_resolve(tenant)
    schema = _schema_of(tenant)
    user_id, api_key_id = _id(user), _id(api_key)
    run_id = str(run_id) if run_id is not None else uuid.uuid4().hex
    member = _run_member(schema, run_id)
    subs = _sub_limits(schema, "concurrent_runs", user_id, api_key_id)
    spec = QUOTAS["concurrent_runs"]
    scoped = [("tenant", f"runs:{schema}:t", tenant_limits(tenant)["concurrent_runs"])]
    if user_id is not None:
        scoped.append(("user", f"runs:{schema}:u{user_id}", subs.get("user")))
    if api_key_id is not None:
        scoped.append(("api_key", f"runs:{schema}:k{api_key_id}", subs.get("api_key")))
    if agent_id is not None:
        scoped.append(("agent", f"runs:{schema}:a{agent_id}", agent_limit))
    keys = [key for _, key, _ in scoped]
    limits = [_to_units(spec, limit) for _, _, limit in scoped]
    lease_seconds = max(int(settings.CHAT_RUN_LEASE_SECONDS), int(run_seconds or 0) + RUN_LEASE_SLACK_SECONDS)
    record = json.dumps([_POOL_KEY, *keys])
    slots = int(settings.CHAT_POOL_SLOTS)
    queue_max = int(settings.CHAT_QUEUE_MAX)
    wait = float(settings.CHAT_QUEUE_WAIT_SECONDS if wait_seconds is None else wait_seconds)
    retry_after = int(settings.CHAT_RETRY_AFTER_SECONDS)
    r = redis_client()
    started = time.monotonic()
    last_position = None
    while True:
        now = time.time()
        status, value = r.eval(
            _ADMIT_LUA,
            3 + len(keys),
            _POOL_KEY,
            _QUEUE_KEY,
            _slot_record_key(member),
            *keys,
            now,
            now + lease_seconds,
            member,
            slots,
            queue_max,
            1 if (wait > 0 or join_only) else 0,
            lease_seconds + 60,
            record,
            QUEUE_POLL_STALE_SECONDS,
            *limits,
        )
        if status == 0:
            _gauge_queue(r)
            return RunSlot(schema=schema, run_id=run_id, queued_seconds=time.monotonic() - started)
        if status == -2:
            scope, _, limit = scoped[int(value) - 1]
            _refusal_metric(schema, "concurrent_runs", scope)
            raise ConcurrencyLimited(
                f"Too many chat runs at once ({limit} allowed for this {scope.replace('_', ' ')}). "
                "Wait for one to finish.",
                retry_after=retry_after,
                extra={"quota": "concurrent_runs", "limit": limit, "scope": scope},
            )
        if status == 1 and join_only:
            return RunSlot(schema=schema, run_id=run_id, position=int(value))
        if status == -1 or time.monotonic() - started >= wait:
            r.zrem(_QUEUE_KEY, member)
            _refusal_metric(schema, "chat_pool", "pool")
            raise Overloaded(
                "All chat workers are busy and the wait queue is full. Please retry shortly.",
                retry_after=retry_after,
            )
        if on_position is not None and value != last_position:
            last_position = int(value)
            on_position(last_position)
        time.sleep(poll_interval)


def chat_run_release(*, schema: str, run_id: Any) -> None:
    """Free the slot (or the queue place) chat_run_admit gave run `run_id`, from any process. Idempotent."""
    redis_client().eval(*_release_args(schema, run_id))


async def chat_run_release_async(*, schema: str, run_id: Any) -> None:
    """chat_run_release for event loops (the agents worker)."""
    await async_redis_client().eval(*_release_args(schema, run_id))


# Both gauges read and written server-side (same hashes and fields as metrics.metric_set).
_GAUGE_LUA = """
redis.call('HSET', KEYS[3], ARGV[1], redis.call('ZCARD', KEYS[1]))
redis.call('HSET', KEYS[4], ARGV[1], redis.call('ZCARD', KEYS[2]))
return 1
"""


def _gauge_queue(r: redis.Redis) -> None:
    """Record queue length and active runs (a failed gauge never refuses a run)."""
    keys = (_QUEUE_KEY, _POOL_KEY, "metrics:g:chat_queue_length", "metrics:g:chat_runs_active")
    try:
        r.eval(_GAUGE_LUA, 4, *keys, _field({}))
    except redis.RedisError as exc:
        logger.debug("queue gauge not recorded: %s", exc)
