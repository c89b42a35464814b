from __future__ import annotations

from celery import shared_task

from core.queues import FAIR_QUEUES, fair_dispatch
from core.tenancy import for_each_tenant

from .services import usage_flush_api_calls


@shared_task(name="usage.flush_api_calls")
def usage_flush_api_calls_task() -> int:
    """Move API-call counters from Redis into ApiCallDaily for every tenant (beat, every minute)."""
    total = 0
    for schema in for_each_tenant():
        total += usage_flush_api_calls(schema=schema)
    return total


@shared_task(name="core.fair_dispatch")
def fair_dispatch_task() -> int:
    """Beat safety net for core.queues: move held-back tenant work to the Celery queues."""

    return sum(fair_dispatch(queue) for queue in FAIR_QUEUES)
