"""The event bus: one small publish API over Redis.

Browsers get events through the Channels layer (group per tenant, and per tenant+topic; the
WebSocket consumer is core.consumers.EventsConsumer at /ws/events/); durable consumers (webhooks,
audit, anything that must not miss one) read a capped Redis stream per tenant (`stream_consume`).
Every group, stream and key carries the tenant's schema, so nothing ever crosses tenants.

    publish_on_commit(DOCUMENT_PROGRESS, {"document_id": 7, "percent": 40}, topic="kb.3")

Event types are strings; the ones below are the documented vocabulary (EVENT_TYPES, also offered to
webhook subscribers). Unknown types still publish (apps may add their own with register_event_type).
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import connection, transaction

from .redis_clients import redis_client

logger = logging.getLogger(__name__)
STREAM_MAXLEN = 10_000
_redis: redis.Redis | None = None
_redis_url: str | None = None

# --- Typed events ---------------------------------------------------------------------------------
AGENT_CREATED = "agent.created"
AGENT_UPDATED = "agent.updated"
AGENT_DELETED = "agent.deleted"
AGENT_VERSION_RESTORED = "agent.version_restored"
DOCUMENT_STATUS = "document.status"
DOCUMENT_PROGRESS = "document.progress"
KB_VERSION_CREATED = "knowledge_base.version"
RUN_QUEUED = "run.queued"
RUN_STARTED = "run.started"
RUN_FINISHED = "run.finished"
QUOTA_WARNING = "quota.warning"
MEMBER_JOINED = "member.joined"
MEMBER_ROLE_CHANGED = "member.role_changed"
MEMBER_REMOVED = "member.removed"
WEBHOOK_DISABLED = "webhook.disabled"
WEBHOOK_TEST = "webhook.test"

EVENT_TYPES: dict[str, str] = {
    AGENT_CREATED: "An agent was created. {agent_id, name}",
    AGENT_UPDATED: "An agent's configuration changed (a new version). {agent_id, version}",
    AGENT_DELETED: "An agent was deleted. {agent_id}",
    AGENT_VERSION_RESTORED: "An agent was rolled back to an earlier version. {agent_id, version, restored_from}",
    DOCUMENT_STATUS: "A document changed status (pending, processing, ready, failed). {document_id, kb_id, status}",
    DOCUMENT_PROGRESS: "Ingestion progress of a document. {document_id, kb_id, percent}",
    KB_VERSION_CREATED: "A knowledge base version was created. {kb_id, version}",
    RUN_QUEUED: "A chat run waits for a worker. {run_id, position}",
    RUN_STARTED: "A chat run started. {run_id, agent_id}",
    RUN_FINISHED: "A chat run finished. {run_id, agent_id, status, tokens_in, tokens_out}",
    QUOTA_WARNING: "A quota reached 80% or 100% of its limit. {quota, level, limit, used}",
    MEMBER_JOINED: "Someone joined the organisation. {user_id, role}",
    MEMBER_ROLE_CHANGED: "A member's role changed. {user_id, from, to}",
    MEMBER_REMOVED: "A member was removed. {user_id}",
    WEBHOOK_DISABLED: "A webhook endpoint was disabled after sustained failure. {endpoint_id, url, reason}",
    WEBHOOK_TEST: "A test event sent from the dashboard. {endpoint_id}",
    # Published by the apps under these names (kept in one list so webhooks can offer them):
    "agent.version_created": "An agent's configuration was saved as a new version. {agent_id, version}",
    "knowledge_base.created": "A knowledge base was created. {kb_id}",
    "knowledge_base.updated": "A knowledge base's settings changed. {kb_id}",
    "knowledge_base.deleted": "A knowledge base was deleted. {kb_id}",
    "team.created": "A team was created. {team_id, name}",
    "team.deleted": "A team was deleted. {team_id}",
    "api_key.created": "An API key was created. {api_key_id, name, user_id}",
    "api_key.revoked": "An API key was revoked. {api_key_id}",
    "resource.shared": "An agent or knowledge base was shared.",
    "resource.ownership_transferred": "Ownership of an agent or knowledge base moved to another member.",
}
_TOPIC_RE = re.compile(r"^[A-Za-z0-9_.-]{1,80}$")


def register_event_type(name: str, description: str) -> None:
    EVENT_TYPES.setdefault(name, description)


def tenant_group(schema: str, topic: str | None = None) -> str:
    """Channel-layer group name; only [a-zA-Z0-9_.-] is allowed, schemas qualify."""
    return f"t.{schema}" if not topic else f"t.{schema}.{topic}"


def topic_valid(topic: str) -> bool:
    return bool(_TOPIC_RE.match(topic or ""))


def stream_key(schema: str) -> str:
    return f"events:{schema}"


def _current_schema() -> str:
    schema = getattr(connection, "schema_name", "public")
    if schema == "public":
        raise RuntimeError("events are per tenant: publish inside a tenant context")
    return schema


def publish(
    event_type: str,
    payload: dict[str, Any],
    *,
    topic: str | None = None,
    schema: str | None = None,
    actor: dict | None = None,
    request_id: str | None = None,
) -> dict:
    """Publish now. Prefer publish_on_commit inside a transaction."""
    schema = schema or _current_schema()
    if topic is not None and not topic_valid(topic):
        raise ValueError(f"invalid topic {topic!r}")
    event = {"id": uuid.uuid4().hex, "type": event_type, "topic": topic, "ts": time.time(), "data": payload}
    if actor is None:
        from .observability import current_actor

        actor = current_actor.get()
    if actor:
        event["actor"] = actor  # ids only (who acted), for the audit log and receivers
    from .context import current_request_id

    request_id = request_id or current_request_id.get()
    if request_id and request_id != "-":
        event["request_id"] = request_id
    body = json.dumps(event, default=str)
    try:
        event["stream_id"] = (
            redis_client().xadd(stream_key(schema), {"event": body}, maxlen=STREAM_MAXLEN, approximate=True).decode()
        )
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
    try:
        from webhooks.dispatch import webhooks_fanout_event

        webhooks_fanout_event(schema=schema, event=event)
    except Exception:  # noqa: BLE001 - the event is in the stream; webhooks.retry_due picks it up
        logger.exception("event %s not handed to webhooks", event_type)
    return event


def publish_on_commit(event_type: str, payload: dict[str, Any], *, topic: str | None = None) -> None:
    from .observability import current_actor

    schema = _current_schema()
    actor = current_actor.get()  # captured now: who made the change being committed, in which request
    from .context import current_request_id

    request_id = current_request_id.get()
    transaction.on_commit(
        lambda: publish(event_type, payload, topic=topic, schema=schema, actor=actor, request_id=request_id)
    )


# --- Durable consumers ----------------------------------------------------------------------------


def _decode(fields: dict) -> dict:
    raw = fields.get(b"event") or fields.get("event") or b"{}"
    return json.loads(raw)


def stream_read(schema: str, *, after: str = "0-0", count: int = 100) -> list[tuple[str, dict]]:
    """Events of one tenant after a stream id (catch-up for a reconnecting dashboard)."""
    entries = redis_client().xrange(stream_key(schema), min=f"({after}" if after != "0-0" else "-", count=count)
    return [(entry_id.decode(), _decode(fields)) for entry_id, fields in entries]


def stream_consume(
    *,
    group: str,
    consumer: str,
    handler: Callable[[str, str, dict], None],
    schemas: list[str] | None = None,
    count: int = 100,
    block_ms: int | None = None,
) -> int:
    """Deliver new stream events to `handler(schema, entry_id, event)` once per consumer group; returns count.

    Runs the handler inside the tenant's schema; acknowledges only after it returns, so a crash
    leaves the entry pending for the next call (pending entries are retried first). Call it in a loop
    (a management command or a periodic task). `schemas` defaults to every tenant.
    """
    from django_tenants.utils import schema_context

    if schemas is None:
        from tenants.models import Tenant

        schemas = list(Tenant.objects.exclude(schema_name="public").values_list("schema_name", flat=True))
    r = redis_client()
    handled = 0
    for schema in schemas:
        key = stream_key(schema)
        try:
            r.xgroup_create(key, group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        for start in ("0", ">"):  # first our own pending (unacked) entries, then new ones
            reply = r.xreadgroup(group, consumer, {key: start}, count=count, block=block_ms if start == ">" else None)
            for _stream, entries in reply or []:
                for entry_id, fields in entries:
                    if not fields:
                        continue
                    with schema_context(schema):
                        handler(schema, entry_id.decode(), _decode(fields))
                    r.xack(key, group, entry_id)
                    handled += 1
    return handled
