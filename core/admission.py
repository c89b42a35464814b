"""Admission control for one web process: shed what it cannot serve in time, before it costs anything.

Every HTTP request runs its (synchronous) Django chain in a thread of its own, and every WebSocket handshake
authenticates in one. Under twice the load a process can serve, all of them would run at once and share the CPU:
every response gets slow, WebSocket handshakes time out, and clients retry into the same queue. Instead a
bounded number run at once (`WEB_MAX_CONCURRENT`); the others wait in arrival order for at most
`WEB_ADMISSION_WAIT_SECONDS`, and those still waiting then are refused at once: 503 `overloaded` with Retry-After
(HTTP), or an `overloaded` error event and close code 4503 (WebSocket). Admitted work keeps its
latency; refused work costs microseconds and tells the client when to come back.

A request holds its place only until its response starts: a streaming answer (SSE, long-polling, a download)
then streams without holding one, and a WebSocket only until its handshake is accepted or closed. Probes
(`/healthz`, `/readyz`, `/metrics`) are never refused: an orchestrator must see a busy process as alive.

Per-group bounds inside the chain (core.ratelimit in-flight limits) and the chat pool (core.quotas) still apply;
this bound comes first and is the process's own.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from django.conf import settings

from .errors import ErrorCode, error_body
from .metrics import metric_inc

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
RETRY_AFTER_SECONDS = 1
# RFC 6455's "Try Again Later" (1013) is what this means, but daphne's WebSocket layer (autobahn) sends only 1000 or
# 3000-4999 and raises on anything else: 4503, beside our 4401/4403/4404, as HTTP's 503.
WEBSOCKET_OVERLOADED = 4503


class Admission:
    """At most `limit` holders at once; a waiter gives up after `wait_seconds` (FIFO, one event loop)."""

    def __init__(self, limit: int, wait_seconds: float) -> None:
        self.limit = limit
        self.wait_seconds = wait_seconds
        self.held = 0
        self._waiters: list[asyncio.Future[None]] = []

    async def acquire(self) -> bool:
        if self.held < self.limit and not self._waiters:
            self.held += 1
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self.wait_seconds)
        except TimeoutError:
            if waiter.done():  # handed a place just as the wait ran out: keep it
                return True
            self._waiters.remove(waiter)
            return False
        return True

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)  # the place passes on: `held` stays the same
                return
        self.held -= 1


class AdmissionMiddleware:
    """ASGI middleware around the whole application (config.asgi). Bounds from settings, read once."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.admission = Admission(
            limit=int(settings.WEB_MAX_CONCURRENT), wait_seconds=float(settings.WEB_ADMISSION_WAIT_SECONDS)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket") or scope.get("path") in PROBE_PATHS:
            await self.app(scope, receive, send)
            return
        if not await self.admission.acquire():
            _count_refusal(kind)
            if kind == "http":
                await _refuse_http(send)
            else:
                await _refuse_websocket(receive, send)
            return
        held = True

        def give_back() -> None:
            nonlocal held
            if held:
                held = False
                self.admission.release()

        started = {"http": "http.response.start", "websocket": "websocket.accept"}[kind]

        async def send_and_release(message: Message) -> None:
            if message["type"] in (started, "websocket.close"):
                give_back()
            await send(message)

        try:
            await self.app(scope, receive, send_and_release)
        finally:
            give_back()


def _count_refusal(kind: str) -> None:
    # metric_inc talks to Redis: off the event loop, and never awaited (a refusal must stay cheap).
    asyncio.get_running_loop().run_in_executor(
        None, lambda: metric_inc("in_flight_refusals_total", group=f"web:{kind}")
    )


def _overloaded_body() -> dict[str, Any]:
    return error_body(
        ErrorCode.OVERLOADED,
        "This server is busier than it can serve in time; retry shortly.",
        retry_after=RETRY_AFTER_SECONDS,
    )


async def _refuse_http(send: Send) -> None:
    body = json.dumps(_overloaded_body()).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(RETRY_AFTER_SECONDS).encode()),
        (b"cache-control", b"no-store"),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _refuse_websocket(receive: Receive, send: Send) -> None:
    """Accept, say why, close with 4503: a handshake refused before accept reaches a browser as a bare 403."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": json.dumps({"type": "error", "data": _overloaded_body()})})
    await send({"type": "websocket.close", "code": WEBSOCKET_OVERLOADED})
