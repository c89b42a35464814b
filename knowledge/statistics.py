# ruff: noqa: S608 - SQL below interpolates only model table names and ints; values are params.
"""Term statistics stored per knowledge-base version: what BM25 needs (N, the average length, every lexeme's
document frequency) and the dense leg's scope size, computed once per version instead of counted over every chunk
holding a word by the first searches to meet it (knowledge.retrieval reads them in its first statement).

They are stored once a version is *settled*: no document of it or of an earlier version is pending or processing.
From then on its content never changes, so they stay exact with no lock and no invalidation: a publish opens and
closes rows only from its own ingest version on (valid_from = valid_to = ingest_version), and a settled version has
no document in flight at or before it; deletions, rollbacks and re-embeddings take new versions; retention deletes
only rows no retained version sees (and the statistics of the versions it drops). The commit that settles a version
(its last publish or failure) is visible with all its rows to the statements that count, which start after it.

A version without them (in flight, or settled before they existed) is counted by search as before.
"""

from __future__ import annotations

import logging

from django.db import IntegrityError, connection, transaction
from django.db.models import Q

from core.rls import db_as_system

from .models import Chunk, Document, DocumentStatus, KnowledgeBase, VersionStatistics, VersionTerm

logger = logging.getLogger(__name__)

IN_FLIGHT = (DocumentStatus.PENDING, DocumentStatus.PROCESSING)
# The chunks version N sees (params: N, N); knowledge.retrieval selects a version's chunks with the same predicate.
VERSION_CHUNKS_SQL = "c.valid_from <= %s AND (c.valid_to IS NULL OR c.valid_to > %s)"


def version_in_flight(*, knowledge_base_id: int, number: int) -> int:
    """How many documents of this version or an earlier one are still pending or processing (0: settled)."""
    return (
        Document.objects.filter(knowledge_base_id=knowledge_base_id, status__in=IN_FLIGHT)
        .filter(Q(ingest_version__lte=number) | Q(ingest_version__isnull=True))
        .count()
    )


def version_statistics_build(*, knowledge_base_id: int, number: int | None = None) -> VersionStatistics | None:
    """Store the statistics of version `number` (None: the current one) if it is settled and has none yet; returns
    them (None: not settled, or no such knowledge base or version). Idempotent: a second call, or a concurrent one,
    finds them stored. Acts for the organisation (the system), not for a member: the counts cover every chunk."""
    with db_as_system():
        kb = KnowledgeBase.objects.filter(pk=knowledge_base_id).first()
        if kb is None:
            return None
        number = kb.current_version if number is None else number
        if number <= 0 or number > kb.current_version:
            return None
        stored = VersionStatistics.objects.filter(knowledge_base=kb, number=number).first()
        if stored is not None:
            return stored
        if version_in_flight(knowledge_base_id=kb.pk, number=number):
            return None
        try:
            with transaction.atomic():
                return _version_statistics_insert(kb, number)
        except IntegrityError:  # a concurrent build stored them first: the same figures
            return VersionStatistics.objects.filter(knowledge_base=kb, number=number).first()


def _version_statistics_insert(kb: KnowledgeBase, number: int) -> VersionStatistics:
    # The version's chunks as search selects them, and the same aggregates it counts when it has no statistics
    # (avg() as numeric, then float8: the same double).
    table, dim = Chunk._meta.db_table, int(kb.embedding_dimension)
    scope = f"c.knowledge_base_id = %s AND {VERSION_CHUNKS_SQL}"
    params = [kb.pk, number, number]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {VersionStatistics._meta.db_table} "
            "(knowledge_base_id, number, chunks, avgdl, embedded, embedding_dimension, created_at) "
            "SELECT %s, %s, count(*), coalesce(avg(length(c.search_vector)), 0)::float8, "
            f"count(*) FILTER (WHERE c.embedding_dimension = {dim} AND c.embedding IS NOT NULL), {dim}, now() "
            f"FROM {table} c WHERE {scope} RETURNING id",
            [kb.pk, number, *params],
        )
        statistics_id = cursor.fetchone()[0]
        # Each chunk's tsvector holds each of its lexemes once: counting (lexeme, chunk) pairs counts documents.
        cursor.execute(
            f"INSERT INTO {VersionTerm._meta.db_table} (statistics_id, lexeme, documents) "
            f"SELECT %s, u.lexeme, count(*) FROM {table} c CROSS JOIN LATERAL unnest(c.search_vector) u "
            f"WHERE {scope} GROUP BY u.lexeme",
            [statistics_id, *params],
        )
    return VersionStatistics.objects.get(pk=statistics_id)


def version_statistics_drop_before(*, knowledge_base: KnowledgeBase, number: int) -> int:
    """Retention: the statistics of the versions it drops go with them. Returns how many versions' were dropped."""
    _, by_model = VersionStatistics.objects.filter(knowledge_base=knowledge_base, number__lt=number).delete()
    return by_model.get(VersionStatistics._meta.label, 0)
