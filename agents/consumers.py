"""WebSocket chat: /ws/agents/{id}/chat/.

Auth: the session cookie, or `Authorization: Bearer <jwt>` / `Api-Key <key>` as a header or in the query string
(`?token=<jwt>` / `?api_key=<key>`, for browsers that cannot set headers).
Client -> server:  {"type": "chat", "message": "...", "conversation_id": "..."}
                   {"type": "chat", "conversation_id": "...", "regenerate": <answer id>}  (another alternative)
                   {"type": "resume", "run_id": "...", "after": N}
                   {"type": "cancel", "run_id": "..."}   (run_id optional: the run this socket streams)
Server -> client:  {"type": "run.accepted", "run_id", "conversation_id", "message_id", "agent_version"} then the
                   run's events ({"seq", "type", "run_id", "data", "ts"}), exactly as over SSE and long-polling.
Errors before a run exists: {"type": "error", "seq": 0, "data": {"code", "detail", ...}} (core.errors.error_event;
the data is the body an HTTP client gets for the same error, see docs/errors.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from core.audit import actor_for_principal, actor_set
from core.errors import DomainError, ErrorCode, InvalidInput, NotFound, error_body, error_event
from core.ratelimit import RateLimited, ws_message_check
from core.tenancy import in_tenant
from iam.authentication import principal_from_scope
from iam.policy import principal_require_scope

from . import selectors, services
from .runtime.runner import run_close_if_orphaned
from .runtime.stream import iter_raw_events

logger = logging.getLogger(__name__)


def _db_parallel(fn):
    """database_sync_to_async on the shared executor instead of the one thread-sensitive thread: the handshakes
    and run starts of many sockets then proceed in parallel instead of queuing behind each other."""

    @functools.wraps(fn)
    async def wrapper(*args, **kwargs):
        return await database_sync_to_async(fn, thread_sensitive=False)(*args, **kwargs)

    return wrapper


class AgentChatConsumer(AsyncJsonWebsocketConsumer):
    # Events come from the run's Redis stream, not the channel layer: no layer subscription per socket (one Redis
    # connection less each, and no channels_redis receive loop, which redis-py 8's 5 s socket timeout breaks).
    channel_layer_alias = "agents-chat-no-layer"

    async def connect(self):
        self.tenant = self.scope["tenant"]
        self.agent_id = self.scope["url_route"]["kwargs"]["agent_id"]
        self.forwarder: asyncio.Task | None = None
        try:
            self.principal = await self._authorize()
        except Exception as exc:  # noqa: BLE001 - any auth failure closes the handshake
            code = 4404 if isinstance(exc, DomainError) and exc.status == 404 else 4401
            if isinstance(exc, DomainError) and exc.status == 403:
                code = 4403
            await self.close(code=code)
            return
        actor_set(actor_for_principal(self.principal))  # this socket's changes are audited as its principal
        await self.accept()

    @_db_parallel
    def _authorize(self):
        with in_tenant(self.tenant):
            principal = principal_from_scope(self.scope, self.tenant)
            principal_require_scope(principal, "chat")
            # The same "use" check as agent_get_for_principal, on the agent cached under the tenant's agents epoch:
            # a handshake costs no query (a thousand sockets opening at once each paid a three-table lookup).
            selectors.agent_get_for_chat(principal, self.agent_id)
            return principal

    async def disconnect(self, code):
        if self.forwarder is not None:
            self.forwarder.cancel()

    async def receive_json(self, content, **kwargs):
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == "chat":
            try:
                handles = await self._start(
                    content.get("message", ""), content.get("conversation_id"), content.get("regenerate")
                )
            except DomainError as exc:
                await self.send_json(error_event(exc.as_dict()))
                return
            await self.send_json({"type": "run.accepted", **handles})
            self._forward(handles["run_id"], 0)
        elif kind == "resume":
            run_id, after = str(content.get("run_id", "")), content.get("after", 0)
            try:
                await self._check_run(run_id)
                after = int(after)
            except (DomainError, ValueError, TypeError):
                await self.send_json(error_event(error_body(ErrorCode.NOT_FOUND, "Unknown run.")))
                return
            self._forward(run_id, after)
        elif kind == "cancel":
            run_id = str(content.get("run_id") or getattr(self, "run_id", "") or "")
            try:
                await self._cancel(run_id)
            except DomainError as exc:
                await self.send_json(error_event(exc.as_dict()))
        else:
            hint = (
                'Send {"type": "chat", "message": ...}, {"type": "resume", "run_id": ..., "after": N} '
                'or {"type": "cancel"}.'
            )
            await self.send_json(error_event(error_body(ErrorCode.INVALID, hint)))

    @_db_parallel
    def _start(self, message, conversation_id, regenerate):
        # The same "chat" rate as POST .../chat/ (core.ratelimit), in the start's thread hop rather than one of its
        # own: a refused message is counted nowhere and starts nothing.
        limit = ws_message_check(self.scope, "chat", self.principal)
        if limit.limited:
            raise RateLimited(limit)
        with in_tenant(self.tenant):
            agent = selectors.agent_get_for_chat(self.principal, self.agent_id)
            if not isinstance(message, str):
                raise InvalidInput("The message must be text.", field="message")
            if regenerate is not None and (isinstance(regenerate, bool) or not isinstance(regenerate, int)):
                raise InvalidInput("regenerate must be the id of an answer.", field="regenerate")
            return services.chat_start(
                principal=self.principal,
                agent=agent,
                message=message,
                conversation_id=conversation_id,
                regenerate=regenerate,
            )

    def _run_meta(self, run_id) -> dict[str, str]:
        """A run of this socket's agent that the principal may see (inside the tenant's context)."""
        meta = selectors.run_get_for_principal(self.principal, run_id)
        if str(meta["agent_id"]) != str(self.agent_id):
            raise NotFound("Unknown run.")
        return meta

    @_db_parallel
    def _cancel(self, run_id):
        with in_tenant(self.tenant):
            services.run_cancel(meta=self._run_meta(run_id), run_id=run_id)

    @_db_parallel
    def _check_run(self, run_id):
        with in_tenant(self.tenant):
            self._run_meta(run_id)

    def _forward(self, run_id: str, after: int) -> None:
        self.run_id = run_id  # what a bare {"type": "cancel"} stops
        if self.forwarder is not None:
            self.forwarder.cancel()
        self.forwarder = asyncio.create_task(self._pump(run_id, after))

    async def _pump(self, run_id: str, after: int) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            schema = self.tenant.schema_name
            on_idle = functools.partial(run_close_if_orphaned, schema, run_id)  # the worker may have died
            async for item in iter_raw_events(schema, run_id, after, on_idle=on_idle):
                if item is not None:
                    await self.send(text_data=item[2].decode())  # the stored JSON, forwarded as is
