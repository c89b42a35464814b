"""The event bus: typed events to dashboards over /ws/events/, a durable stream per tenant, no crossing."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from config.asgi import application
from conftest import host_of
from core.events import AGENT_CREATED, EVENT_TYPES, publish, stream_consume, stream_read


def _session_cookie(committed, tenant, user) -> str:
    client = Client(HTTP_HOST=host_of(tenant))
    client.force_login(user)
    return client.cookies["sessionid"].value


async def _connect(host: str, cookie: str | None, path: str = "/ws/events/"):
    headers = [(b"host", host.encode()), (b"origin", f"http://{host}".encode())]
    if cookie:
        headers.append((b"cookie", f"sessionid={cookie}".encode()))
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, code = await communicator.connect(timeout=5)
    return communicator, connected, code


def test_dashboards_get_their_own_tenants_events_and_never_another_tenants(committed):
    cookie_a = _session_cookie(committed, committed.tenant_a, committed.admin_a)
    cookie_b = _session_cookie(committed, committed.tenant_b, committed.admin_b)

    async def scenario():
        ws_a, ok_a, _ = await _connect(host_of(committed.tenant_a), cookie_a)
        ws_b, ok_b, _ = await _connect(host_of(committed.tenant_b), cookie_b)
        assert ok_a and ok_b
        assert (await ws_a.receive_json_from(timeout=5))["type"] == "subscribed"
        assert (await ws_b.receive_json_from(timeout=5))["type"] == "subscribed"
        await sync_to_async(publish)(
            AGENT_CREATED, {"agent_id": 1, "name": "secret-b"}, schema=committed.tenant_b.schema_name
        )
        got_b = await ws_b.receive_json_from(timeout=5)
        assert got_b["type"] == AGENT_CREATED and got_b["data"]["name"] == "secret-b"
        assert await ws_a.receive_nothing(timeout=0.5)  # acme never hears globex
        await sync_to_async(publish)(
            "quota.warning",
            {"quota": "documents", "level": 80, "limit": 10, "used": 8},
            subject={"type": "quota", "id": "documents"},
            topic="quota",
            schema=committed.tenant_a.schema_name,
        )
        got_a = await ws_a.receive_json_from(timeout=5)
        assert got_a["type"] == "quota.warning" and got_a["topic"] == "quota"
        assert await ws_a.receive_nothing(timeout=0.3)  # tenant + topic group: delivered once
        assert await ws_b.receive_nothing(timeout=0.3)
        await ws_a.disconnect()
        await ws_b.disconnect()

    asyncio.run(scenario())


def test_topic_subscription_and_catch_up_from_the_stream(committed):
    cookie_a = _session_cookie(committed, committed.tenant_a, committed.admin_a)
    kb = {"knowledge_base_id": 9, "name": "Handbook"}
    first = publish(
        "knowledge_base.version", {**kb, "current_version": 1}, topic="kb.9", schema=committed.tenant_a.schema_name
    )
    publish("knowledge_base.version", {**kb, "current_version": 2}, topic="kb.9", schema=committed.tenant_a.schema_name)
    publish("agent.updated", {"agent_id": 1, "version": 2}, topic="agent.1", schema=committed.tenant_a.schema_name)

    async def scenario():
        ws, ok, _ = await _connect(
            host_of(committed.tenant_a), cookie_a, f"/ws/events/?topics=kb.9&since={first['stream_id']}"
        )
        assert ok
        replayed = await ws.receive_json_from(timeout=5)
        assert replayed["replayed"] and replayed["data"]["current_version"] == 2  # only what came after `since`
        assert (await ws.receive_json_from(timeout=5))["type"] == "subscribed"
        await sync_to_async(publish)(
            "agent.updated", {"agent_id": 1, "version": 3}, topic="agent.1", schema=committed.tenant_a.schema_name
        )
        assert await ws.receive_nothing(timeout=0.3)  # not subscribed to agent.1
        await ws.send_json_to({"type": "subscribe", "topic": "agent.1"})
        assert (await ws.receive_json_from(timeout=5))["type"] == "subscribed"
        await sync_to_async(publish)(
            "agent.updated", {"agent_id": 1, "version": 3}, topic="agent.1", schema=committed.tenant_a.schema_name
        )
        assert (await ws.receive_json_from(timeout=5))["type"] == "agent.updated"
        await ws.send_json_to({"type": "subscribe", "topic": "../t_globex"})
        assert (await ws.receive_json_from(timeout=5))["data"]["code"] == "invalid"
        await ws.disconnect()

    asyncio.run(scenario())


def test_strangers_and_anonymous_sockets_are_refused(committed):
    cookie_b = _session_cookie(committed, committed.tenant_b, committed.admin_b)

    async def scenario():
        _, ok, code = await _connect(host_of(committed.tenant_a), None)
        assert not ok and code == 4403
        _, ok, code = await _connect(host_of(committed.tenant_a), cookie_b)  # globex's admin on acme's host
        assert not ok and code == 4403

    asyncio.run(scenario())


def test_websocket_client_messages_are_rate_limited(committed, settings, frozen_rate_clock):
    settings.RATE_LIMITS = {"ws_message": "2/m"}
    cookie_a = _session_cookie(committed, committed.tenant_a, committed.admin_a)

    async def scenario():
        ws, ok, _ = await _connect(host_of(committed.tenant_a), cookie_a)
        assert ok
        await ws.receive_json_from(timeout=5)
        replies = []
        for _ in range(3):
            await ws.send_json_to({"type": "ping"})
            replies.append(await ws.receive_json_from(timeout=5))
        assert [r["type"] for r in replies] == ["pong", "pong", "error"]
        assert replies[-1]["data"]["code"] == "rate_limited" and replies[-1]["data"]["retry_after"] >= 1
        await ws.disconnect()

    asyncio.run(scenario())


def _run_finished(run_id: str) -> dict:
    return {"run_id": run_id, "agent_id": 1, "status": "complete", "tokens_in": 3, "tokens_out": 5}


@pytest.mark.django_db
def test_durable_consumers_get_each_event_once_per_group_and_per_tenant(tenant_a, tenant_b):
    for n in range(3):
        publish("run.finished", _run_finished(f"a{n}"), schema=tenant_a.schema_name)
    publish("run.finished", _run_finished("b0"), schema=tenant_b.schema_name)
    seen: list[tuple[str, str]] = []

    def handler(schema, entry_id, event):
        from django.db import connection

        assert connection.schema_name == schema  # handlers run in the event's tenant
        seen.append((schema, event["data"]["run_id"]))

    assert (
        stream_consume(
            group="test", consumer="c1", handler=handler, schemas=[tenant_a.schema_name, tenant_b.schema_name]
        )
        == 4
    )
    assert (
        stream_consume(
            group="test", consumer="c1", handler=handler, schemas=[tenant_a.schema_name, tenant_b.schema_name]
        )
        == 0
    )
    assert sorted(seen) == [("t_acme", "a0"), ("t_acme", "a1"), ("t_acme", "a2"), ("t_globex", "b0")]
    assert all(e["data"]["run_id"].startswith("a") for _, e in stream_read(tenant_a.schema_name))
    # A crashing handler leaves the event pending; the next call retries it.
    publish("run.finished", _run_finished("a3"), schema=tenant_a.schema_name)

    def crash(*args):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        stream_consume(group="test", consumer="c1", handler=crash, schemas=[tenant_a.schema_name])
    assert stream_consume(group="test", consumer="c1", handler=handler, schemas=[tenant_a.schema_name]) == 1
    assert seen[-1] == ("t_acme", "a3")


def test_event_types_are_documented():
    for name in (
        "agent.created",
        "agent.updated",
        "agent.version_restored",
        "document.status",
        "document.progress",
        "knowledge_base.version",
        "run.started",
        "run.finished",
        "quota.warning",
        "member.joined",
    ):
        assert name in EVENT_TYPES
    with pytest.raises(ValueError):
        publish("agent.created", {}, topic="bad topic!", schema="t_acme")
