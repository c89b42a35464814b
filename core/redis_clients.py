"""Every Redis client of the product comes from here: one pool per URL per process (and one asyncio client per
event loop), so no module opens its own connections or reads REDIS_URL itself.

Keys are the caller's business: they always name the tenant schema (core.tenancy.tenant_key) or `public`.
"""

from __future__ import annotations

import asyncio
import threading
import weakref

import redis
import redis.asyncio as aioredis
import redis.asyncio.retry
import redis.retry
from django.conf import settings
from redis.backoff import ExponentialBackoff


class SharedConnectionPool(redis.ConnectionPool):
    """Django's RedisCache builds its pools per cache object, and cache objects are per thread. Under ASGI each
    request runs in a new thread, so each request connected to Redis again (TCP plus the client's handshake
    commands). This pool class hands every cache object the same pool for the same URL and options.
    redis-py pools reset themselves in a forked child (Celery prefork), so sharing is fork-safe."""

    _shared: dict[str, SharedConnectionPool] = {}
    _shared_lock = threading.Lock()  # not `_lock`: each pool instance has its own RLock by that name

    @classmethod
    def from_url(cls, url: str, **kwargs: object) -> SharedConnectionPool:
        key = f"{url}|{sorted(kwargs.items())!r}"
        with cls._shared_lock:
            pool = cls._shared.get(key)
            if pool is None:
                pool = cls._shared[key] = super().from_url(url, **kwargs)
        return pool


def reply_text(value: bytes | str) -> str:
    """A Redis reply as text. Our clients leave decode_responses off, so replies are bytes; redis-py's types also
    allow str (for clients that decode), hence the union."""
    return value.decode() if isinstance(value, bytes) else value


def reply_bytes(value: bytes | str) -> bytes:
    """A Redis reply as bytes (see reply_text)."""
    return value if isinstance(value, bytes) else value.encode()


# A Redis restart (a deploy, a failover) closes every connection: a command on a closed one reconnects and tries again
# for about five seconds (0.1, 0.2, 0.4, 0.8, then 1 s apart) before it fails, so a restart costs a pause, not every
# answer streaming at that moment. redis-py's clients made from a URL try once. One object per kind: the shared pools
# are keyed by their options.
_RETRY = redis.retry.Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=8)
_ASYNC_RETRY = redis.asyncio.retry.Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=8)

# (url, probe?) -> client. Building a redis.Redis costs ~90 us (its reply-callback tables), and the hot paths ask
# for one several times per request; clients are thread-safe over their pool, so each process keeps one per URL.
_clients: dict[tuple[str, bool], redis.Redis] = {}
_clients_lock = threading.Lock()


def _client(url: str, *, probe: bool) -> redis.Redis:
    client = _clients.get((url, probe))
    if client is None:
        # A probe answers within a second, retrying nothing: a dead Redis must show as dead.
        options = {"socket_timeout": 1, "socket_connect_timeout": 1} if probe else {"retry": _RETRY}
        with _clients_lock:
            client = _clients.get((url, probe))
            if client is None:
                pool = SharedConnectionPool.from_url(url, **options)
                client = _clients[(url, probe)] = redis.Redis(connection_pool=pool)
    return client


def redis_client(url: str | None = None) -> redis.Redis:
    """The process's client for `url` (default: settings.REDIS_URL, read at call time so tests may change it)."""
    return _client(url or settings.REDIS_URL, probe=False)


def broker_client() -> redis.Redis:
    """The Celery broker's Redis (fair-queue rings, queue depths): may be another server than REDIS_URL."""
    return redis_client(settings.CELERY_BROKER_URL)


def probe_client(url: str | None = None) -> redis.Redis:
    """A short-timeout client for health probes and metrics scrapes: a dead Redis answers in a second, not never."""
    return _client(url or settings.REDIS_URL, probe=True)


ASYNC_MAX_CONNECTIONS = 100  # per event loop (redis-py's default, which refused the 101st command at once)
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = weakref.WeakKeyDictionary()


def async_redis_client() -> aioredis.Redis:
    """One asyncio client (connection pool) per running event loop: asyncio connections cannot cross loops.
    No read timeout: XREAD BLOCK waits up to 25 s on purpose (long-polling); connecting still times out."""
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        # A blocking pool: one loop serves every run of an agents worker, and when more commands are in flight than
        # it has connections, a command waits for one (up to 20 s) instead of failing with "Too many connections".
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.REDIS_URL,
            max_connections=ASYNC_MAX_CONNECTIONS,
            timeout=20,
            socket_timeout=None,
            socket_connect_timeout=5,
            health_check_interval=30,
            retry=_ASYNC_RETRY,
        )
        client = _async_clients[loop] = aioredis.Redis(connection_pool=pool)
    return client
