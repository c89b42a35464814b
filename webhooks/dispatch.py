"""Hand published events to webhook endpoints: the sink WebhooksConfig.ready() registers with core.events.

Kept cheap: a Redis set per tenant lists the event types any active endpoint wants
(selectors.subscribed_types), so tenants without webhooks pay one SMEMBERS per event.
"""

from __future__ import annotations

from django_tenants.utils import schema_context

from .selectors import subscribed_types, subscribed_types_refresh
from .tasks import webhook_fanout_task

__all__ = ["subscribed_types_refresh", "webhooks_fanout_event"]


def webhooks_fanout_event(schema: str, event: dict) -> None:
    wanted = subscribed_types(schema)
    if not wanted or not ("*" in wanted or event.get("type") in wanted):
        return
    with schema_context(schema):  # tenant-schemas-celery sends the current schema with the task
        webhook_fanout_task.delay(event)
