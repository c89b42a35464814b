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
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from .models import ApiKey

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


class ApiKeyRejected(Exception):
    """Raised with a precise, user-facing reason and a stable code."""

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.message = message
        self.code = code


def api_key_verify(raw_key: str) -> ApiKey:
    """The live key for `raw_key` in the current tenant schema, or ApiKeyRejected.

    A key of another organisation simply does not exist in this schema ("invalid").
    Revocation is checked on every request (no caching), so it is immediate.
    """
    prefix = api_key_parse_prefix(raw_key)
    key = None
    if prefix is not None:
        key = ApiKey.objects.select_related("created_by").filter(prefix=prefix).first()
    if key is None or not hmac.compare_digest(key.key_hash, api_key_hash(raw_key)):
        raise ApiKeyRejected("Invalid API key.", "api_key_invalid")
    if key.revoked_at is not None:
        raise ApiKeyRejected("This API key has been revoked.", "api_key_revoked")
    if key.expires_at is not None and key.expires_at <= timezone.now():
        raise ApiKeyRejected("This API key has expired.", "api_key_expired")
    if not key.created_by.is_active:
        raise ApiKeyRejected("The owner of this API key is no longer active.", "api_key_owner_inactive")
    return key


# --- Verified keys, cached per process ----------------------------------------------------------------
# An API request's authentication was two ORM queries (the key with its owner, then the owner's membership): ~2 ms
# of a chat's time to first token. A verified key is kept per process with the tenant's *auth epoch* as read from
# Redis before the rows were; each request reads the epoch again and trusts the entry only while it is unchanged.
# Every change to a key, a membership or a user bumps the epochs it concerns (iam.signals, on commit), so a
# revocation, a removed member or a deactivated owner takes effect on the next request, in every process. Epochs
# are random tokens: a Redis flush invalidates everything. API_KEY_CACHE_SECONDS bounds an entry's age (a backstop
# for rows changed outside Django); 0 turns the cache off.


@dataclass
class _Verified:
    key: ApiKey
    membership: Any  # accounts.Membership of the key's owner in the tenant, or None
    epoch: bytes
    loaded_at: float


_verified: dict[tuple[str, str], _Verified] = {}
_VERIFIED_MAX = 10_000


def _redis():
    return cache._cache.get_client(None, write=True)


def auth_epoch_key(schema: str) -> str:
    return f"iam:auth-epoch:{schema}"


def auth_epoch_bump(schema: str) -> None:
    """Cached verifications of this tenant's keys are reloaded by the next request. Bumped now and again once the
    transaction commits: a request that reloads in between still sees the old rows, and must not keep them."""

    def bump() -> None:
        _redis().set(auth_epoch_key(schema), uuid.uuid4().hex)

    bump()
    transaction.on_commit(bump)


def _auth_epoch(schema: str) -> bytes:
    client = _redis()
    epoch = client.get(auth_epoch_key(schema))
    if epoch is None:  # first use, or Redis lost it: start a new epoch (nothing cached under another is trusted)
        client.set(auth_epoch_key(schema), uuid.uuid4().hex, nx=True)
        epoch = client.get(auth_epoch_key(schema))
    return epoch


def api_key_authenticate(raw_key: str, tenant) -> ApiKey:
    """api_key_verify plus the owner's membership in `tenant` (as `key.owner_membership`), from the process's cache
    while the tenant's auth epoch is unchanged. Counts the use. Raises ApiKeyRejected."""
    from core.access import membership_for

    seconds = getattr(settings, "API_KEY_CACHE_SECONDS", 60)
    cache_key = (tenant.schema_name, api_key_hash(raw_key))
    epoch = _auth_epoch(tenant.schema_name)  # read before the rows: a change committed after it bumps it again
    entry = _verified.get(cache_key)
    if entry is None or entry.epoch != epoch or time.monotonic() - entry.loaded_at > seconds:
        _verified.pop(cache_key, None)
        key = api_key_verify(raw_key)
        entry = _Verified(key, membership_for(key.created_by, tenant), epoch, time.monotonic())
        if seconds > 0:
            if len(_verified) >= _VERIFIED_MAX:
                _verified.clear()
            _verified[cache_key] = entry
    elif entry.key.expires_at is not None and entry.key.expires_at <= timezone.now():
        raise ApiKeyRejected("This API key has expired.", "api_key_expired")
    key = copy.copy(entry.key)  # requests never share a mutable row
    key.owner_membership = copy.copy(entry.membership)
    api_key_record_use(key)
    return key


def api_key_cache_clear() -> None:
    _verified.clear()


def _pending_key(key_id: int) -> str:
    return f"iam:apikey:{key_id}:pending"


def api_key_record_use(key: ApiKey) -> None:
    """Count one request. Counts accumulate in Redis and reach the row at most once a minute per key,
    so a busy key costs one cache INCR per request, not a row lock."""
    pending = _pending_key(key.pk)
    if _record_use_pipelined(key.pk):  # issue 5 (chat first-token latency): 1 Redis round trip instead of 4
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
    so INCR creates/increments the counter cache.get reads), in one pipeline. False: not a Redis cache."""
    backend = getattr(cache, "_cache", None)
    client = getattr(backend, "get_client", None)
    if client is None:
        return False
    pipe = client(None, write=True).pipeline(transaction=False)
    pipe.incr(cache.make_and_validate_key(_pending_key(key_id)))
    pipe.set(cache.make_and_validate_key(f"iam:apikey:{key_id}:flushed"), 1, nx=True, ex=USAGE_FLUSH_SECONDS)
    _, first_in_window = pipe.execute()
    if first_in_window:
        api_key_flush_usage(key_id)
    return True


def api_key_flush_usage(key_id: int) -> None:
    pending = _pending_key(key_id)
    count = int(cache.get(pending) or 0)
    if count:
        cache.decr(pending, count)  # concurrent increments since the read stay pending
    ApiKey.objects.filter(pk=key_id).update(request_count=F("request_count") + count, last_used_at=timezone.now())


def api_key_pending_requests(key_id: int) -> int:
    return int(cache.get(_pending_key(key_id)) or 0)


def default_expiry(days: int | None) -> timezone.datetime | None:
    return timezone.now() + timedelta(days=days) if days else None
