import pytest
from django.core.management import call_command
from django_tenants.utils import tenant_context

from tenants.models import Tenant


@pytest.mark.django_db
def test_seed_demo_creates_tenant_kb_document_and_agent_once(capsys):
    call_command("seed_demo")
    call_command("seed_demo")  # a second `make up` reuses everything
    out = capsys.readouterr().out
    assert out.count("Created the demo organisation.") == 1
    assert "Demo login: admin@demo.example.com" in out

    from agents.models import Agent
    from knowledge.models import Document, KnowledgeBase

    with tenant_context(Tenant.objects.get(slug="demo")):
        kb = KnowledgeBase.objects.get()
        assert Document.objects.filter(knowledge_base=kb, title="handbook.md").count() == 1
        agent = Agent.objects.get()
        assert list(agent.knowledge_bases.all()) == [kb]
