"""The run-event transport on a real Redis: one reader per process for every relayed run (agents.runtime.fanout),
the worker's token writes that merge when Redis falls behind (RunEmitter.token), and the writes of many runs
sharing round trips (StreamWriter)."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
import redis
import redis.asyncio as aioredis

from agents.runtime.fanout import StreamHub, stream_hub
from agents.runtime.stream import (
    RunEmitter,
    StreamWriter,
    iter_raw_batches,
    iter_raw_events,
    read_events,
    stream_key,
)
from core.redis_clients import async_redis_client

SCHEMA = "t_fanout_test"


def new_run() -> str:
    return f"test-{uuid.uuid4().hex}"


async def write(run_id: str, *kinds: str) -> None:
    """Events as the worker writes them: consecutive seqs from the stream's last one."""
    client = async_redis_client()
    key = stream_key(SCHEMA, run_id)
    last = await client.xrevrange(key, count=1)
    seq = int(last[0][0].split(b"-")[1]) if last else 0
    for kind in kinds:
        seq += 1
        body = json.dumps({"seq": seq, "type": kind, "run_id": run_id, "data": {"text": f"t{seq}"}, "ts": 0})
        await client.xadd(key, {"t": kind, "e": body}, id=f"0-{seq}")
    await client.expire(key, 60)


async def collect(run_id: str, after: int = 0) -> list[int]:
    return [item[0] async for item in iter_raw_events(SCHEMA, run_id, after) if item is not None]


def test_clients_of_one_run_at_different_positions_each_get_every_later_event_once_in_order(settings):
    settings.AGENTS_STREAM_HUB_BLOCK_MS = 60_000  # a client that joins must wake the blocked reader, not wait it out

    async def scenario():
        run_id = new_run()
        await write(run_id, "message.start", "token", "token")
        first = asyncio.ensure_future(collect(run_id))
        await asyncio.sleep(0.2)  # the hub blocks on the stream, past the three events
        resumed = asyncio.ensure_future(collect(run_id, after=2))  # another tab resuming after seq 2
        late = asyncio.ensure_future(collect(run_id))  # and one from the start, behind both
        await asyncio.sleep(0.2)
        await write(run_id, "token", "token", "message.end")
        return await asyncio.wait_for(asyncio.gather(first, resumed, late), timeout=30)

    first, resumed, late = asyncio.run(scenario())
    assert first == late == [1, 2, 3, 4, 5, 6]
    assert resumed == [3, 4, 5, 6]


def test_one_reader_serves_many_runs_and_each_client_sees_only_its_own(settings):
    settings.AGENTS_STREAM_HUB_BLOCK_MS = 60_000

    async def scenario():
        runs = [new_run() for _ in range(20)]
        readers = [asyncio.ensure_future(collect(run_id)) for run_id in runs]
        await asyncio.sleep(0.2)
        for n, run_id in enumerate(runs):
            await write(run_id, "message.start", *["token"] * n, "message.end")
        seen = await asyncio.wait_for(asyncio.gather(*readers), timeout=30)
        return runs, seen, stream_hub()

    runs, seen, hub = asyncio.run(scenario())
    for n, seqs in enumerate(seen):
        assert seqs == list(range(1, n + 3)), runs[n]
    assert hub.watched == {}  # every client left when its run ended


def test_events_that_arrive_together_come_as_one_batch_ending_at_message_end():
    async def scenario():
        run_id = new_run()
        await write(run_id, "message.start", "token", "token", "message.end", "token")
        return [batch async for batch in iter_raw_batches(SCHEMA, run_id)]

    batches = asyncio.run(scenario())
    assert [[entry[0] for entry in batch] for batch in batches if batch] == [[1, 2, 3, 4]]


def test_long_polling_waits_for_the_next_event_and_returns_nothing_after_its_wait():
    async def scenario():
        run_id = new_run()
        await write(run_id, "message.start")
        waiting = asyncio.ensure_future(read_events(SCHEMA, run_id, 1, block_ms=30_000))
        await asyncio.sleep(0.2)
        await write(run_id, "token")
        got = await asyncio.wait_for(waiting, timeout=30)
        nothing = await read_events(SCHEMA, run_id, 2, block_ms=100)
        return got, nothing

    got, nothing = asyncio.run(scenario())
    assert [(e["seq"], e["type"]) for e in got] == [(2, "token")]
    assert nothing == []


def test_a_reader_failure_reaches_every_waiting_client():
    async def scenario():
        hub = StreamHub(aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2))  # nothing there
        subs = [hub.subscribe(stream_key(SCHEMA, new_run()), 0) for _ in range(3)]
        return [await asyncio.wait_for(sub.batches.get(), timeout=30) for sub in subs], hub.watched

    failures, watched = asyncio.run(scenario())
    assert all(isinstance(failure, redis.ConnectionError) for failure in failures) and watched == {}


@pytest.mark.parametrize("slow_ms", [0, 50])
def test_tokens_written_while_redis_is_busy_merge_and_keep_their_order(settings, slow_ms):
    settings.AGENTS_RUN_EVENTS_TTL_SECONDS = 60

    async def scenario():
        run_id = new_run()
        emitter = RunEmitter(SCHEMA, run_id)
        write_now = emitter._write

        async def slow_write(event_type, data):
            await asyncio.sleep(slow_ms / 1000)  # a loaded Redis or worker
            return await write_now(event_type, data)

        emitter._write = slow_write  # type: ignore[method-assign]
        await emitter.emit("message.start", {})
        for n in range(20):
            await emitter.token(f" t{n}")
        await emitter.emit("message.end", {"status": "complete"})
        entries = await async_redis_client().xrange(stream_key(SCHEMA, run_id))
        return [json.loads(fields[b"e"]) for _id, fields in entries]

    events = asyncio.run(scenario())
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["type"] == "message.start" and events[-1]["type"] == "message.end"
    tokens = [e for e in events if e["type"] == "token"]
    assert "".join(e["data"]["text"] for e in tokens) == "".join(f" t{n}" for n in range(20))
    if slow_ms:
        assert len(tokens) < 20  # merged while a write took longer than the model may wait for it


def test_runs_writing_at_once_share_round_trips_and_each_stream_keeps_its_order(settings, monkeypatch):
    settings.AGENTS_RUN_EVENTS_TTL_SECONDS = 60
    pipelines = []
    real_pipeline = aioredis.Redis.pipeline

    def counted(self, *args, **kwargs):
        pipelines.append(1)
        return real_pipeline(self, *args, **kwargs)

    monkeypatch.setattr(aioredis.Redis, "pipeline", counted)

    async def run(run_id: str) -> None:
        emitter = RunEmitter(SCHEMA, run_id)
        await emitter.emit("message.start", {})
        for n in range(5):
            await emitter.emit("token", {"text": f" t{n}"})
        await emitter.emit("message.end", {"status": "complete"})

    async def scenario(run_ids: list[str]):
        await asyncio.gather(*(run(run_id) for run_id in run_ids))
        streams = []
        for run_id in run_ids:
            entries = await async_redis_client().xrange(stream_key(SCHEMA, run_id))
            streams.append([json.loads(fields[b"e"]) for _id, fields in entries])
        return streams

    run_ids = [new_run() for _ in range(20)]
    streams = asyncio.run(scenario(run_ids))
    for run_id, events in zip(run_ids, streams, strict=True):
        assert [e["seq"] for e in events] == list(range(1, 8))
        assert [e["type"] for e in events] == ["message.start", *["token"] * 5, "message.end"]
        assert {e["run_id"] for e in events} == {run_id}
    assert len(pipelines) == 7  # one round trip per step of the 20 runs, not 140


def test_a_failed_stream_write_reaches_the_run():
    async def scenario():
        writer = StreamWriter(aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2))
        emitters = [RunEmitter(SCHEMA, new_run()) for _ in range(2)]
        for emitter in emitters:
            emitter.writer = writer
        return await asyncio.gather(*(e.emit("message.start", {}) for e in emitters), return_exceptions=True)

    assert all(isinstance(outcome, redis.ConnectionError) for outcome in asyncio.run(scenario()))
