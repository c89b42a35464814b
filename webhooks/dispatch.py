"""Hand published events to webhook endpoints (called by core.events.publish for every event).

Kept cheap: a Redis set per tenant lists the event types any active endpoint wants, so tenants without
webhooks pay one SMEMBERS per event. The set is rebuilt from the database when missing.
"""

from __future__ import annotations

from django_tenants.utils import schema_context

from core.redis_clients import redis_client


def _types_key(schema: str) -> str:
    return f"webhooks:{schema}:types"


def subscribed_types_refresh(schema: str) -> set[str]:
    """Recompute the wanted event types of a tenant (after any endpoint change)."""
    from .models import WebhookEndpoint

    with schema_context(schema):
        types: set[str] = set()
        for event_types in WebhookEndpoint.objects.filter(is_active=True).values_list("event_types", flat=True):
            types.update(event_types or [])
    r = redis_client()
    pipe = r.pipeline()
    pipe.delete(_types_key(schema))
    pipe.sadd(_types_key(schema), "__built__", *types)
    pipe.execute()
    return types


def subscribed_types(schema: str) -> set[str]:
    members = {m.decode() for m in redis_client().smembers(_types_key(schema))}
    if "__built__" not in members:
        return subscribed_types_refresh(schema)
    members.discard("__built__")
    return members


def webhooks_fanout_event(*, schema: str, event: dict) -> None:
    wanted = subscribed_types(schema)
    if not wanted or not ("*" in wanted or event.get("type") in wanted):
        return
    from .tasks import webhook_fanout_task

    with schema_context(schema):  # tenant-schemas-celery sends the current schema with the task
        webhook_fanout_task.delay(event)
