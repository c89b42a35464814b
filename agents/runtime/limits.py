"""Per-agent and per-tenant concurrency limits, kept in Redis so every web process and worker agrees.

Admission is one Lua script (atomic): a run holds a slot in two sorted sets until it ends; the score is a
deadline, so slots of crashed workers expire by themselves instead of blocking an agent forever.
"""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings

from core.errors import DomainError
from core.quotas import chat_run_release  # quota: issue 6

from .stream import sync_redis


class LimitExceeded(DomainError):
    code = "limit_exceeded"
    status = 429


_ADMIT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 1 end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[5]) then return 2 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
redis.call('EXPIRE', KEYS[1], 86400)
redis.call('EXPIRE', KEYS[2], 86400)
return 0
"""


def effective_limits(configured: dict[str, Any] | None) -> dict[str, Any]:
    limits = dict(settings.AGENTS_DEFAULT_LIMITS)
    for key, value in (configured or {}).items():
        if key in limits and value is not None:
            limits[key] = value
    return limits


def _keys(schema: str, agent_id: int) -> list[str]:
    return [f"agents:{schema}:active:agent:{agent_id}", f"agents:{schema}:active:tenant"]


def run_admit(*, schema: str, agent_id: int, run_id: str, limits: dict[str, Any]) -> None:
    now = time.time()
    deadline = now + float(limits["run_timeout_seconds"]) + 60  # + queueing slack
    outcome = sync_redis().eval(
        _ADMIT,
        2,
        *_keys(schema, agent_id),
        now,
        deadline,
        run_id,
        int(limits["max_concurrent_runs"]),
        int(settings.AGENTS_MAX_CONCURRENT_RUNS_PER_TENANT),
    )
    if outcome == 1:
        raise LimitExceeded(
            f"This agent is already answering {limits['max_concurrent_runs']} messages; try again in a moment.",
            extra={"limit": "agent_concurrency"},
        )
    if outcome == 2:
        raise LimitExceeded(
            "Your organisation has reached its limit of concurrent agent runs; try again in a moment.",
            extra={"limit": "tenant_concurrency"},
        )


async def run_release(*, schema: str, agent_id: int, run_id: str, client) -> None:
    pipe = client.pipeline(transaction=False)
    for key in _keys(schema, agent_id):
        pipe.zrem(key, run_id)
    await pipe.execute()
    chat_run_release(schema=schema, run_id=run_id)  # quota: issue 6 (a few Redis calls; fine on the loop)


def run_release_sync(*, schema: str, agent_id: int, run_id: str) -> None:
    pipe = sync_redis().pipeline(transaction=False)
    for key in _keys(schema, agent_id):
        pipe.zrem(key, run_id)
    pipe.execute()
    chat_run_release(schema=schema, run_id=run_id)  # quota: issue 6
