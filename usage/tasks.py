from __future__ import annotations

from celery import shared_task
from django_tenants.utils import get_tenant_model, schema_context

from .services import usage_flush_api_calls


@shared_task(name="usage.flush_api_calls")
def usage_flush_api_calls_task() -> int:
    """Move API-call counters from Redis into ApiCallDaily for every tenant (beat, every minute)."""
    total = 0
    for schema in get_tenant_model().objects.exclude(schema_name="public").values_list("schema_name", flat=True):
        with schema_context(schema):
            total += usage_flush_api_calls(schema=schema)
    return total


@shared_task(name="core.fair_dispatch")
def fair_dispatch_task() -> int:
    """Beat safety net for core.queues: move held-back tenant work to the Celery queues."""
    from core.queues import FAIR_QUEUES, fair_dispatch

    return sum(fair_dispatch(queue) for queue in FAIR_QUEUES)
