"""One poll per event loop stops the runs someone asked to stop and keeps the others alive (agents.runtime.runner)."""

from __future__ import annotations

import asyncio
import uuid

from agents.runtime.runner import cancel_watch
from agents.runtime.stream import alive_key, run_cancel_request
from core.redis_clients import async_redis_client

SCHEMA = "t_cancel_watch_test"


def test_only_the_run_asked_to_stop_is_cancelled_and_the_others_stay_alive(settings):
    settings.AGENTS_CANCEL_POLL_SECONDS = 0.05
    settings.AGENTS_RUN_HEARTBEAT_SECONDS = 1  # renewed every poll past a quarter of it
    settings.AGENTS_RUN_EVENTS_TTL_SECONDS = 60
    run_ids = [f"test-{uuid.uuid4().hex}" for _ in range(3)]

    async def scenario():
        watch = cancel_watch()
        runs = [asyncio.ensure_future(asyncio.sleep(30)) for _ in run_ids]
        requested = [asyncio.Event() for _ in run_ids]
        watched = [
            watch.watch(SCHEMA, run_id, task, ev) for run_id, task, ev in zip(run_ids, runs, requested, strict=True)
        ]
        await asyncio.to_thread(run_cancel_request, SCHEMA, run_ids[1])
        await asyncio.wait_for(requested[1].wait(), timeout=30)
        await asyncio.sleep(0.6)  # past a quarter of the heartbeat: the liveness keys are renewed
        alive = [await async_redis_client().ttl(alive_key(SCHEMA, run_id)) for run_id in run_ids]
        cancelled = [task.cancelled() or task.cancelling() > 0 for task in runs]
        for task, item in zip(runs, watched, strict=True):
            watch.unwatch(item)
            task.cancel()
        return cancelled, [ev.is_set() for ev in requested], alive

    cancelled, requested, alive = asyncio.run(scenario())
    assert cancelled == [False, True, False]
    assert requested == [False, True, False]
    assert alive[0] > 0 and alive[2] > 0  # the runs still going are renewed by the same poll
