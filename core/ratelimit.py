"""Rate limits: django-ratelimit counters in Redis, per principal and per tenant, per endpoint group.

Every DRF view is covered by `TenantRateThrottle` (settings REST_FRAMEWORK DEFAULT_THROTTLE_CLASSES).
A view picks its group with a class attribute; default "read" for safe methods, "write" otherwise:

    class ChatApi(APIView):
        required_scope = "chat"
        rate_limit_group = "chat"            # or {"GET": "read", "POST": "chat"}

Groups and rates: settings.RATE_LIMITS (per user / per API key) and settings.RATE_LIMITS_TENANT (the
whole tenant), e.g. {"chat": "30/m"}; a tenant's Plan/TenantQuota `rate_limits` override the per-principal
ones. Counters live in the Django cache (Redis); its key function (django_tenants.cache.make_key) puts
the schema in every key, and we put it in the counted value too, so tenants never share a counter.

API calls made with an API key also count against the api_calls_per_month quota (core.quotas) and are metered by
the recorder the usage app registers (`register_api_call_recorder`, in UsageConfig.ready()).

Limits nest: a request is admitted only if the principal's counter AND the tenant's have room, and then counted
in both (one atomic Redis script); a refused request is counted in neither. A principal's rate is capped at
settings.RATE_LIMIT_PRINCIPAL_SHARE of the tenant's (same window), so one principal's flood leaves the rest of the
organisation's allowance to the other members. A request the limiter admitted but a later check refused
(concurrency_limited, overloaded) gives the tenant's unit back (`rate_limit_refund`); docs/rate-limits.md.

Refusals are `RateLimited` (HTTP 429, JSON {"detail","code":"rate_limited","group","limit",...}) with
Retry-After; every limited response carries X-RateLimit-Limit / -Remaining / -Reset
(`RateLimitHeadersMiddleware`). They are counted in `rate_limited_total{group,scope,tenant}` and logged as one
summary line per interval and process (`RefusalLog`), never one line per refusal.

Plain Django views:  @rate_limited("auth")
Anything else:       rate_limit_check(request, "search")      # raises RateLimited
WebSocket messages:  if not await ws_message_allowed(self.scope): ...   (see ws_message_check)
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import redis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import caches
from django.http import HttpRequest, HttpResponse, JsonResponse
from django_ratelimit.core import EXPIRATION_FUDGE, _get_window, _make_cache_key, is_ratelimited
from rest_framework.throttling import BaseThrottle

from .context import current_request_id, current_tenant
from .errors import DomainError, ErrorCode
from .metrics import metric_inc
from .quotas import Overloaded, limits_snapshot, quota_check, tenant_limits
from .redis_clients import redis_client
from .tenancy import TenantRecord, current_schema

if TYPE_CHECKING:  # rest_framework.views reads DEFAULT_THROTTLE_CLASSES on import, which names this module
    from rest_framework.request import Request
    from rest_framework.views import APIView

logger = logging.getLogger(__name__)

GROUPS = ("chat", "search", "write", "read", "auth", "ws_message")
DEFAULT_RATE_LIMITS = {
    "chat": "30/m",
    "search": "120/m",
    "write": "120/m",
    "read": "600/m",
    "auth": "10/m",
    "ws_message": "120/m",
}
DEFAULT_RATE_LIMITS_TENANT = {
    "chat": "300/m",
    "search": "1200/m",
    "write": "1200/m",
    "read": "6000/m",
    "auth": "100/m",
    "ws_message": "2400/m",
}
_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# The most of the organisation's allowance one principal may take (settings.RATE_LIMIT_PRINCIPAL_SHARE).
DEFAULT_PRINCIPAL_SHARE = 0.5


class RateLimited(DomainError):
    code = ErrorCode.RATE_LIMITED
    status = 429

    def __init__(self, result: RateLimitResult):
        super().__init__(
            f"Too many {result.group} requests: {result.limit} per {result.period}s allowed for this "
            f"{result.scope.replace('_', ' ')}. Retry in {result.retry_after}s.",
            extra={
                "group": result.group,
                "scope": result.scope,
                "limit": result.limit,
                "retry_after": result.retry_after,
            },
        )
        self.result = result
        self.headers = {"Retry-After": str(result.retry_after), **result.headers()}


@dataclass
class RateLimitResult:
    group: str
    scope: str  # the tightest counter: "user", "api_key", "ip" or "tenant"
    limit: int
    remaining: int
    reset: int  # seconds until the window resets
    period: int
    limited: bool
    refund_key: str | None = None  # the tenant counter this admitted request was counted in (rate_limit_refund)

    @property
    def retry_after(self) -> int:
        return max(1, self.reset)

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(0, self.remaining)),
            "X-RateLimit-Reset": str(max(0, self.reset)),
        }


def parse_rate(rate: str) -> tuple[int, int]:
    """'30/m' -> (30, 60); '100/5m' -> (100, 300). Refuses nonsense (absurd settings are errors)."""
    count, _, period = str(rate).partition("/")
    multiplier = int(period[:-1]) if len(period) > 1 else 1
    seconds = _PERIODS.get(period[-1:] or "", 0) * multiplier
    limit = int(count)
    if limit < 0 or seconds <= 0 or limit > 10_000_000:
        raise ValueError(f"invalid rate {rate!r}")
    return limit, seconds


def _rates(group: str, tenant: TenantRecord | None = None) -> tuple[str | None, str | None]:
    per_principal = {**DEFAULT_RATE_LIMITS, **getattr(settings, "RATE_LIMITS", {})}
    per_tenant = {**DEFAULT_RATE_LIMITS_TENANT, **getattr(settings, "RATE_LIMITS_TENANT", {})}
    if tenant is not None and getattr(tenant, "schema_name", "public") != "public":
        overrides = tenant_limits(tenant).get("_rate_limits") or {}
        per_principal.update({k: v for k, v in overrides.items() if not k.startswith("tenant:")})
        per_tenant.update({k[7:]: v for k, v in overrides.items() if k.startswith("tenant:")})
    return per_principal.get(group), per_tenant.get(group)


def _who(request: Any) -> tuple[str, str]:
    principal = getattr(request, "principal", None)
    api_key = getattr(principal, "api_key", None)
    if api_key is not None:
        return "api_key", f"k{getattr(api_key, 'pk', api_key)}"
    user = getattr(principal, "user", None) or getattr(request, "user", None)
    if user is not None and getattr(user, "is_authenticated", False):
        return "user", f"u{user.pk}"
    meta = getattr(request, "META", {})
    return "ip", f"ip{meta.get('REMOTE_ADDR', '-')}"


def rate_limit_check(request: Any, group: str, *, increment: bool = True, raise_exc: bool = True) -> RateLimitResult:
    """Count this request against the principal's and the tenant's counters for `group`, if both admit it.

    Raises RateLimited (429) when either is at its rate (unless raise_exc=False); a refused request is counted
    nowhere, so a client retrying without backing off never spends the organisation's allowance. The result is
    stored on the request for RateLimitHeadersMiddleware.
    """
    django_request: HttpRequest = getattr(request, "_request", request)
    if not getattr(settings, "RATELIMIT_ENABLE", True):
        return _unlimited(group)
    tenant = getattr(django_request, "tenant", None)
    schema: str = getattr(tenant, "schema_name", None) or current_schema()
    principal_rate, tenant_rate = _rates(group, tenant)
    scope, who = _who(request)
    counters = [
        _Counter(scope=scope_name, value=f"{schema}:{counted}", limit=limit, period=period)
        for scope_name, counted, (limit, period) in _nested_limits(scope, who, principal_rate, tenant_rate)
    ]
    if not counters:
        return _unlimited(group)
    results = _count_in_cache(f"rl.{group}", group, counters, increment)
    result = _tightest(results)
    django_request.ratelimit = result  # type: ignore[attr-defined]  # our own request attribute: no stub has it
    if result.limited:
        _metric(schema, group, result.scope)
        if raise_exc:
            raise RateLimited(result)
    return result


@dataclass
class _Counter:
    scope: str  # "user", "api_key", "ip" or "tenant"
    value: str  # what is counted: the schema and the principal (or "tenant")
    limit: int
    period: int


def _nested_limits(
    scope: str, who: str, principal_rate: str | None, tenant_rate: str | None
) -> list[tuple[str, str, tuple[int, int]]]:
    """The principal's counter inside the tenant's: a principal may take at most settings.RATE_LIMIT_PRINCIPAL_SHARE
    of the organisation's allowance in a window of the same length, so one principal's flood always leaves the
    rest to the other members (with the defaults, a tenth: the share does not bind)."""
    principal = parse_rate(principal_rate) if principal_rate else None
    whole = parse_rate(tenant_rate) if tenant_rate else None
    share = float(getattr(settings, "RATE_LIMIT_PRINCIPAL_SHARE", DEFAULT_PRINCIPAL_SHARE))
    if principal is not None and whole is not None and principal[1] == whole[1] and share < 1:
        principal = (min(principal[0], max(1, math.floor(whole[0] * share))), principal[1])
    out = []
    if principal is not None:
        out.append((scope, who, principal))
    if whole is not None:
        out.append(("tenant", "tenant", whole))
    return out


def _tightest(results: list[RateLimitResult]) -> RateLimitResult:
    limited = [r for r in results if r.limited]
    return limited[0] if limited else min(results, key=lambda r: r.remaining)


# Check every counter of a request, then count the request in all of them, or in none if one is full. A refused
# request is never counted: clients retrying without backing off do not push the window further.
# KEYS: the counters (principal first, then tenant). ARGV: each counter's limit and TTL, then 1 to count (0: peek).
# Returns {index of the full counter or 0, count_1, ..., count_n} (counts after this request when admitted).
_COUNT_LUA = """
local n = #KEYS
local reply = {0}
for i = 1, n do
  local used = tonumber(redis.call('GET', KEYS[i]) or '0')
  reply[i + 1] = used
  if reply[1] == 0 and used >= tonumber(ARGV[2 * i - 1]) then reply[1] = i end
end
if reply[1] == 0 and ARGV[2 * n + 1] == '1' then
  for i = 1, n do
    reply[i + 1] = redis.call('INCR', KEYS[i])
    if reply[i + 1] == 1 then redis.call('EXPIRE', KEYS[i], tonumber(ARGV[2 * i])) end
  end
end
return reply
"""

# Give back a tenant counter's unit (a request refused after the limiter admitted it), never below zero.
_REFUND_LUA = """
if tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then return redis.call('DECR', KEYS[1]) end
return 0
"""


def _counter_client() -> redis.Redis:
    """The Redis connection of the rate-limit cache (the counters need atomic scripts, so Redis only)."""
    cache = caches[getattr(settings, "RATELIMIT_USE_CACHE", "default")]
    backend = getattr(cache, "_cache", None)
    if backend is None or not hasattr(backend, "get_client"):
        raise TypeError(f"rate limit counters need a Redis cache, not {type(cache).__name__}")
    client: redis.Redis = backend.get_client(None, write=True)
    return client


def _count_in_cache(cache_group: str, group: str, counters: list[_Counter], increment: bool) -> list[RateLimitResult]:
    """django-ratelimit's fixed windows and cache keys (jittered per counter), every counter of the request checked
    and counted in ONE atomic Redis call (_COUNT_LUA)."""
    cache = caches[getattr(settings, "RATELIMIT_USE_CACHE", "default")]
    windows = [_get_window(c.value, c.period) for c in counters]
    keys = [
        cache.make_and_validate_key(
            _make_cache_key(cache_group, window, f"{c.limit}/{c.period}s", c.value, is_ratelimited.ALL)
        )
        for c, window in zip(counters, windows, strict=True)
    ]
    return _count(_counter_client, keys, windows, group, counters, increment)


def _count(
    client: Callable[[], redis.Redis],
    keys: list[str],
    windows: list[int],
    group: str,
    counters: list[_Counter],
    increment: bool,
) -> list[RateLimitResult]:
    args: list[int] = []
    for c in counters:
        args += [c.limit, c.period + EXPIRATION_FUDGE]
    try:
        full, *counts = client().eval(_COUNT_LUA, len(keys), *keys, *args, int(increment))
    except redis.RedisError:
        logger.exception("rate limit counters unavailable")
        if getattr(settings, "RATELIMIT_FAIL_OPEN", False):
            return [_unlimited(group)]
        full, counts = 1, [c.limit for c in counters]  # fail closed: refused as if the first counter were full
    now = int(time.time())
    admitted_in = next(
        (key for c, key in zip(counters, keys, strict=True) if c.scope == "tenant" and increment and not int(full)),
        None,
    )
    return [
        RateLimitResult(
            group=group,
            scope=c.scope,
            limit=c.limit,
            remaining=c.limit - int(count),
            reset=max(0, window - now),
            period=c.period,
            limited=int(full) == i,
            refund_key=admitted_in,
        )
        for i, (c, window, count) in enumerate(zip(counters, windows, counts, strict=True), start=1)
    ]


def rate_limit_refund(result: RateLimitResult) -> None:
    """Give the organisation back the unit an admitted request took when the request was refused further on
    (concurrency_limited, overloaded): a refusal never spends the organisation's allowance. The principal's own
    counter keeps it, so a principal retrying refusals without backing off is still held to its rate."""
    if not result.refund_key:
        return
    try:
        _counter_client().eval(_REFUND_LUA, 1, result.refund_key)
    except redis.RedisError:
        logger.debug("rate limit refund lost", exc_info=True)
    result.refund_key = None


def _unlimited(group: str) -> RateLimitResult:
    return RateLimitResult(group, "none", 0, 0, 0, 1, False)


def _metric(schema: str, group: str, scope: str) -> None:
    """Refusals by group and scope; the tenant label is bounded by core.metrics (listed schemas, else "other")."""
    try:
        metric_inc("rate_limited_total", tenant=schema, group=group, scope=scope)
    except Exception:  # noqa: BLE001
        logger.debug("metric not recorded", exc_info=True)


def view_rate_group(view: Any, method: str | None) -> str | None:
    group = getattr(view, "rate_limit_group", None)
    if isinstance(group, dict):
        group = group.get(method, group.get("*"))
    if group is None:
        group = "read" if method in ("GET", "HEAD", "OPTIONS") else "write"
    return group or None  # "" or False: not limited (e.g. health endpoints)


class TenantRateThrottle(BaseThrottle):
    """DRF throttle for every API view: rate limit by group, admission to the process's in-flight bound of the
    group, and count API-key calls (quota + metering).

    Runs after authentication and permissions, so API keys (principal.api_key) are known.
    """

    def allow_request(self, request: Request, view: APIView) -> bool:
        group = view_rate_group(view, request.method)
        if group:
            rate_limit_check(request, group)
            in_flight_enter(request, group)
        _count_api_call(request)
        return True


# --- In-flight bounds: shedding what this process cannot serve in time ------------------------------------------
#
# Rate limits share capacity between principals and organisations; they do not know how busy the machine is. A
# CPU-heavy group (search embeds the query) gets a bound on the requests one web process runs at once
# (settings.IN_FLIGHT_LIMITS, e.g. {"search": 4}); past it a request is refused at once with 503 overloaded and
# Retry-After instead of queuing for the CPU, so the admitted ones keep their latency when load doubles.

DEFAULT_IN_FLIGHT_LIMITS = {"search": 4}
IN_FLIGHT_RETRY_AFTER_SECONDS = 1


class _InFlight:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, int] = {}

    def enter(self, group: str, limit: int) -> bool:
        with self._lock:
            if self._running.get(group, 0) >= limit:
                return False
            self._running[group] = self._running.get(group, 0) + 1
            return True

    def leave(self, group: str) -> None:
        with self._lock:
            self._running[group] = max(0, self._running.get(group, 0) - 1)


_in_flight = _InFlight()


def in_flight_enter(request: Any, group: str) -> None:
    """Take one of the group's in-flight places in this process (given back by RateLimitHeadersMiddleware when the
    response is ready), or raise Overloaded (503 + Retry-After) when they are all taken."""
    limit = {**DEFAULT_IN_FLIGHT_LIMITS, **getattr(settings, "IN_FLIGHT_LIMITS", {})}.get(group)
    if limit is None:
        return
    django_request: HttpRequest = getattr(request, "_request", request)
    if getattr(django_request, "in_flight_group", None) is not None:
        return  # a view checking again (DRF re-runs throttles on a retried initial())
    if not _in_flight.enter(group, int(limit)):
        schema = getattr(getattr(django_request, "tenant", None), "schema_name", None) or current_schema()
        metric_inc("in_flight_refusals_total", tenant=schema, group=group)
        raise Overloaded(
            f"This server is running as many {group} requests as it can; retry shortly.",
            retry_after=IN_FLIGHT_RETRY_AFTER_SECONDS,
        )
    django_request.in_flight_group = group  # type: ignore[attr-defined]  # our own request attribute


def in_flight_leave(request: HttpRequest) -> None:
    group = getattr(request, "in_flight_group", None)
    if group is not None:
        _in_flight.leave(group)
        request.in_flight_group = None  # type: ignore[attr-defined]  # our own request attribute


ApiCallRecorder = Callable[..., None]
_api_call_recorders: list[ApiCallRecorder] = []


def register_api_call_recorder(recorder: ApiCallRecorder) -> None:
    """recorder(*, tenant, user, api_key) meters one API-key call once its quota admitted it (usage registers
    usage.services.api_call_record in UsageConfig.ready())."""
    if recorder not in _api_call_recorders:
        _api_call_recorders.append(recorder)


def _count_api_call(request: HttpRequest) -> None:
    """API calls made with an API key count against api_calls_per_month and are metered per key."""
    principal = getattr(request, "principal", None)
    api_key = getattr(principal, "api_key", None)
    if principal is None or api_key is None:
        return
    quota_check(principal=principal, quota="api_calls_per_month", amount=1)
    for recorder in _api_call_recorders:
        recorder(tenant=principal.tenant, user=principal.user, api_key=api_key)


_View = Callable[..., HttpResponse]


def rate_limited(group: str) -> Callable[[_View], _View]:
    """Decorator for plain Django views: 429 JSON with Retry-After when over the group's rate."""

    def decorator(view: _View) -> _View:
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            try:
                rate_limit_check(request, group)
            except RateLimited as exc:
                response = JsonResponse(exc.as_dict(), status=429)
                for name, value in exc.headers.items():
                    response[name] = value
                return response
            return view(request, *args, **kwargs)

        return wrapper

    return decorator


class RateLimitHeadersMiddleware:
    """Adds X-RateLimit-* headers to responses whose request went through a limiter; gives the organisation's
    allowance back when a request is refused after the limiter admitted it; logs refusals in summaries."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        # Plan, override and sub-limits are read once per request, not once per check (throttle rates,
        # api_calls quota, then chat_start's checks). Changes made during the request clear it
        # (limits_cache_clear).
        try:
            with limits_snapshot():
                response = self.get_response(request)
        finally:
            in_flight_leave(request)
        result = getattr(request, "ratelimit", None)
        if isinstance(result, RateLimitResult) and result.scope != "none":
            for name, value in result.headers().items():
                response.setdefault(name, value)
            if result.limited:
                response.setdefault("Retry-After", str(result.retry_after))
        reason = _refusal_reason(response, result)
        if reason is not None:
            if isinstance(result, RateLimitResult) and not result.limited:
                rate_limit_refund(result)
            # django.request logs every 4xx/5xx; core.logging.RefusedRequestFilter drops it for marked requests
            request.refusal_reason = reason  # type: ignore[attr-defined]  # our own request attribute
            refusal_log.add(reason)
        refusal_log.flush_if_due()
        return response


def _refusal_reason(response: HttpResponse, result: object) -> str | None:
    """'rate_limited:chat:user', 'concurrency_limited:agent', 'overloaded', ... for a shed request (429, or 503
    with Retry-After); None for anything else (a 503 without Retry-After is a failure, logged as such)."""
    if response.status_code not in (429, 503) or not response.has_header("Retry-After"):
        return None
    if isinstance(result, RateLimitResult) and result.limited:
        return f"rate_limited:{result.group}:{result.scope}"
    body = getattr(response, "data", None)  # a DRF Response: the error body (core.errors.error_body)
    if isinstance(body, dict) and body.get("code"):
        scope = body.get("scope")
        return f"{body['code']}:{scope}" if isinstance(scope, str) else str(body["code"])
    return str(response.status_code)


class RefusalLog:
    """Refusals summed per process and logged as one WARNING line per interval (settings.REFUSAL_LOG_SECONDS),
    never one line per refusal: a flood of retries must not become a flood of log lines. Counts not yet logged
    are carried to the next line (the next request after the interval writes it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._since = time.monotonic()

    def add(self, reason: str) -> None:
        with self._lock:
            self._counts[reason] = self._counts.get(reason, 0) + 1

    def flush_if_due(self) -> None:
        interval = float(getattr(settings, "REFUSAL_LOG_SECONDS", 10))
        if not self._counts or time.monotonic() - self._since < interval:
            return
        with self._lock:
            counts, self._counts = self._counts, {}
            elapsed, self._since = time.monotonic() - self._since, time.monotonic()
        if not counts:
            return
        detail = ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items(), key=lambda kv: -kv[1]))
        # The line sums every tenant's refusals: not labelled with the request that happens to write it.
        tenant, request_id = current_tenant.set("-"), current_request_id.set("-")
        try:
            logger.warning(
                "refused %d requests in the last %.0f s: %s",
                sum(counts.values()),
                elapsed,
                detail,
                extra={"refusals": counts},
            )
        finally:
            current_request_id.reset(request_id)
            current_tenant.reset(tenant)


refusal_log = RefusalLog()


# --- WebSocket messages --------------------------------------------------------------------------


def ws_message_check(scope: dict[str, Any], group: str = "ws_message", principal: Any = None) -> RateLimitResult:
    """Count one WebSocket message of this connection's principal (and tenant); returns the result, never raises.

    `principal` (iam.policy.Principal) names API-key connections, whose scope carries no user. Channels consumers
    do not run inside the tenant's schema, so the schema is named in the key.
    """
    tenant = scope.get("tenant")
    schema = getattr(tenant, "schema_name", "public")
    who_scope, who = _who(SimpleNamespace(principal=principal, user=scope.get("user"), META={}))
    if who_scope == "ip":
        who_scope, who = "user", "anon"
    principal_rate, tenant_rate = _rates(group, tenant)
    counters = [
        _Counter(scope=scope_name, value=counted, limit=limit, period=period)
        for scope_name, counted, (limit, period) in _nested_limits(who_scope, who, principal_rate, tenant_rate)
    ]
    if not counters:
        return _unlimited(group)
    now = int(time.time())
    windows = [now - now % c.period + c.period for c in counters]
    keys = [f"rl:{schema}:{group}:{c.value}:{window}" for c, window in zip(counters, windows, strict=True)]
    result = _tightest(_count(redis_client, keys, windows, group, counters, increment=True))
    if result.limited:
        _metric(schema, group, result.scope)
        refusal_log.add(f"rate_limited:{group}:{result.scope}")
    refusal_log.flush_if_due()
    return result


async def ws_message_allowed(
    scope: dict[str, Any], group: str = "ws_message", principal: Any = None
) -> RateLimitResult:
    """Async form for consumers: `result = await ws_message_allowed(self.scope); if result.limited: ...`.

    Suggested handling: send {"type": "error", "code": "rate_limited", "retry_after": n} and drop the
    message; close with 4429 if the client keeps going.
    """
    return await sync_to_async(ws_message_check, thread_sensitive=False)(scope, group, principal)
