"""One error shape on every transport, and a failing knowledge search fails the chat run instead of answering
without knowledge (the REST side of search failures is in knowledge/tests/test_retrieval.py)."""

import asyncio
import json

from django_tenants.utils import tenant_context

from agents.models import Message
from core.redis_clients import redis_client
from knowledge.models import KnowledgeBase

from .conftest import chat_over_websocket, events_of, run_inline
from .test_runtime import chat

HANDBOOK = {"Refunds": "Refunds are accepted within 30 days of purchase. Keep the receipt."}


def _search_failures(stage: str) -> float:
    counts = redis_client().hgetall("metrics:c:search_failures_total")
    return sum(float(v) for k, v in counts.items() if json.loads(k)["stage"] == stage)


def _sse_events(response) -> list[dict]:
    async def drain() -> bytes:  # the SSE body is an async stream, drained as an ASGI server would
        return b"".join([part async for part in response.streaming_content])

    events = []
    for frame in asyncio.run(drain()).decode().split("\n\n"):
        data = [line.removeprefix("data: ") for line in frame.splitlines() if line.startswith("data: ")]
        if data:
            events.append(json.loads("\n".join(data)))
    return events


def test_a_run_whose_knowledge_search_fails_ends_with_search_unavailable_not_an_answer(live, caplog):
    kb = live.knowledge_base(HANDBOOK)
    with tenant_context(live.tenant_a):  # a model that cannot load: the query cannot be embedded
        KnowledgeBase.objects.filter(pk=kb.pk).update(embedding_model="st:/nonexistent/embedding-model")
    agent = live.agent(knowledge_base_ids=[kb.pk])
    failures = _search_failures("embedding")
    handles = chat(live, agent, "Within how many days are refunds accepted?")
    run_inline(live.tenant_a, handles["run_id"])

    events = events_of(live.tenant_a, handles["run_id"])
    kinds = [e["type"] for e in events]
    assert "token" not in kinds and "citation" not in kinds  # nothing answered from a fallback
    error = next(e["data"] for e in events if e["type"] == "error")
    assert error["code"] == "search_unavailable"
    assert events[-1]["type"] == "message.end" and events[-1]["data"]["status"] == "incomplete"
    with tenant_context(live.tenant_a):
        row = Message.objects.get(pk=handles["message_id"])
    assert row.status == "incomplete" and row.content == "" and row.error == error
    assert _search_failures("embedding") == failures + 1
    assert any("knowledge search failed" in r.getMessage() for r in caplog.records if r.levelname == "ERROR")

    # The same failure over HTTP (the search API) and over SSE (the run's event stream): the same body.
    client = live.client()
    over_http = client.post(
        f"/api/v1/knowledge-bases/{kb.pk}/search/", {"query": "refunds"}, content_type="application/json"
    )
    assert over_http.status_code == 503
    over_sse = _sse_events(client.get(f"/api/v1/runs/{handles['run_id']}/events/", HTTP_ACCEPT="text/event-stream"))
    sse_error = next(e["data"] for e in over_sse if e["type"] == "error")
    assert over_http.json() == sse_error == error


def test_the_same_refusal_has_the_same_body_over_http_and_websocket(live):
    agent = live.agent()
    over_http = live.client().post(f"/api/v1/agents/{agent.pk}/chat/", {"message": ""}, content_type="application/json")
    assert over_http.status_code == 400

    frame = chat_over_websocket(live.tenant_a, live.admin_a, agent.pk, "")
    assert frame == {"type": "error", "seq": 0, "data": over_http.json()}
    assert over_http.json() == {"code": "invalid", "detail": "The message is empty.", "field": "message"}
