"""What the chat fault tests share: an agent whose model is a fake OpenAI-compatible server on 127.0.0.1 (the
real wire protocol, streamed token by token at a set pace; agents/tests/fakes.py), and an SSE reader.

The agent has no knowledge base: retrieval is not under test, and without it the agents worker needs no
embedding model (loading one takes the first run half a minute on a busy machine)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

from django_tenants.utils import tenant_context

from agents.services import agent_create, provider_create
from agents.tests.fakes import FakeOpenAI

ANSWER = [f"{word} " for word in ("Refunds are accepted within thirty days and go back to the card used " * 4).split()]
QUESTION = "Within how many days are refunds accepted?"
# The product's processes of a chat test: the operator allowed the loopback model server (SSRF guard), and no
# embedding model is loaded (see above).
CHAT_ENV = {"SSRF_ALLOWED_NETWORKS": "127.0.0.0/8", "WORKER_PRELOAD_EMBEDDER": "0"}


@contextmanager
def talking_agent(org, settings, *, token_seconds: float = 0.1, then_quick: bool = False) -> Iterator:
    """An agent answering ANSWER one token per `token_seconds` (then, with `then_quick`, every later answer at
    once), with its fake model server running."""
    settings.SSRF_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    script = [{"text": ANSWER, "delay": token_seconds}] + ([{"text": ANSWER}] if then_quick else [])
    with FakeOpenAI(script) as model:
        with tenant_context(org.tenant):
            provider = provider_create(
                principal=org.principal(), name="Fake", kind="openai", base_url=f"{model.url}/v1", api_key="sk-x"
            )
            agent = agent_create(
                principal=org.principal(), data={"name": "Talker", "provider_id": provider.pk, "model": "fake-1"}
            )
        yield agent


def sse_events(lines):
    """Events, and {"type": "keep-alive"} per keep-alive comment (so a reader can give up while the stream idles)."""
    data = []
    for line in lines:
        if line.startswith(": "):
            yield {"type": "keep-alive"}
        elif line.startswith("data: "):
            data.append(line[6:])
        elif line == "" and data:
            yield json.loads("\n".join(data))
            data = []
