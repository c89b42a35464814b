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

Refusals are `RateLimited` (HTTP 429, JSON {"detail","code":"rate_limited","group","limit",...}) with
Retry-After; every limited response carries X-RateLimit-Limit / -Remaining / -Reset
(`RateLimitHeadersMiddleware`).

Plain Django views:  @rate_limited("auth")
Anything else:       rate_limit_check(request, "search")      # raises RateLimited
WebSocket messages:  if not await ws_message_allowed(self.scope): ...   (see ws_message_check)
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict

import redis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import caches
from django.http import HttpRequest, HttpResponse, JsonResponse
from django_ratelimit.core import (
    EXPIRATION_FUDGE,
    _get_window,
    _make_cache_key,
    _split_rate,
    get_usage,
    is_ratelimited,
)
from rest_framework.throttling import BaseThrottle

from .errors import DomainError, ErrorCode
from .metrics import metric_inc
from .quotas import limits_snapshot, quota_check, tenant_limits
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
    """Count this request against the principal's and the tenant's counters for `group`.

    Raises RateLimited (429) when either is over its rate (unless raise_exc=False). The result is
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
        (rate, f"{schema}:{counted}", scope_name)
        for rate, counted, scope_name in ((principal_rate, who, scope), (tenant_rate, "tenant", "tenant"))
        if rate
    ]
    usages = _usage_pipelined(f"rl.{group}", counters, increment)
    if usages is None:  # not a Redis cache: django-ratelimit's own path (two round trips per counter)
        usages = [
            get_usage(
                django_request,
                group=f"rl.{group}",
                key=lambda _g, _r, value=value: value,
                rate=rate,
                increment=increment,
            )
            for rate, value, _ in counters
        ]
    results: list[RateLimitResult] = []
    for (rate, _, scope_name), usage in zip(counters, usages, strict=True):
        if usage is None:
            continue
        limit, period = parse_rate(rate)
        count = usage["count"]
        results.append(
            RateLimitResult(
                group=group,
                scope=scope_name,
                limit=limit,
                remaining=limit - count,
                reset=max(0, usage["time_left"]),
                period=period,
                limited=usage["should_limit"],
            )
        )
    if not results:
        return _unlimited(group)
    limited = [r for r in results if r.limited]
    result = limited[0] if limited else min(results, key=lambda r: r.remaining)
    django_request.ratelimit = result  # type: ignore[attr-defined]  # our own request attribute: no stub has it
    if result.limited:
        _metric(schema, group)
        if raise_exc:
            raise RateLimited(result)
    return result


class _Usage(TypedDict):  # django-ratelimit's get_usage() result
    count: int
    limit: int
    should_limit: bool
    time_left: int


def _usage_pipelined(group: str, counters: list[tuple[str, str, str]], increment: bool) -> list[_Usage | None] | None:
    """django-ratelimit's fixed windows and cache keys (same keys as get_usage), but every counter of the
    request counted in ONE Redis round trip (INCR + EXPIRE, pipelined) instead of add/exists/incr each.

    Returns None when the cache is not Redis (the caller falls back to get_usage)."""
    cache = caches[getattr(settings, "RATELIMIT_USE_CACHE", "default")]
    backend = getattr(cache, "_cache", None)
    if backend is None or not hasattr(backend, "get_client"):
        return None
    keys = []
    try:
        pipe = backend.get_client(None, write=True).pipeline(transaction=False)
        for rate, value, _ in counters:
            limit, period = _split_rate(rate)
            window = _get_window(value, period)
            key = cache.make_and_validate_key(_make_cache_key(group, window, rate, value, is_ratelimited.ALL))
            keys.append((key, limit, window))
            if increment:
                pipe.incr(key)
                pipe.expire(key, period + EXPIRATION_FUDGE)
            else:
                pipe.get(key)
        replies = pipe.execute()
    except redis.RedisError:
        logger.exception("rate limit counters unavailable")
        if getattr(settings, "RATELIMIT_FAIL_OPEN", False):
            return [None for _ in counters]
        return [{"count": 0, "limit": 0, "should_limit": True, "time_left": -1} for _ in counters]
    counts = replies[0::2] if increment else replies
    now = int(time.time())
    return [
        {"count": int(count or 0), "limit": limit, "should_limit": int(count or 0) > limit, "time_left": window - now}
        for (key, limit, window), count in zip(keys, counts, strict=True)
    ]


def _unlimited(group: str) -> RateLimitResult:
    return RateLimitResult(group, "none", 0, 0, 0, 1, False)


def _metric(schema: str, group: str) -> None:
    try:
        metric_inc("rate_limited_total", tenant=schema, group=group)
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
    """DRF throttle for every API view: rate limit by group, and count API-key calls (quota + metering).

    Runs after authentication and permissions, so API keys (principal.api_key) are known.
    """

    def allow_request(self, request: Request, view: APIView) -> bool:
        group = view_rate_group(view, request.method)
        if group:
            rate_limit_check(request, group)
        _count_api_call(request)
        return True


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
    """Adds X-RateLimit-* headers to responses whose request went through a limiter."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        # Plan, override and sub-limits are read once per request, not once per check (throttle rates,
        # api_calls quota, then chat_start's checks). Changes made during the request clear it
        # (limits_cache_clear).
        with limits_snapshot():
            response = self.get_response(request)
        result = getattr(request, "ratelimit", None)
        if isinstance(result, RateLimitResult) and result.scope != "none":
            for name, value in result.headers().items():
                response.setdefault(name, value)
            if result.limited:
                response.setdefault("Retry-After", str(result.retry_after))
        return response


# --- WebSocket messages --------------------------------------------------------------------------


def ws_message_check(scope: dict[str, Any], group: str = "ws_message") -> RateLimitResult:
    """Count one WebSocket message of this connection's user (and tenant); returns the result, never raises.

    Channels consumers do not run inside the tenant's schema, so the schema is named in the key.
    """
    tenant = scope.get("tenant")
    schema = getattr(tenant, "schema_name", "public")
    user = scope.get("user")
    who = f"u{user.pk}" if user is not None and getattr(user, "is_authenticated", False) else "anon"
    principal_rate, tenant_rate = _rates(group, tenant)
    now = int(time.time())
    r = redis_client()
    results = []
    for rate, counted, scope_name in ((principal_rate, who, "user"), (tenant_rate, "tenant", "tenant")):
        if not rate:
            continue
        limit, period = parse_rate(rate)
        window = now - now % period
        key = f"rl:{schema}:{group}:{counted}:{window}"
        pipe = r.pipeline()
        pipe.incr(key)
        pipe.expire(key, period + 1)
        count = pipe.execute()[0]
        results.append(
            RateLimitResult(group, scope_name, limit, limit - count, window + period - now, period, count > limit)
        )
    if not results:
        return _unlimited(group)
    limited = [r for r in results if r.limited]
    return limited[0] if limited else min(results, key=lambda r: r.remaining)


async def ws_message_allowed(scope: dict[str, Any], group: str = "ws_message") -> RateLimitResult:
    """Async form for consumers: `result = await ws_message_allowed(self.scope); if result.limited: ...`.

    Suggested handling: send {"type": "error", "code": "rate_limited", "retry_after": n} and drop the
    message; close with 4429 if the client keeps going.
    """
    return await sync_to_async(ws_message_check, thread_sensitive=False)(scope, group)
