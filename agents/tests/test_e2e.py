"""End to end: two real daphne processes, the real Celery worker, Redis in between.

One run is read over all three transports (SSE, long-polling, WebSocket), with a mid-stream disconnect and a
resume on the *other* web process, and every event arrives exactly once.
"""

import asyncio
import json

import httpx
import pytest
import websockets
from django_tenants.utils import tenant_context

from agents.models import Message

HANDBOOK = {
    "Refunds": "Refunds are accepted within 30 days of purchase. Keep the receipt for the refund. "
    "Refunds of digital goods are accepted within 14 days. Refunds go back to the card used."
}
QUESTION = "Within how many days are refunds accepted, and where do refunds go?"


def sse_events(response, stop_after: int | None = None) -> list[dict]:
    events, data = [], []
    for line in response.iter_lines():
        if line.startswith("data: "):
            data.append(line[6:])
        elif line == "" and data:
            events.append(json.loads("\n".join(data)))
            data = []
            if events[-1]["type"] == "message.end" or (stop_after and len(events) >= stop_after):
                break
    return events


async def ws_collect(port: int, agent_id: int, *, headers: dict, first: dict, stop_after: int | None = None):
    uri = f"ws://acme.localhost:{port}/ws/agents/{agent_id}/chat/"
    events, accepted = [], None
    async with websockets.connect(
        uri,
        host="127.0.0.1",
        port=port,
        additional_headers=headers,
        origin=f"http://acme.localhost:{port}",
        open_timeout=10,
    ) as ws:
        await ws.send(json.dumps(first))
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), timeout=30))
            if message["type"] == "run.accepted":
                accepted = message
                continue
            assert message["type"] != "error" or message["seq"] > 0, message
            events.append(message)
            if message["type"] == "message.end" or (stop_after and len(events) >= stop_after):
                break  # leaving the block drops the connection mid-stream
    return accepted, events


def key_for(live, agent):
    from iam.services import api_key_create

    with tenant_context(live.tenant_a):
        key, raw = api_key_create(principal=live.principal(), name="e2e", scopes=["chat", "read"], agent_ids=[agent.pk])
    live.track(live.tenant_a, key)
    return raw


def comparable(events):
    return [(e["seq"], e["type"], e["data"]) for e in events]


@pytest.mark.e2e
def test_one_run_over_sse_long_polling_and_websocket_with_resume_on_another_web_process(
    live, daphne_pair, celery_worker_process
):
    p1, p2 = daphne_pair
    kb = live.knowledge_base(HANDBOOK)
    agent = live.agent(knowledge_base_ids=[kb.pk], sampling={"stream_delay_ms": 30})
    raw = key_for(live, agent)
    auth = {"Authorization": f"Api-Key {raw}"}
    with httpx.Client(timeout=30) as http:
        # SSE on web process 1; the client drops the connection after 4 events.
        with http.stream(
            "POST",
            f"http://127.0.0.1:{p1}/api/v1/agents/{agent.pk}/chat/",
            json={"message": QUESTION},
            headers={**auth, "Host": f"acme.localhost:{p1}", "Accept": "text/event-stream"},
        ) as response:
            assert response.status_code == 200, response.read()
            run_id = response.headers["X-Run-Id"]
            first = sse_events(response, stop_after=4)
        assert [e["seq"] for e in first] == [1, 2, 3, 4]
        # Resume with Last-Event-ID on web process 2: the rest, exactly once.
        with http.stream(
            "GET",
            f"http://127.0.0.1:{p2}/api/v1/runs/{run_id}/events/",
            headers={**auth, "Host": f"acme.localhost:{p2}", "Accept": "text/event-stream", "Last-Event-ID": "4"},
        ) as response:
            rest = sse_events(response)
        over_sse = first + rest
        assert [e["seq"] for e in over_sse] == list(range(1, len(over_sse) + 1))
        assert over_sse[-1]["type"] == "message.end" and over_sse[-1]["data"]["status"] == "complete"
        # Long-polling the same run on web process 1, from the start, in pages.
        polled, after = [], 0
        for _ in range(100):
            page = http.get(
                f"http://127.0.0.1:{p1}/api/v1/runs/{run_id}/events/?after={after}",
                headers={**auth, "Host": f"acme.localhost:{p1}"},
            ).json()
            polled += page["events"]
            after = page["next_after"]
            if page["done"]:
                break
    # The same run over WebSocket on web process 2 (resume from 0), authenticated by the API key.
    _, over_ws = asyncio.run(
        ws_collect(p2, agent.pk, headers=auth, first={"type": "resume", "run_id": run_id, "after": 0})
    )
    assert comparable(polled) == comparable(over_sse) == comparable(over_ws)
    text = "".join(e["data"]["text"] for e in over_sse if e["type"] == "token")
    assert "Refunds are accepted within 30 days of purchase." in text
    assert any(e["type"] == "citation" for e in over_sse)
    with tenant_context(live.tenant_a):
        row = Message.objects.get(run_id=run_id)
    assert row.status == "complete" and row.content == text and row.agent_version_id == agent.current_version_id


@pytest.mark.e2e
def test_websocket_chat_with_session_cookie_disconnect_and_resume_exactly_once(
    live, daphne_pair, celery_worker_process
):
    p1, p2 = daphne_pair
    kb = live.knowledge_base(HANDBOOK)
    agent = live.agent(knowledge_base_ids=[kb.pk], sampling={"stream_delay_ms": 30})
    session = live.client().cookies["sessionid"].value
    cookie = {"Cookie": f"sessionid={session}"}
    accepted, before = asyncio.run(
        ws_collect(p1, agent.pk, headers=cookie, first={"type": "chat", "message": QUESTION}, stop_after=5)
    )
    assert accepted and [e["seq"] for e in before] == [1, 2, 3, 4, 5]
    _, after = asyncio.run(
        ws_collect(
            p2,
            agent.pk,
            headers=cookie,
            first={"type": "resume", "run_id": accepted["run_id"], "after": before[-1]["seq"]},
        )
    )
    seqs = [e["seq"] for e in before + after]
    assert seqs == list(range(1, len(seqs) + 1)) and after[-1]["type"] == "message.end"
    # Someone else's session cannot resume it; an anonymous socket is refused.
    other = live.client(live.tenant_b, live.admin_b).cookies["sessionid"].value
    with pytest.raises(websockets.exceptions.InvalidStatus):
        asyncio.run(
            ws_collect(
                p1,
                agent.pk,
                headers={"Cookie": f"sessionid={other}"},
                first={"type": "resume", "run_id": accepted["run_id"], "after": 0},
            )
        )
    with pytest.raises(websockets.exceptions.InvalidStatus):
        asyncio.run(ws_collect(p1, agent.pk, headers={}, first={"type": "chat", "message": "hi"}))
