"""A saturated chat pool queues new runs (run.queued position events), then starts them in order; a
full queue is a 503 with Retry-After; a run that waits too long ends with a clear `overloaded` error event."""

from __future__ import annotations

import threading

from agents.tests.conftest import events_of, run_inline


def _chat(client, agent):
    return client.post(
        f"/api/v1/agents/{agent.pk}/chat/", {"message": "hello", "wait": False}, content_type="application/json"
    )


def test_second_run_is_queued_at_position_1_then_completes_after_the_first(committed, settings):
    settings.CHAT_POOL_SLOTS = 1  # max concurrent runs = 1
    settings.CHAT_QUEUE_MAX = 1
    settings.CHAT_QUEUE_WAIT_SECONDS = 30
    settings.CHAT_QUEUE_POLL_SECONDS = 0.05
    first_agent, second_agent = committed.agent(name="First"), committed.agent(name="Second")
    client = committed.client()

    first = _chat(client, first_agent)
    assert first.status_code == 202, first.content
    assert first.json()["queued_position"] == 0
    second = _chat(client, second_agent)
    assert second.status_code == 202, second.content
    assert second.json()["queued_position"] == 1
    run2 = second.json()["run_id"]
    assert [(e["seq"], e["type"], e["data"]) for e in events_of(committed.tenant_a, run2)] == [
        (1, "run.queued", {"position": 1})
    ]

    third = _chat(client, first_agent)  # the queue (1) is full: refused at once
    assert third.status_code == 503, third.content
    assert third["Retry-After"] and int(third["Retry-After"]) > 0
    assert third.json()["code"] == "overloaded"

    outcome: dict = {}
    waiter = threading.Thread(target=lambda: outcome.update(run_inline(committed.tenant_a, run2)))
    waiter.start()
    waiter.join(0.5)
    assert waiter.is_alive()  # still waiting for the only slot
    assert [e["type"] for e in events_of(committed.tenant_a, run2)] == ["run.queued"]  # nothing duplicated
    assert run_inline(committed.tenant_a, first.json()["run_id"])["status"] == "complete"  # frees the slot
    waiter.join(20)
    assert not waiter.is_alive() and outcome["status"] == "complete"

    events = events_of(committed.tenant_a, run2)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))  # every event exactly once, in order
    types = [e["type"] for e in events]
    assert types[0] == "run.queued" and types[1] == "message.start" and types[-1] == "message.end"
    assert types.count("run.queued") == 1 and events[-1]["data"]["status"] == "complete"
    assert [e["type"] for e in events_of(committed.tenant_a, run2, after=1)][0] == "message.start"  # resumable


def test_a_queued_run_that_waits_too_long_ends_with_an_overloaded_error(committed, settings):
    settings.CHAT_POOL_SLOTS = 1
    settings.CHAT_QUEUE_MAX = 5
    settings.CHAT_QUEUE_WAIT_SECONDS = 0.3
    settings.CHAT_QUEUE_POLL_SECONDS = 0.05
    first_agent, second_agent = committed.agent(name="Busy"), committed.agent(name="Waiting")
    client = committed.client()
    busy = _chat(client, first_agent)  # holds the only slot and is never executed here
    assert busy.status_code == 202 and busy.json()["queued_position"] == 0
    queued = _chat(client, second_agent)
    assert queued.status_code == 202 and queued.json()["queued_position"] == 1

    assert run_inline(committed.tenant_a, queued.json()["run_id"])["status"] == "incomplete"
    events = events_of(committed.tenant_a, queued.json()["run_id"])
    assert [e["type"] for e in events] == ["run.queued", "error", "message.end"]
    assert [e["seq"] for e in events] == [1, 2, 3]
    assert events[1]["data"]["code"] == "overloaded" and events[1]["data"]["retry_after"] > 0
    assert events[2]["data"]["status"] == "incomplete"

    from core.redis_clients import redis_client

    assert redis_client().zcard("runs:global:queue") == 0  # it left the queue
