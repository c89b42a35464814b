"""Large documents with the product's own settings and worker processes (conftest.celery_worker_process):
documents too big for one task are split into parts embedded in parallel, and the last part publishes.

A 5 MB Markdown file and a 1,000-page PDF end `ready` with every chunk exactly once; a document whose parts
fail ends `failed` with the reason, and leaves no rows behind.

The PDF (about 700 chunks, three parts) is embedded with the default model. The Markdown file (about 7,900
chunks, 31 parts) goes to a knowledge base that uses the built-in hashing embedder, a per-knowledge-base choice:
the default model needs about seven minutes of this machine's two cores for it (bench/ingestion.py measures
throughput), and what is under test here is the pipeline at that size, which is the same for every model.
"""

from __future__ import annotations

import time

import pytest
from django.conf import settings
from django.db.models import Count
from django.test import Client
from django_tenants.utils import tenant_context

from conftest import host_of
from knowledge.models import Chunk, Document, KnowledgeBase
from knowledge.retrieval import search
from knowledge.tests.conftest import uploaded_file
from knowledge.tests.factories import make_pdf
from knowledge.tests.test_ingest_e2e import committed

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]
API = "/api/v1/knowledge-bases/"
WORDS = (
    "ledger invoice harbour turbine lantern orchard glacier quartz meadow falcon copper violet canyon ember "
    "saffron beacon timber marble willow prism cobalt thistle summit walnut"
).split()


def _sentence(n: int) -> str:
    """A distinct sentence per n, so no two chunks share a content hash (each is embedded, none is copied)."""
    picked = " ".join(WORDS[(n * 7 + k * 3) % len(WORDS)] for k in range(9))
    return f"Record {n}: the {picked} entry number {n} belongs to batch {n // 13}."


def big_markdown(size_bytes: int, marker: str) -> str:
    sections, n, size = [], 0, 0
    while size < size_bytes:
        body = "\n\n".join(" ".join(_sentence(n + p * 5 + s) for s in range(5)) for p in range(6))
        sections.append(f"## Section {n}\n\n{body}")
        size += len(sections[-1]) + 2
        n += 30
    sections.insert(len(sections) * 2 // 3, f"## Retention\n\n{marker}")
    return "# Archive\n\n" + "\n\n".join(sections)


def thousand_page_pdf(marker: str, marker_page: int) -> bytes:
    pages = [[f"Page {p} of the archive.", *(_sentence(p + k * 100_000) for k in range(6))] for p in range(1, 1001)]
    pages[marker_page - 1].append(marker)
    return make_pdf(pages)


def kb_create(tenant, user, name: str, **options: str) -> int:
    client = Client(HTTP_HOST=host_of(tenant))

    def create() -> int:
        client.force_login(user)
        response = client.post(API, {"name": name, **options}, content_type="application/json")
        assert response.status_code == 201, response.content
        return response.json()["id"]

    return committed(tenant, create)


def upload(tenant, user, kb_id: int, files: dict[str, bytes | str]) -> dict[str, int]:
    client = Client(HTTP_HOST=host_of(tenant))

    def post():
        client.force_login(user)
        return client.post(f"{API}{kb_id}/documents/", {"files": [uploaded_file(n, d) for n, d in files.items()]})

    response = committed(tenant, post)
    assert response.status_code == 202, response.content
    return {d["title"]: d["id"] for d in response.json()["documents"]}


def wait_until_settled(tenant, ids: list[int], timeout: float) -> dict[int, Document]:
    deadline = time.monotonic() + timeout
    with tenant_context(tenant):
        while True:
            documents = {d.id: d for d in Document.objects.filter(id__in=ids)}
            if all(d.status in ("ready", "failed") for d in documents.values()) or time.monotonic() > deadline:
                return documents
            time.sleep(1)


def kb_delete(tenant, user, kb_id: int) -> None:
    client = Client(HTTP_HOST=host_of(tenant))

    def delete() -> None:
        client.force_login(user)
        client.delete(f"{API}{kb_id}/")

    committed(tenant, delete)


def assert_every_chunk_once(document: Document) -> None:
    rows = Chunk.objects.filter(document=document)
    current = rows.filter(valid_to__isnull=True)
    positions = list(current.order_by("position").values_list("position", flat=True))
    assert positions == list(range(document.chunk_count)), "a position is missing or doubled"
    assert (
        document.chunk_count
        == document.metadata["last_ingest"]["chunks"]
        == document.metadata["last_ingest"]["embedded"]
    )
    assert not current.filter(embedding__isnull=True).exists()
    assert rows.count() == current.count(), "staged or superseded rows were left behind"
    doubled = current.values("content_hash").annotate(n=Count("id")).filter(n__gt=1)
    assert not doubled.exists(), "the same text was stored twice"


def test_five_megabyte_markdown_and_thousand_page_pdf_end_ready(celery_worker_process, tenant_a, admin_a):
    markdown_marker = "Invoices of the northern depot are kept for eleven years in the basement vault."
    pdf_marker = "The quarterly audit of turbine spare parts happens on the second Tuesday."
    markdown = big_markdown(5 * 1024 * 1024, markdown_marker)
    pdf = thousand_page_pdf(pdf_marker, marker_page=777)
    kb_id = kb_create(tenant_a, admin_a, "Large archive")
    hashed_kb_id = kb_create(tenant_a, admin_a, "Large archive, hashed", embedding_model="hashing-384")
    try:
        ids = upload(tenant_a, admin_a, kb_id, {"archive.pdf": pdf})
        ids |= upload(tenant_a, admin_a, hashed_kb_id, {"archive.md": markdown})
        documents = wait_until_settled(tenant_a, list(ids.values()), timeout=240)
        assert {d.title: (d.status, d.error) for d in documents.values()} == {
            "archive.md": ("ready", ""),
            "archive.pdf": ("ready", ""),
        }, "worker logs: var/celery-ingest-<test db>.log"
        by_title = {d.title: d for d in documents.values()}
        with tenant_context(tenant_a):
            for document in documents.values():
                assert document.progress == 100
                assert document.metadata["last_ingest"]["parts"] >= 2, "expected the parallel-parts path"
                assert_every_chunk_once(document)
            assert by_title["archive.pdf"].page_count == 1000
            assert by_title["archive.md"].chunk_count > 10 * settings.KNOWLEDGE_INGEST_PART_CHUNKS
            hashed_kb = KnowledgeBase.objects.get(id=hashed_kb_id)
            hits = search(knowledge_base=hashed_kb, query="invoices northern depot basement vault", top_k=3)
            assert hits[0].document_id == ids["archive.md"] and "eleven years" in hits[0].text
            kb = KnowledgeBase.objects.get(id=kb_id)
            hits = search(knowledge_base=kb, query="when is the quarterly audit of turbine spare parts", top_k=3)
            assert hits[0].document_id == ids["archive.pdf"] and "second Tuesday" in hits[0].text
            assert hits[0].citation["page_start"] == hits[0].page_start == 777
    finally:
        kb_delete(tenant_a, admin_a, kb_id)
        kb_delete(tenant_a, admin_a, hashed_kb_id)


def test_document_whose_parts_fail_ends_failed_with_the_reason(celery_worker_process, tenant_a, admin_a):
    kb_id = kb_create(tenant_a, admin_a, "Model gone")
    # The operator removed the knowledge base's local model after documents were added: splitting the document
    # needs no model, embedding each part does.
    committed(
        tenant_a,
        lambda: KnowledgeBase.objects.filter(id=kb_id).update(embedding_model="st:/nonexistent/removed-model"),
    )
    try:
        size = 3 * settings.KNOWLEDGE_INGEST_PART_CHUNKS * 1200  # about three parts of chunks
        ids = upload(tenant_a, admin_a, kb_id, {"notes.md": big_markdown(size, "Nothing to find.")})
        documents = wait_until_settled(tenant_a, list(ids.values()), timeout=120)
        document = documents[ids["notes.md"]]
        assert document.status == "failed"
        assert "No sentence-transformers model at /nonexistent/removed-model" in document.error
        with tenant_context(tenant_a):
            assert document.metadata["last_ingest"]["parts"] >= 2
            assert not Chunk.objects.filter(document=document).exists()
        time.sleep(2)  # the other parts ran or were dropped as stale: the document stays failed
        with tenant_context(tenant_a):
            document.refresh_from_db()
        assert document.status == "failed" and document.processing_token == ""
    finally:
        kb_delete(tenant_a, admin_a, kb_id)
