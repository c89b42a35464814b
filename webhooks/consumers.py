"""`/ws/events/`: a dashboard's live feed of its tenant's events (issue 6).

Members only (session cookie, or an `Authorization` header / `?token=` with a JWT or API key).
Joins the tenant's group, or only the given topics: `/ws/events/?topics=kb.3,run.abc`. Messages
from the client: {"type": "subscribe"|"unsubscribe", "topic": "..."}; {"type": "ping"}.
`?since=<stream id>` first replays what the client missed (from the tenant's durable stream).
Client messages are rate limited (core.ratelimit.ws_message_allowed). Groups carry the schema, so a
socket only ever hears its own tenant.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django_tenants.utils import tenant_context

from core.events import stream_read, tenant_group, topic_valid
from core.ratelimit import ws_message_allowed
from iam.authentication import principal_from_scope

MAX_TOPICS = 20
CLOSE_FORBIDDEN = 4403
CLOSE_RATE_LIMITED = 4429


class EventsConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        self.tenant = self.scope["tenant"]
        self.groups_joined: set[str] = set()
        self.seen: list[str] = []
        self.strikes = 0
        query = parse_qs(self.scope.get("query_string", b"").decode())
        if not await self._authorised(query):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        await self.accept()
        topics = [t for raw in query.get("topics", []) for t in raw.split(",") if t]
        if topics:
            for topic in topics[:MAX_TOPICS]:
                await self._join(topic)
        else:
            await self._join(None)
        since = (query.get("since") or [""])[0]
        if since:
            for stream_id, event in await database_sync_to_async(stream_read)(self.tenant.schema_name, after=since):
                if not topics or event.get("topic") in topics:
                    await self.send_json({**event, "stream_id": stream_id, "replayed": True})
        await self.send_json({"type": "subscribed", "tenant": self.tenant.slug, "topics": topics or None})

    async def disconnect(self, code):
        for group in getattr(self, "groups_joined", set()):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive_json(self, content, **kwargs):
        result = await ws_message_allowed(self.scope)
        if result.limited:
            self.strikes += 1
            await self.send_json({"type": "error", "code": "rate_limited", "retry_after": result.retry_after})
            if self.strikes > 10:
                await self.close(code=CLOSE_RATE_LIMITED)
            return
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == "ping":
            await self.send_json({"type": "pong"})
        elif kind in ("subscribe", "unsubscribe"):
            topic = str(content.get("topic", ""))
            if not topic_valid(topic):
                await self.send_json({"type": "error", "code": "invalid", "detail": "Invalid topic."})
            elif kind == "subscribe":
                if len(self.groups_joined) >= MAX_TOPICS:
                    await self.send_json({"type": "error", "code": "invalid", "detail": "Too many topics."})
                else:
                    await self._join(topic)
                    await self.send_json({"type": "subscribed", "topic": topic})
            else:
                group = tenant_group(self.tenant.schema_name, topic)
                self.groups_joined.discard(group)
                await self.channel_layer.group_discard(group, self.channel_name)
        else:
            await self.send_json({"type": "error", "code": "invalid", "detail": "Unknown message type."})

    async def bus_event(self, message):
        event = message["event"]
        # An event sent to both the tenant group and a topic group we joined arrives twice: drop repeats.
        if event.get("id") in self.seen:
            return
        self.seen = [*self.seen[-199:], event.get("id")]
        await self.send_json(event)

    async def _join(self, topic: str | None) -> None:
        if topic is not None and not topic_valid(topic):
            return
        group = tenant_group(self.tenant.schema_name, topic)
        self.groups_joined.add(group)
        await self.channel_layer.group_add(group, self.channel_name)

    @database_sync_to_async
    def _authorised(self, query: dict) -> bool:
        # database_sync_to_async threads start on `public` (#518): work inside the tenant's schema.
        with tenant_context(self.tenant):
            try:
                principal = principal_from_scope(self.scope, self.tenant)
            except Exception:  # noqa: BLE001 - any authentication failure is a refusal
                return False
            return principal.has_scope("read")
