"""The agents REST API: CRUD, versions (list, diff, restore), providers (keys never returned), conversations,
the HTTP chat transports on the in-process client, and tenant isolation for every endpoint."""

import asyncio
import json
import time

import pytest
from django_tenants.utils import tenant_context

from .conftest import run_inline


def _body(response) -> bytes:
    """The whole body; async streaming responses are drained on an event loop (as an ASGI server would)."""
    if not response.streaming:
        return response.content

    async def drain():
        return b"".join([part async for part in response.streaming_content])

    if hasattr(response.streaming_content, "__aiter__"):
        return asyncio.run(drain())
    return b"".join(response.streaming_content)


def _json_stream(response):
    return json.loads(_body(response))


def test_agent_crud_and_every_change_is_a_version(live):
    client = live.client()
    created = client.post(
        "/api/v1/agents/",
        {"name": "Support", "system_prompt": "Be kind.", "sampling": {"temperature": 0.2}},
        content_type="application/json",
    )
    assert created.status_code == 201, created.content
    agent_id = created.json()["id"]
    live.track(live.tenant_a, _agent(live, agent_id))
    assert created.json()["version"] == 1 and created.json()["agent_type"] == "rag"
    patched = client.patch(
        f"/api/v1/agents/{agent_id}/",
        {"system_prompt": "Be brief.", "change_note": "shorter"},
        content_type="application/json",
    )
    assert patched.status_code == 200 and patched.json()["version"] == 2
    same = client.patch(f"/api/v1/agents/{agent_id}/", {"system_prompt": "Be brief."}, content_type="application/json")
    assert same.json()["version"] == 2  # nothing changed, no new version
    versions = client.get(f"/api/v1/agents/{agent_id}/versions/").json()["results"]
    assert [v["number"] for v in versions] == [2, 1]
    assert versions[0]["note"] == "shorter" and versions[0]["author_id"] == live.admin_a.pk
    diff = client.get(f"/api/v1/agents/{agent_id}/versions/diff/?from=1&to=2").json()
    assert diff["changes"] == [{"field": "system_prompt", "from": "Be kind.", "to": "Be brief."}]
    started = time.perf_counter()
    restored = client.post(f"/api/v1/agents/{agent_id}/versions/1/restore/", {}, content_type="application/json")
    assert time.perf_counter() - started < 1.0  # "well under a second", through the whole HTTP stack
    assert restored.status_code == 201 and restored.json()["number"] == 3 and restored.json()["restored_from"] == 1
    assert client.get(f"/api/v1/agents/{agent_id}/").json()["system_prompt"] == "Be kind."
    assert client.get(f"/api/v1/agents/{agent_id}/versions/diff/?from=1&to=3").json()["changes"] == []
    assert client.delete(f"/api/v1/agents/{agent_id}/").status_code == 204
    assert client.get(f"/api/v1/agents/{agent_id}/").status_code == 404


def _agent(live, agent_id):
    from agents.models import Agent

    with tenant_context(live.tenant_a):
        return Agent.objects.get(pk=agent_id)


def test_bad_agent_input_is_a_clear_400(live):
    client = live.client()
    for body, field in [
        ({"name": "x", "agent_type": "nope"}, "agent_type"),
        ({"name": "x", "tools": ["no_such_tool"]}, "tools"),
        ({"name": "x", "limits": {"bogus": 1}}, "limits"),
        ({"name": "x", "knowledge_base_ids": [999999]}, "knowledge_base_ids"),
    ]:
        response = client.post("/api/v1/agents/", body, content_type="application/json")
        assert response.status_code == 400 and response.json()["field"] == field, response.content


def test_provider_key_is_encrypted_at_rest_and_never_returned(live):
    from agents.models import ProviderCredential
    from core.crypto import decrypt_str

    client = live.client()
    response = client.post(
        "/api/v1/llm-providers/",
        {"name": "openai-main", "kind": "openai", "base_url": "https://api.openai.com/v1", "api_key": "sk-secret-123"},
        content_type="application/json",
    )
    assert response.status_code == 201
    body = response.json()
    with tenant_context(live.tenant_a):
        provider = live.track(live.tenant_a, ProviderCredential.objects.get(pk=body["id"]))
        assert "sk-secret-123" not in provider.api_key_encrypted
        assert decrypt_str(provider.api_key_encrypted) == "sk-secret-123"
    assert body["has_api_key"] is True and "sk-secret-123" not in response.content.decode()
    listing = client.get("/api/v1/llm-providers/").content.decode()
    detail = client.get(f"/api/v1/llm-providers/{body['id']}/").content.decode()
    assert "sk-secret" not in listing and "sk-secret" not in detail and "api_key_encrypted" not in listing


def test_chat_over_http_json_sse_and_long_polling(live):
    kb = live.knowledge_base({"Refunds": "Refunds are accepted within 30 days of purchase."})
    agent = live.agent(knowledge_base_ids=[kb.pk])
    client = live.client()
    url = f"/api/v1/agents/{agent.pk}/chat/"
    # Long-polling: 202 with a run id, then events after N.
    accepted = client.post(
        url, {"message": "refunds within how many days?", "wait": False}, content_type="application/json"
    )
    assert accepted.status_code == 202
    run_id = accepted.json()["run_id"]
    run_inline(live.tenant_a, run_id)
    first = client.get(f"/api/v1/runs/{run_id}/events/?after=0&wait=0").json()
    assert first["done"] and first["events"][0]["type"] == "message.start"
    later = client.get(f"/api/v1/runs/{run_id}/events/?after=3&wait=0").json()
    assert [e["seq"] for e in later["events"]] == [e["seq"] for e in first["events"][3:]]
    # SSE resume with Last-Event-ID delivers exactly the events after it.
    sse = client.get(f"/api/v1/runs/{run_id}/events/", HTTP_ACCEPT="text/event-stream", HTTP_LAST_EVENT_ID="2")
    assert sse["Content-Type"] == "text/event-stream"
    ids = [int(line[4:]) for line in _body(sse).decode().splitlines() if line.startswith("id: ")]
    assert ids == list(range(3, first["next_after"] + 1))
    # Conversation history over the API.
    conversation_id = accepted.json()["conversation_id"]
    messages = client.get(f"/api/v1/conversations/{conversation_id}/messages/").json()["results"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[1]["status"] == "complete" and messages[1]["agent_version_id"] == agent.current_version_id
    assert messages[1]["citations"][0]["document_title"] == "Refunds"
    assert client.get(f"/api/v1/conversations/?agent={agent.pk}").json()["results"][0]["id"] == conversation_id


def test_unknown_agent_and_other_tenants_get_nothing(live):
    agent = live.agent(name="Private to Acme")
    run = (
        live.client()
        .post(f"/api/v1/agents/{agent.pk}/chat/", {"message": "hi", "wait": False}, content_type="application/json")
        .json()
    )
    run_inline(live.tenant_a, run["run_id"])
    other = live.client(live.tenant_b, live.admin_b)
    assert (
        live.client()
        .post("/api/v1/agents/999999/chat/", {"message": "hi"}, content_type="application/json")
        .status_code
        == 404
    )
    for method, url in [
        ("get", f"/api/v1/agents/{agent.pk}/"),
        ("patch", f"/api/v1/agents/{agent.pk}/"),
        ("delete", f"/api/v1/agents/{agent.pk}/"),
        ("get", f"/api/v1/agents/{agent.pk}/versions/"),
        ("get", f"/api/v1/agents/{agent.pk}/versions/diff/?from=1&to=1"),
        ("post", f"/api/v1/agents/{agent.pk}/versions/1/restore/"),
        ("post", f"/api/v1/agents/{agent.pk}/chat/"),
        ("get", f"/api/v1/runs/{run['run_id']}/events/?wait=0"),
        ("get", f"/api/v1/conversations/{run['conversation_id']}/messages/"),
    ]:
        response = getattr(other, method)(
            url, {"message": "hi"} if method == "post" else None, content_type="application/json"
        )
        assert response.status_code == 404, (url, response.status_code)
    assert other.get("/api/v1/agents/").json()["results"] == []
    assert other.get("/api/v1/conversations/").json()["results"] == []
    # Anonymous and cross-tenant logins get nothing either.
    from django.test import Client

    anonymous = Client(HTTP_HOST=f"{live.tenant_a.slug}.localhost")
    for url in (
        "/api/v1/agents/",
        f"/api/v1/agents/{agent.pk}/",
        "/api/v1/llm-providers/",
        "/api/v1/agent-tools/",
        "/api/v1/custom-tools/",
        "/api/v1/approved-hosts/",
        "/api/v1/conversations/",
    ):
        assert anonymous.get(url).status_code in (401, 403)
        assert live.client(live.tenant_a, live.admin_b).get(url).status_code in (401, 403)


@pytest.mark.django_db
def test_member_cannot_see_a_private_agent_of_another_member(tenant_a, admin_a):
    from accounts.models import Membership, Role, User
    from agents.services import agent_create
    from iam.policy import Principal

    member = User.objects.create_user(email="member@acme.test", password="x-very-long-pw-1")
    Membership.objects.create(user=member, tenant=tenant_a, role=Role.USER)
    with tenant_context(tenant_a):
        agent = agent_create(principal=Principal(tenant=tenant_a, user=admin_a, role="admin"), data={"name": "mine"})
    from django.test import Client

    client = Client(HTTP_HOST="acme.localhost")
    client.force_login(member)
    assert client.get(f"/api/v1/agents/{agent.pk}/").status_code == 404
    assert (
        client.post(f"/api/v1/agents/{agent.pk}/chat/", {"message": "hi"}, content_type="application/json").status_code
        == 404
    )
    assert (
        client.post(
            "/api/v1/llm-providers/", {"name": "x", "kind": "openai"}, content_type="application/json"
        ).status_code
        == 403
    )


def test_non_streaming_post_returns_the_whole_answer(live, settings):
    """Runs via a thread that plays the worker, while the request waits for the end of the run."""
    import threading

    from agents.runtime.stream import run_meta_read  # noqa: F401

    agent = live.agent()
    settings.AGENTS_ENQUEUE_RUNS = False
    client = live.client()
    results = {}

    def worker():
        from agents.models import Message

        for _ in range(100):
            with tenant_context(live.tenant_a):
                row = Message.objects.filter(conversation__agent=agent, role="assistant").first()
            if row is not None:
                run_inline(live.tenant_a, str(row.run_id))
                return
            time.sleep(0.05)

    thread = threading.Thread(target=worker)
    thread.start()
    response = client.post(f"/api/v1/agents/{agent.pk}/chat/", {"message": "hello"}, content_type="application/json")
    results["body"] = _json_stream(response)
    thread.join()
    assert results["body"]["status"] == "complete"
    assert results["body"]["content"].startswith("I could not find anything relevant")
    assert results["body"]["timings"]["total_ms"] >= 0


def test_tool_catalog_lists_builtins_and_the_plugin(live):
    catalog = live.client().get("/api/v1/agent-tools/").json()
    names = {t["name"]: t["source"] for t in catalog["tools"]}
    assert names["knowledge_search"] == "builtin" and names["http_request"] == "builtin"
    assert names["word_count"] == "example"
    assert {"rag", "tools", "echo"} <= set(catalog["agent_types"])
    assert catalog["plugins"] == {"example": "loaded"}


def test_long_polling_waits_for_events_and_returns_when_they_arrive(live):
    import threading

    agent = live.agent()
    client = live.client()
    run = client.post(
        f"/api/v1/agents/{agent.pk}/chat/", {"message": "hi", "wait": False}, content_type="application/json"
    ).json()
    started = time.monotonic()
    empty = _json_stream(client.get(f"/api/v1/runs/{run['run_id']}/events/?after=0&wait=1"))
    assert empty["events"] == [] and empty["done"] is False and time.monotonic() - started >= 0.9
    # A waiting poll returns as soon as the worker writes the first event.
    timer = threading.Timer(0.5, run_inline, args=(live.tenant_a, run["run_id"]))
    timer.start()
    started = time.monotonic()
    page = _json_stream(client.get(f"/api/v1/runs/{run['run_id']}/events/?after=0&wait=20"))
    timer.join()
    assert page["events"][0]["type"] == "message.start" and time.monotonic() - started < 10


def test_websocket_accepts_a_jwt_of_this_tenant_only(live):
    """In-process ASGI WebSocket (Channels communicator); the consumer's DB threads see committed rows."""
    from channels.testing import WebsocketCommunicator
    from rest_framework_simplejwt.tokens import RefreshToken

    from accounts.services import TENANT_CLAIM
    from config.asgi import application

    agent = live.agent()

    def token_for(tenant) -> str:
        refresh = RefreshToken.for_user(live.admin_a)
        refresh[TENANT_CLAIM] = tenant.schema_name
        return str(refresh.access_token)

    async def connect(token: str):
        communicator = WebsocketCommunicator(
            application,
            f"/ws/agents/{agent.pk}/chat/?token={token}",
            headers=[(b"host", b"acme.localhost"), (b"origin", b"http://acme.localhost")],
        )
        connected, code = await communicator.connect(timeout=10)
        if connected:
            await communicator.send_json_to({"type": "chat", "message": "hello"})
            accepted = await communicator.receive_json_from(timeout=10)
            await communicator.disconnect()
            return accepted
        return code

    accepted = asyncio.run(connect(token_for(live.tenant_a)))
    assert accepted["type"] == "run.accepted"
    run_inline(live.tenant_a, accepted["run_id"])
    # A token minted for another tenant is refused at the handshake.
    assert asyncio.run(connect(token_for(live.tenant_b))) == 4401


def test_restoring_a_version_whose_provider_was_deleted_names_that_version(tenant_a, admin_a):
    from django.test import Client

    from agents.services import agent_create, agent_update, provider_create, provider_delete
    from iam.policy import Principal

    principal = Principal(tenant=tenant_a, user=admin_a, role="admin")
    with tenant_context(tenant_a):
        provider = provider_create(principal=principal, name="old", kind="openai")
        agent = agent_create(principal=principal, data={"name": "Support", "provider_id": provider.pk})
        agent_update(principal=principal, agent=agent, data={"provider_id": None})
        provider_delete(provider=provider, principal=principal)
    client = Client(HTTP_HOST="acme.localhost")
    client.force_login(admin_a)
    restored = client.post(f"/api/v1/agents/{agent.pk}/versions/1/restore/", {}, content_type="application/json")
    assert restored.status_code == 409
    assert restored.json() == {
        "code": "conflict",
        "detail": "Version 1 uses a provider that was deleted; choose another provider first.",
    }


@pytest.mark.django_db
def test_internal_targets_are_refused_when_saved_unless_the_operator_allows_them(client_a, admin_a, tenant_a, settings):
    """Provider base URLs, custom tool servers and approved hosts name where runs will send requests: a private,
    loopback or metadata target is a 400 on its field when saved, not only a failed run later."""
    settings.SSRF_ALLOWED_NETWORKS = []
    client_a.force_login(admin_a)

    def post(path, body):
        return client_a.post(path, body, content_type="application/json")

    refused = [
        (
            "/api/v1/llm-providers/",
            {"name": "local", "kind": "openai", "base_url": "http://127.0.0.1:11434/v1"},
            "base_url",
        ),
        (
            "/api/v1/llm-providers/",
            {"name": "tunnel", "kind": "openai", "base_url": "http://[2002:a9fe:a9fe::1]/v1"},
            "base_url",
        ),
        (
            "/api/v1/custom-tools/",
            {
                "template": "rest",
                "name": "crm",
                "params": {"base_url": "http://169.254.169.254", "operations": [{"name": "get", "path": "/x"}]},
            },
            "params",
        ),
        (
            "/api/v1/custom-tools/",
            {
                "name": "raw",
                "openapi": {
                    "openapi": "3.0.0",
                    "servers": [{"url": "http://[::ffff:10.0.0.1]/"}],
                    "paths": {"/x": {"get": {"operationId": "get"}}},
                },
            },
            "openapi",
        ),
        ("/api/v1/approved-hosts/", {"host": "localhost"}, "host"),
        ("/api/v1/approved-hosts/", {"host": "169.254.169.254"}, "host"),
    ]
    for path, body, field in refused:
        response = post(path, body)
        assert response.status_code == 400, (body, response.content)
        assert response.json()["code"] == "unsafe_url" and response.json()["field"] == field, response.content
    provider = post(
        "/api/v1/llm-providers/", {"name": "cloud", "kind": "openai", "base_url": "https://api.openai.com/v1"}
    )
    assert provider.status_code == 201, provider.content
    moved = client_a.patch(
        f"/api/v1/llm-providers/{provider.json()['id']}/",
        {"base_url": "http://10.1.2.3/v1"},
        content_type="application/json",
    )
    assert moved.status_code == 400 and moved.json()["field"] == "base_url"

    settings.SSRF_ALLOWED_NETWORKS = ["127.0.0.0/8"]  # the operator allows a local model server
    allowed = post(
        "/api/v1/llm-providers/", {"name": "local", "kind": "openai", "base_url": "http://127.0.0.1:11434/v1"}
    )
    assert allowed.status_code == 201, allowed.content
    assert post("/api/v1/approved-hosts/", {"host": "localhost"}).status_code == 201
