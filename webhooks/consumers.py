"""`/ws/events/`: a dashboard's live feed of its tenant's events, each delivered only to whom may see it.

Members only (session cookie, or an `Authorization` header / `?token=` with a JWT or API key).
Joins the tenant's group, or only the given topics: `/ws/events/?topics=kb.3,agent.5`. Messages
from the client: {"type": "subscribe"|"unsubscribe", "topic": "..."}; {"type": "ping"}.
`?since=<stream id>` first replays what the client missed (from the tenant's durable stream).
Client messages are rate limited (core.ratelimit.ws_message_allowed). Groups carry the schema, so a
socket only ever hears its own tenant.

Audience: every event (replayed or live) reaches the socket only if iam.policy.principal_may_see_subject
says so for the event's subject at delivery time, so a revoked share or a lowered role stops the flow at
the next event. The principal is re-derived from the socket's credentials whenever the tenant's auth
epoch (iam.members.auth_epoch) moves; a socket whose member left is closed. Topics name a subject too
(core.events.topic_subject): a topic the principal may not see is refused with an error and never joined.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django_tenants.utils import tenant_context

from core.audit import actor_for_principal, actor_set
from core.epochs import epoch_get
from core.errors import ErrorCode, error_body, error_event
from core.events import stream_read, tenant_group, topic_subject, topic_valid
from core.ratelimit import ws_message_allowed
from iam.authentication import principal_from_scope
from iam.members import auth_epoch
from iam.policy import Principal, principal_may_see_subject

MAX_TOPICS = 20
CLOSE_FORBIDDEN = 4403
CLOSE_RATE_LIMITED = 4429
TOPIC_REFUSED = "Unknown topic, or one you may not see."


class EventsConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        self.tenant = self.scope["tenant"]
        self.groups_joined: set[str] = set()
        self.seen: list[str] = []
        self.strikes = 0
        self.principal: Principal | None = None
        self.epoch: bytes | None = None
        query = parse_qs(self.scope.get("query_string", b"").decode())
        if not await self._authorised():
            await self.close(code=CLOSE_FORBIDDEN)
            return
        await self.accept()
        requested = [t for raw in query.get("topics", []) for t in raw.split(",") if t][:MAX_TOPICS]
        topics = []
        for topic in requested:
            if await self._topic_allowed(topic):
                topics.append(topic)
                await self._join(topic)
            else:
                await self._refuse(topic)
        if not requested:
            await self._join(None)
        since = (query.get("since") or [""])[0]
        if since:
            for event in await self._replay(since, topics if requested else None):
                await self.send_json(event)
        await self.send_json({"type": "subscribed", "tenant": self.tenant.slug, "topics": topics or None})

    async def disconnect(self, code):
        for group in getattr(self, "groups_joined", set()):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive_json(self, content, **kwargs):
        result = await ws_message_allowed(self.scope)
        if result.limited:
            self.strikes += 1
            await self._error(ErrorCode.RATE_LIMITED, "Too many messages.", retry_after=result.retry_after)
            if self.strikes > 10:
                await self.close(code=CLOSE_RATE_LIMITED)
            return
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == "ping":
            await self.send_json({"type": "pong"})
        elif kind in ("subscribe", "unsubscribe"):
            topic = str(content.get("topic", ""))
            if not topic_valid(topic):
                await self._error(ErrorCode.INVALID, "Invalid topic.", field="topic")
            elif kind == "subscribe":
                if len(self.groups_joined) >= MAX_TOPICS:
                    await self._error(ErrorCode.INVALID, "Too many topics.", field="topic")
                elif not await self._topic_allowed(topic):
                    await self._refuse(topic)
                else:
                    await self._join(topic)
                    await self.send_json({"type": "subscribed", "topic": topic})
            else:
                group = tenant_group(self.tenant.schema_name, topic)
                self.groups_joined.discard(group)
                await self.channel_layer.group_discard(group, self.channel_name)
        else:
            await self._error(ErrorCode.INVALID, "Unknown message type.", field="type")

    async def bus_event(self, message):
        event = message["event"]
        # An event sent to both the tenant group and a topic group we joined arrives twice: drop repeats.
        if event.get("id") in self.seen:
            return
        self.seen = [*self.seen[-199:], event.get("id")]
        verdict = await self._may_see([event.get("subject")])
        if verdict is None:
            await self.close(code=CLOSE_FORBIDDEN)
        elif verdict[0]:
            await self.send_json(event)

    async def _join(self, topic: str | None) -> None:
        group = tenant_group(self.tenant.schema_name, topic)
        self.groups_joined.add(group)
        await self.channel_layer.group_add(group, self.channel_name)

    async def _topic_allowed(self, topic: str) -> bool:
        subject = topic_subject(topic) if topic_valid(topic) else None
        if subject is None:
            return False
        verdict = await self._may_see([subject])
        return bool(verdict and verdict[0])

    async def _refuse(self, topic: str) -> None:
        await self._error(ErrorCode.TOPIC_REFUSED, TOPIC_REFUSED, topic=topic)

    async def _error(self, code: ErrorCode, detail: str, **extra: Any) -> None:
        """Error frames in the one shape of every transport (core.errors, docs/errors.md)."""
        await self.send_json(error_event(error_body(code, detail, **extra)))

    async def _replay(self, since: str, topics: list[str] | None) -> list[dict]:
        entries = [
            {**event, "stream_id": stream_id, "replayed": True}
            for stream_id, event in await database_sync_to_async(stream_read)(self.tenant.schema_name, after=since)
            if topics is None or event.get("topic") in topics
        ]
        verdicts = await self._may_see([event.get("subject") for event in entries])
        if verdicts is None:
            return []
        return [event for event, allowed in zip(entries, verdicts, strict=True) if allowed]

    @database_sync_to_async
    def _may_see(self, subjects: list) -> list[bool] | None:
        """One verdict per subject, as the policy sees it now; None if the socket's principal is gone."""
        with tenant_context(self.tenant):
            if not self._refresh_principal():
                return None
            verdicts: dict[str, bool] = {}  # one batch is one moment: repeated subjects are asked once
            out = []
            for subject in subjects:
                key = repr(sorted(subject.items())) if isinstance(subject, dict) else repr(subject)
                if key not in verdicts:
                    verdicts[key] = principal_may_see_subject(self.principal, subject)
                out.append(verdicts[key])
            return out

    @database_sync_to_async
    def _authorised(self) -> bool:
        # database_sync_to_async threads start on `public` (#518): work inside the tenant's schema.
        with tenant_context(self.tenant):
            return self._refresh_principal()

    def _refresh_principal(self) -> bool:
        """(Re)derive who the socket acts for when the tenant's auth epoch moved (role, membership, key changes)."""
        epoch = epoch_get(auth_epoch(self.tenant.schema_name))  # read before the rows (core.epochs)
        if self.principal is not None and epoch == self.epoch:
            return True
        try:
            principal = principal_from_scope(self.scope, self.tenant)
        except Exception:  # noqa: BLE001 - any authentication failure is a refusal
            principal = None
        if principal is None or not principal.has_scope("read"):
            self.principal = None
            return False
        self.principal, self.epoch = principal, epoch
        actor_set(actor_for_principal(principal))  # back in the socket's task via asgiref's context copy
        return True
