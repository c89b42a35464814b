import json

from celery import shared_task
from django.db import connection

from .context import current_request_id
from .redis_clients import redis_client

PROBE_REPLY_SECONDS = 60


@shared_task(name="core.context_probe")
def context_probe_task(reply_key: str) -> None:
    """Diagnostics: report the context a worker runs a task in (schema, tenant, request id) by pushing it to
    the Redis list `reply_key`, where the caller waits for it. No Celery result backend is involved: the
    product runs without one."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_schema()")
        (schema,) = cursor.fetchone()
    tenant = getattr(connection, "tenant", None)
    report = {"schema": schema, "tenant": getattr(tenant, "slug", None), "request_id": current_request_id.get()}
    client = redis_client()
    client.rpush(reply_key, json.dumps(report))
    client.expire(reply_key, PROBE_REPLY_SECONDS)


def context_probe_wait(reply_key: str, timeout: float = 30) -> dict | None:
    """The report a context_probe_task pushed to `reply_key`, or None after `timeout` seconds."""
    popped = redis_client().blpop([reply_key], timeout=timeout)
    return json.loads(popped[1]) if popped else None
