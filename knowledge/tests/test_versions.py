"""Versions: query the past, roll back (a new version, no re-embedding), retention, quota hooks, events."""

from __future__ import annotations

import pytest

from core.errors import Conflict, DomainError
from knowledge import selectors, services, usage
from knowledge.models import Chunk, Document, DocumentStatus
from knowledge.tests.conftest import ingest, ready, upload

pytestmark = pytest.mark.django_db


def _texts(kb, version=None) -> list[str]:
    return sorted(c.text for c in selectors.chunks_at(kb=kb, version=version))


def test_each_batch_and_deletion_is_a_version_and_past_versions_stay_queryable(kb, admin_a):
    ingest(kb, admin_a, upload("a.md", "Alpha one."), upload("b.md", "Bravo one."))  # v1: one batch
    ingest(kb, admin_a, upload("a.md", "Alpha two."))  # v2
    b = Document.objects.get(knowledge_base=kb, title="b.md")
    services.document_delete(document=b, user=admin_a)  # v3
    kb.refresh_from_db()
    assert kb.current_version == 3
    assert _texts(kb, 1) == ["Alpha one.", "Bravo one."]
    assert _texts(kb, 2) == ["Alpha two.", "Bravo one."]
    assert _texts(kb, 3) == _texts(kb) == ["Alpha two."]
    assert ready(Document.objects.get(title="a.md")).chunk_count == 1
    b.refresh_from_db()
    assert b.status == DocumentStatus.DELETED and b.storage_path == ""
    diff = selectors.version_diff(kb=kb, base=1, target=3)
    assert (diff["added"], diff["removed"]) == (1, 2)


def test_rollback_restores_content_as_a_new_version_without_reembedding(kb, admin_a):
    ingest(kb, admin_a, upload("a.md", "Alpha one."))
    first_vector = Chunk.objects.get(knowledge_base=kb).embedding
    ingest(kb, admin_a, upload("a.md", "Alpha two."), upload("c.md", "Charlie."))
    version = services.knowledge_base_rollback(kb=kb, to_version=1, user=admin_a)
    assert version.number == 3 and version.changes["kind"] == "rollback"
    assert (version.changes["added"], version.changes["removed"]) == (1, 2)
    assert _texts(kb) == ["Alpha one."] and _texts(kb, 2) == ["Alpha two.", "Charlie."]
    restored = Chunk.objects.get(knowledge_base=kb, valid_to__isnull=True)
    assert restored.valid_from == 3 and list(restored.embedding) == list(first_vector)  # copied, not recomputed
    assert Document.objects.get(title="c.md").status == DocumentStatus.DELETED
    # Rolling forward again is just another rollback.
    services.knowledge_base_rollback(kb=kb, to_version=2, user=admin_a)
    assert _texts(kb) == ["Alpha two.", "Charlie."]
    # Re-uploading the rolled-back content is detected chunk by chunk: nothing re-embedded.
    document = ready(ingest(kb, admin_a, upload("a.md", "Alpha two.")).documents[0])
    assert document.metadata["last_ingest"]["embedded"] == 0


def test_rollback_refused_while_documents_are_processing(kb, admin_a):
    ingest(kb, admin_a, upload("a.md", "Alpha one."))
    services.documents_ingest(kb=kb, user=admin_a, uploads=[upload("b.md", "Bravo.")])  # pending
    with pytest.raises(Conflict):
        services.knowledge_base_rollback(kb=kb, to_version=1, user=admin_a)
    result = services.documents_ingest(kb=kb, user=admin_a, uploads=[upload("b.md", "Bravo again.")])
    assert result.documents == [] and result.errors[0]["code"] == "conflict"


def test_retention_purges_chunks_only_visible_in_dropped_versions(kb, admin_a):
    kb.versions_retained = 2
    kb.save()
    ingest(kb, admin_a, upload("a.md", "Alpha one."), upload("keep.md", "Kept forever."))  # v1
    ingest(kb, admin_a, upload("a.md", "Alpha two."))  # v2
    assert Chunk.objects.filter(knowledge_base=kb).count() == 3
    ingest(kb, admin_a, upload("a.md", "Alpha three."))  # v3: retained = {2, 3}
    assert sorted(Chunk.objects.filter(knowledge_base=kb).values_list("text", flat=True)) == [
        "Alpha three.",
        "Alpha two.",
        "Kept forever.",
    ]  # "Alpha one." was only in v1
    assert list(kb.versions.values_list("number", flat=True)) == [3, 2]
    assert _texts(kb, 2) == ["Alpha two.", "Kept forever."]
    with pytest.raises(DomainError):
        services.knowledge_base_rollback(kb=kb, to_version=1, user=admin_a)


def test_quota_hook_can_refuse_before_anything_is_stored_and_usage_is_announced(
    kb, admin_a, tmp_path, django_capture_on_commit_callbacks
):
    class QuotaExceeded(DomainError):
        code = "quota_exceeded"
        status = 402

    seen = []

    def only_two_documents(*, principal_user, documents, stored_bytes):
        seen.append((documents, stored_bytes))
        if usage.knowledge_usage().documents + documents > 2:
            raise QuotaExceeded("Your plan allows 2 documents.")

    changes = []

    def on_change(sender, **kw):
        changes.append({k: kw[k] for k in ("documents", "stored_bytes", "pages_processed")})

    usage.register_quota_check(only_two_documents)
    usage.usage_changed.connect(on_change)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            ingest(kb, admin_a, upload("a.md", "Alpha."), upload("b.md", "Bravo."))
        assert usage.knowledge_usage().documents == 2
        assert usage.knowledge_usage().stored_bytes == len("Alpha.") + len("Bravo.")
        assert {"documents": 1, "stored_bytes": 6, "pages_processed": 0} in changes
        assert {"documents": 0, "stored_bytes": 0, "pages_processed": 1} in changes
        with pytest.raises(QuotaExceeded):
            services.documents_ingest(kb=kb, user=admin_a, uploads=[upload("c.md", "Charlie.")])
        assert not Document.objects.filter(title="c.md").exists()
        assert seen[-1] == (1, 8)
        changes.clear()
        with django_capture_on_commit_callbacks(execute=True):
            services.document_delete(document=Document.objects.get(title="a.md"), user=admin_a)
        assert changes == [{"documents": -1, "stored_bytes": -6, "pages_processed": 0}]
    finally:
        usage.unregister_quota_check(only_two_documents)
        usage.usage_changed.disconnect(on_change)


def test_changing_the_embedding_model_reembeds_every_document_as_a_new_version(kb, admin_a):
    from knowledge import pipeline

    document = ready(ingest(kb, admin_a, upload("a.md", "# A\n\nAlpha one.\n\nAlpha two.")).documents[0])
    old = {c.position: list(c.embedding) for c in Chunk.objects.filter(document=document)}
    services.knowledge_base_update(kb=kb, user=admin_a, embedding_model="hashing-384")
    kb.refresh_from_db()
    assert (kb.embedding_model, kb.embedding_dimension, kb.current_version) == ("hashing-384", 384, 2)
    assert kb.versions.get(number=2).changes["kind"] == "reembed"
    document.refresh_from_db()
    assert document.status == DocumentStatus.PENDING
    assert pipeline.document_process(document.id)
    document = ready(document)
    assert document.metadata["last_ingest"]["embedded"] == document.chunk_count == len(old)
    assert "reembed" not in document.metadata
    current = {c.position: list(c.embedding) for c in Chunk.objects.filter(document=document, valid_to__isnull=True)}
    assert all(current[p] != old[p] for p in old)
    assert _texts(kb, 1) == _texts(kb)  # same text, new vectors; version 1 keeps the old ones
