"""search() against an independent exact computation on a fixture knowledge base: the same candidates, the same
scores and the same ranking as Okapi BM25 and exact nearest neighbours computed here, fused by the module's own
fusion. Term frequencies come from PostgreSQL's tsvectors (the 'english' configuration is the tokenizer) and
distances from pgvector's operator; every statistic, score, candidate list and union is computed below."""

from __future__ import annotations

import math
import random

import pytest
from django.db import connection
from django_tenants.utils import tenant_context

from knowledge import retrieval
from knowledge.embeddings import HashingEmbedder
from knowledge.models import Chunk, Document, KnowledgeBase

pytestmark = pytest.mark.django_db

WORDS = (
    "password reset invoice refund office visitor reception badge key scope token chat agent search index vector "
    "version document upload billing month leave holiday berlin paris api developer settings security phone"
).split()
QUERIES = (
    "how do I reset my password",
    "refund of an invoice after cancellation",
    "api key scopes for developers",
    "visitor badge at the berlin reception",
    "holiday leave per month",
    "zebra",  # no chunk holds it: a dense-only hybrid search
)


@pytest.fixture
def fixture_kb(tenant_a, admin_a):
    """250 chunks (under LEXICAL_EXACT_CANDIDATES and EXACT_SEARCH_MAX_CHUNKS: both legs are exact) in 10
    documents, text drawn Zipf-like from a small vocabulary, vectors from the deterministic hashing embedder."""
    rng = random.Random(7)
    weights = [1 / (rank + 1) for rank in range(len(WORDS))]
    embedder = HashingEmbedder()
    with tenant_context(tenant_a):
        kb = KnowledgeBase.objects.create(
            owner=admin_a, name="Exact fixture", embedding_model=HashingEmbedder.name, current_version=1
        )
        for d in range(10):
            doc = Document.objects.create(knowledge_base=kb, title=f"Doc {d}", source_type="text", status="ready")
            texts = [" ".join(rng.choices(WORDS, weights, k=rng.randint(5, 40))) for _ in range(25)]
            Chunk.objects.bulk_create(
                Chunk(
                    knowledge_base=kb,
                    document=doc,
                    position=i,
                    text=text,
                    content_hash=str(i),
                    embedding=vector,
                    embedding_dimension=384,
                    valid_from=1,
                )
                for i, (text, vector) in enumerate(zip(texts, embedder.embed(texts), strict=True))
            )
        yield kb


def _term_frequencies(kb: KnowledgeBase) -> dict[int, dict[str, int]]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.id, u.lexeme, coalesce(array_length(u.positions, 1), 1) "
            "FROM knowledge_chunk c CROSS JOIN LATERAL unnest(c.search_vector) u WHERE c.knowledge_base_id = %s",
            [kb.pk],
        )
        out: dict[int, dict[str, int]] = {c: {} for c in kb.chunks.values_list("id", flat=True)}
        for chunk_id, lexeme, tf in cursor.fetchall():
            out[chunk_id][lexeme] = tf
        return out


def _ranked(scores: dict[int, float], depth: int) -> list[int]:
    return sorted(scores, key=lambda i: (-scores[i], i))[:depth]


def _expected(kb: KnowledgeBase, query: str, top_k: int, document_ids: list[int] | None) -> list[tuple]:
    opts = retrieval.search_settings_for(kb)
    k1, b, pool = opts["bm25_k1"], opts["bm25_b"], opts["candidates"]
    tfs = _term_frequencies(kb)
    n = len(tfs)
    avgdl = sum(len(t) for t in tfs.values()) / n
    with connection.cursor() as cursor:
        cursor.execute("SELECT tsvector_to_array(to_tsvector('english', %s))", [query])
        lexemes = list(cursor.fetchone()[0] or [])
    df = {lex: sum(1 for t in tfs.values() if lex in t) for lex in lexemes}
    idf = {lex: math.log(1 + (n - df[lex] + 0.5) / (df[lex] + 0.5)) for lex in lexemes if df[lex]}
    scope = set(
        kb.chunks.filter(**({"document_id__in": document_ids} if document_ids else {})).values_list("id", flat=True)
    )

    def bm25(chunk_id: int) -> float | None:
        tf = tfs[chunk_id]
        terms = [lex for lex in idf if lex in tf]
        if not terms:
            return None
        norm = k1 * (1 - b + b * len(tf) / avgdl)
        return sum(idf[lex] * tf[lex] * (k1 + 1) / (tf[lex] + norm) for lex in terms)

    # Cosine distance as pgvector computes it on the stored float32 vectors (a float64 sum here would reorder
    # the hashing embedder's many near-ties): exact, over every chunk of the scope.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, embedding <=> %s::vector FROM knowledge_chunk WHERE knowledge_base_id = %s",
            [retrieval.vector_literal(retrieval.query_embedding(kb.embedding_model, query)), kb.pk],
        )
        distance = dict(cursor.fetchall())
    cosine = {i: 1.0 - d for i, d in distance.items()}
    dense = sorted(scope, key=lambda i: (distance[i], i))[:pool]
    lexical_all = {i: s for i in scope if (s := bm25(i)) is not None}
    lexical = _ranked({i: round(s, 9) for i, s in lexical_all.items()}, pool)  # equal scores rank by id
    dense_scores = {i: cosine[i] for i in set(dense) | set(lexical)}
    lexical_scores = {i: s for i in set(dense) | set(lexical) if (s := bm25(i)) is not None}
    # The fusion is the product's own (knowledge/tests/test_fusion.py tests it); what is computed here is its inputs.
    fused = retrieval._fuse(
        "hybrid",
        opts,
        [(i, cosine[i]) for i in dense],
        [(i, lexical_all[i]) for i in lexical],
        dense_scores,
        lexical_scores,
    )
    return [
        (
            i,
            dense.index(i) + 1 if i in dense else None,
            lexical.index(i) + 1 if i in lexical else None,
            round(dense_scores[i], 6),
            None if i not in lexical_scores else round(lexical_scores[i], 6),
        )
        for i in _ranked(fused, top_k)
    ]


@pytest.mark.parametrize("filtered", [False, True])
def test_hybrid_search_ranks_and_scores_as_the_exact_computation(fixture_kb, tenant_a, filtered):
    with tenant_context(tenant_a):
        document_ids = list(fixture_kb.documents.order_by("id").values_list("id", flat=True)[:3]) if filtered else None
        for query in QUERIES:
            retrieval.query_embedding(fixture_kb.embedding_model, query)  # both sides then read the cached vector
            hits = retrieval.search(knowledge_base=fixture_kb, query=query, top_k=20, document_ids=document_ids)
            got = [(h.chunk_id, h.dense_rank, h.lexical_rank, h.dense_score, h.lexical_score) for h in hits]
            expected = _expected(fixture_kb, query, 20, document_ids)
            assert [g[:3] for g in got] == [e[:3] for e in expected], query
            for g, e in zip(got, expected, strict=True):
                assert g[3:] == e[3:], query  # rounded to 6 places, as the API shows them
