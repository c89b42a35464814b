"""The Python client (clients/python) against the live server: daphne, the Celery workers, PostgreSQL and Redis.

An integrator's journey with an API key (upload, wait until ready, search, chat in all its forms, runs), JWT with
an expired access token refreshed on the way, and the server's error codes arriving as typed exceptions. The SSE
and WebSocket streams are cut mid-answer by a proxy: the client resumes and every event arrives exactly once.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from agentry import (
    Agentry,
    AgentryError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    answer_text,
    run_status,
)
from rest_framework_simplejwt.tokens import AccessToken

from .conftest import Server

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]  # django_db: the session creates the test database

HANDBOOK = (
    "Refunds are accepted within 30 days of purchase. Keep the receipt for the refund. "
    "Refunds of digital goods are accepted within 14 days. Refunds go back to the card used."
)
SHIPPING = b"# Shipping\n\nParcels leave the warehouse every weekday at noon. Express parcels arrive the next day.\n"
QUESTION = "Within how many days are refunds accepted, and where do refunds go?"


def contiguous(events) -> bool:
    return [e["seq"] for e in events] == list(range(1, len(events) + 1))


@pytest.fixture(scope="module")
def admin(agentry_server: Server, admin_password: str) -> Iterator[Agentry]:
    client = Agentry(
        agentry_server.base_url,
        email=agentry_server.admin_email,
        password=admin_password,
        connect_address=agentry_server.address,
    )
    yield client
    client.close()


@pytest.fixture(scope="module")
def world(admin: Agentry, agentry_server: Server):
    """A knowledge base with two documents ingested by the worker, an agent answering from it, and an API key
    for them (read, write, chat), all made through the client and deleted afterwards."""
    kb = admin.create_knowledge_base("Client handbook", description="made by the client's e2e tests")
    agent = admin.create_agent("Client helper", knowledge_base_ids=[kb["id"]], sampling={"stream_delay_ms": 30})
    key = admin.request("POST", "/api/v1/api-keys/", json={"name": "client e2e", "scopes": ["read", "write", "chat"]})
    client = Agentry(agentry_server.base_url, api_key=key["key"], connect_address=agentry_server.address)
    try:
        yield {"kb": kb, "agent": agent, "client": client}
    finally:
        client.close()
        admin.request("DELETE", f"/api/v1/api-keys/{key['id']}/")
        admin.delete_agent(agent["id"])
        admin.delete_knowledge_base(kb["id"])


def test_upload_wait_until_ready_list_search_and_delete_documents(world):
    client: Agentry = world["client"]
    kb_id = world["kb"]["id"]
    assert client.me()["via_api_key"] is True
    assert kb_id in [kb["id"] for kb in client.list_knowledge_bases()["results"]]
    assert client.get_knowledge_base(kb_id)["name"] == "Client handbook"
    renamed = client.update_knowledge_base(kb_id, description="refunds and shipping")
    assert renamed["description"] == "refunds and shipping"

    ingest = client.upload(
        kb_id, files=[("shipping.md", SHIPPING)], texts=[{"title": "Refunds", "text": HANDBOOK}], note="first"
    )
    assert len(ingest["documents"]) == 2 and ingest["errors"] == []
    ready = client.wait_until_ready(kb_id, ingest, timeout=120)
    assert {d["status"] for d in ready} == {"ready"} and all(d["chunk_count"] >= 1 for d in ready)
    by_title = {d["title"]: d for d in client.list_documents(kb_id, status="ready")["results"]}
    assert set(by_title) == {"shipping.md", "Refunds"}
    assert client.get_document(kb_id, by_title["Refunds"]["id"])["title"] == "Refunds"

    hits = client.search(kb_id, "When do parcels leave the warehouse?", top_k=2)["results"]
    assert hits[0]["document_id"] == by_title["shipping.md"]["id"] and "noon" in hits[0]["text"]
    # Documents JSON (no files): an identical text is recognised, not ingested twice.
    again = client.upload(kb_id, texts=[{"title": "Refunds", "text": HANDBOOK}])
    assert again["documents"] == [] and [d["id"] for d in again["unchanged"]] == [by_title["Refunds"]["id"]]
    assert client.wait_until_ready(kb_id, again)[0]["id"] == by_title["Refunds"]["id"]

    extra = client.upload(kb_id, texts=[{"title": "Scratch", "text": "A note that is deleted again."}])
    client.wait_until_ready(kb_id, [d["id"] for d in extra["documents"]], timeout=120)
    deleted = client.delete_document(kb_id, extra["documents"][0]["id"])
    assert deleted["document"]["title"] == "Scratch" and deleted["version"] > extra["version"]
    assert "Scratch" not in {d["title"] for d in client.list_documents(kb_id)["results"]}


def _kb_ready(world) -> None:
    client: Agentry = world["client"]
    kb_id = world["kb"]["id"]
    if not client.list_documents(kb_id, status="ready")["results"]:
        ingest = client.upload(kb_id, texts=[{"title": "Refunds", "text": HANDBOOK}])
        client.wait_until_ready(kb_id, ingest, timeout=120)


def test_chat_as_json_and_as_sse_resumed_after_the_connection_is_cut(world, agentry_server: Server):
    _kb_ready(world)
    client: Agentry = world["client"]
    agent_id = world["agent"]["id"]
    assert agent_id in [a["id"] for a in client.list_agents()["results"]]
    assert client.get_agent(agent_id)["name"] == "Client helper"

    answer = client.chat(agent_id, QUESTION)
    assert answer["status"] == "complete" and "30 days" in answer["content"] and answer["citations"]

    stream = client.chat_stream(agent_id, QUESTION, conversation_id=answer["conversation_id"])
    assert stream.run_id and stream.conversation_id == answer["conversation_id"]
    events = []
    for event in stream:
        events.append(event)
        if len(events) == 3:
            agentry_server.proxy.cut()  # the network drops the stream mid-answer
    assert stream.reconnects >= 1
    assert contiguous(events) and run_status(events) == "complete"
    assert "30 days" in answer_text(events)
    # The resumed stream told the same story as the server kept it.
    page = client.run_events(stream.run_id, after=0, wait=0)
    assert page["done"] and [e["seq"] for e in page["events"]] == [e["seq"] for e in events]
    assert answer_text(page["events"]) == answer_text(events)

    messages = client.conversation_messages(answer["conversation_id"])["results"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[-1]["run_id"] == stream.run_id and messages[-1]["content"] == answer_text(events)
    conversations = client.list_conversations(agent_id=agent_id)["results"]
    assert answer["conversation_id"] in [c["id"] for c in conversations]


def test_chat_over_websocket_resumed_after_the_socket_is_cut(world, agentry_server: Server):
    _kb_ready(world)
    client: Agentry = world["client"]
    events = []
    with client.chat_websocket(world["agent"]["id"], QUESTION) as chat:
        for event in chat:
            events.append(event)
            if len(events) == 4:
                agentry_server.proxy.cut()
        assert chat.accepted is not None and chat.run_id == chat.accepted["run_id"]
        assert chat.reconnects >= 1
    assert contiguous(events) and run_status(events) == "complete" and "30 days" in answer_text(events)


def test_runs_long_polled_streamed_from_a_seq_and_cancelled(world):
    _kb_ready(world)
    client: Agentry = world["client"]
    agent_id = world["agent"]["id"]
    accepted = client.chat_async(agent_id, QUESTION)
    events = client.wait_for_run(accepted["run_id"], timeout=60)
    assert contiguous(events) and run_status(events) == "complete"
    with client.stream_run(accepted["run_id"], after=2) as tail:
        assert [e["seq"] for e in tail] == [e["seq"] for e in events[2:]]
    with pytest.raises(ConflictError) as finished:
        client.cancel_run(accepted["run_id"])
    assert finished.value.code == "conflict" and finished.value.status == 409

    client.update_agent(agent_id, sampling={"stream_delay_ms": 300}, change_note="slow, to be cancelled")
    try:
        slow = client.chat_async(agent_id, QUESTION)
        assert client.cancel_run(slow["run_id"])["status"] == "cancelling"
        assert run_status(client.wait_for_run(slow["run_id"], timeout=60)) == "cancelled"
    finally:
        client.update_agent(agent_id, sampling={"stream_delay_ms": 30})


def test_errors_arrive_as_exceptions_with_the_servers_code(world, agentry_server: Server, admin: Agentry):
    client: Agentry = world["client"]
    with pytest.raises(NotFoundError) as missing:
        client.get_knowledge_base(999_999)
    assert (missing.value.code, missing.value.status) == ("not_found", 404)
    with pytest.raises(BadRequestError) as invalid:
        client.search(world["kb"]["id"], "")
    assert invalid.value.code == "invalid" and invalid.value.field is None and "query" in invalid.value.body["fields"]
    with pytest.raises(AgentryError) as empty:
        client.upload(world["kb"]["id"], texts=[{"title": "Empty", "text": "   "}])
    assert empty.value.code == "empty_document" and empty.value.body["errors"][0]["code"] == "empty_document"
    with pytest.raises(BadRequestError) as frame:  # a WebSocket error frame, before any run exists
        list(client.chat_websocket(world["agent"]["id"], "   "))
    assert frame.value.code == "invalid" and frame.value.field == "message" and frame.value.status is None
    with pytest.raises(AgentryError) as unknown_agent:  # the server refuses the handshake itself
        list(client.chat_websocket(999_999, "hello"))
    assert unknown_agent.value.code == "websocket_refused"
    read_only = admin.request("POST", "/api/v1/api-keys/", json={"name": "client e2e read", "scopes": ["read"]})
    try:
        reader = Agentry(agentry_server.base_url, api_key=read_only["key"], connect_address=agentry_server.address)
        with pytest.raises(PermissionDeniedError) as scope:
            reader.create_knowledge_base("Not allowed")
        assert scope.value.code == "scope_required" and scope.value.status == 403
        with pytest.raises(AgentryError) as refused:
            list(reader.chat_websocket(world["agent"]["id"], "hello"))
        assert refused.value.code == "websocket_refused"
    finally:
        admin.request("DELETE", f"/api/v1/api-keys/{read_only['id']}/")
    stranger = Agentry(agentry_server.base_url, api_key="agk_nope_nope", connect_address=agentry_server.address)
    with pytest.raises(AuthenticationError) as unknown:
        stranger.me()
    assert unknown.value.code == "api_key_invalid" and unknown.value.status == 401


def test_jwt_sign_in_refresh_of_an_expired_access_token_and_sign_out(
    world, agentry_server: Server, admin_password: str
):
    client = Agentry(
        agentry_server.base_url,
        email=agentry_server.admin_email,
        password=admin_password,
        connect_address=agentry_server.address,
    )
    assert client.me()["email"] == agentry_server.admin_email  # signs in on first use
    first_refresh = client.refresh_token
    assert first_refresh is not None
    expired = AccessToken(client.access_token)  # the same claims (organisation, session), expired a minute ago
    expired.set_exp(lifetime=timedelta(minutes=-1))
    client.access_token = str(expired)
    assert client.me()["email"] == agentry_server.admin_email  # 401 token_not_valid -> refreshed -> sent again
    assert client.refresh_token not in (None, first_refresh)  # rotated

    # Without a way to renew, the expired token's 401 reaches the caller with its code.
    kept = Agentry(
        agentry_server.base_url,
        access_token=str(expired),
        connect_address=agentry_server.address,
    )
    with pytest.raises(AuthenticationError) as stale:
        kept.me()
    assert stale.value.code == "token_not_valid"

    # A WebSocket chat with an expired access token: renewed before the handshake.
    _kb_ready(world)
    client.access_token = str(expired)
    events = list(client.chat_websocket(world["agent"]["id"], QUESTION))
    assert run_status(events) == "complete" and client.access_token != str(expired)

    access, refresh = client.access_token, client.refresh_token
    client.logout()
    revoked = Agentry(
        agentry_server.base_url, access_token=access, refresh_token=refresh, connect_address=agentry_server.address
    )
    with pytest.raises(AuthenticationError) as signed_out:
        revoked.me()
    assert signed_out.value.code in ("token_revoked", "token_not_valid")
