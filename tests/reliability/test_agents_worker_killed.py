"""The agents worker is killed (-9) in the middle of an answer streamed over SSE: the client gets an `error` event
and the end of the stream, every event exactly once, and the partial answer it was shown is the one stored."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import redis
from django_tenants.utils import tenant_context

from agents.models import Message
from core.tenancy import tenant_key
from tests.reliability.chat import ANSWER, CHAT_ENV, QUESTION, sse_events, talking_agent
from tests.reliability.services import ROOT, api, private_redis, product_env, product_processes, wait_for
from usage.models import UsageRecord

pytestmark = [pytest.mark.reliability, pytest.mark.e2e, pytest.mark.django_db]


def test_killed_agents_worker_ends_the_stream_with_an_error_and_keeps_the_partial_answer(org, tmp_path, settings):
    with (
        talking_agent(org, settings) as agent,
        private_redis(tmp_path) as redis_server,
        product_processes("agents-killed", product_env(redis_url=redis_server.url, **CHAT_ENV)) as processes,
    ):
        worker = processes.worker("agents", wait=False)
        _, port = processes.web()
        processes.wait_ready(worker)
        events, killed_at, ended_at = [], None, None
        with (
            api(port, org.slug, org.key, timeout=40) as http,
            http.stream(
                "POST",
                f"/api/v1/agents/{agent.pk}/chat/",
                json={"message": QUESTION},
                headers={"Accept": "text/event-stream"},
            ) as response,
        ):
            assert response.status_code == 200, response.read()
            run_id = response.headers["X-Run-Id"]
            for event in sse_events(response.iter_lines()):
                if event["type"] != "keep-alive":
                    events.append(event)
                if killed_at is None and sum(e["type"] == "token" for e in events) == 5:
                    worker.kill9()
                    killed_at = time.monotonic()
                if event["type"] == "message.end":
                    ended_at = time.monotonic()
                    break
                if killed_at is not None and time.monotonic() - killed_at > 45:
                    break  # only keep-alives since the kill: nobody closed the run
        assert killed_at is not None, f"the answer ended before 5 tokens: {events}"
        assert ended_at is not None, "the stream closed without message.end"
        # Noticed within the liveness key's lifetime (10 s) plus one idle wake of the SSE relay (15 s).
        assert ended_at - killed_at < 30

    kinds = [e["type"] for e in events]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), "an event is missing or doubled"
    assert kinds[-2:] == ["error", "message.end"], kinds
    assert events[-2]["data"]["code"] == "provider_error"
    assert "partial answer was kept" in events[-2]["data"]["detail"]
    assert events[-1]["data"]["status"] == "incomplete"
    shown = "".join(e["data"]["text"] for e in events if e["type"] == "token")
    assert "".join(ANSWER).startswith(shown) and len(shown.split()) >= 5
    with tenant_context(org.tenant):
        message = Message.objects.get(run_id=run_id)
    assert message.status == "incomplete"
    assert message.content == shown, "the stored answer is not what the client was shown"
    assert message.error["code"] == "provider_error"


# What beat sends every minute, run here at once (twice) in a process of its own: the agents worker is dead.
SWEEP_TWICE = (
    "import json, django; django.setup(); from agents.tasks import close_orphaned_runs_task; "
    "print(json.dumps([close_orphaned_runs_task(), close_orphaned_runs_task()]))"
)


def test_run_nobody_watches_is_closed_by_the_sweep_once_and_metered(org, tmp_path, settings):
    with talking_agent(org, settings) as agent, private_redis(tmp_path) as redis_server:
        env = product_env(redis_url=redis_server.url, AGENTS_RUN_HEARTBEAT_SECONDS="2", **CHAT_ENV)
        with product_processes("agents-sweep", env) as processes:
            worker = processes.worker("agents", wait=False)
            _, port = processes.web()
            processes.wait_ready(worker)
            with api(port, org.slug, org.key, timeout=30) as http:
                response = http.post(f"/api/v1/agents/{agent.pk}/chat/", json={"message": QUESTION, "wait": False})
                assert response.status_code == 202, response.text
                run_id = response.json()["run_id"]

                def tokens_streamed() -> list[dict]:
                    events = http.get(f"/api/v1/runs/{run_id}/events/", params={"after": 0, "wait": 0}).json()
                    return [e for e in events["events"] if e["type"] == "token"]

                wait_for(lambda: len(tokens_streamed()) >= 5, timeout=60, interval=0.1, what="5 tokens")
                worker.kill9()  # nobody reads the stream: no relay notices
                time.sleep(2.5)  # the liveness key expires
                swept_at = time.monotonic()
                sweep = subprocess.run(
                    [sys.executable, "-c", SWEEP_TWICE], cwd=ROOT, env=env, check=True, timeout=60, capture_output=True
                )
                print(f"sweep process: {time.monotonic() - swept_at:.1f} s")
                sweeps = json.loads(sweep.stdout.splitlines()[-1])
                events = http.get(f"/api/v1/runs/{run_id}/events/", params={"after": 0, "wait": 0}).json()["events"]
            bus = redis.Redis.from_url(redis_server.url).xrange(tenant_key("events", schema=org.tenant.schema_name))

    assert sweeps == [{org.tenant.schema_name: [run_id]}, {}], "not closed, or closed twice"
    assert [e["type"] for e in events][-2:] == ["error", "message.end"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    shown = "".join(e["data"]["text"] for e in events if e["type"] == "token")
    with tenant_context(org.tenant):
        message = Message.objects.get(run_id=run_id)
        metered = list(UsageRecord.objects.filter(run_id=run_id).values_list("status", "tokens_out"))
    assert (message.status, message.content) == ("incomplete", shown)
    assert metered == [("incomplete", len(shown) // 4)], metered
    finished = [json.loads(fields[b"event"]) for _, fields in bus]
    finished = [e for e in finished if e["type"] == "run.finished" and e["data"]["run_id"] == run_id]
    assert len(finished) == 1 and finished[0]["data"]["status"] == "incomplete", finished
