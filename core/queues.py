"""Per-tenant fairness for non-urgent Celery work.

Celery queues are FIFO: a tenant that uploads 10,000 pages puts 10,000 tasks in front of everyone
else's. Work sent with `fair_enqueue` instead waits in a Redis list per tenant, and a dispatcher moves
it to the real Celery queue round-robin across tenants, keeping the broker backlog short
(settings.FAIR_QUEUE_LOW_WATER per queue). So another tenant's job waits behind at most a handful of
tasks, not behind the whole flood.

    from core.queues import fair_enqueue
    fair_enqueue(ingest_document_task, args=[document.pk], queue="ingest")   # inside the tenant context

The dispatcher runs after each enqueue, after each task of a fair queue finishes (task_postrun, in the
worker), and every few seconds from beat (core.fair_dispatch), so nothing is ever stranded.
"""

from __future__ import annotations

import json
import logging
from typing import Any, cast

import redis
from celery import Task, current_app
from django.conf import settings

from .context import current_request_id
from .metrics import metric_set
from .observability import current_actor
from .redis_clients import broker_client, redis_client, reply_text
from .tenancy import current_schema

logger = logging.getLogger(__name__)
FAIR_QUEUES = ("ingest", "webhooks", "default")


def _r() -> redis.Redis:
    return redis_client()


def _broker() -> redis.Redis:
    return broker_client()


def _ring(queue: str) -> str:
    return f"fair:{queue}:ring"


def _pending(queue: str, schema: str) -> str:
    return f"fair:{queue}:t:{schema}"


def fair_enqueue(
    task: Task[..., Any] | str,
    *,
    args: list[Any] | tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
    queue: str = "ingest",
    schema: str | None = None,
) -> None:
    """Queue `task` for the current tenant behind that tenant's own earlier work, fairly against others."""
    schema = schema or current_schema()
    if schema == "public":
        raise RuntimeError("fair_enqueue is per tenant: call it inside a tenant context")
    if current_app.conf.task_always_eager and not isinstance(task, str):
        task.apply(args=tuple(args), kwargs=kwargs or {})  # eager mode (tests, CELERY_TASK_ALWAYS_EAGER)
        return
    name = task if isinstance(task, str) else task.name
    item = json.dumps(
        {
            "task": name,
            "args": list(args),
            "kwargs": kwargs or {},
            "request_id": current_request_id.get(),
            "actor": actor.as_header() if (actor := current_actor.get()) is not None else None,
        }
    )
    r = _r()
    pipe = r.pipeline()
    pipe.rpush(_pending(queue, schema), item)
    pipe.execute()
    # The ring lists each tenant with pending work once (LPOS check keeps it a set).
    if r.lpos(_ring(queue), schema) is None:
        r.rpush(_ring(queue), schema)
    fair_dispatch(queue)


def fair_backlog(queue: str) -> dict[str, int]:
    r = _r()
    schemas = [reply_text(s) for s in r.lrange(_ring(queue), 0, -1)]
    return {schema: int(r.llen(_pending(queue, schema))) for schema in schemas}


def fair_dispatch(queue: str = "ingest", *, low_water: int | None = None) -> int:
    """Move tasks from tenants' pending lists to the Celery queue, one tenant at a time. Returns tasks sent."""
    low_water = settings.FAIR_QUEUE_LOW_WATER if low_water is None else low_water
    r = _r()
    lock = r.lock(f"fair:{queue}:lock", timeout=10, blocking_timeout=0)
    if not lock.acquire(blocking=False):
        return 0  # another dispatcher is at it; it will see our item
    sent = 0
    try:
        budget = low_water - int(_broker().llen(queue))
        while budget > 0:
            ring_head = r.lmove(_ring(queue), _ring(queue), "LEFT", "RIGHT")  # next tenant, rotate
            if ring_head is None:
                break
            schema = reply_text(ring_head)
            # cast: LPOP without a count answers one element or None (the list form is for LPOP key count).
            raw = cast("bytes | str | None", r.lpop(_pending(queue, schema)))
            if raw is None:
                r.lrem(_ring(queue), 0, schema)
                continue
            item = json.loads(raw)
            headers = {"_schema_name": schema}
            if item.get("request_id") and item["request_id"] != "-":
                headers["request_id"] = item["request_id"]
            # Who queued it, not whoever's request happens to dispatch it (None: nobody; see core.observability).
            headers["actor"] = item.get("actor")
            current_app.send_task(item["task"], args=item["args"], kwargs=item["kwargs"], queue=queue, headers=headers)
            sent += 1
            budget -= 1
    finally:
        try:
            lock.release()
        except redis.exceptions.LockError:
            pass
    if sent:
        try:
            metric_set("fair_queue_backlog", sum(fair_backlog(queue).values()), queue=queue)
        except Exception:  # noqa: BLE001
            logger.debug("metric not recorded", exc_info=True)
    return sent


def after_task_refill(sender: Task[..., Any] | None = None, **kwargs: Any) -> None:
    """Worker side: a slot just freed up in this task's queue; refill it fairly."""
    request = getattr(sender, "request", None)
    info = getattr(request, "delivery_info", None) or {}
    queue = info.get("routing_key") or info.get("queue")
    if queue in FAIR_QUEUES:
        try:
            fair_dispatch(queue)
        except Exception:  # noqa: BLE001 - beat's periodic dispatch catches up
            logger.exception("fair dispatch after task failed")
