"""The event bus: one small publish API over Redis.

Browsers get events through the Channels layer (group per tenant, and per tenant+topic);
durable consumers (webhooks, audit) read a capped Redis stream per tenant. Every group, stream
and key carries the tenant's schema, so nothing ever crosses tenants.

    publish_on_commit("document.progress", {"document_id": 7, "percent": 40}, topic="kb.3")
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import redis
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection, transaction

logger = logging.getLogger(__name__)
STREAM_MAXLEN = 10_000
_redis: redis.Redis | None = None


def _redis_client() -> redis.Redis:
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(settings.REDIS_URL)
    return _redis


def tenant_group(schema: str, topic: str | None = None) -> str:
    """Channel-layer group name; only [a-zA-Z0-9_.-] is allowed, schemas qualify."""
    return f"t.{schema}" if not topic else f"t.{schema}.{topic}"


def stream_key(schema: str) -> str:
    return f"events:{schema}"


def _current_schema() -> str:
    schema = getattr(connection, "schema_name", "public")
    if schema == "public":
        raise RuntimeError("events are per tenant: publish inside a tenant context")
    return schema


def publish(event_type: str, payload: dict[str, Any], *, topic: str | None = None, schema: str | None = None) -> dict:
    """Publish now. Prefer publish_on_commit inside a transaction."""
    schema = schema or _current_schema()
    event = {"type": event_type, "topic": topic, "ts": time.time(), "data": payload}
    body = json.dumps(event, default=str)
    try:
        _redis_client().xadd(stream_key(schema), {"event": body}, maxlen=STREAM_MAXLEN, approximate=True)
    except redis.RedisError:
        logger.exception("event %s not written to the durable stream", event_type)
    layer = get_channel_layer()
    if layer is not None:
        message = {"type": "bus.event", "event": event}
        groups = [tenant_group(schema)] + ([tenant_group(schema, topic)] if topic else [])
        for group in groups:
            try:
                async_to_sync(layer.group_send)(group, message)
            except Exception:  # noqa: BLE001 - a dashboard missing an update must not fail the write
                logger.exception("event %s not sent to group %s", event_type, group)
    return event


def publish_on_commit(event_type: str, payload: dict[str, Any], *, topic: str | None = None) -> None:
    schema = _current_schema()
    transaction.on_commit(lambda: publish(event_type, payload, topic=topic, schema=schema))
