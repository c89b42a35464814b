"""Every Redis client of the product comes from here: one pool per URL per process (and one asyncio client per
event loop), so no module opens its own connections or reads REDIS_URL itself.

Keys are the caller's business: they always name the tenant schema (core.tenancy.tenant_key) or `public`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

import redis
import redis.asyncio as aioredis
import redis.asyncio.retry
import redis.retry
from django.conf import settings
from redis.backoff import ExponentialBackoff
from redis.client import Pipeline

logger = logging.getLogger(__name__)


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


def keys_delete_prefixed(prefix: str, url: str | None = None) -> int:
    """Delete every key starting with `prefix` (SCAN, then UNLINK in batches); how many. A walk over the whole
    keyspace: for rare bulk invalidations (an organisation restored), never on a request's path."""
    client = redis_client(url)
    pattern = "".join("\\" + c if c in "*?[]\\" else c for c in prefix) + "*"  # the prefix taken literally
    deleted, batch = 0, list[bytes]()
    for key in client.scan_iter(match=pattern, count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            deleted += client.unlink(*batch)
            batch = []
    if batch:
        deleted += client.unlink(*batch)
    return deleted


def redis_client(url: str | None = None) -> redis.Redis:
    """The process's client for `url` (default: settings.REDIS_URL, read at call time so tests may change it)."""
    return _client(url or settings.REDIS_URL, probe=False)


def broker_client() -> redis.Redis:
    """The Celery broker's Redis (fair-queue rings, queue depths): may be another server than REDIS_URL."""
    return redis_client(settings.CELERY_BROKER_URL)


def probe_client(url: str | None = None) -> redis.Redis:
    """A short-timeout client for health probes and metrics scrapes: a dead Redis answers in a second, not never."""
    return _client(url or settings.REDIS_URL, probe=True)


# --- Counters a request bumps, written in one round trip -------------------------------------------------------
# An API-key request counts its use twice (the key's own counter, the metered API calls), neither answer deciding
# anything about the request: inside `redis_writes_batched()` (every HTTP request: core.middleware) such writes wait
# for the end of the block and go to Redis together, one round trip instead of one each.

Replies = list[Any]
_Write = tuple[Callable[[Pipeline], None], Callable[[Replies], None] | None]  # (queue the commands, take their replies)
_write_batch: ContextVar[list[_Write] | None] = ContextVar("redis_write_batch", default=None)


@contextmanager
def redis_writes_batched() -> Iterator[None]:
    """Run the writes queued with redis_write_later inside this block in one pipeline when it ends. A failure is
    logged, not raised: the block's answer is made already, and what failed was bookkeeping."""
    batch: list[_Write] = []
    token = _write_batch.set(batch)
    try:
        yield
    finally:
        _write_batch.reset(token)
        if batch:
            try:
                _writes_run(batch)
            except redis.RedisError:
                logger.exception("batched Redis writes lost")


def redis_write_later(queue: Callable[[Pipeline], None], then: Callable[[Replies], None] | None = None) -> None:
    """`queue(pipe)` adds write commands (keys computed by the caller, now); `then(replies)` gets their replies once
    they ran: at the end of the current redis_writes_batched() block, or at once outside one."""
    batch = _write_batch.get()
    if batch is None:
        _writes_run([(queue, then)])
    else:
        batch.append((queue, then))


def _writes_run(batch: list[_Write]) -> None:
    pipe = redis_client().pipeline(transaction=False)
    spans = []
    for queue, then in batch:
        start = len(pipe.command_stack)
        queue(pipe)
        spans.append((start, len(pipe.command_stack), then))
    replies = pipe.execute()
    for start, end, then in spans:
        if then is not None:
            then(replies[start:end])


T = TypeVar("T")


def loop_local(factory: Callable[[], T]) -> Callable[[], T]:
    """A getter of one object per running event loop, made by `factory` on the loop's first call: what holds
    asyncio Redis connections cannot cross loops. Weakly keyed: a closed loop's object goes with it."""
    objects: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = weakref.WeakKeyDictionary()

    def get() -> T:
        loop = asyncio.get_running_loop()
        obj = objects.get(loop)
        if obj is None:
            obj = objects[loop] = factory()
        return obj

    return get


ASYNC_MAX_CONNECTIONS = 100  # per event loop (redis-py's default, which refused the 101st command at once)


def _async_client_new() -> aioredis.Redis:
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
    return aioredis.Redis(connection_pool=pool)


# One asyncio client (connection pool) per running event loop. No read timeout: XREAD BLOCK waits up to 25 s on
# purpose (long-polling); connecting still times out.
async_redis_client = loop_local(_async_client_new)
