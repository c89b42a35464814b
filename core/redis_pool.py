"""One Redis connection pool per URL per process, for Django's cache backend."""

from __future__ import annotations

import threading

import redis


class SharedConnectionPool(redis.ConnectionPool):
    """Django's RedisCache builds its pools per cache object, and cache objects are per thread. Under ASGI each
    request runs in a new thread, so each request connected to Redis again (TCP plus the client's handshake
    commands). This pool class hands every cache object the same pool for the same URL and options.
    redis-py pools reset themselves in a forked child (Celery prefork), so sharing is fork-safe."""

    _shared: dict[str, SharedConnectionPool] = {}
    _lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, **kwargs) -> SharedConnectionPool:
        key = f"{url}|{sorted(kwargs.items())!r}"
        with cls._lock:
            pool = cls._shared.get(key)
            if pool is None:
                pool = cls._shared[key] = super().from_url(url, **kwargs)
        return pool
