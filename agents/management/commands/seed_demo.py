import os

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from agents.models import Agent
from agents.services import agent_create
from core.tenancy import in_tenant, tenant_url
from iam.policy import principal_for_user
from knowledge.models import KnowledgeBase
from knowledge.services import documents_ingest, knowledge_base_create, upload_from_text
from tenants.selectors import tenant_get_by_slug
from tenants.services import tenant_create

DEMO_EMAIL = "admin@demo.example.com"
DEMO_KB_NAME = "Agentry handbook"
DEMO_AGENT_NAME = "Handbook assistant"
DEMO_DOCUMENT = """# Agentry handbook

## Organisations
Every organisation gets its own workspace at its own address, for example demo.localhost:8000.
Its agents, knowledge bases and conversations live in a separate PostgreSQL schema, so no other
organisation can ever see them.

## Knowledge bases
Upload PDF, Word, Markdown, HTML, CSV, JSON or text files, or add a web page by URL. Documents are split
into passages, embedded with the all-MiniLM-L6-v2 model and indexed for both meaning and keywords.
Re-uploading a changed file only re-embeds the passages that changed. Every upload creates a new version
that you can search or roll back to.

## Agents
An agent combines a model provider, a system prompt and the knowledge bases it may consult. Every change
to an agent is saved as a version that can be compared and restored. Without a configured provider, the
built-in offline provider answers from the retrieved passages and cites them.

## Sharing and roles
Admins manage members, teams, API keys and quotas. Users create their own agents and knowledge bases and
share them with teams or the whole organisation, as viewers or editors. Read-only members can chat with
shared agents but change nothing.
"""


class Command(BaseCommand):
    help = "Create (once) the demo organisation with an admin, a knowledge base and an agent; print the login."

    def handle(self, *args, **options):
        password = os.environ.get("DEMO_ADMIN_PASSWORD", "demo-admin-pass-2026")
        tenant = tenant_get_by_slug(slug="demo")
        if tenant is None:
            owner = get_user_model().objects.filter(email=DEMO_EMAIL).first()
            tenant = tenant_create(
                name="Demo Org", slug="demo", owner=owner, owner_email=DEMO_EMAIL, owner_password=password
            )
            self.stdout.write(self.style.SUCCESS("Created the demo organisation."))
        owner = get_user_model().objects.get(email=DEMO_EMAIL)
        with in_tenant(tenant):
            self._seed_content(tenant, owner)
        self.stdout.write(f"Demo login: {DEMO_EMAIL} / {password}  at {tenant_url(tenant, '/accounts/login/')}")

    def _seed_content(self, tenant, owner) -> None:
        kb = KnowledgeBase.objects.filter(name=DEMO_KB_NAME).first()
        if kb is None:
            kb = knowledge_base_create(
                owner=owner, name=DEMO_KB_NAME, org_access="viewer", description="How Agentry works (demo content)."
            )
            # Processed by the Celery worker that `make up` starts.
            documents_ingest(kb=kb, user=owner, uploads=[upload_from_text(title="handbook.md", text=DEMO_DOCUMENT)])
            self.stdout.write("Created the demo knowledge base (its document is processed by the worker).")
        if not Agent.objects.filter(name=DEMO_AGENT_NAME).exists():
            principal = principal_for_user(owner, tenant)
            agent_create(
                principal=principal,
                data={
                    "name": DEMO_AGENT_NAME,
                    "description": "Answers questions about Agentry from the handbook, with citations.",
                    "agent_type": "rag",
                    "system_prompt": "Answer from the handbook and cite your sources.",
                    "knowledge_base_ids": [kb.pk],
                    "org_access": "viewer",
                },
            )
            self.stdout.write("Created the demo agent.")
