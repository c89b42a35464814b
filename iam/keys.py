"""API-key material: generation, hashing, verification and cheap usage accounting.

Key format: ``agk_<prefix>_<secret>``; prefix = 12 hex chars (48 bits, unique, stored in clear for
lookup and display), secret = 32 random bytes (256 bits, urlsafe base64).

Why HMAC-SHA256 with a server pepper and not argon2/bcrypt: slow hashes protect *low-entropy*
secrets (passwords) from offline guessing. Our secret is 256 bits from `secrets`; guessing it is
infeasible at any hash speed, so a slow hash would only add ~50 ms to every API request. The keyed
HMAC (pepper = settings.API_KEY_PEPPER, never in the database) means a leaked database alone cannot
even be used to test candidate keys. Comparison is constant-time.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import secrets
from datetime import timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.db.models import F
from django.utils import timezone
from redis.client import Pipeline

from accounts.models import Membership
from core.epochs import EpochCache, epochs_read
from core.errors import DomainError, ErrorCode
from core.quotas import LIMITS_EPOCH
from core.redis_clients import Replies, redis_write_later
from core.rls import db_as_system
from core.tenancy import in_tenant

from .members import auth_epoch
from .models import ApiKey
from .policy import membership_for

KEY_PREFIX = "agk_"
USAGE_FLUSH_SECONDS = 60


def api_key_generate() -> tuple[str, str]:
    """(full key, prefix)."""
    prefix = secrets.token_hex(6)
    return f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}", prefix


def api_key_hash(raw_key: str) -> str:
    pepper = getattr(settings, "API_KEY_PEPPER", "") or settings.SECRET_KEY
    return hmac.new(pepper.encode(), raw_key.encode(), hashlib.sha256).hexdigest()


def api_key_parse_prefix(raw_key: str) -> str | None:
    if not raw_key.startswith(KEY_PREFIX):
        return None
    prefix, sep, secret = raw_key[len(KEY_PREFIX) :].partition("_")
    if not sep or len(prefix) != 12 or not secret:
        return None
    return prefix


class ApiKeyRejected(DomainError):
    """Raised with a precise, user-facing reason and one of the api_key_* codes."""

    code = ErrorCode.API_KEY_INVALID
    status = 401


def api_key_verify(raw_key: str) -> ApiKey:
    """The live key for `raw_key` in the current tenant schema, or ApiKeyRejected.

    A key of another organisation simply does not exist in this schema ("invalid").
    Revocation is checked on every request (no caching), so it is immediate.
    """
    prefix = api_key_parse_prefix(raw_key)
    key = None
    if prefix is not None:
        with db_as_system():  # nobody acts yet: finding whose key this is comes before any principal (core.rls)
            key = ApiKey.objects.select_related("created_by").filter(prefix=prefix).first()
    if key is None or not hmac.compare_digest(key.key_hash, api_key_hash(raw_key)):
        raise ApiKeyRejected("Invalid API key.", code=ErrorCode.API_KEY_INVALID)
    if key.revoked_at is not None:
        raise ApiKeyRejected("This API key has been revoked.", code=ErrorCode.API_KEY_REVOKED)
    _reject_if_expired(key)
    if not key.created_by.is_active:
        raise ApiKeyRejected("The owner of this API key is no longer active.", code=ErrorCode.API_KEY_OWNER_INACTIVE)
    return key


def _reject_if_expired(key: ApiKey) -> None:
    if key.expires_at is not None and key.expires_at <= timezone.now():
        raise ApiKeyRejected("This API key has expired.", code=ErrorCode.API_KEY_EXPIRED)


# --- Verified keys, cached per process ----------------------------------------------------------------
# An API request's authentication was two ORM queries (the key with its owner, then the owner's membership): ~2 ms
# of a chat's time to first token. A verified key is kept per process under the tenant's auth epoch
# (core.epochs); every change to a key, a membership or a user bumps the epochs it concerns (iam.signals), so a
# revocation, a removed member or a deactivated owner takes effect at the next request, in every process.
# API_KEY_CACHE_SECONDS bounds an entry's age; 0 turns the cache off.
_verified: EpochCache[tuple[ApiKey, Membership | None]] = EpochCache("API_KEY_CACHE_SECONDS")


def api_key_authenticate(raw_key: str, tenant) -> ApiKey:
    """api_key_verify plus the owner's membership in `tenant` (as `key.owner_membership`), from the process's cache
    while the tenant's auth epoch is unchanged. Counts the use. Raises ApiKeyRejected."""
    cache_key = (tenant.schema_name, api_key_hash(raw_key))
    # Read before the rows (core.epochs); the request checks its api_calls quota next (core.ratelimit), so the
    # limits' epoch comes in the same round trip.
    (epoch, _), _ = epochs_read([auth_epoch(tenant.schema_name), LIMITS_EPOCH])
    cached = _verified.get(cache_key, epoch)
    if cached is None:
        key = api_key_verify(raw_key)
        cached = (key, membership_for(key.created_by, tenant))
        _verified.put(cache_key, epoch, cached)
    else:
        _reject_if_expired(cached[0])  # a key can expire while cached
    key = copy.copy(cached[0])  # requests never share a mutable row
    key.owner_membership = copy.copy(cached[1])
    api_key_record_use(key)
    return key


def _pending_key(key_id: int) -> str:
    return f"iam:apikey:{key_id}:pending"


def api_key_record_use(key: ApiKey) -> None:
    """Count one request. Counts accumulate in Redis and reach the row at most once a minute per key,
    so a busy key costs one cache INCR per request, not a row lock."""
    pending = _pending_key(key.pk)
    if _record_use_pipelined(key.pk):  # on the chat path's first-token budget: no round trip of its own
        return
    cache.add(pending, 0, timeout=None)
    try:
        cache.incr(pending)
    except ValueError:  # evicted between add and incr
        cache.set(pending, 1, timeout=None)
    if cache.add(f"iam:apikey:{key.pk}:flushed", 1, timeout=USAGE_FLUSH_SECONDS):
        api_key_flush_usage(key.pk)


def _record_use_pipelined(key_id: int) -> bool:
    """Same keys and values as the cache calls in api_key_record_use (Django's RedisCache stores integers raw,
    so INCR creates/increments the counter cache.get reads; the cache lives on REDIS_URL), written with the request's
    other counters in one round trip (core.redis_clients). False: not a Redis cache."""
    backend = getattr(cache, "_cache", None)
    if getattr(backend, "get_client", None) is None:
        return False
    pending = cache.make_and_validate_key(_pending_key(key_id))
    flushed = cache.make_and_validate_key(f"iam:apikey:{key_id}:flushed")
    schema = connection.schema_name  # the key's organisation: the flush may run after the request left its schema

    def queue(pipe: Pipeline) -> None:
        pipe.incr(pending)
        pipe.set(flushed, 1, nx=True, ex=USAGE_FLUSH_SECONDS)

    def then(replies: Replies) -> None:
        if replies[1]:  # first use in this window
            with in_tenant(schema):
                api_key_flush_usage(key_id)

    redis_write_later(queue, then)
    return True


def api_key_flush_usage(key_id: int) -> None:
    pending = _pending_key(key_id)
    count = int(cache.get(pending) or 0)
    if count:
        cache.decr(pending, count)  # concurrent increments since the read stay pending
    with db_as_system():  # the key's own bookkeeping, counted while authenticating (before any principal)
        ApiKey.objects.filter(pk=key_id).update(request_count=F("request_count") + count, last_used_at=timezone.now())


def api_key_pending_requests(key_id: int) -> int:
    return int(cache.get(_pending_key(key_id)) or 0)


def default_expiry(days: int | None) -> timezone.datetime | None:
    return timezone.now() + timedelta(days=days) if days else None
