"""Chat citations say where the passage is: its pages and its heading trail, streamed and stored alike."""

from __future__ import annotations

from django_tenants.utils import tenant_context

from agents.models import Message
from agents.services import chat_start
from knowledge.models import Chunk

from .conftest import events_of, run_inline


def test_a_citation_carries_the_passage_pages_and_section(live):
    kb = live.knowledge_base({"Admin guide": "Rotate the signing keys every ninety days from the console."})
    with tenant_context(live.tenant_a):
        Chunk.objects.filter(knowledge_base=kb).update(
            page_start=12, page_end=13, section_path=["Security", "Key rotation"]
        )
    agent = live.agent(knowledge_base_ids=[kb.pk])
    with tenant_context(live.tenant_a):
        agent.refresh_from_db()
        handles = chat_start(principal=live.principal(), agent=agent, message="How often are signing keys rotated?")
    assert run_inline(live.tenant_a, handles["run_id"])["status"] == "complete"
    streamed = next(e["data"] for e in events_of(live.tenant_a, handles["run_id"]) if e["type"] == "citation")
    assert (streamed["page_start"], streamed["page_end"]) == (12, 13)
    assert streamed["section_path"] == ["Security", "Key rotation"]
    with tenant_context(live.tenant_a):
        stored = Message.objects.get(pk=handles["message_id"]).citations[0]
    assert {k: stored[k] for k in ("page_start", "page_end", "section_path")} == {
        "page_start": 12,
        "page_end": 13,
        "section_path": ["Security", "Key rotation"],
    }
