"""Redis restarts while an answer streams over SSE, as deployed (docker-compose.yml: an append-only file on a
volume; a restart is SIGTERM, which writes it). The client's connection drops at the same moment (a proxy restarted
with it, say): resuming with Last-Event-ID gives every event exactly once, the answer completes, the stored answer
is what the client was shown, and the same processes answer the next question without a restart."""

from __future__ import annotations

import time

import pytest
from django_tenants.utils import tenant_context

from agents.models import Message
from tests.reliability.chat import ANSWER, CHAT_ENV, QUESTION, sse_events, talking_agent
from tests.reliability.services import api, private_redis, product_env, product_processes

pytestmark = [pytest.mark.reliability, pytest.mark.e2e, pytest.mark.django_db]
SSE = {"Accept": "text/event-stream"}


def read_events(response, events: list[dict], *, stop_at_tokens: int | None = None) -> None:
    """Append the stream's events until message.end (or the `stop_at_tokens`-th token)."""
    for event in sse_events(response.iter_lines()):
        if event["type"] == "keep-alive":
            continue
        events.append(event)
        tokens = sum(e["type"] == "token" for e in events)
        if event["type"] == "message.end" or tokens == stop_at_tokens:
            return


def test_redis_restart_as_deployed_resumes_every_event_exactly_once(org, tmp_path, settings):
    with talking_agent(org, settings, then_quick=True) as agent, private_redis(tmp_path, appendonly=True) as broker:
        with product_processes("redis-restart", product_env(redis_url=broker.url, **CHAT_ENV)) as processes:
            worker = processes.worker("agents", wait=False)
            _, port = processes.web()
            processes.wait_ready(worker)
            events: list[dict] = []
            with api(port, org.slug, org.key, timeout=30) as http:
                with http.stream(
                    "POST", f"/api/v1/agents/{agent.pk}/chat/", json={"message": QUESTION}, headers=SSE
                ) as response:
                    assert response.status_code == 200, response.read()
                    run_id = response.headers["X-Run-Id"]
                    read_events(response, events, stop_at_tokens=5)
                    broker.restart()  # the client's connection closes as this block ends
                restarted_at = time.monotonic()
                assert events[-1]["type"] == "token", f"the answer ended before 5 tokens: {events}"
                with http.stream(
                    "GET", f"/api/v1/runs/{run_id}/events/", headers={**SSE, "Last-Event-ID": str(events[-1]["seq"])}
                ) as response:
                    assert response.status_code == 200, response.read()
                    read_events(response, events)
                ended_in = time.monotonic() - restarted_at

                answer = http.post(f"/api/v1/agents/{agent.pk}/chat/", json={"message": QUESTION})
                assert answer.status_code == 200, answer.text
                assert answer.json()["status"] == "complete", answer.json()
                assert answer.json()["content"].strip() == "".join(ANSWER).strip()
                assert worker.proc.poll() is None, f"the agents worker exited; see {worker.log_path}"

    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), "an event is missing or doubled"
    assert not [e for e in events if e["type"] == "error"], events
    assert events[-1]["type"] == "message.end" and events[-1]["data"]["status"] == "complete", events[-2:]
    shown = "".join(e["data"]["text"] for e in events if e["type"] == "token")
    assert shown.strip() == "".join(ANSWER).strip()
    with tenant_context(org.tenant):
        message = Message.objects.get(run_id=run_id)
    assert (message.status, message.content) == ("complete", shown)
    print(f"resumed stream ended {ended_in:.2f} s after the restart")
