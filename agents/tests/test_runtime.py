"""The run executor in-process, on committed data: event schema, persistence, versions, and the bad inputs."""

import json
import time

import pytest
from django.db import DataError
from django_tenants.utils import tenant_context

from agents.models import Message
from agents.providers.offline import NOTHING_FOUND
from core.epochs import epoch_get

from .conftest import events_of, run_inline
from .fakes import FakeAnthropic, FakeHTTPTarget, FakeOpenAI

HANDBOOK = {
    "Refunds": "Refunds are accepted within 30 days of purchase. Keep the receipt.",
    "Office": "Our office is in Lisbon and opens at nine.",
}


def chat(live, agent, message, tenant=None, conversation_id=None):
    from agents.services import chat_start

    tenant = tenant or live.tenant_a
    with tenant_context(tenant):
        agent.refresh_from_db()
        return chat_start(
            principal=live.principal(tenant, live.admin_a if tenant == live.tenant_a else live.admin_b),
            agent=agent,
            message=message,
            conversation_id=conversation_id,
        )


def message_row(tenant, message_id):
    with tenant_context(tenant):
        return Message.objects.select_related("agent_version").get(pk=message_id)


def test_rag_run_streams_the_event_schema_and_records_versions(live):
    kb = live.knowledge_base(HANDBOOK)
    agent = live.agent(knowledge_base_ids=[kb.pk], system_prompt="Answer from the handbook.")
    handles = chat(live, agent, "Within how many days are refunds accepted?")
    assert run_inline(live.tenant_a, handles["run_id"])["status"] == "complete"
    events = events_of(live.tenant_a, handles["run_id"])
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    kinds = [e["type"] for e in events]
    assert kinds[0] == "message.start" and kinds[-1] == "message.end"
    assert "citation" in kinds and kinds.count("token") > 5
    text = "".join(e["data"]["text"] for e in events if e["type"] == "token")
    assert "Refunds are accepted within 30 days of purchase." in text and "[1]" in text
    citation = next(e["data"] for e in events if e["type"] == "citation")
    assert citation["document_title"] == "Refunds" and citation["n"] == 1
    end = events[-1]["data"]
    assert end["status"] == "complete" and end["timings"]["total_ms"] >= 0 and end["usage"]["output_tokens"] > 0
    row = message_row(live.tenant_a, handles["message_id"])
    assert row.status == "complete" and row.content == text
    assert row.agent_version_id == agent.current_version_id
    assert row.kb_versions == {str(kb.pk): 1}
    assert row.citations[0]["chunk_id"] is not None


def test_a_failed_insert_cancels_the_already_queued_run_and_leaves_no_rows(live, monkeypatch, settings):
    from agents.models import Conversation
    from agents.runtime.stream import cancel_key
    from core.redis_clients import redis_client

    agent = live.agent()
    with tenant_context(live.tenant_a):
        conversations = Conversation.objects.count()
    started = []

    monkeypatch.setattr("agents.tasks.agent_run_task.apply_async", lambda **kw: started.append(kw["args"][0]))
    monkeypatch.setattr("agents.services._TURN_INSERT", "SELECT 1 / 0")  # the turn's INSERT fails in the database
    settings.AGENTS_ENQUEUE_RUNS = True  # queued for real (to the stub above)
    with pytest.raises(DataError):
        chat(live, agent, "hello?")
    (run_id,) = started  # the run was queued before the insert
    schema = live.tenant_a.schema_name
    assert redis_client().exists(cancel_key(schema, run_id))  # ... and is told to stop
    r, member = redis_client(), f"{schema}:{run_id}"
    held = [k for k in r.scan_iter("runs:*") if member.encode() in k]  # its slot record
    held += [k for k in r.scan_iter("runs:*") if r.type(k) == b"zset" and r.zscore(k, member) is not None]
    assert held == []  # its slots are free
    with tenant_context(live.tenant_a):
        assert Conversation.objects.count() == conversations  # the transaction left nothing behind
        assert not Message.objects.filter(run_id=run_id).exists()


def test_a_run_that_ends_before_its_rows_are_written_saves_its_answer_once_they_are(live):
    import threading

    handles = chat(live, live.agent(), "What is the refund window?")
    with tenant_context(live.tenant_a):
        reply = Message.objects.get(pk=handles["message_id"])
        Message.objects.filter(pk=reply.pk).delete()  # as if chat_start had not committed yet

    def write_late():
        time.sleep(0.3)
        with tenant_context(live.tenant_a):
            Message.objects.bulk_create([reply])

    writer = threading.Thread(target=write_late)
    writer.start()
    assert run_inline(live.tenant_a, handles["run_id"])["status"] == "complete"
    writer.join()
    row = message_row(live.tenant_a, handles["message_id"])
    assert row.status == "complete" and row.content == NOTHING_FOUND


def test_offline_agent_says_plainly_when_nothing_is_found(live):
    kb = live.knowledge_base(HANDBOOK)
    agent = live.agent(knowledge_base_ids=[kb.pk])
    handles = chat(live, agent, "Which football team won yesterday?")
    run_inline(live.tenant_a, handles["run_id"])
    assert message_row(live.tenant_a, handles["message_id"]).content == NOTHING_FOUND


def test_restoring_a_version_reproduces_its_config_and_messages_record_the_version(live):
    from agents.services import agent_config, agent_update, agent_version_restore

    agent = live.agent(system_prompt="v1 prompt", sampling={"temperature": 0.1})
    with tenant_context(live.tenant_a):
        v1 = agent.current_version
        agent_update(
            principal=live.principal(),
            agent=agent,
            data={"system_prompt": "v2 prompt", "sampling": {"temperature": 0.9}},
            note="tune",
        )
        agent.refresh_from_db()
        assert agent.current_version.number == 2
    first = chat(live, agent, "hello")
    run_inline(live.tenant_a, first["run_id"])
    with tenant_context(live.tenant_a):
        started = time.perf_counter()
        restored = agent_version_restore(principal=live.principal(), agent=agent, number=1)
        elapsed = time.perf_counter() - started
        agent.refresh_from_db()
        assert elapsed < 0.5
        assert restored.number == 3 and restored.restored_from == 1
        assert restored.config == v1.config == agent_config(agent)
    second = chat(live, agent, "hello again", conversation_id=first["conversation_id"])
    run_inline(live.tenant_a, second["run_id"])
    assert message_row(live.tenant_a, first["message_id"]).agent_version.number == 2
    assert message_row(live.tenant_a, second["message_id"]).agent_version.number == 3
    assert message_row(live.tenant_a, second["message_id"]).agent_version.config["system_prompt"] == "v1 prompt"


def test_openai_tools_agent_runs_the_function_calling_loop(live):
    kb = live.knowledge_base(HANDBOOK)
    script = [
        {"tool_calls": [{"id": "call_1", "name": "knowledge_search", "arguments": json.dumps({"query": "refunds"})}]},
        {"text": ["Refunds", " within", " 30", " days", " [1]."]},
    ]
    with FakeOpenAI(script) as fake:
        provider = live.provider(base_url=fake.url + "/v1", api_key="sk-test", default_model="gpt-fake")
        agent = live.agent(
            agent_type="tools", provider_id=provider.pk, knowledge_base_ids=[kb.pk], tools=["knowledge_search"]
        )
        handles = chat(live, agent, "What is the refund window?")
        run_inline(live.tenant_a, handles["run_id"])
    kinds = [e["type"] for e in events_of(live.tenant_a, handles["run_id"])]
    assert kinds.index("tool.call") < kinds.index("tool.result") < kinds.index("token")
    result = next(e for e in events_of(live.tenant_a, handles["run_id"]) if e["type"] == "tool.result")
    assert result["data"]["ok"] and "Refunds are accepted" in result["data"]["content"]
    # The second request carried the tool result back in OpenAI's format.
    assert fake.requests[1]["body"]["messages"][-1]["role"] == "tool"
    assert fake.requests[0]["body"]["model"] == "gpt-fake"
    row = message_row(live.tenant_a, handles["message_id"])
    assert row.status == "complete" and row.content == "Refunds within 30 days [1]."
    assert row.tool_calls[0]["name"] == "knowledge_search"


def test_anthropic_tools_agent_with_a_plugin_tool(live):
    script = [
        {
            "text": ["Counting."],
            "tool_calls": [{"id": "toolu_1", "name": "word_count", "arguments": json.dumps({"text": "one two three"})}],
        },
        {"text": ["Three", " words."]},
    ]
    with FakeAnthropic(script) as fake:
        provider = live.provider(
            name="claude", kind="anthropic", base_url=fake.url, api_key="sk-ant", default_model="claude-fake"
        )
        agent = live.agent(agent_type="tools", provider_id=provider.pk, tools=["word_count"])
        handles = chat(live, agent, "How many words in 'one two three'?")
        run_inline(live.tenant_a, handles["run_id"])
    result = next(e for e in events_of(live.tenant_a, handles["run_id"]) if e["type"] == "tool.result")
    assert json.loads(result["data"]["content"]) == {"words": 3}
    assert fake.requests[1]["body"]["messages"][-1]["content"][0]["type"] == "tool_result"
    assert message_row(live.tenant_a, handles["message_id"]).content == "Counting.Three words."


def _error_run(live, script, **agent_kw):
    with FakeOpenAI(script) as fake:
        provider = live.provider(
            base_url=fake.url + "/v1", api_key=agent_kw.pop("api_key", "k"), timeout_seconds=agent_kw.pop("timeout", 60)
        )
        agent = live.agent(provider_id=provider.pk, **agent_kw)
        handles = chat(live, agent, "Tell me something")
        run_inline(live.tenant_a, handles["run_id"])
    events = events_of(live.tenant_a, handles["run_id"])
    return agent, handles, events, message_row(live.tenant_a, handles["message_id"])


def test_wrong_provider_key_gives_an_error_event_and_an_incomplete_message(live):
    _, _, events, row = _error_run(live, [{"status": 401}], api_key="wrong")
    assert [e["type"] for e in events][-2:] == ["error", "message.end"]
    assert events[-2]["data"]["code"] == "provider_auth"
    assert row.status == "incomplete" and row.error["code"] == "provider_auth"


def test_provider_timeout_is_an_error_event(live):
    _, _, events, row = _error_run(live, [{"hang": 3}], timeout=1)
    assert events[-2]["data"]["code"] == "provider_timeout" and row.status == "incomplete"


def test_provider_disconnect_mid_stream_keeps_the_partial_answer_and_the_conversation_goes_on(live):
    agent, handles, events, row = _error_run(
        live, [{"text": ["Part", "ial", " rest"], "disconnect_after": 2}, {"text": ["Fine", " now."]}]
    )
    assert events[-2]["type"] == "error" and events[-1]["data"]["status"] == "incomplete"
    assert row.content == "Partial" and row.status == "incomplete"
    # The conversation is still usable: the next turn works and sees the partial answer in its history.
    with FakeOpenAI([{"text": ["Fine", " now."]}]) as fake:
        with tenant_context(live.tenant_a):
            from agents.models import ProviderCredential
            from agents.services import provider_update

            provider_update(
                provider=ProviderCredential.objects.get(pk=agent.provider_id), data={"base_url": fake.url + "/v1"}
            )
        nxt = chat(live, agent, "Again?", conversation_id=handles["conversation_id"])
        run_inline(live.tenant_a, nxt["run_id"])
    assert message_row(live.tenant_a, nxt["message_id"]).content == "Fine now."
    history = fake.requests[0]["body"]["messages"]
    assert {"role": "assistant", "content": "Partial"} in history


def test_disabled_provider_is_refused_before_the_run(live):
    from agents.services import ProviderDisabled

    provider = live.provider(enabled=False)
    agent = live.agent(provider_id=provider.pk)
    with pytest.raises(ProviderDisabled):
        chat(live, agent, "hi")


def test_prompt_over_the_context_limit_is_a_400(live):
    agent = live.agent(limits={"context_tokens": 2000, "max_tokens": 500})
    response = live.client().post(
        f"/api/v1/agents/{agent.pk}/chat/", {"message": "word " * 5000}, content_type="application/json"
    )
    assert response.status_code == 400 and response.json()["code"] == "context_too_long"


def test_malformed_tool_arguments_from_the_model_become_a_tool_error_the_model_sees(live):
    script = [
        {"tool_calls": [{"id": "c1", "name": "knowledge_search", "arguments": "{not json"}]},
        {"tool_calls": [{"id": "c2", "name": "knowledge_search", "arguments": json.dumps({"top_k": 3})}]},
        {"text": ["Sorry."]},
    ]
    with FakeOpenAI(script) as fake:
        provider = live.provider(base_url=fake.url + "/v1")
        agent = live.agent(agent_type="tools", provider_id=provider.pk, tools=["knowledge_search"])
        handles = chat(live, agent, "search")
        run_inline(live.tenant_a, handles["run_id"])
    results = [e["data"] for e in events_of(live.tenant_a, handles["run_id"]) if e["type"] == "tool.result"]
    assert [r["error"]["code"] for r in results] == ["invalid_arguments", "invalid_arguments"]
    assert "'query' is a required property" in results[1]["error"]["detail"]
    assert message_row(live.tenant_a, handles["message_id"]).status == "complete"


def test_tool_step_limit_ends_with_a_clear_error(live):
    call = {"tool_calls": [{"id": "c", "name": "word_count", "arguments": json.dumps({"text": "a b"})}]}
    with FakeOpenAI([call]) as fake:
        provider = live.provider(base_url=fake.url + "/v1")
        agent = live.agent(
            agent_type="tools", provider_id=provider.pk, tools=["word_count"], limits={"max_tool_steps": 2}
        )
        handles = chat(live, agent, "loop forever")
        run_inline(live.tenant_a, handles["run_id"])
    events = events_of(live.tenant_a, handles["run_id"])
    assert events[-2]["data"]["code"] == "limit_exceeded" and events[-2]["data"]["limit"] == "max_tool_steps"
    assert len(fake.requests) == 3


def test_hanging_tool_and_10_mb_tool_response_are_contained(live, settings):
    settings.SSRF_ALLOWED_NETWORKS = ["127.0.0.0/8"]  # the platform operator allows the loopback test target
    from agents.models import ApprovedHost

    with tenant_context(live.tenant_a):
        live.track(live.tenant_a, ApprovedHost.objects.create(host="127.0.0.1"))
    with FakeHTTPTarget([{"hang": 5}, {"size": 10 * 1024 * 1024}]) as target:
        script = [
            {
                "tool_calls": [
                    {
                        "id": "c1",
                        "name": "http_request",
                        "arguments": json.dumps({"method": "GET", "url": target.url + "/slow"}),
                    }
                ]
            },
            {
                "tool_calls": [
                    {
                        "id": "c2",
                        "name": "http_request",
                        "arguments": json.dumps({"method": "GET", "url": target.url + "/big"}),
                    }
                ]
            },
            {"text": ["Done."]},
        ]
        with FakeOpenAI(script) as fake:
            provider = live.provider(base_url=fake.url + "/v1")
            agent = live.agent(
                agent_type="tools", provider_id=provider.pk, tools=["http_request"], limits={"tool_timeout_seconds": 1}
            )
            handles = chat(live, agent, "fetch")
            started = time.monotonic()
            run_inline(live.tenant_a, handles["run_id"])
            assert time.monotonic() - started < 8  # 1 s tool timeout + a 1 MB capped read, not 5 s + 10 MB
    results = [e["data"] for e in events_of(live.tenant_a, handles["run_id"]) if e["type"] == "tool.result"]
    assert results[0]["error"]["code"] == "tool_timeout"
    assert results[1]["ok"] is True and len(results[1]["content"]) <= 2000
    # What went back to the model was capped too.
    tool_message = fake.requests[2]["body"]["messages"][-1]
    assert len(tool_message["content"]) < 30_000 and '"truncated": true' in tool_message["content"]
    assert message_row(live.tenant_a, handles["message_id"]).content == "Done."


def test_run_timeout_keeps_partial_answer(live):
    with FakeOpenAI([{"text": ["a", "b", "c", "d", "e"], "delay": 0.5}]) as fake:
        provider = live.provider(base_url=fake.url + "/v1")
        agent = live.agent(provider_id=provider.pk, limits={"run_timeout_seconds": 2})
        handles = chat(live, agent, "slow")
        run_inline(live.tenant_a, handles["run_id"])
    events = events_of(live.tenant_a, handles["run_id"])
    assert events[-2]["data"]["code"] == "run_timeout"
    row = message_row(live.tenant_a, handles["message_id"])
    assert row.status == "incomplete" and row.content and "abcde".startswith(row.content) and row.content != "abcde"


def test_concurrency_limit_is_a_clear_429(live):
    agent = live.agent(limits={"max_concurrent_runs": 1})
    client = live.client()
    first = client.post(
        f"/api/v1/agents/{agent.pk}/chat/", {"message": "one", "wait": False}, content_type="application/json"
    )
    assert first.status_code == 202
    second = client.post(
        f"/api/v1/agents/{agent.pk}/chat/", {"message": "two", "wait": False}, content_type="application/json"
    )
    assert second.status_code == 429 and second["Retry-After"]
    assert second.json()["code"] == "concurrency_limited" and second.json()["scope"] == "agent"
    run_inline(live.tenant_a, first.json()["run_id"])  # releases the slot
    third = client.post(
        f"/api/v1/agents/{agent.pk}/chat/", {"message": "three", "wait": False}, content_type="application/json"
    )
    assert third.status_code == 202
    run_inline(live.tenant_a, third.json()["run_id"])


def test_compiled_configs_are_cached_and_a_new_version_is_picked_up(live):
    from agents.runtime import compiled
    from agents.services import agent_update

    agent = live.agent(system_prompt="one")
    compiled.compiled_cache_clear()
    before = dict(compiled.stats)
    for _ in range(2):
        run_inline(live.tenant_a, chat(live, agent, "hi")["run_id"])
    assert compiled.stats["misses"] - before["misses"] == 1 and compiled.stats["hits"] - before["hits"] == 1
    with tenant_context(live.tenant_a):
        agent_update(principal=live.principal(), agent=agent, data={"system_prompt": "two"})
    run_inline(live.tenant_a, chat(live, agent, "hi")["run_id"])
    assert compiled.stats["misses"] - before["misses"] == 2


def test_a_cached_agent_starts_from_memory_and_a_provider_change_is_seen_by_the_next_run(live):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from agents.models import ProviderCredential
    from agents.runtime import compiled
    from agents.runtime.runner import _load_from_memory
    from agents.runtime.stream import run_meta_read
    from agents.services import provider_update

    with FakeOpenAI([{"text": ["One."]}, {"text": ["Two."]}, {"text": ["Three."]}]) as fake:
        provider = live.provider(base_url=fake.url + "/v1", api_key="sk-first")
        agent = live.agent(provider_id=provider.pk)
        compiled.compiled_cache_clear()
        run_inline(live.tenant_a, chat(live, agent, "first")["run_id"])  # compiles and caches
        second = chat(live, agent, "second")
        meta = run_meta_read(live.tenant_a.schema_name, second["run_id"])
        tools = epoch_get(compiled.tools_epoch(live.tenant_a.schema_name))  # run_start_read reads it with the meta
        with CaptureQueriesContext(connection) as queries:
            loaded = _load_from_memory(live.tenant_a.schema_name, meta, tools)
        assert loaded is not None and loaded["question"] == "second" and len(queries) == 0
        assert _load_from_memory(live.tenant_a.schema_name, meta, None) is None  # no epoch yet: nothing is trusted
        run_inline(live.tenant_a, second["run_id"])

        with tenant_context(live.tenant_a):  # a new key: the stamp chat_start passes no longer matches the cache
            provider_update(provider=ProviderCredential.objects.get(pk=provider.pk), data={"api_key": "sk-second"})
        third = chat(live, agent, "third")
        assert (
            _load_from_memory(
                live.tenant_a.schema_name, run_meta_read(live.tenant_a.schema_name, third["run_id"]), tools
            )
            is None
        )
        run_inline(live.tenant_a, third["run_id"])
    assert [r["headers"].get("authorization") for r in fake.requests] == [
        "Bearer sk-first",
        "Bearer sk-first",
        "Bearer sk-second",
    ]
    assert message_row(live.tenant_a, third["message_id"]).content == "Three."


def test_the_chat_agent_cache_serves_a_hit_without_queries_checks_each_principal_and_sees_changes(live):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from agents.selectors import agent_get_for_chat
    from agents.services import agent_update
    from core.errors import NotFound

    agent = live.agent(system_prompt="first")
    admin = live.principal()
    member = live.principal(user=live.admin_b, role="user")  # a plain member of tenant A who does not own it
    with tenant_context(live.tenant_a):
        agent_get_for_chat(admin, agent.pk)  # loads it
        with CaptureQueriesContext(connection) as queries:
            assert agent_get_for_chat(admin, agent.pk).current_version.config["system_prompt"] == "first"
        assert not [q for q in queries if "agents_agent" in q["sql"]]  # a hit reads no row
        with pytest.raises(NotFound):  # the cached row is still checked for each principal
            agent_get_for_chat(member, agent.pk)
        agent_update(principal=admin, agent=agent, data={"system_prompt": "second", "org_access": "viewer"})
        assert agent_get_for_chat(member, agent.pk).current_version.config["system_prompt"] == "second"
        agent_update(principal=admin, agent=agent, data={"org_access": "none"})
        with pytest.raises(NotFound):
            agent_get_for_chat(member, agent.pk)
        with pytest.raises(NotFound):
            agent_get_for_chat(admin, "not-a-number")


def test_provider_url_on_a_private_network_is_refused_unless_the_operator_allows_it(live, settings):
    settings.SSRF_ALLOWED_NETWORKS = ["10.0.0.0/8"]  # allowed when it was saved (saving checks too)...
    provider = live.provider(base_url="http://10.1.2.3:11434/v1")  # never contacted: refused before connecting
    agent = live.agent(provider_id=provider.pk)
    settings.SSRF_ALLOWED_NETWORKS = []  # ...and withdrawn since: every run checks again
    handles = chat(live, agent, "hi")
    run_inline(live.tenant_a, handles["run_id"])
    events = events_of(live.tenant_a, handles["run_id"])
    assert events[-2]["data"]["code"] == "unsafe_url"


def test_api_key_limited_to_other_agents_cannot_chat(live):
    from iam.services import api_key_create

    allowed, other = live.agent(name="allowed"), live.agent(name="other")
    with tenant_context(live.tenant_a):
        key, raw = api_key_create(
            principal=live.principal(), name="bot", scopes=["chat", "read"], agent_ids=[allowed.pk]
        )
        live.track(live.tenant_a, key)
    from django.test import Client

    client = Client(HTTP_HOST="acme.localhost", HTTP_AUTHORIZATION=f"Api-Key {raw}")
    ok = client.post(
        f"/api/v1/agents/{allowed.pk}/chat/", {"message": "hi", "wait": False}, content_type="application/json"
    )
    assert ok.status_code == 202, ok.content
    run_inline(live.tenant_a, ok.json()["run_id"])
    assert (
        client.post(
            f"/api/v1/agents/{other.pk}/chat/", {"message": "hi", "wait": False}, content_type="application/json"
        ).status_code
        == 404
    )
    assert client.post("/api/v1/agents/", {"name": "x"}, content_type="application/json").status_code == 403


def test_stop_cancels_the_run_on_the_server_and_keeps_the_partial_answer(live):
    """POST /runs/{id}/cancel/ (the dashboard's Stop): the worker stops within the poll interval, closes the
    provider's stream (no more generation), ends the stream with message.end "cancelled" and keeps what was
    written. Someone else's credentials cannot stop it, and a finished run answers 409."""
    import threading

    tokens = [f" w{i}" for i in range(40)]
    with FakeOpenAI([{"text": tokens, "delay": 0.1}]) as fake:
        provider = live.provider(base_url=fake.url + "/v1")
        agent = live.agent(provider_id=provider.pk)
        handles = chat(live, agent, "talk for a while")
        run_id = handles["run_id"]
        worker = threading.Thread(target=run_inline, args=(live.tenant_a, run_id))
        started = time.monotonic()
        worker.start()
        deadline = time.monotonic() + 10
        while not any(e["type"] == "token" for e in events_of(live.tenant_a, run_id)):
            assert time.monotonic() < deadline, "no token arrived"
            time.sleep(0.02)
        stranger = live.client(live.tenant_b, live.admin_b)
        assert stranger.post(f"/api/v1/runs/{run_id}/cancel/").status_code in (403, 404)  # other tenant: nothing
        response = live.client().post(f"/api/v1/runs/{run_id}/cancel/")
        assert response.status_code == 202 and response.json()["status"] == "cancelling"
        worker.join(timeout=10)
        elapsed = time.monotonic() - started
    assert not worker.is_alive()
    assert elapsed < 3.0  # the full answer takes 4 s: it was stopped, not waited for
    events = events_of(live.tenant_a, run_id)
    end = events[-1]
    assert end["type"] == "message.end" and end["data"]["status"] == "cancelled"
    assert end["data"]["finish_reason"] == "cancelled"
    assert not any(e["type"] == "error" for e in events)  # stopping is not an error
    streamed = "".join(e["data"]["text"] for e in events if e["type"] == "token")
    row = message_row(live.tenant_a, handles["message_id"])
    assert row.status == "incomplete" and row.error["code"] == "cancelled"
    assert row.content == streamed and 0 < len(streamed) < len("".join(tokens))
    again = live.client().post(f"/api/v1/runs/{run_id}/cancel/")
    assert again.status_code == 409 and again.json()["code"] == "conflict"


def test_a_deleted_custom_tool_is_not_run_from_a_workers_compiled_cache(live):
    from agents.models import CustomTool
    from agents.runtime import compiled
    from agents.runtime.compiled import AgentMisconfigured

    client = live.client()
    tool = client.post(
        "/api/v1/custom-tools/",
        {
            "template": "slack_webhook",
            "name": "alerts",
            "params": {"webhook_url": "https://hooks.slack.com/services/1"},
        },
        content_type="application/json",
    )
    assert tool.status_code == 201, tool.content
    agent = live.agent(agent_type="tools", tools=[{"custom_tool": "alerts"}])
    schema = live.tenant_a.schema_name
    compiled.compiled_cache_clear()
    with tenant_context(live.tenant_a):
        version_id = agent.current_version_id
        first = compiled.compiled_agent_get(schema, version_id)
        assert any(name.startswith("alerts") for name in first.tools)
        assert compiled.compiled_agent_get(schema, version_id) is first  # cached
        CustomTool.objects.get(pk=tool.json()["id"]).delete()
        with pytest.raises(AgentMisconfigured, match="no longer exists"):
            compiled.compiled_agent_get(schema, version_id)
