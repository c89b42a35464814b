"""The web process's admission bound (core.admission): a bounded number run, the others wait briefly or are shed."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from core.admission import WEBSOCKET_OVERLOADED, AdmissionMiddleware


class HeldApp:
    """An ASGI app whose HTTP responses wait for `release` (before or after their headers, per `stream`)."""

    def __init__(self, *, stream: bool = False) -> None:
        self.release = asyncio.Event()
        self.stream = stream
        self.started = 0

    async def __call__(self, scope, receive, send) -> None:
        self.started += 1
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": 1000})
            return
        if self.stream:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await self.release.wait()
        else:
            await self.release.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def middleware(app, settings, *, limit: int, wait: float) -> AdmissionMiddleware:
    settings.WEB_MAX_CONCURRENT = limit
    settings.WEB_ADMISSION_WAIT_SECONDS = wait
    return AdmissionMiddleware(app)


async def call(mw, path: str = "/api/v1/me/", kind: str = "http") -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    connect = {"type": "websocket.connect"} if kind == "websocket" else {"type": "http.request", "body": b""}
    messages = [connect]

    async def receive():
        if messages:
            return messages.pop()
        await asyncio.sleep(3600)

    async def send(message):
        sent.append(message)

    await mw({"type": kind, "path": path, "headers": []}, receive, send)
    return sent


def status_of(sent) -> int:
    return next(m["status"] for m in sent if m["type"] == "http.response.start")


def test_past_the_bound_a_request_waits_then_is_shed_with_retry_after(settings):
    async def scenario():
        app = HeldApp()
        mw = middleware(app, settings, limit=2, wait=0.05)
        running = [asyncio.create_task(call(mw)) for _ in range(2)]
        await asyncio.sleep(0.01)
        refused = await call(mw)
        assert app.started == 2, "the refused request never reached the application"
        app.release.set()
        done = await asyncio.gather(*running)
        admitted_after = await call(mw)
        return refused, done, admitted_after

    refused, done, admitted_after = asyncio.run(scenario())
    assert status_of(refused) == 503
    headers = dict(refused[0]["headers"])
    assert headers[b"retry-after"] == b"1"
    body = json.loads(refused[1]["body"])
    assert body["code"] == "overloaded" and body["retry_after"] == 1
    assert [status_of(sent) for sent in done] == [200, 200]
    assert status_of(admitted_after) == 200, "places are given back when responses finish"


def test_a_waiting_request_gets_the_place_given_back_within_its_wait(settings):
    async def scenario():
        app = HeldApp()
        mw = middleware(app, settings, limit=1, wait=2.0)
        first = asyncio.create_task(call(mw))
        await asyncio.sleep(0.01)
        second = asyncio.create_task(call(mw))
        await asyncio.sleep(0.05)
        assert app.started == 1, "the second request waits while the first holds the only place"
        app.release.set()
        return await first, await second

    first, second = asyncio.run(scenario())
    assert (status_of(first), status_of(second)) == (200, 200)


def test_a_streaming_response_holds_its_place_only_until_its_headers(settings):
    async def scenario():
        app = HeldApp(stream=True)
        mw = middleware(app, settings, limit=1, wait=0.05)
        streams = [asyncio.create_task(call(mw)) for _ in range(3)]
        await asyncio.sleep(0.2)
        started = app.started
        app.release.set()
        return started, await asyncio.gather(*streams)

    started, streams = asyncio.run(scenario())
    assert started == 3, "each stream started once the previous one had sent its headers"
    assert [status_of(sent) for sent in streams] == [200, 200, 200]


def test_probes_are_never_shed(settings):
    async def scenario():
        app = HeldApp()
        mw = middleware(app, settings, limit=1, wait=0.01)
        held = asyncio.create_task(call(mw))
        await asyncio.sleep(0.01)
        probe = asyncio.create_task(call(mw, "/healthz"))
        api = await call(mw)
        await asyncio.sleep(0.01)
        app.release.set()
        return await held, await probe, api

    held, probe, api = asyncio.run(scenario())
    assert status_of(api) == 503
    assert status_of(probe) == 200 and status_of(held) == 200


def test_a_websocket_handshake_past_the_bound_is_told_why_and_closed_4503(settings):
    async def scenario():
        app = HeldApp()
        mw = middleware(app, settings, limit=1, wait=0.01)
        held = asyncio.create_task(call(mw))
        await asyncio.sleep(0.01)
        refused = await call(mw, "/ws/agents/1/chat/", kind="websocket")
        app.release.set()
        await held
        admitted = await call(mw, "/ws/agents/1/chat/", kind="websocket")
        return refused, admitted

    refused, admitted = asyncio.run(scenario())
    assert [m["type"] for m in refused] == ["websocket.accept", "websocket.send", "websocket.close"]
    event = json.loads(refused[1]["text"])
    assert event["type"] == "error" and event["data"]["code"] == "overloaded"
    assert refused[2]["code"] == WEBSOCKET_OVERLOADED
    assert admitted[-1] == {"type": "websocket.close", "code": 1000}, "a handshake gives its place back when done"


def test_lifespan_passes_through_even_with_no_places(settings):
    seen = []

    async def app(scope, receive, send):
        seen.append(scope["type"])

    mw = middleware(app, settings, limit=0, wait=0.0)
    asyncio.run(mw({"type": "lifespan"}, None, None))
    assert seen == ["lifespan"]
