"""One Redis reader per event loop for every run stream the process relays (WebSocket, SSE, long-polling).

Each relay used to wait on its run with a blocking XREAD of its own: one Redis connection held per open stream, and
one command, reply and wake-up per event per stream. The hub keeps a single blocking XREAD over every stream a
local client waits on and hands each client the entries after its own position. When tokens arrive faster than the
process relays them, the next XREAD returns many of them at once, so the work per token falls as the load rises.

The streams stay the only source of truth: a client still names its run and the seq it resumes after, the policy
check that let it subscribe happened before (the relays check access first), and keys carry the tenant schema.
A subscription that joins while the XREAD blocks wakes it with an entry on the hub's own short-lived stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass, field
from typing import cast

import redis
import redis.asyncio as aioredis
from django.conf import settings

from core.redis_clients import async_redis_client, loop_local
from core.tenancy import tenant_key

Entry = tuple[int, str, bytes]  # (seq, type, the stored JSON)
WAKE_TTL_SECONDS = 3600  # the wake stream of a process that died goes away by itself


@dataclass(eq=False)
class Subscription:
    key: bytes
    last: int  # the seq this client has been given
    batches: asyncio.Queue[list[Entry] | BaseException] = field(default_factory=asyncio.Queue)


class StreamHub:
    def __init__(self, client: aioredis.Redis):
        self.client = client
        self.watched: dict[bytes, set[Subscription]] = {}
        self.wake_key = tenant_key("agents", "hub", uuid.uuid4().hex, schema="public").encode()
        self.wake_last = b"0-0"
        self.reading = False  # a blocking XREAD is in flight
        self.woken = False
        self.task: asyncio.Task[None] | None = None

    def subscribe(self, key: str, after: int) -> Subscription:
        sub = Subscription(key.encode(), after)
        self.watched.setdefault(sub.key, set()).add(sub)
        if self.task is None or self.task.done():
            self.task = asyncio.ensure_future(self._read())
        elif self.reading and not self.woken:
            self.woken = True  # one wake per blocking read: it re-reads every watched stream when it returns
            asyncio.ensure_future(self._wake())
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """A stream nobody watches any more leaves the next XREAD (the one blocking now may still name it)."""
        subs = self.watched.get(sub.key)
        if subs is None:
            return
        subs.discard(sub)
        if not subs:
            del self.watched[sub.key]

    async def _wake(self) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.xadd(self.wake_key, {"w": "1"}, maxlen=16, approximate=True)
        pipe.expire(self.wake_key, WAKE_TTL_SECONDS)
        with contextlib.suppress(redis.RedisError):  # Redis is gone: the blocked XREAD fails too, and says so
            await pipe.execute()

    async def _read(self) -> None:
        block_ms = int(getattr(settings, "AGENTS_STREAM_HUB_BLOCK_MS", 5000))
        try:
            while self.watched:
                # Each stream from the lowest seq one of its subscribers still needs (two tabs may be apart).
                streams: dict[bytes, bytes | str] = {
                    key: f"0-{min(sub.last for sub in subs)}" for key, subs in self.watched.items()
                }
                streams[self.wake_key] = self.wake_last
                self.reading, self.woken = True, False
                try:
                    result = await self.client.xread(streams, block=block_ms, count=1000)  # type: ignore[arg-type]
                finally:
                    self.reading = False
                # RESP2 replies, as bytes (our clients do not decode): [[key, [(id, fields), ...]], ...]
                replies = cast(list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]], result or [])
                for key, entries in replies:
                    if key == self.wake_key:
                        self.wake_last = entries[-1][0]
                    else:
                        self._deliver(key, entries)
        except Exception as exc:  # noqa: BLE001 - Redis gone after the client's retries: every relay learns it
            for subs in self.watched.values():
                for sub in subs:
                    sub.batches.put_nowait(exc)
            self.watched.clear()

    def _deliver(self, key: bytes, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        subs = self.watched.get(key)
        if not subs:
            return  # unsubscribed while the XREAD was blocking
        decoded = [
            (int(entry_id.split(b"-")[1]), fields.get(b"t", b"").decode(), fields[b"e"]) for entry_id, fields in entries
        ]
        first = decoded[0][0]
        for sub in subs:
            if first > sub.last + 1:
                continue  # joined behind this read (seqs are consecutive): the next XREAD starts from its position
            fresh = decoded if first == sub.last + 1 else [entry for entry in decoded if entry[0] > sub.last]
            if fresh:
                sub.last = fresh[-1][0]
                sub.batches.put_nowait(fresh)


# The running event loop's hub (its Redis connections cannot cross loops, like async_redis_client's).
stream_hub = loop_local(lambda: StreamHub(async_redis_client()))
