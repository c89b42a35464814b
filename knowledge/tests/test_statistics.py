"""Stored term statistics (knowledge.statistics): stored when a version settles, the same figures as counting the
version's chunks, read by search with the same results as counting, dropped with their versions and knowledge
base, and never while documents of the version are in flight (search counts then, never reading a figure counted
before a publish)."""

from __future__ import annotations

import pytest
from django.db import connection

from knowledge import pipeline, retrieval, services, tasks
from knowledge.models import Document, KnowledgeBase, VersionStatistics, VersionTerm
from knowledge.statistics import version_statistics_build
from knowledge.tests.conftest import ingest, upload

pytestmark = pytest.mark.django_db


@pytest.fixture
def hashed_kb(in_tenant_a, admin_a):
    """The deterministic hashing embedder: these tests are about term statistics, not the model."""
    return services.knowledge_base_create(
        owner=admin_a, name="Statistics", embedding_model="hashing-384", chunk_size=64, chunk_overlap=8
    )


@pytest.fixture
def run_statistics_tasks(monkeypatch):
    """The task a deletion or rollback queues on commit, run here instead of by a worker."""
    monkeypatch.setattr(
        tasks.version_statistics_task, "delay", lambda *args: tasks.version_statistics_task.apply(args=args)
    )


def _counted(kb: KnowledgeBase, number: int) -> tuple[tuple[int, float, int], dict[str, int]]:
    """N, average length, embedded chunks and every lexeme's document frequency at version `number`, counted here."""
    scope = "knowledge_base_id = %s AND valid_from <= %s AND (valid_to IS NULL OR valid_to > %s)"
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), coalesce(avg(length(search_vector)), 0), count(embedding) "
            f"FROM knowledge_chunk WHERE {scope}",  # noqa: S608 - a constant
            [kb.pk, number, number],
        )
        n, avgdl, embedded = cursor.fetchone()
        cursor.execute(
            f"SELECT u.lexeme, count(*) FROM knowledge_chunk c, unnest(c.search_vector) u WHERE {scope} GROUP BY 1",  # noqa: S608
            [kb.pk, number, number],
        )
        return (n, float(avgdl), embedded), dict(cursor.fetchall())


def _stored(kb: KnowledgeBase, number: int) -> tuple[tuple[int, float, int], dict[str, int]]:
    stats = VersionStatistics.objects.get(knowledge_base=kb, number=number)
    return (stats.chunks, stats.avgdl, stats.embedded), dict(stats.terms.values_list("lexeme", "documents"))


def _results(kb: KnowledgeBase, query: str, **kwargs) -> list[tuple]:
    return [
        (h.chunk_id, h.score, h.dense_rank, h.lexical_rank, h.lexical_score)
        for h in retrieval.search(knowledge_base=kb, query=query, top_k=10, **kwargs)
    ]


QUERIES = ("alpha bravo", "charlie delta echo", "the invoice refund", "bravo")


def test_stored_statistics_are_the_counted_ones_after_uploads_a_delete_a_new_version_and_a_rollback(
    hashed_kb, admin_a, django_capture_on_commit_callbacks, run_statistics_tasks
):
    kb = hashed_kb
    with django_capture_on_commit_callbacks(execute=True):
        ingest(kb, admin_a, upload("a.md", "Alpha bravo charlie."), upload("b.md", "Bravo delta. Invoice refund."))
    assert _stored(kb, 1) == _counted(kb, 1)
    with django_capture_on_commit_callbacks(execute=True):  # a deletion: a new version, settled at once
        services.document_delete(document=Document.objects.get(title="b.md"), user=admin_a)
    assert _stored(kb, 2) == _counted(kb, 2) and _stored(kb, 2) != _stored(kb, 1)
    with django_capture_on_commit_callbacks(execute=True):  # a re-upload of changed content and a new document
        ingest(kb, admin_a, upload("a.md", "Alpha echo, echo, echo."), upload("c.md", "Charlie delta refund."))
    assert _stored(kb, 3) == _counted(kb, 3)
    with django_capture_on_commit_callbacks(execute=True):
        services.knowledge_base_rollback(kb=kb, to_version=1, user=admin_a)
    assert _stored(kb, 4) == _counted(kb, 4) == _counted(kb, 1)
    assert list(
        VersionStatistics.objects.filter(knowledge_base=kb).order_by("number").values_list("number", flat=True)
    ) == [1, 2, 3, 4]


def test_search_answers_from_stored_statistics_as_it_does_counting(
    hashed_kb, admin_a, django_capture_on_commit_callbacks
):
    kb = hashed_kb
    with django_capture_on_commit_callbacks(execute=True):
        ingest(kb, admin_a, upload("a.md", "Alpha bravo charlie. " * 3), upload("b.md", "Bravo delta. Invoice refund."))
        ingest(kb, admin_a, upload("c.md", "Charlie delta echo. The refund of an invoice."))
    kb.refresh_from_db()
    stored = {
        (query, mode, version): _results(kb, query, mode=mode, version=version)
        for query in QUERIES
        for mode in ("hybrid", "lexical")
        for version in (None, 1)
    }
    assert any(row[3] is not None for rows in stored.values() for row in rows)  # the lexical leg found something
    VersionStatistics.objects.filter(knowledge_base=kb).delete()  # counted (and cached) from here on
    assert not VersionTerm.objects.exists()
    counted = {key: _results(kb, key[0], mode=key[1], version=key[2]) for key in stored}
    assert counted == stored


def test_nothing_is_stored_while_a_document_of_the_version_is_in_flight_and_counted_figures_follow_each_publish(
    hashed_kb, admin_a, django_capture_on_commit_callbacks
):
    kb = hashed_kb
    result = services.documents_ingest(
        kb=kb, user=admin_a, uploads=[upload("a.md", "Alpha charlie."), upload("b.md", "Bravo delta.")]
    )
    first, second = result.documents
    with django_capture_on_commit_callbacks(execute=True):
        pipeline.document_process(first.id)
    kb.refresh_from_db()
    assert version_statistics_build(knowledge_base_id=kb.pk) is None and not kb.statistics.exists()
    # Counted while b.md is in flight: "bravo" occurs nowhere yet.
    assert _results(kb, "bravo", mode="lexical") == []
    assert [h.document_title for h in retrieval.search(knowledge_base=kb, query="alpha", mode="lexical")] == ["a.md"]
    with django_capture_on_commit_callbacks(execute=True):
        pipeline.document_process(second.id)  # settles version 1: its statistics are stored
    assert _stored(kb, 1) == _counted(kb, 1)
    hits = retrieval.search(knowledge_base=kb, query="bravo", mode="lexical")
    assert [h.document_title for h in hits] == ["b.md"]
    # The figures counted while it was in flight are not read once it is published.
    VersionStatistics.objects.filter(knowledge_base=kb).delete()
    assert _results(kb, "bravo", mode="lexical") == [(h.chunk_id, h.score, None, 1, h.lexical_score) for h in hits]


def test_a_failed_document_settles_its_version_too(hashed_kb, admin_a, django_capture_on_commit_callbacks):
    kb = hashed_kb
    result = services.documents_ingest(
        kb=kb, user=admin_a, uploads=[upload("a.md", "Alpha charlie."), upload("b.md", "Bravo delta.")]
    )
    first, second = result.documents
    with django_capture_on_commit_callbacks(execute=True):
        pipeline.document_process(first.id)
        pipeline.document_fail(second.id, None, "unreadable")
    assert _stored(kb, 1) == _counted(kb, 1)


def test_statistics_go_with_the_versions_retention_drops_and_with_their_knowledge_base(
    hashed_kb, admin_a, django_capture_on_commit_callbacks
):
    kb = hashed_kb
    kb.versions_retained = 2
    kb.save()
    for text in ("Alpha one.", "Alpha two.", "Alpha three."):
        with django_capture_on_commit_callbacks(execute=True):  # each version settles before the next upload
            ingest(kb, admin_a, upload("a.md", text))
    assert list(kb.statistics.order_by("number").values_list("number", flat=True)) == [2, 3]
    services.knowledge_base_delete(kb=kb)
    assert not VersionStatistics.objects.exists() and not VersionTerm.objects.exists()
