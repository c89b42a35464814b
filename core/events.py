"""The event bus: one small publish API over Redis.

Browsers get events through the Channels layer (group per tenant, and per tenant+topic; the
WebSocket consumer is webhooks.consumers.EventsConsumer at /ws/events/); durable consumers (webhooks,
audit, anything that must not miss one) read a capped Redis stream per tenant (`stream_consume`).
Every group, stream and key carries the tenant's schema, so nothing ever crosses tenants.

    publish_on_commit(
        KB_VERSION_CREATED,
        {"knowledge_base_id": 3, "name": "Handbook", "current_version": 12},
        subject=event_subject("knowledge_base", 3, owner_id=kb.owner_id),
        topic="kb.3",
    )

Every event names its subject: the object whose visibility decides who may receive the event,
`{"type": "knowledge_base", "id": 3, "owner_id": 8}` (owner_id: the member it belongs to, when it has
one). Document events name their knowledge base, runs their own id and owner. Receivers ask
iam.policy.principal_may_see_subject at delivery time; an event without a subject reaches admins only.

Event types are strings; EVENT_TYPES is the documented vocabulary, offered to webhook subscribers, and
EVENT_PAYLOAD_KEYS the keys of each one's `data` (publish refuses a payload that differs: the keys are a
contract with integrators, documented in docs/webhooks.md). Apps may add types with register_event_type.
Other deliveries (webhooks) register a sink (register_sink) in their AppConfig.ready().
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, cast

import redis
from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer
from django.db import connection, transaction
from django_tenants.utils import get_tenant_model, schema_context

from .context import current_request_id
from .observability import actor_stamp
from .redis_clients import async_redis_client, redis_client, reply_text
from .tenancy import tenant_key

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
KB_CREATED = "knowledge_base.created"
KB_UPDATED = "knowledge_base.updated"
KB_DELETED = "knowledge_base.deleted"
KB_VERSION_CREATED = "knowledge_base.version"
RUN_STARTED = "run.started"
RUN_FINISHED = "run.finished"
QUOTA_WARNING = "quota.warning"
MEMBER_JOINED = "member.joined"
MEMBER_ROLE_CHANGED = "member.role_changed"
MEMBER_REMOVED = "member.removed"
TEAM_CREATED = "team.created"
TEAM_DELETED = "team.deleted"
API_KEY_CREATED = "api_key.created"
API_KEY_REVOKED = "api_key.revoked"
RESOURCE_SHARED = "resource.shared"
RESOURCE_OWNERSHIP_TRANSFERRED = "resource.ownership_transferred"
WEBHOOK_DISABLED = "webhook.disabled"

_DOCUMENT_KEYS = ("document_id", "knowledge_base_id", "title", "status", "progress", "error")
_KB_KEYS = ("knowledge_base_id", "name", "current_version")
# type -> (description, keys of `data`). docs/webhooks.md lists the same (webhooks.tests checks both ways).
_VOCABULARY: dict[str, tuple[str, tuple[str, ...]]] = {
    AGENT_CREATED: ("An agent was created.", ("agent_id", "name")),
    AGENT_UPDATED: ("An agent's configuration changed (a new version).", ("agent_id", "version")),
    AGENT_DELETED: ("An agent was deleted.", ("agent_id",)),
    AGENT_VERSION_RESTORED: (
        "An agent was rolled back to an earlier version (as a new version).",
        ("agent_id", "version", "restored_from"),
    ),
    DOCUMENT_STATUS: ("A document changed status (pending, processing, ready, failed, deleted).", _DOCUMENT_KEYS),
    DOCUMENT_PROGRESS: ("Ingestion progress of a document (progress 0-100, stage).", (*_DOCUMENT_KEYS, "stage")),
    KB_CREATED: ("A knowledge base was created.", _KB_KEYS),
    KB_UPDATED: ("A knowledge base's settings changed.", _KB_KEYS),
    KB_DELETED: ("A knowledge base was deleted.", _KB_KEYS),
    KB_VERSION_CREATED: ("A knowledge base version was published.", _KB_KEYS),
    RUN_STARTED: ("A chat run started.", ("run_id", "agent_id")),
    RUN_FINISHED: ("A chat run finished.", ("run_id", "agent_id", "status", "tokens_in", "tokens_out")),
    QUOTA_WARNING: ("A quota reached 80% or 100% of its limit.", ("quota", "level", "limit", "used")),
    MEMBER_JOINED: ("Someone joined the organisation.", ("user_id", "role")),
    MEMBER_ROLE_CHANGED: ("A member's role changed.", ("user_id", "from", "to")),
    MEMBER_REMOVED: ("A member was removed.", ("user_id",)),
    TEAM_CREATED: ("A team was created.", ("team_id", "name")),
    TEAM_DELETED: ("A team was deleted.", ("team_id",)),
    API_KEY_CREATED: ("An API key was created.", ("api_key_id", "name", "user_id")),
    API_KEY_REVOKED: ("An API key was revoked.", ("api_key_id",)),
    RESOURCE_SHARED: (
        "An agent or knowledge base was shared with a team or the organisation (team_id null), or unshared.",
        ("resource_type", "resource_id", "team_id", "level"),
    ),
    RESOURCE_OWNERSHIP_TRANSFERRED: (
        "Ownership of an agent or knowledge base moved to another member.",
        ("resource_type", "resource_id", "from", "to"),
    ),
    WEBHOOK_DISABLED: ("A webhook endpoint was disabled after sustained failure.", ("endpoint_id", "url", "reason")),
}
EVENT_TYPES: dict[str, str] = {name: description for name, (description, _keys) in _VOCABULARY.items()}
EVENT_PAYLOAD_KEYS: dict[str, frozenset[str]] = {name: frozenset(keys) for name, (_d, keys) in _VOCABULARY.items()}

# Topics a client may subscribe to name a subject too: "kb.3" is knowledge_base 3 (see topic_subject).
TOPIC_PREFIXES: dict[str, str] = {"kb": "knowledge_base", "agent": "agent", "run": "run"}
TOPIC_NAMES: dict[str, str] = {"quota": "quota", "webhooks": "webhook_endpoint"}
_TOPIC_RE = re.compile(r"^[A-Za-z0-9_.-]{1,80}$")


def register_event_type(name: str, description: str, keys: tuple[str, ...] | None = None) -> None:
    """Add an app's event type to the vocabulary (and, with `keys`, hold its payloads to them)."""
    EVENT_TYPES.setdefault(name, description)
    if keys is not None:
        EVENT_PAYLOAD_KEYS.setdefault(name, frozenset(keys))


def event_subject(
    kind: str, id: int | str | None = None, *, owner_id: int | None = None, agent_id: int | None = None
) -> dict[str, Any]:
    """The object an event concerns, as events carry it: {"type", "id", "owner_id"?, "agent_id"?} (see the module
    docstring). `agent_id` names the agent an object belongs to (a run): API keys limited to other agents never
    hear of it."""
    subject: dict[str, Any] = {"type": kind, "id": id}
    if owner_id is not None:
        subject["owner_id"] = owner_id
    if agent_id is not None:
        subject["agent_id"] = agent_id
    return subject


def topic_subject(topic: str) -> dict[str, Any] | None:
    """The subject a topic names ("kb.3" -> knowledge_base 3), or None for a topic of no known form."""
    if topic in TOPIC_NAMES:
        return event_subject(TOPIC_NAMES[topic])
    prefix, _, rest = topic.partition(".")
    if prefix in TOPIC_PREFIXES and rest:
        return event_subject(TOPIC_PREFIXES[prefix], int(rest) if rest.isdigit() else rest)
    return None


# A published event, as JSON: id, type, subject, topic, ts, data, and actor, request_id, stream_id when known.
Event = dict[str, Any]

# Deliveries beyond the bus (webhooks): called with (schema, event) after every publish.
_SINKS: list[Callable[[str, Event], None]] = []


def register_sink(sink: Callable[[str, Event], None]) -> None:
    """Hand every published event to `sink(schema, event)` too; call from an AppConfig.ready(). Idempotent."""
    if sink not in _SINKS:
        _SINKS.append(sink)


def _check_payload(event_type: str, payload: dict[str, Any]) -> None:
    keys = EVENT_PAYLOAD_KEYS.get(event_type)
    if keys is not None and set(payload) != keys:
        raise ValueError(
            f"{event_type} payload keys {sorted(payload)} differ from the documented {sorted(keys)} "
            "(core.events and docs/webhooks.md)"
        )


def tenant_group(schema: str, topic: str | None = None) -> str:
    """Channel-layer group name; only [a-zA-Z0-9_.-] is allowed, schemas qualify."""
    return f"t.{schema}" if not topic else f"t.{schema}.{topic}"


def topic_valid(topic: str) -> bool:
    return bool(_TOPIC_RE.match(topic or ""))


def stream_key(schema: str) -> str:
    return tenant_key("events", schema=schema)


def _current_schema() -> str:
    schema = getattr(connection, "schema_name", "public")
    if schema == "public":
        raise RuntimeError("events are per tenant: publish inside a tenant context")
    return schema


def _event_new(
    event_type: str,
    payload: dict[str, Any],
    *,
    subject: dict[str, Any] | None,
    topic: str | None,
    actor: dict[str, Any] | None,
    request_id: str | None,
) -> Event:
    if topic is not None and not topic_valid(topic):
        raise ValueError(f"invalid topic {topic!r}")
    _check_payload(event_type, payload)
    event: Event = {
        "id": uuid.uuid4().hex,
        "type": event_type,
        "subject": subject,
        "topic": topic,
        "ts": time.time(),
        "data": payload,
    }
    if actor is None:
        actor = actor_stamp()
    if actor:
        event["actor"] = actor  # ids only (who acted), for the audit log and receivers
    request_id = request_id or current_request_id.get()
    if request_id and request_id != "-":
        event["request_id"] = request_id
    return event


def _groups(schema: str, topic: str | None) -> list[str]:
    return [tenant_group(schema)] + ([tenant_group(schema, topic)] if topic else [])


def _to_sinks(schema: str, event: Event) -> None:
    for sink in _SINKS:
        try:
            sink(schema, event)
        except Exception:  # noqa: BLE001 - the event is in the stream; a sink failing must not fail the write
            logger.exception("event %s not handed to sink %s", event["type"], getattr(sink, "__name__", sink))


def publish(
    event_type: str,
    payload: dict[str, Any],
    *,
    subject: dict[str, Any] | None = None,
    topic: str | None = None,
    schema: str | None = None,
    actor: dict[str, Any] | None = None,
    request_id: str | None = None,
) -> Event:
    """Publish now. Prefer publish_on_commit inside a transaction; in async code, apublish."""
    schema = schema or _current_schema()
    event = _event_new(event_type, payload, subject=subject, topic=topic, actor=actor, request_id=request_id)
    body = json.dumps(event, default=str)
    try:
        event["stream_id"] = reply_text(
            redis_client().xadd(stream_key(schema), {"event": body}, maxlen=STREAM_MAXLEN, approximate=True)
        )
    except redis.RedisError:
        logger.exception("event %s not written to the durable stream", event_type)
    layer = get_channel_layer()
    if layer is not None:
        message = {"type": "bus.event", "event": event}
        for group in _groups(schema, topic):
            try:
                async_to_sync(layer.group_send)(group, message)
            except Exception:  # noqa: BLE001 - a dashboard missing an update must not fail the write
                logger.exception("event %s not sent to group %s", event_type, group)
    _to_sinks(schema, event)
    return event


async def apublish(
    event_type: str,
    payload: dict[str, Any],
    *,
    schema: str,
    subject: dict[str, Any] | None = None,
    topic: str | None = None,
) -> Event:
    """publish() for code on an event loop (the chat runtime): the same event, written with the loop's own Redis
    client and channel-layer connections. From a thread, publish() runs each group send on a fresh event loop, so
    channels_redis connects again every time: a few ms per event, on the path of a run's tokens."""
    event = _event_new(event_type, payload, subject=subject, topic=topic, actor=None, request_id=None)
    body = json.dumps(event, default=str)
    try:
        stream_id = await async_redis_client().xadd(
            stream_key(schema), {"event": body}, maxlen=STREAM_MAXLEN, approximate=True
        )
        event["stream_id"] = reply_text(stream_id)
    except redis.RedisError:
        logger.exception("event %s not written to the durable stream", event_type)
    layer = get_channel_layer()
    if layer is not None:
        message = {"type": "bus.event", "event": event}
        for group in _groups(schema, topic):
            try:
                await layer.group_send(group, message)
            except Exception:  # noqa: BLE001 - a dashboard missing an update must not fail the run
                logger.exception("event %s not sent to group %s", event_type, group)
    if _SINKS:  # sinks are synchronous (webhooks: one SMEMBERS, maybe a Celery send)
        await sync_to_async(_to_sinks, thread_sensitive=False)(schema, event)
    return event


def publish_on_commit(
    event_type: str, payload: dict[str, Any], *, subject: dict[str, Any] | None = None, topic: str | None = None
) -> None:
    schema = _current_schema()
    _check_payload(event_type, payload)  # at the call site, where a wrong payload is a bug to see
    actor = actor_stamp()  # captured now: who made the change being committed, in which request
    request_id = current_request_id.get()
    transaction.on_commit(
        lambda: publish(
            event_type, payload, subject=subject, topic=topic, schema=schema, actor=actor, request_id=request_id
        )
    )


# --- Durable consumers ----------------------------------------------------------------------------


def _decode(fields: Mapping[bytes | str, bytes | str]) -> Event:
    raw = fields.get(b"event") or fields.get("event") or b"{}"
    event: Event = json.loads(raw)
    return event


def stream_read(schema: str, *, after: str = "0-0", count: int = 100) -> list[tuple[str, Event]]:
    """Events of one tenant after a stream id (catch-up for a reconnecting dashboard)."""
    entries = redis_client().xrange(stream_key(schema), min=f"({after}" if after != "0-0" else "-", count=count)
    return [
        (reply_text(entry_id), _decode(fields))
        for entry_id, fields in entries or []
        if entry_id is not None and fields is not None  # redis-py's entry type allows a deleted entry; XRANGE has none
    ]


def stream_consume(
    *,
    group: str,
    consumer: str,
    handler: Callable[[str, str, Event], None],
    schemas: list[str] | None = None,
    count: int = 100,
    block_ms: int | None = None,
) -> int:
    """Deliver new stream events to `handler(schema, entry_id, event)` once per consumer group; returns count.

    Runs the handler inside the tenant's schema; acknowledges only after it returns, so a crash
    leaves the entry pending for the next call (pending entries are retried first). Call it in a loop
    (a management command or a periodic task). `schemas` defaults to every tenant.
    """
    if schemas is None:
        tenants = get_tenant_model().objects.exclude(schema_name="public")
        schemas = list(tenants.values_list("schema_name", flat=True))
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
            # cast: our clients speak RESP2, where XREADGROUP answers [[stream, [(id, fields), ...]]] (redis-py's
            # type also covers RESP3's dict form).
            reply = cast(
                "list[list[Any]] | None",
                r.xreadgroup(group, consumer, {key: start}, count=count, block=block_ms if start == ">" else None),
            )
            for _stream, entries in reply or []:
                for entry_id, fields in entries:
                    if not fields:
                        continue
                    with schema_context(schema):
                        handler(schema, reply_text(entry_id), _decode(fields))
                    r.xack(key, group, entry_id)
                    handled += 1
    return handled
