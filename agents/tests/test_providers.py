"""The OpenAI-compatible and Anthropic providers against loopback servers speaking each real wire protocol
(official SDKs, no client mocking): streaming text, tool calls, usage, wrong key, timeout, mid-stream drop."""

import asyncio
import json

import pytest

from agents.providers.anthropic_provider import AnthropicProvider
from agents.providers.base import (
    ChatRequest,
    ContextTooLong,
    Finish,
    ProviderAuthError,
    ProviderError,
    ProviderTimeout,
    TextDelta,
    ToolCall,
    ToolSpec,
    Usage,
)
from agents.providers.offline import NOTHING_FOUND, OfflineProvider
from agents.providers.openai_compat import OpenAICompatProvider

from .fakes import FakeAnthropic, FakeOpenAI

SEARCH = ToolSpec(
    name="knowledge_search",
    description="search",
    parameters={"type": "object", "properties": {"query": {"type": "string"}}},
)


@pytest.fixture(autouse=True)
def _loopback_allowed(settings):
    settings.SSRF_ALLOWED_NETWORKS = ["127.0.0.0/8"]  # the platform operator allows the loopback fake servers


def collect(provider, request):
    async def run():
        return [event async for event in provider.stream(request)]

    return asyncio.run(run())


def request(**kw):
    base = {
        "model": "fake-model",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}],
    }
    return ChatRequest(**{**base, **kw})


PROVIDERS = [(FakeOpenAI, OpenAICompatProvider, "/v1"), (FakeAnthropic, AnthropicProvider, "")]


@pytest.mark.parametrize(("fake_cls", "provider_cls", "suffix"), PROVIDERS)
def test_streams_text_tokens_and_usage(fake_cls, provider_cls, suffix):
    with fake_cls([{"text": ["Hel", "lo", " there"]}]) as fake:
        events = collect(provider_cls(base_url=fake.url + suffix, api_key="sk-good"), request(temperature=0.3))
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["Hel", "lo", " there"]
    usage = [e for e in events if isinstance(e, Usage)]
    assert usage and usage[-1].input_tokens > 0 and usage[-1].output_tokens > 0
    assert isinstance(events[-1], Finish) and events[-1].reason == "stop"
    sent = fake.requests[0]
    assert sent["body"]["stream"] is True and sent["body"]["model"] == "fake-model"
    assert sent["body"]["temperature"] == 0.3 and "top_p" not in sent["body"]  # unset settings are not sent
    if fake_cls is FakeOpenAI:
        assert sent["headers"]["authorization"] == "Bearer sk-good"
        assert sent["path"] == "/v1/chat/completions"
    else:
        assert sent["headers"].get("x-api-key") == "sk-good" or sent["headers"].get("authorization") == "Bearer sk-good"
        assert sent["path"] == "/v1/messages"
        assert sent["body"]["system"] == "Be brief."  # system prompt moved out of the messages


@pytest.mark.parametrize(("fake_cls", "provider_cls", "suffix"), PROVIDERS)
def test_tool_calls_are_assembled_from_streamed_fragments(fake_cls, provider_cls, suffix):
    arguments = json.dumps({"query": "refund policy", "top_k": 3})
    script = [
        {
            "text": ["Let me look."],
            "tool_calls": [{"id": "call_abc", "name": "knowledge_search", "arguments": arguments}],
        }
    ]
    with fake_cls(script) as fake:
        events = collect(provider_cls(base_url=fake.url + suffix, api_key="k"), request(tools=[SEARCH]))
    calls = [e for e in events if isinstance(e, ToolCall)]
    assert len(calls) == 1
    assert calls[0].id == "call_abc" and calls[0].name == "knowledge_search"
    assert json.loads(calls[0].arguments) == {"query": "refund policy", "top_k": 3}
    assert events[-1].reason == "tool_calls"
    tools_sent = fake.requests[0]["body"]["tools"]
    if fake_cls is FakeOpenAI:
        assert tools_sent[0]["function"]["name"] == "knowledge_search"
    else:
        assert tools_sent[0]["input_schema"]["type"] == "object"


@pytest.mark.parametrize(("fake_cls", "provider_cls", "suffix"), PROVIDERS)
def test_tool_results_are_sent_back_in_each_wire_format(fake_cls, provider_cls, suffix):
    messages = [
        {"role": "user", "content": "Q"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "c1", "name": "knowledge_search", "arguments": '{"query": "x"}'}],
        },
        {"role": "tool", "tool_call_id": "c1", "name": "knowledge_search", "content": '{"results": []}'},
    ]
    with fake_cls([{"text": ["ok"]}]) as fake:
        collect(provider_cls(base_url=fake.url + suffix, api_key="k"), request(messages=messages, tools=[SEARCH]))
    sent = fake.requests[0]["body"]["messages"]
    if fake_cls is FakeOpenAI:
        assert sent[1]["tool_calls"][0]["function"]["arguments"] == '{"query": "x"}'
        assert sent[2] == {"role": "tool", "tool_call_id": "c1", "content": '{"results": []}'}
    else:
        assert sent[1]["content"][0] == {
            "type": "tool_use",
            "id": "c1",
            "name": "knowledge_search",
            "input": {"query": "x"},
        }
        assert sent[2]["content"][0]["type"] == "tool_result" and sent[2]["content"][0]["tool_use_id"] == "c1"


@pytest.mark.parametrize(("fake_cls", "provider_cls", "suffix"), PROVIDERS)
def test_wrong_key_is_a_clear_auth_error(fake_cls, provider_cls, suffix):
    with fake_cls([{"status": 401}]) as fake, pytest.raises(ProviderAuthError):
        collect(provider_cls(base_url=fake.url + suffix, api_key="wrong"), request())


@pytest.mark.parametrize(("fake_cls", "provider_cls", "suffix"), PROVIDERS)
def test_prompt_over_context_limit_is_reported(fake_cls, provider_cls, suffix):
    with fake_cls([{"status": 400}]) as fake, pytest.raises(ContextTooLong):
        collect(provider_cls(base_url=fake.url + suffix, api_key="k"), request())


@pytest.mark.parametrize(("fake_cls", "provider_cls", "suffix"), PROVIDERS)
def test_provider_timeout(fake_cls, provider_cls, suffix):
    with fake_cls([{"hang": 3}]) as fake, pytest.raises(ProviderTimeout):
        collect(provider_cls(base_url=fake.url + suffix, api_key="k", timeout=0.5), request())


@pytest.mark.parametrize(("fake_cls", "provider_cls", "suffix"), PROVIDERS)
def test_mid_stream_disconnect_keeps_the_tokens_already_received(fake_cls, provider_cls, suffix):
    received = []

    async def run():
        provider = provider_cls(base_url=fake.url + suffix, api_key="k")
        async for event in provider.stream(request()):
            if isinstance(event, TextDelta):
                received.append(event.text)

    with fake_cls([{"text": ["a", "b", "c", "d"], "disconnect_after": 2}]) as fake, pytest.raises(ProviderError):
        asyncio.run(run())
    assert received == ["a", "b"]


def test_offline_provider_answers_from_passages_with_citations():
    passages = [
        {"n": 1, "text": "Refunds are accepted within 30 days of purchase. Shipping is free."},
        {"n": 2, "text": "Our office is in Lisbon."},
    ]
    events = collect(
        OfflineProvider(),
        request(messages=[{"role": "user", "content": "How long do refunds take?"}], context=passages),
    )
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert "Refunds are accepted within 30 days of purchase. [1]" in text
    assert "Lisbon" not in text
    assert len([e for e in events if isinstance(e, TextDelta)]) > 5  # streamed word by word


def test_offline_provider_says_plainly_when_nothing_is_relevant():
    events = collect(
        OfflineProvider(),
        request(
            messages=[{"role": "user", "content": "Who won the match?"}],
            context=[{"n": 1, "text": "Refunds take 30 days."}],
        ),
    )
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == NOTHING_FOUND


@pytest.mark.parametrize(("fake_cls", "provider_cls", "suffix"), PROVIDERS)
def test_provider_requests_are_ssrf_checked_at_send_time(fake_cls, provider_cls, suffix, settings):
    """The transport checks the address on every request (not only when the agent is compiled), so a name that
    re-resolves to an internal address later (DNS rebinding) or an operator's allowance withdrawn is refused
    before any byte is sent: the fake server sees no request."""
    fake = fake_cls([{"text": ["never"]}]).start()
    try:
        settings.SSRF_ALLOWED_NETWORKS = []
        provider = provider_cls(base_url=fake.url + suffix, api_key="sk-test", timeout=5)
        with pytest.raises(ProviderError) as caught:
            collect(provider, ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}]))
        assert caught.value.code == "unsafe_url" and "private or internal address" in caught.value.message
        assert fake.requests == []
    finally:
        fake.stop()
