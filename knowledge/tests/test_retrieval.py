"""knowledge.retrieval.search and POST /api/v1/knowledge-bases/{id}/search/ on real PostgreSQL + pgvector
and Redis, with the real offline MiniLM embedder."""

from __future__ import annotations

import functools
import random
import uuid

import pytest
from django.db import connection, transaction
from django.test import Client
from django_tenants.utils import tenant_context

from accounts.models import Membership, Role, User
from conftest import PASSWORD, host_of
from core.errors import InvalidInput
from knowledge import reranking, retrieval
from knowledge.embeddings import embedder_for_model
from knowledge.models import Chunk, Document, KnowledgeBase

pytestmark = pytest.mark.django_db

HANDBOOK = {
    "Passwords": (
        {"team": "it"},
        [
            "To reset your password, open Settings, choose Security and click 'Send reset link'. "
            "The link expires after one hour.",
            "Two-factor authentication can be enabled with any TOTP app such as a phone authenticator.",
        ],
    ),
    "Billing": (
        {"team": "finance"},
        [
            "Invoices are issued on the first day of each month and can be downloaded as PDF from the Billing page.",
            "Refunds are processed within 14 days after the cancellation of a subscription.",
        ],
    ),
    "Vacation policy": (
        {"team": "hr"},
        ["Employees accrue 25 days of paid annual leave per year. Unused days carry over until March 31."],
    ),
    "Office": (
        {"team": "facilities"},
        ["The Berlin office is open from 8am to 8pm. Visitors must register at the reception desk on arrival."],
    ),
    "API keys": (
        {"team": "it"},
        ["Create an API key under Developer settings. Keys can be limited to read, write or chat scopes."],
    ),
}


@functools.cache
def embedded(model: str, texts: tuple[str, ...]) -> list[list[float]]:
    # The same handbook is embedded for many tests: once per session is enough (real model, CPU time).
    return embedder_for_model(model).embed(list(texts))


def index_documents(kb: KnowledgeBase, docs: dict, *, version: int = 1) -> dict[str, Document]:
    """Documents and embedded chunks, current from `version` on (what the ingestion pipeline publishes)."""
    out = {}
    for title, (metadata, texts) in docs.items():
        doc = Document.objects.create(
            knowledge_base=kb, title=title, source_type="text", status="ready", metadata=metadata
        )
        vectors = embedded(kb.embedding_model, tuple(texts))
        Chunk.objects.bulk_create(
            Chunk(
                knowledge_base=kb,
                document=doc,
                position=i,
                text=t,
                content_hash=str(i),
                embedding=v,
                embedding_dimension=kb.embedding_dimension,
                valid_from=version,
            )
            for i, (t, v) in enumerate(zip(texts, vectors, strict=True))
        )
        out[title] = doc
    if kb.current_version < version:
        kb.current_version = version
        kb.save(update_fields=["current_version"])
    return out


@pytest.fixture
def kb_a(tenant_a, admin_a):
    with tenant_context(tenant_a):
        kb = KnowledgeBase.objects.create(owner=admin_a, name="Handbook")
        docs = index_documents(kb, HANDBOOK)
        kb.docs = docs
        yield kb


def titles(hits) -> list[str]:
    return [h.document_title for h in hits]


# --- Ranking ----------------------------------------------------------------------------------------------


def test_hybrid_finds_the_answer_first_with_leg_ranks_and_citation(kb_a):
    hits = retrieval.search(knowledge_base=kb_a, query="I forgot my login, how do I get a new password?", top_k=3)
    assert titles(hits)[0] == "Passwords"
    top = hits[0]
    assert top.position == 0 and "reset your password" in top.text
    assert top.dense_rank == 1 and top.dense_score > 0.3
    assert top.lexical_rank == 1 and top.lexical_score > 0  # "password" is a shared word
    assert top.found_by == ["dense", "lexical"]
    assert top.citation == {
        "knowledge_base_id": kb_a.pk,
        "document_id": kb_a.docs["Passwords"].pk,
        "document_title": "Passwords",
        "position": 0,
        "source_url": None,
        "page_start": None,
        "page_end": None,
        "section_path": [],
        "version": 1,
    }
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_dense_finds_meaning_without_shared_words(kb_a):
    query = "How much holiday do staff get each year?"
    dense = retrieval.search(knowledge_base=kb_a, query=query, top_k=2, mode="dense")
    assert titles(dense)[0] == "Vacation policy"
    assert dense[0].lexical_rank is None and dense[0].found_by == ["dense"]
    hybrid = retrieval.search(knowledge_base=kb_a, query=query, top_k=2)
    assert titles(hybrid)[0] == "Vacation policy"  # fusion keeps what only the dense leg found


def test_lexical_leg_is_bm25_over_full_text(kb_a):
    hits = retrieval.search(knowledge_base=kb_a, query="reception desk visitors", top_k=5, mode="lexical")
    assert titles(hits) == ["Office"]  # only chunks sharing a stemmed term are candidates
    assert hits[0].dense_rank is None and hits[0].lexical_rank == 1 and hits[0].found_by == ["lexical"]
    # A rare term outweighs a common one (IDF): "refunds" (1 chunk) beats "days" (2 chunks).
    ranked = retrieval.search(knowledge_base=kb_a, query="refunds days", top_k=5, mode="lexical")
    assert titles(ranked)[0] == "Billing" and "Refunds" in ranked[0].text
    assert set(titles(ranked)) == {"Billing", "Vacation policy"}
    assert retrieval.search(knowledge_base=kb_a, query="the and of", mode="lexical") == []  # stop words only


def test_fusion_weights_come_from_the_knowledge_base(kb_a):
    query = "reception desk"
    kb_a.search_settings = {"dense_weight": 0.0, "lexical_weight": 1.0}
    assert titles(retrieval.search(knowledge_base=kb_a, query=query, top_k=1)) == ["Office"]
    kb_a.search_settings = {"fusion": "rrf", "rrf_k": 60}
    rrf = retrieval.search(knowledge_base=kb_a, query=query, top_k=2)
    # Weighted RRF: first in both legs scores (0.8 + 0.2) / (60 + 1).
    assert titles(rrf)[0] == "Office" and rrf[0].score == pytest.approx(1 / 61, rel=1e-4)
    assert retrieval.search_settings_for(kb_a)["dense_weight"] == 0.8  # unset keys keep defaults


def test_rerank_hook_reorders_candidates(kb_a, settings):
    settings.KNOWLEDGE_RERANKERS = {"by-length": "knowledge.tests.test_retrieval.LongestFirst"}
    reranking.reranker_named.cache_clear()
    kb_a.search_settings = {"reranker": "by-length", "rerank_candidates": 8}
    try:
        hits = retrieval.search(knowledge_base=kb_a, query="password", top_k=3)
    finally:
        reranking.reranker_named.cache_clear()
    assert [h.rerank_score for h in hits] == sorted((len(h.text) for h in hits), reverse=True)
    kb_a.search_settings = {"reranker": "not-configured"}
    with pytest.raises(InvalidInput):
        retrieval.search(knowledge_base=kb_a, query="password")


class LongestFirst:
    name = "by-length"

    def rerank(self, query, documents, top_n):
        return sorted(((i, float(len(d))) for i, d in enumerate(documents)), key=lambda p: -p[1])[:top_n]


# --- Filters and versions ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["hybrid", "dense", "lexical"])
def test_document_and_metadata_filters(kb_a, mode):
    query = "password reset link"
    billing = kb_a.docs["Billing"].pk
    by_doc = retrieval.search(knowledge_base=kb_a, query=query, top_k=5, mode=mode, document_ids=[billing])
    assert set(titles(by_doc)) <= {"Billing"}
    if mode != "lexical":  # the lexical leg only returns chunks sharing a term
        assert len(by_doc) == 2
    by_meta = retrieval.search(knowledge_base=kb_a, query=query, top_k=5, mode=mode, metadata_filter={"team": "it"})
    assert titles(by_meta)[0] == "Passwords" and set(titles(by_meta)) <= {"Passwords", "API keys"}
    none = retrieval.search(knowledge_base=kb_a, query=query, mode=mode, metadata_filter={"team": "nobody"})
    assert none == []


def test_version_filter_searches_the_past(kb_a):
    vacation = kb_a.docs["Vacation policy"]
    # Version 2 replaced the vacation chunk; a staged row of an unfinished run (valid_from == valid_to) is invisible.
    old = Chunk.objects.get(document=vacation)
    old.valid_to = 2
    old.save(update_fields=["valid_to"])
    embedder = embedder_for_model(kb_a.embedding_model)
    new_text = "Employees accrue 30 days of paid annual leave per year."
    staged_text = "Employees accrue 99 days of paid annual leave per year."
    Chunk.objects.create(
        knowledge_base=kb_a,
        document=vacation,
        position=0,
        text=new_text,
        content_hash="n",
        embedding=embedder.embed([new_text])[0],
        valid_from=2,
    )
    Chunk.objects.create(
        knowledge_base=kb_a,
        document=vacation,
        position=0,
        text=staged_text,
        content_hash="s",
        embedding=embedder.embed([staged_text])[0],
        valid_from=3,
        valid_to=3,
    )
    kb_a.current_version = 2
    kb_a.save(update_fields=["current_version"])
    query = "How many days of annual leave do employees get?"
    for mode in ("hybrid", "dense", "lexical"):
        current = retrieval.search(knowledge_base=kb_a, query=query, top_k=10, mode=mode)
        past = retrieval.search(knowledge_base=kb_a, query=query, top_k=10, mode=mode, version=1)
        assert "30 days" in current[0].text and not any("25 days" in h.text or "99" in h.text for h in current)
        assert "25 days" in past[0].text and not any("30 days" in h.text or "99" in h.text for h in past)
        assert past[0].citation["version"] == 1 and current[0].citation["version"] == 2
    with pytest.raises(InvalidInput):
        retrieval.search(knowledge_base=kb_a, query=query, version=3)


def test_invalid_arguments_are_refused(kb_a):
    for kwargs in (
        {"query": "  "},
        {"query": "x", "mode": "magic"},
        {"query": "x", "top_k": 0},
        {"query": "x", "metadata_filter": ["team"]},
    ):
        with pytest.raises(InvalidInput):
            retrieval.search(knowledge_base=kb_a, **kwargs)


# --- pgvector index and iterative scans ---------------------------------------------------------------------


def _random_unit(rng: random.Random, dim: int = 384) -> list[float]:
    v = [rng.gauss(0, 1) for _ in range(dim)]
    n = sum(x * x for x in v) ** 0.5
    return [x / n for x in v]


def test_filtered_vector_query_uses_the_hnsw_index_with_iterative_scan(tenant_a, admin_a):
    rng = random.Random(7)
    with tenant_context(tenant_a):
        kb = KnowledgeBase.objects.create(owner=admin_a, name="Vectors", current_version=1)
        big = Document.objects.create(knowledge_base=kb, title="big", source_type="text")
        small = Document.objects.create(knowledge_base=kb, title="small", source_type="text")
        query = _random_unit(rng)
        rows = [
            Chunk(
                knowledge_base=kb,
                document=big,
                position=i,
                text=f"b{i}",
                content_hash="h",
                embedding=[q + 0.3 * x for q, x in zip(query, _random_unit(rng), strict=True)],
                valid_from=1,
            )
            for i in range(400)
        ]
        # The small document's chunks point away from the query: far down the HNSW candidate list.
        rows += [
            Chunk(
                knowledge_base=kb,
                document=small,
                position=i,
                text=f"s{i}",
                content_hash="h",
                embedding=[-q for q in query],
                valid_from=1,
            )
            for i in range(5)
        ]
        Chunk.objects.bulk_create(rows)
        scope = retrieval._scope(kb, None, [small.pk], None)
        sql = retrieval.dense_sql(384, scope.sql)
        params = [retrieval.vector_literal(query), *scope.params, retrieval.vector_literal(query), 5]
        with transaction.atomic(), connection.cursor() as cursor:
            # A tiny table makes "btree + sort" cheapest; forbid the sort as a big table's costs would.
            cursor.execute("SET LOCAL enable_sort = off")
            cursor.execute(f"EXPLAIN {sql}", params)
            plan = "\n".join(r[0] for r in cursor.fetchall())
            assert "chunk_embedding_hnsw_384" in plan, plan
            cursor.execute("SELECT set_config('hnsw.ef_search', '10', true)")
            cursor.execute(sql, params)
            without_iterative = cursor.fetchall()
            retrieval._set_vector_search_options(cursor, 10)
            cursor.execute(sql, params)
            with_iterative = cursor.fetchall()
        assert len(without_iterative) < 5  # the plain HNSW scan ran out of candidates before the filter
        assert len(with_iterative) == 5


# --- Query embedding cache ---------------------------------------------------------------------------------


class CountingEmbedder:
    def __init__(self, inner):
        self.inner, self.calls = inner, 0
        self.name, self.dimension = inner.name, inner.dimension

    def embed(self, texts):
        self.calls += 1
        return self.inner.embed(texts)


def test_query_cache_hit_avoids_re_embedding_per_tenant(kb_a, tenant_b, admin_b, monkeypatch):
    counting = CountingEmbedder(embedder_for_model("all-MiniLM-L6-v2"))
    monkeypatch.setattr(retrieval, "embedder_for_model", lambda name: counting)
    query = f"how do I reset my password {uuid.uuid4().hex[:6]}"
    first = retrieval.search(knowledge_base=kb_a, query=query)
    again = retrieval.search(knowledge_base=kb_a, query=f"  {query.replace(' ', '   ')} ", mode="dense")
    assert counting.calls == 1
    assert first[0].chunk_id == again[0].chunk_id
    assert again[0].dense_score == first[0].dense_score
    retrieval.search(knowledge_base=kb_a, query=query, mode="lexical")
    assert counting.calls == 1  # lexical searches never embed
    with tenant_context(tenant_b):  # another tenant: its own cache keys
        kb_b = KnowledgeBase.objects.create(owner=admin_b, name="B")
        retrieval.search(knowledge_base=kb_b, query=query)
    assert counting.calls == 2


# --- API ------------------------------------------------------------------------------------------------


def _url(kb) -> str:
    return f"/api/v1/knowledge-bases/{kb.pk}/search/"


def test_search_api_returns_hits_with_citations(kb_a, client_a, admin_a):
    client_a.force_login(admin_a)
    response = client_a.post(
        _url(kb_a),
        {"query": "How do I reset my password?", "top_k": 2, "metadata": {"team": "it"}},
        content_type="application/json",
    )
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["mode"] == "hybrid" and body["version"] == 1 and len(body["results"]) == 2
    top = body["results"][0]
    assert top["document_title"] == "Passwords" and top["citation"]["document_id"] == kb_a.docs["Passwords"].pk
    assert {"chunk_id", "score", "dense_rank", "lexical_rank", "found_by", "text", "position"} <= set(top)
    bad = client_a.post(_url(kb_a), {"query": "x", "mode": "magic"}, content_type="application/json")
    assert bad.status_code == 400 and bad.json()["code"] == "invalid"
    too_old = client_a.post(_url(kb_a), {"query": "x", "version": 9}, content_type="application/json")
    assert too_old.status_code == 400


def test_search_api_other_tenants_and_strangers_get_nothing(kb_a, client_b, admin_b, tenant_a):
    body = {"query": "How do I reset my password?"}
    # Globex's admin on globex's host, asking for acme's knowledge base id: not found in globex's schema.
    client_b.force_login(admin_b)
    response = client_b.post(_url(kb_a), body, content_type="application/json")
    assert response.status_code == 404 and "results" not in response.json()
    # Globex's admin on acme's host: not a member.
    stranger = Client(HTTP_HOST=host_of(tenant_a))
    stranger.force_login(admin_b)
    response = stranger.post(_url(kb_a), body, content_type="application/json")
    assert response.status_code in (401, 403, 404) and "results" not in response.json()
    anonymous = Client(HTTP_HOST=host_of(tenant_a)).post(_url(kb_a), body, content_type="application/json")
    assert anonymous.status_code in (401, 403) and "results" not in anonymous.json()


def test_search_api_private_knowledge_base_is_invisible_to_other_members(kb_a, client_a, tenant_a):
    member = User.objects.create_user(email="searcher@acme.test", password=PASSWORD)
    Membership.objects.create(user=member, tenant=tenant_a, role=Role.USER)
    client_a.force_login(member)
    body = {"query": "password"}
    assert client_a.post(_url(kb_a), body, content_type="application/json").status_code == 404
    kb_a.org_access = "viewer"
    kb_a.save(update_fields=["org_access"])
    assert client_a.post(_url(kb_a), body, content_type="application/json").status_code == 200


def test_search_api_is_a_read_for_api_keys_and_read_only_members(kb_a, tenant_a, admin_a):
    """Searching a knowledge base is reading it: a "read" API key may search, a key without "read" may not,
    and a read-only member searches what is shared with them."""
    from accounts.tests.helpers import api_key_client, api_key_create, member_create

    body = {"query": "How do I reset my password?", "top_k": 1}
    _, read_only_key = api_key_create(tenant_a, admin_a, scopes=["read"])
    response = api_key_client(tenant_a, read_only_key).post(_url(kb_a), body, content_type="application/json")
    assert response.status_code == 200, response.json()
    assert response.json()["results"][0]["document_title"] == "Passwords"
    _, chat_only_key = api_key_create(tenant_a, admin_a, scopes=["chat"])
    refused = api_key_client(tenant_a, chat_only_key).post(_url(kb_a), body, content_type="application/json")
    assert refused.status_code == 403 and "results" not in refused.json()
    assert refused.json()["code"] == "scope_required"

    reader = member_create(tenant_a, role=Role.READONLY, email="reader@acme.test")
    client = Client(HTTP_HOST=host_of(tenant_a))
    client.force_login(reader)
    assert client.post(_url(kb_a), body, content_type="application/json").status_code == 404  # private KB
    with tenant_context(tenant_a):
        kb_a.org_access = "viewer"
        kb_a.save(update_fields=["org_access"])
    shared = client.post(_url(kb_a), body, content_type="application/json")
    assert shared.status_code == 200 and shared.json()["results"][0]["document_title"] == "Passwords"


# --- Exact search for small scopes -------------------------------------------------------------------------


def _vector_kb(admin, rng: random.Random, *, cluster: int, outliers: int):
    """A knowledge base with a tight cluster of chunks around a query vector (document "cluster") and a
    few chunks far from it (document "far"); returns (kb, far document, query vector)."""
    kb = KnowledgeBase.objects.create(owner=admin, name="Vectors", current_version=1)
    near = Document.objects.create(knowledge_base=kb, title="cluster", source_type="text")
    far = Document.objects.create(knowledge_base=kb, title="far", source_type="text")
    query = _random_unit(rng)
    rows = [
        Chunk(
            knowledge_base=kb,
            document=near,
            position=i,
            text=f"c{i}",
            content_hash="h",
            embedding=[q + 0.3 * x for q, x in zip(query, _random_unit(rng), strict=True)],
            valid_from=1,
        )
        for i in range(cluster)
    ]
    rows += [
        Chunk(
            knowledge_base=kb,
            document=far,
            position=i,
            text=f"f{i}",
            content_hash="h",
            embedding=[-q + 0.05 * x for q, x in zip(query, _random_unit(rng), strict=True)],
            valid_from=1,
        )
        for i in range(outliers)
    ]
    Chunk.objects.bulk_create(rows)
    return kb, far, query


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / (sum(x * x for x in a) ** 0.5 * sum(y * y for y in b) ** 0.5)


def _dense_leg(cursor, kb: KnowledgeBase, query: list[float], scope) -> list[tuple[int, float]]:
    """The dense leg as search() runs it on a filtered scope of `kb`: exact or HNSW by the scope's size."""
    embedded = Chunk.objects.filter(knowledge_base=kb, embedding__isnull=False).count()
    exact = retrieval._dense_is_exact(cursor, kb, scope, True, embedded)
    options = {"vector": retrieval.vector_literal(query), "exact": exact, "bm": None, "complete": False}
    return retrieval._legs(cursor, kb, scope, limit=10, k1=1.2, b=0.75, **options).dense


def test_small_scopes_are_searched_exactly_without_the_hnsw_index(tenant_a, admin_a, settings):
    """HNSW is approximate: an element crowded out of its neighbours' lists (a dense cluster, or many deleted
    or rolled-back entries awaiting VACUUM) is unreachable and no ef_search or iterative scan finds it. Small
    scopes therefore get exact distances: every chunk of the scope, in exact cosine order."""
    rng = random.Random(11)
    with tenant_context(tenant_a):
        kb, far, query = _vector_kb(admin_a, rng, cluster=60, outliers=7)
        scope = retrieval._scope(kb, None, [far.pk], None)
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL enable_sort = off")  # as a big table's costs would: still no index
            params = [retrieval.vector_literal(query), *scope.params, 10]
            cursor.execute(f"EXPLAIN {retrieval.exact_dense_sql(384, scope.sql)}", params)
            plan = "\n".join(r[0] for r in cursor.fetchall())
            assert "chunk_embedding_hnsw_384" not in plan, plan
            # ef_search 1 and no iterative scan: an index scan would return at most one row here.
            cursor.execute("SELECT set_config('hnsw.ef_search', '1', true)")
            hits = _dense_leg(cursor, kb, query, scope)
        expected = {c.pk: _cosine(query, list(c.embedding)) for c in Chunk.objects.filter(document=far)}
        # Every chunk of the scope, best first, with its exact similarity (float32 in SQL: compare loosely).
        assert sorted(i for i, _ in hits) == sorted(expected)
        assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
        assert dict(hits) == pytest.approx(expected, abs=1e-5)

        # Above the threshold the HNSW index serves the query (the plain scan misses the far chunks).
        settings.KNOWLEDGE_EXACT_SEARCH_MAX_CHUNKS = 5
        with transaction.atomic(), connection.cursor() as cursor:
            assert not retrieval._scope_size_at_most(cursor, 384, scope, 5)
            assert retrieval._scope_size_at_most(cursor, 384, scope, 7)
            cursor.execute("SET LOCAL enable_sort = off")
            cursor.execute("SELECT set_config('hnsw.ef_search', '1', true)")
            indexed = _dense_leg(cursor, kb, query, scope)
        assert len(indexed) < 7


def test_search_api_answers_503_search_unavailable_when_the_vector_query_fails(kb_a, client_a, admin_a, caplog):
    from core.redis_clients import redis_client

    def failures() -> float:
        counts = redis_client().hgetall("metrics:c:search_failures_total")
        return sum(float(v) for k, v in counts.items() if b'"stage":"query"' in k)

    # pgvector refuses hnsw.ef_search above 1000: the dense leg's database query fails for real.
    kb_a.search_settings = {"ef_search": 5000}
    kb_a.save(update_fields=["search_settings"])
    before = failures()
    client_a.force_login(admin_a)
    response = client_a.post(_url(kb_a), {"query": "How do I reset my password?"}, content_type="application/json")
    assert response.status_code == 503
    assert response.json()["code"] == "search_unavailable"
    assert failures() == before + 1
    assert any(r.levelname == "ERROR" and "knowledge search failed" in r.getMessage() for r in caplog.records)


def test_search_whose_embedding_model_cannot_load_is_unavailable_while_lexical_mode_works(kb_a):
    kb_a.embedding_model = "st:/nonexistent/embedding-model"
    with pytest.raises(retrieval.SearchUnavailable) as failed:
        retrieval.search(knowledge_base=kb_a, query="reset password", mode="hybrid")
    assert failed.value.status == 503 and failed.value.code == "search_unavailable"
    assert titles(retrieval.search(knowledge_base=kb_a, query="reset password", mode="lexical"))[0] == "Passwords"
