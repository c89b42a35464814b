"""End to end with a real Celery worker (queue "ingest"): upload a PDF, a DOCX and a Markdown file over the
API, watch progress events arrive over the channel layer, then search and get the right chunk first with
its citation.

Writes happen on a helper thread with its own autocommitting connection, so the worker process sees them;
the test's own connection only reads (READ COMMITTED sees what others committed).
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from channels.layers import get_channel_layer
from django.db import connection
from django.test import Client
from django_tenants.utils import tenant_context

from conftest import host_of
from core.events import tenant_group
from knowledge.models import Chunk, Document, KnowledgeBase
from knowledge.tests.conftest import uploaded_file
from knowledge.tests.factories import make_docx, make_pdf

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]
API = "/api/v1/knowledge-bases/"


def committed(tenant, fn):
    """Run fn on another thread/connection, in autocommit, inside the tenant."""

    def run():
        try:
            with tenant_context(tenant):
                return fn()
        finally:
            connection.close()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result()


class EventCollector(threading.Thread):
    """Subscribes a channel to the knowledge base's group and records events until told to stop."""

    def __init__(self, group: str):
        super().__init__(daemon=True)
        self.group = group
        self.events: list[dict] = []
        self.subscribed = threading.Event()
        self.stop = threading.Event()

    def run(self):
        asyncio.run(self._collect())

    async def _collect(self):
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(self.group, channel)
        self.subscribed.set()
        while not self.stop.is_set():
            try:
                message = await asyncio.wait_for(layer.receive(channel), timeout=0.5)
            except TimeoutError:
                continue
            self.events.append(message["event"])
        await layer.group_discard(self.group, channel)


def _markdown() -> str:
    sections = []
    for name in ("Deployment", "Monitoring", "Backups"):
        paragraphs = [
            f"{name} note {i}: routine {name.lower()} guidance number {i} for the operations team." for i in range(40)
        ]
        sections.append(f"## {name}\n\n" + "\n\n".join(paragraphs))
    sections.append(
        "## Incident response\n\nWhen the pager fires, the on-call engineer must acknowledge the "
        "alert within five minutes and open an incident channel named after the ticket."
    )
    return "# Operations runbook\n\n" + "\n\n".join(sections)


def test_upload_pdf_docx_markdown_with_live_progress_then_search(celery_worker_process, tenant_a, admin_a):
    client = Client(HTTP_HOST=host_of(tenant_a))

    def create_kb():
        client.force_login(admin_a)
        response = client.post(
            API, {"name": "E2E handbook", "chunk_size": 64, "chunk_overlap": 8}, content_type="application/json"
        )
        assert response.status_code == 201, response.content
        return response.json()["id"]

    kb_id = committed(tenant_a, create_kb)
    collector = EventCollector(tenant_group(tenant_a.schema_name, f"kb.{kb_id}"))
    collector.start()
    assert collector.subscribed.wait(10)
    try:
        pdf = make_pdf(
            [
                ["Annual report 2025.", "", "Revenue reached 41 million euros."],
                ["Outlook.", "", "The company will open a research lab in Montreal during 2026."],
            ]
        )
        docx_bytes = make_docx(
            [
                ("Leave policy", ["Employees receive twenty-eight days of paid leave per year."]),
                ("Parental leave", ["Parents may take sixteen weeks of fully paid parental leave."]),
            ],
            title="HR guide",
        )

        def upload():
            return client.post(
                f"{API}{kb_id}/documents/",
                {
                    "files": [
                        uploaded_file("report.pdf", pdf),
                        uploaded_file("hr-guide.docx", docx_bytes),
                        uploaded_file("runbook.md", _markdown()),
                    ]
                },
            )

        response = committed(tenant_a, upload)
        assert response.status_code == 202, response.content
        ids = {d["title"]: d["id"] for d in response.json()["documents"]}
        assert set(ids) == {"report.pdf", "hr-guide.docx", "runbook.md"}

        deadline = time.monotonic() + 180
        with tenant_context(tenant_a):
            while time.monotonic() < deadline:
                statuses = dict(Document.objects.filter(id__in=ids.values()).values_list("id", "status"))
                if all(s in ("ready", "failed") for s in statuses.values()):
                    break
                time.sleep(0.5)
            documents = {d.title: d for d in Document.objects.filter(id__in=ids.values())}
        assert {t: (d.status, d.error) for t, d in documents.items()} == {t: ("ready", "") for t in ids}, (
            "worker log: var/celery-ingest-<test db>.log"
        )

        # Progress arrived live over the channel layer, rising to 100 for every document.
        time.sleep(1)
        collector.stop.set()
        collector.join(5)
        for title, document_id in ids.items():
            mine = [e for e in collector.events if e["data"].get("document_id") == document_id]
            progress = [e["data"]["progress"] for e in mine if e["type"] == "document.progress"]
            assert progress and progress == sorted(progress), (title, progress)
            statuses = [e["data"]["status"] for e in mine if e["type"] == "document.status"]
            assert statuses[0] == "pending" and "processing" in statuses and statuses[-1] == "ready", statuses
            assert mine[-1]["data"]["progress"] == 100
        runbook = documents["runbook.md"]
        assert runbook.metadata["last_ingest"]["embedded"] == runbook.chunk_count > 20

        with tenant_context(tenant_a):
            kb = KnowledgeBase.objects.get(id=kb_id)
            assert Chunk.objects.filter(knowledge_base=kb, valid_to__isnull=True, embedding__isnull=True).count() == 0
            from knowledge.retrieval import search

            hits = search(knowledge_base=kb, query="How many weeks of parental leave?", top_k=3)
            assert hits[0].document_id == ids["hr-guide.docx"]
            assert "sixteen weeks" in hits[0].text
            assert hits[0].citation["document_title"] == "hr-guide.docx"
            assert hits[0].citation["section_path"][-1] == "Parental leave"
            hits = search(knowledge_base=kb, query="Where will the research lab open?", top_k=3)
            assert hits[0].document_id == ids["report.pdf"] and "Montreal" in hits[0].text
            assert hits[0].citation["page_start"] in (1, 2)
            hits = search(knowledge_base=kb, query="how fast must on-call acknowledge the pager", top_k=3)
            assert hits[0].document_id == ids["runbook.md"] and "five minutes" in hits[0].text
            assert hits[0].citation["section_path"] == ["Operations runbook", "Incident response"]
    finally:
        collector.stop.set()

        def cleanup():
            client.delete(f"{API}{kb_id}/")

        committed(tenant_a, cleanup)
