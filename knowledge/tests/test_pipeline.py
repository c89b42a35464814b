"""The ingestion pipeline in-process: extraction per type, chunking, incremental updates, idempotency."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from knowledge import pipeline, services
from knowledge.chunking import chunk_blocks, count_tokens
from knowledge.extraction import Block
from knowledge.models import Chunk, Document, DocumentStatus
from knowledge.tests.conftest import ingest, ready, upload
from knowledge.tests.factories import make_docx, make_pdf

pytestmark = pytest.mark.django_db


def _section(name: str, n: int) -> str:
    return f"## {name}\n\n" + "\n\n".join(
        f"{name} paragraph {i} explains the {name.lower()} policy in detail, with enough words to matter."
        for i in range(n)
    )


HANDBOOK = "# Handbook\n\n" + "\n\n".join(_section(s, 6) for s in ("Holidays", "Expenses", "Security", "Travel"))


def test_markdown_is_chunked_by_section_with_headings_and_embedded(kb, admin_a):
    result = ingest(kb, admin_a, upload("handbook.md", HANDBOOK))
    document = ready(result.documents[0])
    chunks = list(Chunk.objects.filter(document=document, valid_to__isnull=True).order_by("position"))
    assert document.chunk_count == len(chunks) > 4
    assert [c.position for c in chunks] == list(range(len(chunks)))
    assert all(c.embedding is not None and len(c.embedding) == 384 for c in chunks)
    assert all(c.token_count <= kb.chunk_size + 8 for c in chunks)
    # A chunk never mixes two sections, and carries its heading path.
    for chunk in chunks:
        assert chunk.text.startswith("Handbook > ")
        assert chunk.metadata["headings"][0] == "Handbook"
        sections = {s for s in ("Holidays", "Expenses", "Security", "Travel") if f"{s} paragraph" in chunk.text}
        assert len(sections) == 1
    assert {c.valid_from for c in chunks} == {1}
    assert document.progress == 100
    kb.refresh_from_db()
    assert kb.current_version == 1
    version = kb.versions.get(number=1)
    assert version.changes["added"] == len(chunks)
    assert version.changes["documents"][0]["status"] == "ready"


def test_pdf_pages_and_docx_headings_are_extracted(kb, admin_a):
    pdf = make_pdf([["Quarterly revenue grew by twelve percent."], ["The board approved the new office in Lyon."]])
    docx_bytes = make_docx(
        [
            ("Onboarding", ["New hires receive a laptop on day one."]),
            ("Security", ["Passwords rotate every ninety days."]),
        ]
    )
    result = ingest(kb, admin_a, upload("report.pdf", pdf), upload("guide.docx", docx_bytes))
    pdf_doc, docx_doc = (ready(d) for d in result.documents)
    assert pdf_doc.page_count == 2
    assert pdf_doc.mime_type == "application/pdf"
    pages = {p for c in Chunk.objects.filter(document=pdf_doc) for p in c.metadata["pages"]}
    assert pages == {1, 2}
    texts = [c.text for c in Chunk.objects.filter(document=docx_doc).order_by("position")]
    assert any(t.startswith("Security\n\nPasswords rotate") for t in texts)


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("data.csv", "name,role\nAda,engineer\nGrace,admiral\n", "name: Grace; role: admiral"),
        ("data.json", '[{"name": "Ada", "team": {"lead": "Grace"}}]', "name: Ada\nteam.lead: Grace"),
        (
            "page.html",
            "<html><head><title>T</title><script>evil()</script></head><body><h1>Intro</h1>"
            "<p>Hello <b>world</b> of HTML.</p><nav>menu</nav></body></html>",
            "Intro\n\nHello world of HTML.",
        ),
        ("notes.txt", "First paragraph.\n\nSecond paragraph.", "First paragraph.\n\nSecond paragraph."),
    ],
)
def test_text_formats(kb, admin_a, name, content, expected):
    document = ready(ingest(kb, admin_a, upload(name, content)).documents[0])
    text = "\n\n".join(c.text for c in Chunk.objects.filter(document=document).order_by("position"))
    assert expected in text
    assert "evil" not in text and "menu" not in text


def test_chunker_splits_long_paragraphs_with_overlap_and_is_deterministic():
    sentences = [f"Sentence number {i} talks about topic {i % 7} at some length." for i in range(60)]
    blocks = [Block(text="Guide", kind="heading", level=1), Block(text=" ".join(sentences))]
    first = chunk_blocks(blocks, chunk_size=64, overlap=16)
    again = chunk_blocks(blocks, chunk_size=64, overlap=16)
    assert [p.content_hash for p in first] == [p.content_hash for p in again]
    assert len(first) > 5
    assert all(count_tokens([p.text])[0] <= 64 + 4 for p in first)
    # Consecutive chunks share their boundary sentence(s).
    for left, right in zip(first, first[1:], strict=False):
        last_sentence = left.text.rsplit(". ", 1)[-1].rstrip(".")
        assert last_sentence in right.text


def test_reupload_of_changed_document_reembeds_only_changed_chunks(kb, admin_a):
    document = ready(ingest(kb, admin_a, upload("handbook.md", HANDBOOK)).documents[0])
    before = {c.position: (c.id, c.content_hash) for c in Chunk.objects.filter(document=document)}
    total = len(before)
    changed = HANDBOOK.replace("Security paragraph 2 explains", "Security paragraph 2 now REQUIRES hardware keys and")
    result = ingest(kb, admin_a, upload("handbook.md", changed))
    assert [d.id for d in result.documents] == [document.id]  # same document, new version
    document = ready(document)
    stats = document.metadata["last_ingest"]
    assert stats["embedded"] == 1  # one chunk's text changed -> exactly one embedding computed
    assert stats["kept"] == total - 1
    assert stats["closed"] == 1
    current = {
        c.position: (c.id, c.content_hash) for c in Chunk.objects.filter(document=document, valid_to__isnull=True)
    }
    assert len(current) == total
    unchanged = [p for p in current if current[p] == before[p]]
    assert len(unchanged) == total - 1  # untouched rows are the very same rows
    kb.refresh_from_db()
    assert kb.current_version == 2
    assert kb.versions.get(number=2).changes["reembedded"] == 1


def test_identical_reupload_does_no_work(kb, admin_a):
    document = ready(ingest(kb, admin_a, upload("handbook.md", HANDBOOK)).documents[0])
    result = services.documents_ingest(kb=kb, user=admin_a, uploads=[upload("handbook.md", HANDBOOK)])
    assert result.documents == [] and result.version is None
    assert [d.id for d in result.unchanged] == [document.id]
    kb.refresh_from_db()
    assert kb.current_version == 1


def test_moved_chunks_are_copied_not_reembedded_and_vanished_ones_closed(kb, admin_a):
    document = ready(ingest(kb, admin_a, upload("handbook.md", HANDBOOK)).documents[0])
    total = document.chunk_count
    reordered = "# Handbook\n\n" + "\n\n".join(_section(s, 6) for s in ("Travel", "Holidays", "Expenses"))
    document = ready(ingest(kb, admin_a, upload("handbook.md", reordered)).documents[0])
    stats = document.metadata["last_ingest"]
    assert stats["embedded"] == 0
    assert stats["chunks"] < total
    assert Chunk.objects.filter(document=document, valid_to__isnull=True).count() == stats["chunks"]
    assert not Chunk.objects.filter(document=document, valid_to__isnull=True, text__contains="Security").exists()
    assert Chunk.objects.filter(document=document, valid_to=2, text__contains="Security").exists()


def test_interrupted_run_leaves_no_double_chunks_and_is_requeued(kb, admin_a, settings):
    settings.KNOWLEDGE_INGEST_PART_CHUNKS = 4  # force the parallel-parts path
    result = services.documents_ingest(kb=kb, user=admin_a, uploads=[upload("handbook.md", HANDBOOK)])
    document = result.documents[0]
    # A first worker claims, stages everything, embeds one part, then dies.
    _, token = pipeline.document_claim(document.id)
    prepared = pipeline.document_prepare(document.id, token)
    assert not prepared.done and len(prepared.parts) >= 2
    pipeline.document_embed_part(document.id, token, *prepared.parts[0])
    staged = Chunk.objects.filter(document=document, valid_from=1, valid_to=1).count()
    assert staged > 0
    # While the lease is fresh nobody else may take it.
    assert pipeline.document_claim(document.id) is None
    Document.objects.filter(id=document.id).update(processing_started_at=timezone.now() - timedelta(hours=1))
    requeued = []
    assert pipeline.requeue_stuck(requeued.append) == [document.id]
    # The stale run can no longer write or publish.
    assert pipeline.document_process(document.id) is True
    with pytest.raises(pipeline.StaleRun):
        pipeline.document_embed_part(document.id, token, *prepared.parts[1])
    assert pipeline.document_publish(document.id, token) is False
    document = ready(document)
    rows = Chunk.objects.filter(document=document)
    assert rows.count() == document.chunk_count == staged  # nothing doubled
    assert rows.filter(valid_to__isnull=True).count() == document.chunk_count
    assert document.attempts == 2


def test_parts_finish_in_any_order_and_the_last_one_publishes(kb, admin_a, settings):
    settings.KNOWLEDGE_INGEST_PART_CHUNKS = 2  # a small document takes the parallel-parts path
    document = services.documents_ingest(kb=kb, user=admin_a, uploads=[upload("handbook.md", HANDBOOK)]).documents[0]
    _, token = pipeline.document_claim(document.id)
    parts = pipeline.document_prepare(document.id, token).parts
    assert len(parts) >= 3
    published = [pipeline.document_embed_part(document.id, token, *part) for part in (parts[1], *parts[2:], parts[0])]
    assert published == [False] * (len(parts) - 1) + [True]
    document = ready(document)
    assert document.progress == 100
    current = Chunk.objects.filter(document=document, valid_to__isnull=True)
    assert list(current.order_by("position").values_list("position", flat=True)) == list(range(document.chunk_count))
    assert Chunk.objects.filter(document=document).count() == document.chunk_count
    with pytest.raises(pipeline.StaleRun):  # a part delivered twice, after publishing
        pipeline.document_embed_part(document.id, token, *parts[0])


def test_a_part_reports_progress_and_renews_the_lease_after_each_batch(kb, admin_a, settings, monkeypatch):
    settings.KNOWLEDGE_INGEST_PART_CHUNKS = 4
    settings.KNOWLEDGE_EMBED_BATCH = 1  # a part of four rows embeds in four batches
    document = services.documents_ingest(kb=kb, user=admin_a, uploads=[upload("handbook.md", HANDBOOK)]).documents[0]
    _, token = pipeline.document_claim(document.id)
    first, last = pipeline.document_prepare(document.id, token).parts[0]
    expired = timezone.now() - timedelta(seconds=settings.KNOWLEDGE_INGEST_LEASE_SECONDS + 60)
    Document.objects.filter(id=document.id).update(processing_started_at=expired)
    seen = []  # the document's progress and lease as each batch starts
    embed = pipeline._embed_batches

    def recording(kb, texts, on_batch):
        seen.append(Document.objects.values_list("progress", "processing_started_at").get(id=document.id))
        return embed(kb, texts, on_batch)

    monkeypatch.setattr(pipeline, "_embed_batches", recording)
    assert pipeline.document_embed_part(document.id, token, first, last) is False
    progress = [p for p, _ in seen]
    assert len(seen) == last - first + 1 == 4
    assert progress[0] == pipeline.P_CHUNKED and progress == sorted(set(progress)), progress
    assert all(lease > expired for _, lease in seen[1:])
    document.refresh_from_db()
    assert progress[-1] < document.progress < pipeline.P_EMBED_END
    assert pipeline.document_claim(document.id) is None  # a live, reporting run keeps its lease


def test_a_part_that_keeps_failing_fails_the_document_with_the_reason(kb, admin_a, settings, monkeypatch):
    from knowledge.tasks import MAX_RETRIES, embed_part_task

    settings.KNOWLEDGE_INGEST_PART_CHUNKS = 4
    document = services.documents_ingest(kb=kb, user=admin_a, uploads=[upload("handbook.md", HANDBOOK)]).documents[0]
    _, token = pipeline.document_claim(document.id)
    first, last = pipeline.document_prepare(document.id, token).parts[0]
    attempts = []

    def unreachable(kb, texts, on_batch):
        attempts.append(len(texts))
        raise ConnectionError("embedding server unreachable")

    monkeypatch.setattr(pipeline, "_embed_batches", unreachable)
    # Run in this process: each retry runs at once instead of after its backoff.
    assert embed_part_task.apply(args=(document.id, token, first, last)).get() == "failed"
    assert len(attempts) == MAX_RETRIES + 1
    document.refresh_from_db()
    assert document.status == DocumentStatus.FAILED
    assert document.error == (
        f"Embedding part {first}-{last} failed after {MAX_RETRIES + 1} attempts: embedding server unreachable"
    )
    assert not Chunk.objects.filter(document=document).exists()


def test_a_part_that_fails_once_is_retried_and_the_document_published(kb, admin_a, settings, monkeypatch):
    from knowledge.tasks import embed_part_task

    settings.KNOWLEDGE_INGEST_PART_CHUNKS = 4
    document = services.documents_ingest(kb=kb, user=admin_a, uploads=[upload("handbook.md", HANDBOOK)]).documents[0]
    _, token = pipeline.document_claim(document.id)
    parts = pipeline.document_prepare(document.id, token).parts
    embed = pipeline._embed_batches
    failures = iter([ConnectionError("connection reset")])

    def flaky(kb, texts, on_batch):
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return embed(kb, texts, on_batch)

    monkeypatch.setattr(pipeline, "_embed_batches", flaky)
    outcomes = [embed_part_task.apply(args=(document.id, token, *part)).get() for part in parts]
    assert outcomes == ["embedded"] * (len(parts) - 1) + ["published"]
    assert ready(document).chunk_count == Chunk.objects.filter(document=document).count()


def test_release_before_retry_drops_staged_rows(kb, admin_a, settings):
    settings.KNOWLEDGE_INGEST_PART_CHUNKS = 4
    document = services.documents_ingest(kb=kb, user=admin_a, uploads=[upload("handbook.md", HANDBOOK)]).documents[0]
    _, token = pipeline.document_claim(document.id)
    pipeline.document_prepare(document.id, token)
    pipeline.document_release(document.id, token)
    document.refresh_from_db()
    assert document.status == DocumentStatus.PENDING
    assert not Chunk.objects.filter(document=document).exists()
    assert pipeline.document_process(document.id)
    assert Chunk.objects.filter(document=document).count() == ready(document).chunk_count


def test_beat_task_requeues_stuck_documents_of_every_tenant(kb, admin_a, tenant_a):
    from django.db import connection

    from knowledge.tasks import requeue_stuck_documents_task

    document = services.documents_ingest(kb=kb, user=admin_a, uploads=[upload("a.md", "Alpha.")]).documents[0]
    pipeline.document_claim(document.id)  # a worker took it, then died
    Document.objects.filter(id=document.id).update(processing_started_at=timezone.now() - timedelta(hours=2))
    connection.set_schema_to_public()  # beat sends the task without a tenant
    found = requeue_stuck_documents_task()
    assert found == {tenant_a.schema_name: [document.id]}


def test_a_document_whose_worker_keeps_being_killed_fails_at_the_interruption_cap(kb, admin_a, settings):
    settings.KNOWLEDGE_INGEST_MAX_INTERRUPTIONS = 3
    document = services.documents_ingest(kb=kb, user=admin_a, uploads=[upload("a.md", "Alpha.")]).documents[0]
    requeued: list[int] = []

    def killed_run() -> None:  # a worker claims it, then dies at the hard time limit: the lease runs out
        assert pipeline.document_claim(document.id) is not None
        Document.objects.filter(id=document.id).update(processing_started_at=timezone.now() - timedelta(hours=1))

    # A Celery retry gives the document back: it is the same attempt, not an interruption.
    _, token = pipeline.document_claim(document.id)
    pipeline.document_release(document.id, token)
    for _ in range(2):
        killed_run()
        assert pipeline.requeue_stuck(requeued.append) == [document.id]
    killed_run()
    assert pipeline.requeue_stuck(requeued.append) == []
    assert requeued == [document.id, document.id]
    document.refresh_from_db()
    assert document.status == DocumentStatus.FAILED
    assert document.error == pipeline.interrupted_reason(3)
    assert document.error.startswith("Processing was interrupted 3 times (worker killed: time limit or memory)")


def test_a_redelivered_task_meets_the_same_interruption_cap(kb, admin_a, settings):
    settings.KNOWLEDGE_INGEST_MAX_INTERRUPTIONS = 2
    document = services.documents_ingest(kb=kb, user=admin_a, uploads=[upload("a.md", "Alpha.")]).documents[0]
    for _ in range(2):
        assert pipeline.document_claim(document.id) is not None
        Document.objects.filter(id=document.id).update(processing_started_at=timezone.now() - timedelta(hours=1))
    assert pipeline.document_claim(document.id) is None  # the broker delivered the task again: no third run
    document.refresh_from_db()
    assert document.status == DocumentStatus.FAILED
    assert document.error == pipeline.interrupted_reason(2)
