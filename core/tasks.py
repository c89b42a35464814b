import json
from typing import TypedDict

from celery import shared_task
from django.db import connection

from .context import current_request_id
from .redis_clients import redis_client

PROBE_REPLY_SECONDS = 60


class ContextProbeReport(TypedDict):
    schema: str
    tenant: str | None
    request_id: str


@shared_task(name="core.context_probe")
def context_probe_task(reply_key: str) -> None:
    """Diagnostics: report the context a worker runs a task in (schema, tenant, request id) by pushing it to
    the Redis list `reply_key`, where the caller waits for it. No Celery result backend is involved: the
    product runs without one."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_schema()")
        (schema,) = cursor.fetchone()
    tenant = getattr(connection, "tenant", None)
    report: ContextProbeReport = {
        "schema": schema,
        "tenant": getattr(tenant, "slug", None),
        "request_id": current_request_id.get(),
    }
    client = redis_client()
    client.rpush(reply_key, json.dumps(report))
    client.expire(reply_key, PROBE_REPLY_SECONDS)


def context_probe_wait(reply_key: str, timeout: float = 30) -> ContextProbeReport | None:
    """The report a context_probe_task pushed to `reply_key`, or None after `timeout` seconds."""
    popped = redis_client().blpop([reply_key], timeout=timeout)
    if not popped:
        return None
    report: ContextProbeReport = json.loads(popped[1])
    return report
