"""Run events in Redis: one stream per run, namespaced by tenant schema, with expiry.

Every event is {"seq", "type", "run_id", "data", "ts"}; the stream entry id is "0-<seq>", so resuming "after N"
is a plain XREAD from "0-N" and every event is delivered exactly once, by whichever web process serves the client.

Types: run.queued ({"position": n}; only while the chat pool is full, always before message.start),
message.start, token, citation, tool.call, tool.result, message.end (usage, timings, status), error.
message.end is always the last event of a run.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from django.conf import settings

from core.redis_clients import async_redis_client, loop_local, redis_client, reply_bytes
from core.tenancy import tenant_key

from .fanout import stream_hub

EVENT_TYPES = ("run.queued", "message.start", "token", "citation", "tool.call", "tool.result", "message.end", "error")
TERMINAL = "message.end"
TOKEN_WAIT_SECONDS = 0.01  # how long a token write may hold the model's stream before the next tokens are merged
META_FIELDS = (
    "agent_id",
    "user_id",
    "conversation_id",
    "message_id",
    "message_created",
    "agent_version_id",
    "api_key_id",
    "status",
    "queued_at",  # set when the run joined the chat queue (the pool was full)
    "provider_stamp",  # the provider's stamp as chat_start saw it: the worker's compiled-agent cache needs no query
    "question",  # the run's question (its row may not be written yet when the worker starts)
    "history_before",  # the conversation's turns before this time are the history ("" for a new conversation)
)


def stream_key(schema: str, run_id: str) -> str:
    return tenant_key("agents", "run", run_id, "events", schema=schema)


def meta_key(schema: str, run_id: str) -> str:
    return tenant_key("agents", "run", run_id, "meta", schema=schema)


def cancel_key(schema: str, run_id: str) -> str:
    return tenant_key("agents", "run", run_id, "cancel", schema=schema)


def alive_key(schema: str, run_id: str) -> str:
    """Present while a worker executes the run (renewed by the runner, expires AGENTS_RUN_HEARTBEAT_SECONDS after
    the worker stops renewing it)."""
    return tenant_key("agents", "run", run_id, "alive", schema=schema)


def run_meta_write(schema: str, run_id: str, meta: dict[str, Any]) -> None:
    key = meta_key(schema, run_id)
    pipe = redis_client().pipeline()
    pipe.hset(key, mapping={k: "" if v is None else str(v) for k, v in meta.items()})
    pipe.expire(key, settings.AGENTS_RUN_EVENTS_TTL_SECONDS)
    pipe.execute()


def run_cancel_request(schema: str, run_id: str) -> None:
    """Ask the worker running `run_id` to stop (it checks every AGENTS_CANCEL_POLL_SECONDS; see runner)."""
    redis_client().set(cancel_key(schema, run_id), "1", ex=settings.AGENTS_RUN_EVENTS_TTL_SECONDS)


def run_meta_read(schema: str, run_id: str) -> dict[str, str] | None:
    raw = redis_client().hgetall(meta_key(schema, run_id))
    if not raw:
        return None
    return {k.decode(): v.decode() for k, v in raw.items()}


async def run_start_read(
    schema: str, run_id: str, keys: Sequence[str] = ()
) -> tuple[dict[str, str] | None, list, bool, list[bytes | None]]:
    """What a worker reads before it starts a run, in one round trip: the metadata (None if it expired), the
    stream's last entry (non-empty when the run was queued, or redelivered), whether a worker was renewing the
    run's liveness key (a redelivered message of a run that is still running: the broker gave it back after a lost
    connection), and the values of `keys` (the epochs its cached configuration is checked against). The same round
    trip marks the run alive, before any event of it is written."""
    pipe = async_redis_client().pipeline(transaction=False)
    pipe.hgetall(meta_key(schema, run_id))
    pipe.xrevrange(stream_key(schema, run_id), count=1)
    pipe.set(alive_key(schema, run_id), "1", ex=settings.AGENTS_RUN_HEARTBEAT_SECONDS, get=True)
    for key in keys:
        pipe.get(key)
    raw, last, was_alive, *values = await pipe.execute()
    meta = {k.decode(): v.decode() for k, v in raw.items()} if raw else None
    return meta, last, was_alive is not None, [None if value is None else reply_bytes(value) for value in values]


class StreamWriter:
    """Writes the events of every run an event loop executes, many runs per round trip.

    Each XADD on a connection of its own cost the worker a pool checkout, a socket write, a wake-up for the reply and a
    check-in, per token per run: at hundreds of runs streaming at once that was most of the worker's CPU. Writes
    queued while one pipeline is in flight go out together in the next one, so the work per event falls as the load
    rises. A run awaits its own writes one after the other, so its events still reach its stream in seq order."""

    def __init__(self, client: Any):
        self.client = client
        self.queue: list[tuple[Callable[[Any], int], asyncio.Future[None]]] = []
        self.flushing = False

    def write(self, add: Callable[[Any], int]) -> asyncio.Future[None]:
        """Queue `add(pipeline)`, which adds one event's commands and returns how many; done once they ran."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.queue.append((add, done))
        if not self.flushing:
            self.flushing = True
            asyncio.ensure_future(self._flush())
        return done

    async def _flush(self) -> None:
        try:
            while self.queue:
                batch, self.queue = self.queue, []
                pipe = self.client.pipeline(transaction=False)
                counts = [add(pipe) for add, _ in batch]
                try:
                    results = await pipe.execute(raise_on_error=False)
                except Exception as exc:  # noqa: BLE001 - Redis gone after the client's retries: each run learns it
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                    continue
                start = 0
                for (_, done), count in zip(batch, counts, strict=True):
                    failed = next((r for r in results[start : start + count] if isinstance(r, Exception)), None)
                    start += count
                    if done.done():
                        continue  # its run was cancelled meanwhile: the event is written all the same
                    if failed is None:
                        done.set_result(None)
                    else:
                        done.set_exception(failed)
        finally:
            self.flushing = False


# The running event loop's writer (its Redis connections cannot cross loops, like async_redis_client's).
stream_writer = loop_local(lambda: StreamWriter(async_redis_client()))


class RunEmitter:
    """Writes one run's events (single writer: the worker executing the run)."""

    def __init__(self, schema: str, run_id: str):
        self.schema = schema
        self.run_id = run_id
        self.key = stream_key(schema, run_id)
        self.seq = 0
        self.writer = stream_writer()
        self._pending: asyncio.Future[dict[str, Any]] | None = None
        self._tokens: list[str] = []  # text not written yet (see token)
        self._flusher: asyncio.Future[None] | None = None

    def emit_soon(self, event_type: str, data: dict[str, Any]) -> None:
        """Emit without waiting for Redis (the run goes on loading meanwhile); the next emit waits for this one,
        so events still reach the stream in sequence order."""
        self._pending = asyncio.ensure_future(self._write(event_type, data))

    async def token(self, text: str) -> None:
        """Emit a token. While Redis keeps up, each token is its own event, written before the model's stream is
        read on. A write still in flight after TOKEN_WAIT_SECONDS (a busy worker or Redis) no longer holds the model's
        stream: the tokens that arrive meanwhile go out together as one token event once it is done, so a busy
        worker writes (and every relay sends) fewer, larger events instead of falling behind. A failed write is
        raised here or by the next emit."""
        if self._flusher is not None and self._flusher.done():
            self._flusher.result()
        self._tokens.append(text)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush_tokens())
        await asyncio.wait((self._flusher,), timeout=TOKEN_WAIT_SECONDS)

    async def _flush_tokens(self) -> None:
        await self._wait_pending()
        while self._tokens:
            text = "".join(self._tokens)
            self._tokens.clear()
            await self._write("token", {"text": text})

    async def _wait_pending(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            await pending

    async def emit(self, event_type: str, data: dict[str, Any]) -> dict[str, Any]:
        await self._wait_pending()
        if self._flusher is not None:
            # Shielded, and forgotten only once done: a cancelled run still writes the tokens it produced (they are
            # stored) before its closing events.
            await asyncio.shield(self._flusher)
            self._flusher = None
        return await self._write(event_type, data)

    async def _write(self, event_type: str, data: dict[str, Any]) -> dict[str, Any]:
        assert event_type in EVENT_TYPES, event_type
        self.seq += 1
        event = {"seq": self.seq, "type": event_type, "run_id": self.run_id, "data": data, "ts": time.time()}
        body = json.dumps(event, default=str)
        seq = self.seq

        def add(pipe: Any) -> int:
            pipe.xadd(self.key, {"t": event_type, "e": body}, id=f"0-{seq}")
            if seq != 1 and event_type != TERMINAL:
                return 1
            pipe.expire(self.key, settings.AGENTS_RUN_EVENTS_TTL_SECONDS)
            if event_type != TERMINAL:
                return 2
            pipe.hset(meta_key(self.schema, self.run_id), "status", data.get("status", "complete"))
            return 3

        await self.writer.write(add)
        return event


def emit_sync(schema: str, run_id: str, seq: int, event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    """Write event `seq` from sync code (the web request records a queued run's first run.queued event
    before the worker exists; the worker continues the numbering from the stream's last id)."""
    assert event_type in EVENT_TYPES, event_type
    event = {"seq": seq, "type": event_type, "run_id": run_id, "data": data, "ts": time.time()}
    pipe = redis_client().pipeline(transaction=False)
    pipe.xadd(stream_key(schema, run_id), {"t": event_type, "e": json.dumps(event, default=str)}, id=f"0-{seq}")
    pipe.expire(stream_key(schema, run_id), settings.AGENTS_RUN_EVENTS_TTL_SECONDS)
    pipe.execute()
    return event


# Appends the closing events of a run whose worker died, only if nobody wrote to the stream since it was read (the
# worker after all, or another web process closing it too): KEYS stream, meta; ARGV last id read, then id, type and
# body of each event, then the TTL.
_APPEND_IF_LAST = """
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #last == 0 or last[1][1] ~= ARGV[1] then return 0 end
redis.call('XADD', KEYS[1], ARGV[2], 't', ARGV[3], 'e', ARGV[4])
redis.call('XADD', KEYS[1], ARGV[5], 't', ARGV[6], 'e', ARGV[7])
redis.call('EXPIRE', KEYS[1], ARGV[8])
redis.call('HSET', KEYS[2], 'status', 'incomplete')
return 1
"""


def orphaned_events(schema: str, run_id: str) -> list[dict[str, Any]] | None:
    """The events of a run a worker started and stopped renewing without finishing it (killed), else None."""
    pipe = redis_client().pipeline(transaction=False)
    pipe.exists(alive_key(schema, run_id))
    pipe.xrange(stream_key(schema, run_id))
    alive, entries = pipe.execute()
    if alive or not entries:
        return None
    events = _decode(entries)
    if events[-1]["type"] == TERMINAL or not any(e["type"] == "message.start" for e in events):
        return None  # finished, or not started by any worker yet (queued in the broker)
    return events


def run_close_events(schema: str, run_id: str, after: int, error: dict[str, Any], end: dict[str, Any]) -> bool:
    """Append `error` then message.end after event `after`, unless the stream moved on meanwhile."""
    now = time.time()
    bodies = [
        json.dumps({"seq": after + n, "type": kind, "run_id": run_id, "data": data, "ts": now}, default=str)
        for n, kind, data in ((1, "error", error), (2, TERMINAL, end))
    ]
    done = redis_client().eval(
        _APPEND_IF_LAST,
        2,
        stream_key(schema, run_id),
        meta_key(schema, run_id),
        f"0-{after}",
        f"0-{after + 1}",
        "error",
        bodies[0],
        f"0-{after + 2}",
        TERMINAL,
        bodies[1],
        settings.AGENTS_RUN_EVENTS_TTL_SECONDS,
    )
    return bool(done)


def _decode(entries) -> list[dict[str, Any]]:
    return [json.loads(fields[b"e"]) for _id, fields in entries]


def read_events_now(schema: str, run_id: str, after: int = 0) -> list[dict[str, Any]]:
    return _decode(redis_client().xrange(stream_key(schema, run_id), min=f"(0-{after}", max="+"))


async def read_events(schema: str, run_id: str, after: int, *, block_ms: int) -> list[dict[str, Any]]:
    """Events with seq > after; waits up to block_ms for the first one (long-polling, through the process's hub)."""
    hub = stream_hub()
    sub = hub.subscribe(stream_key(schema, run_id), after)
    try:
        async with asyncio.timeout(block_ms / 1000):
            batch = await sub.batches.get()
    except TimeoutError:
        return []
    finally:
        hub.unsubscribe(sub)
    if isinstance(batch, BaseException):
        raise batch
    return [json.loads(body) for _seq, _kind, body in batch]


OnIdle = Callable[[], Awaitable[Any]]


async def iter_events(
    schema: str,
    run_id: str,
    after: int = 0,
    *,
    idle_timeout: float = 600.0,
    heartbeat: float | None = None,
    on_idle: OnIdle | None = None,
) -> AsyncIterator[dict[str, Any] | None]:
    """Every event after `after`, then stop after message.end. Yields None as a heartbeat when idle (only if
    `heartbeat` is given); `on_idle` is awaited whenever no event came for a heartbeat (the relays close runs whose
    worker died)."""
    batches = iter_raw_batches(
        schema, run_id, after, idle_timeout=idle_timeout, heartbeat=heartbeat or 5.0, on_idle=on_idle
    )
    async for batch in batches:
        if batch is None:
            if heartbeat:
                yield None
            continue
        for _seq, _kind, body in batch:
            yield json.loads(body)


async def iter_raw_batches(
    schema: str,
    run_id: str,
    after: int = 0,
    *,
    idle_timeout: float = 600.0,
    heartbeat: float = 5.0,
    on_idle: OnIdle | None = None,
) -> AsyncIterator[list[tuple[int, str, bytes]] | None]:
    """The run's events after `after` as (seq, type, JSON bytes), in the batches they arrived in (several when
    tokens come faster than the relay sends them), ending with the batch that holds message.end. The stored text is
    forwarded as is (no json round trip per token per client). Yields None as a heartbeat when idle, after
    awaiting `on_idle`."""
    hub = stream_hub()
    sub = hub.subscribe(stream_key(schema, run_id), after)
    idle_since = time.monotonic()
    try:
        while True:
            try:
                async with asyncio.timeout(heartbeat):
                    batch = await sub.batches.get()
            except TimeoutError:
                if on_idle is not None:
                    await on_idle()
                if time.monotonic() - idle_since > idle_timeout:
                    return
                yield None
                continue
            if isinstance(batch, BaseException):
                raise batch
            idle_since = time.monotonic()
            for n, entry in enumerate(batch):
                if entry[1] == TERMINAL:
                    yield batch[: n + 1]
                    return
            yield batch
    finally:
        hub.unsubscribe(sub)


async def iter_raw_events(
    schema: str,
    run_id: str,
    after: int = 0,
    *,
    idle_timeout: float = 600.0,
    heartbeat: float = 5.0,
    on_idle: OnIdle | None = None,
) -> AsyncIterator[tuple[int, str, bytes] | None]:
    """iter_raw_batches one event at a time."""
    batches = iter_raw_batches(schema, run_id, after, idle_timeout=idle_timeout, heartbeat=heartbeat, on_idle=on_idle)
    async for batch in batches:
        if batch is None:
            yield None
            continue
        for entry in batch:
            yield entry


def sse_format_raw(seq: int, kind: str, body: bytes) -> bytes:
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (seq, kind.encode(), body)


def sse_format(event: dict[str, Any]) -> bytes:
    return (f"id: {event['seq']}\nevent: {event['type']}\ndata: {json.dumps(event, default=str)}\n\n").encode()
