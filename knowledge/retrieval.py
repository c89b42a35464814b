# ruff: noqa: S608 - SQL below interpolates only model table names, ints and fixed fragments; values are params.
"""Hybrid retrieval over one knowledge base: dense (pgvector HNSW) + lexical (BM25 over PostgreSQL full text).

    hits = search(knowledge_base=kb, query="how do I rotate my API key?", top_k=5)
    hits[0].text, hits[0].score, hits[0].dense_rank, hits[0].lexical_rank, hits[0].citation

Must be called inside the knowledge base's tenant context (a request on the tenant host, a tenant task, or
`tenant_context`): every table below is the tenant schema's own, so search never crosses tenants.
Callers check access first (iam.policy.resource_get_for_principal(..., action="view") for search).

How the legs work and why:
- Dense: exact cosine distance when the filtered scope is small (<= EXACT_SEARCH_MAX_CHUNKS chunks: HNSW is
  approximate and can miss rows there; exact costs milliseconds), else the per-dimension partial HNSW index.
  The ORDER BY uses the index's own expression (`embedding::vector(<dim>)`, with `embedding_dimension = <dim>`
  as literal SQL so the planner can prove the partial predicate). Filters (knowledge base, version,
  documents, metadata) run inside the index scan with pgvector >= 0.8 iterative scans
  (`hnsw.iterative_scan = relaxed_order`), so a filtered query still returns `k` rows instead of whatever
  survived the first `ef_search` candidates.
- Lexical: PostgreSQL's ts_rank/ts_rank_cd are poor rankers for natural-language questions (no IDF, AND-queries
  miss, OR-queries rank badly). We take OR candidates from the GIN index and score them with Okapi BM25 in SQL,
  using term statistics (N, avgdl, df) of this knowledge base and version: stored once the version is settled
  (knowledge.statistics), counted (and cached in Redis) while documents of it are in flight.
- Hybrid: both legs' candidate lists are united, every candidate gets BOTH scores (cosine for chunks only BM25
  found, BM25 for chunks only the vector found), scores are normalised per query (floor 0 / observed max)
  and combined convexly: `w_dense * dense + w_lexical * lexical`. By default (`fusion="adaptive"`) the
  weights are set per query: the base weights 0.8 / 0.2 scaled by each leg's confidence, i.e. how clearly its
  best candidate stands out of its ten best scores (a z-score, so cosine and BM25 compare); a leg that cannot
  tell its candidates apart for this query (common words only, or a query the embedding does not capture)
  loses weight, a query without lexical candidates is ranked by the dense leg alone. Chosen by leave-one-corpus-
  out cross-validation over five corpora of different kinds (FAQs, manual pages, source code, a protocol spec;
  bench/retrieval_quality.py): on every held-out corpus it scored at least as well as the better single leg and
  as the fixed weights (`fusion="weighted"`); the candidate depth (20-100) made no difference there. Naive
  reciprocal rank fusion throws the score margins away and lost to the dense leg; it is kept as `fusion="rrf"`
  for comparison only.

Per-knowledge-base settings (KnowledgeBase.search_settings), all optional; DEFAULT_SEARCH_SETTINGS has the
defaults: mode, dense_weight, lexical_weight, fusion, rrf_k, candidates, ef_search, bm25_k1, bm25_b, reranker
(a name from settings.KNOWLEDGE_RERANKERS, or "none": knowledge.reranking), rerank_candidates.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from array import array
from dataclasses import asdict, astuple, dataclass, field
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError, connections, transaction

from core.db import read_alias, reads_from_replica
from core.errors import DomainError, ErrorCode, InvalidInput
from core.metrics import metric_inc
from core.redis_clients import keys_delete_prefixed
from core.tenancy import current_schema, in_tenant

from .embeddings import embedder_for_model
from .models import Chunk, Document, KnowledgeBase, VersionStatistics, VersionTerm, passage_location
from .reranking import rerank_hits, reranker_for
from .statistics import IN_FLIGHT, VERSION_CHUNKS_SQL

logger = logging.getLogger(__name__)

MODES = ("hybrid", "dense", "lexical")
DEFAULT_SEARCH_SETTINGS: dict[str, Any] = {
    "mode": "hybrid",
    # Chosen by leave-one-corpus-out cross-validation on five corpora (bench/retrieval_quality.py); with
    # "adaptive" fusion these are the base weights each query's leg confidences scale (see the module docstring).
    "dense_weight": 0.8,
    "lexical_weight": 0.2,
    "fusion": "adaptive",  # or "weighted" (fixed weights), "rrf" (reciprocal rank fusion, for comparison)
    "rrf_k": 60,
    "candidates": 50,  # per leg, before fusion
    "ef_search": None,  # None: chosen from the searched version's size for recall@10 >= 0.98 (ef_search_for)
    "bm25_k1": 1.2,
    "bm25_b": 0.75,
    "reranker": None,
    "rerank_candidates": 20,
}
MAX_TOP_K = 100
DEFAULT_TOP_K = 5  # the API's default and the search page's: the same results for the same question
QUERY_MAX_CHARS = 4000
# Lexical candidates come from the query's rarest terms first, as long as their summed document frequencies
# stay within this budget (the rarest term always counts). Common terms left out of candidate generation
# (low IDF: they barely move BM25) still count in the score of every candidate. Bounds latency on big KBs.
# Measured on bench/retrieval.py's 100k chunks (40 questions): the lexical top 10 agreed with exact BM25 over the
# whole knowledge base on 0.935 of its results at 5000, 0.875 at 2000, 0.848 at 1000; the candidate stage's time
# follows the rows it reads, so a smaller budget buys speed with exactness.
LEXICAL_CANDIDATE_BUDGET = 5000
LEXICAL_EXACT_CANDIDATES = 300
# Dense searches whose filtered scope holds at most this many chunks skip the HNSW index and compute exact
# distances. HNSW is approximate: an element can become unreachable in the graph (a dense cluster of other
# vectors, or many deleted/rolled-back entries awaiting VACUUM, crowds it out of its neighbours' lists) and
# then no ef_search or iterative scan finds it. A small knowledge base, a document filter or an old version is
# exactly where that hurts most (a user's one relevant chunk silently missing); scanning a few thousand
# vectors exactly costs milliseconds. Override with settings.KNOWLEDGE_EXACT_SEARCH_MAX_CHUNKS.
EXACT_SEARCH_MAX_CHUNKS = 5000
# hnsw.ef_search by the size of the knowledge base version searched (ef_search_for), unless its search_settings
# set one: the smallest candidate list whose recall@10 against exact search stays >= 0.98, measured with
# iterative scans, unfiltered and filtered to one document (bench/retrieval.py prints the table).
# At 30k chunks: 0.938 at 20, 0.972 at 40, 0.980 at 64, 0.996 at 100, 0.999 at 200 (filtered: 1.000 throughout).
EF_SEARCH_BY_SCOPE_SIZE = ((10_000, 40), (30_000, 64), (100_000, 100))
EF_SEARCH_MAX = 200


class SearchUnavailable(DomainError):
    """The search could not run: the query could not be embedded or the database query failed.

    Never answered from a weaker fallback instead (full text only, say): a client, or a chat run grounding its
    answer, must know that the knowledge was not searched. Logged and counted (search_failures_total)."""

    code = ErrorCode.SEARCH_UNAVAILABLE
    status = 503


def _search_failed(knowledge_base: KnowledgeBase, stage: str, detail: str) -> SearchUnavailable:
    """Log (with the cause's traceback, when called in an except block) and count one failed search."""
    logger.error(
        "knowledge search failed for knowledge base %s at %s: %s", knowledge_base.pk, stage, detail, exc_info=True
    )
    metric_inc("search_failures_total", tenant=current_schema(), stage=stage)
    return SearchUnavailable(f"Search over this knowledge base is unavailable right now: {detail} Try again later.")


@dataclass
class SearchHit:
    chunk_id: int
    document_id: int
    document_title: str
    position: int
    text: str
    score: float
    # Which retriever found it: 1-based rank and raw score in each leg's candidate list (None = not found by it).
    dense_rank: int | None = None
    dense_score: float | None = None  # cosine similarity
    lexical_rank: int | None = None
    lexical_score: float | None = None  # BM25
    rerank_score: float | None = None
    found_by: list[str] = field(default_factory=list)
    # Where the passage is: pages (PDF and scans, 1-based, inclusive) and its heading trail.
    page_start: int | None = None
    page_end: int | None = None
    section_path: list[str] = field(default_factory=list)
    citation: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def location(self) -> str:
        """ "p. 12 · Installation › Upgrading", as the dashboard shows it (chat.js builds the same label)."""
        return passage_location(self.page_start, self.page_end, self.section_path)


# --- Settings -------------------------------------------------------------------------------------------


def search_settings_for(knowledge_base: KnowledgeBase) -> dict[str, Any]:
    """Defaults, overlaid with the setting tuned on the knowledge base's own documents (knowledge.tuning; the
    newest tuning record at or below the current version), overlaid with the knowledge base's own search_settings
    (unknown keys ignored). What the owner sets explicitly always wins: a tuning only replaces defaults."""
    tuned: dict[str, Any] = {}
    if knowledge_base.pk is not None:
        record = (
            knowledge_base.versions.filter(number__lte=knowledge_base.current_version)
            .exclude(search_tuning={})
            .order_by("-number")
            .values_list("search_tuning", flat=True)
            .first()
        )
        tuned = (record or {}).get("settings") or {}
    merged = dict(DEFAULT_SEARCH_SETTINGS)
    for layer in (tuned, knowledge_base.search_settings or {}):
        for key, value in layer.items():
            if key in merged and value is not None:
                merged[key] = value
    return merged


# --- Query embedding cache --------------------------------------------------------------------------------


def _normalise_query(query: str) -> str:
    return " ".join(query.split())


def query_embedding(model: str, query: str) -> list[float]:
    """The query's vector, cached in Redis for a short while.

    The Django cache's key function prefixes every key with the current tenant schema, so identical queries
    are shared within a tenant and never across tenants. Redis trouble degrades to embedding every time.
    """
    text = _normalise_query(query)
    key = "knowledge:qemb:" + hashlib.sha256(f"{model}\0{text}".encode()).hexdigest()
    try:
        cached = cache.get(key)
    except Exception:  # noqa: BLE001 - the cache is an optimisation, never a failure
        logger.warning("query embedding cache unavailable", exc_info=True)
        cached = None
    if cached is not None:
        return array("f", cached).tolist()
    vector = embedder_for_model(model).embed([text])[0]
    try:
        cache.set(key, array("f", vector).tobytes(), timeout=getattr(settings, "KNOWLEDGE_QUERY_CACHE_SECONDS", 600))
    except Exception:  # noqa: BLE001
        logger.warning("query embedding cache unavailable", exc_info=True)
    return vector


def vector_literal(vector: list[float]) -> str:
    return "[" + ",".join(f"{v:.7g}" for v in vector) + "]"


# --- Shared SQL pieces ----------------------------------------------------------------------------------


@dataclass
class _Scope:
    """WHERE clause (on alias c) selecting the chunks a query may see, with its parameters."""

    sql: str
    params: list


def _scope(
    knowledge_base: KnowledgeBase, version: int | None, document_ids: list[int] | None, metadata_filter: dict | None
) -> _Scope:
    sql = ["c.knowledge_base_id = %s"]
    params: list = [knowledge_base.pk]
    if version is None:
        sql.append("c.valid_to IS NULL")
    else:
        sql.append(VERSION_CHUNKS_SQL)
        params += [version, version]
    if document_ids is not None:
        sql.append("c.document_id = ANY(%s)")
        params.append(list(document_ids))
    if metadata_filter:
        # JSONB containment on the document's metadata (uses knowledge_document's rows of this KB only).
        sql.append(
            f"c.document_id IN (SELECT d.id FROM {Document._meta.db_table} d "
            "WHERE d.knowledge_base_id = %s AND d.metadata @> %s::jsonb)"
        )
        params += [knowledge_base.pk, json.dumps(metadata_filter)]
    return _Scope(" AND ".join(sql), params)


def _chunk_table() -> str:
    return Chunk._meta.db_table


# --- Dense leg ------------------------------------------------------------------------------------------


def dense_sql(dimension: int, scope_sql: str) -> str:
    """The k-NN query on the HNSW index for `dimension`; params: vector, *scope params, vector, limit.

    MATERIALIZED + outer ORDER BY: relaxed_order iterative scans may return rows slightly out of order.
    """
    dim = int(dimension)  # literal on purpose: must match the partial index's expression and predicate
    table = _chunk_table()
    return (
        "WITH nearest AS MATERIALIZED ("
        f" SELECT c.id, (c.embedding::vector({dim})) <=> %s::vector({dim}) AS distance"
        f" FROM {table} c WHERE c.embedding_dimension = {dim} AND c.embedding IS NOT NULL AND {scope_sql}"
        f" ORDER BY (c.embedding::vector({dim})) <=> %s::vector({dim}) LIMIT %s"
        ") SELECT id, distance FROM nearest ORDER BY distance, id"
    )


def exact_dense_sql(dimension: int, scope_sql: str) -> str:
    """Exact k-NN over the scope (no index); params: vector, *scope params, limit.

    cosine_distance() instead of the `<=>` operator: the same value, but an ORDER BY on a function cannot be
    served by the HNSW index, so the planner scans the scope (btree on knowledge base) and sorts exactly.
    """
    dim = int(dimension)
    return (
        f"SELECT c.id, cosine_distance(c.embedding::vector({dim}), %s::vector({dim})) AS distance"
        f" FROM {_chunk_table()} c WHERE c.embedding_dimension = {dim} AND c.embedding IS NOT NULL AND {scope_sql}"
        " ORDER BY distance, c.id LIMIT %s"
    )


def _scope_size_at_most(cursor, dimension: int, scope: _Scope, cap: int) -> bool:
    """Whether the scope holds at most `cap` embedded chunks (counts no further than cap + 1 rows)."""
    dim = int(dimension)
    cursor.execute(
        f"SELECT count(*) FROM (SELECT 1 FROM {_chunk_table()} c WHERE c.embedding_dimension = {dim}"
        f" AND c.embedding IS NOT NULL AND {scope.sql} LIMIT %s) s",
        [*scope.params, cap + 1],
    )
    return cursor.fetchone()[0] <= cap


def _set_vector_search_options(cursor, ef_search: int) -> None:
    # SET LOCAL semantics (is_local=true): only for the surrounding transaction, never leaks to a pooled conn.
    cursor.execute(
        "SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true), set_config('hnsw.ef_search', %s, true)",
        [str(int(ef_search))],
    )


def _dense_is_exact(cursor, kb: KnowledgeBase, scope: _Scope, filtered: bool, embedded: int) -> bool:
    """Whether the scope is small enough for exact search. `embedded` (the knowledge base version's embedded
    chunks, from its cached statistics) answers for the unfiltered scope and for any filter of a small knowledge
    base; only a filtered search of a big one counts its scope."""
    cap = int(getattr(settings, "KNOWLEDGE_EXACT_SEARCH_MAX_CHUNKS", EXACT_SEARCH_MAX_CHUNKS))
    if cap <= 0:
        return False
    if embedded <= cap:
        return True
    return filtered and _scope_size_at_most(cursor, kb.embedding_dimension, scope, cap)


def ef_search_for(scope_size: int) -> int:
    """The HNSW candidate list for a scope of this many vectors: the smallest that keeps recall@10 against exact
    search >= 0.98 on bench/retrieval.py's corpus (its recall-by-ef_search table), with a
    margin. A fixed 200 cost every query on a small knowledge base what only the biggest need."""
    for size, ef in EF_SEARCH_BY_SCOPE_SIZE:
        if scope_size <= size:
            return ef
    return EF_SEARCH_MAX


# --- Lexical leg (BM25) ---------------------------------------------------------------------------------


def query_lexemes(cursor, query: str) -> list[str]:
    """The query's lexemes with the same text search configuration as Chunk.search_vector ('english')."""
    cursor.execute("SELECT tsvector_to_array(to_tsvector('english', %s))", [query])
    return list(cursor.fetchone()[0] or [])


def _tsquery_of(lexemes: list[str]) -> str:
    # Lexemes are already normalised: quote each ('' escapes a quote) and OR them.
    return " | ".join("'" + lex.replace("\\", "\\\\").replace("'", "''") + "'" for lex in lexemes)


def _stats_key(kb: KnowledgeBase, version: int | None, in_flight: int, what: str) -> str:
    # A version's content changes only when one of the documents in flight at or before it is published, and their
    # number only falls within a version: (version, documents in flight) names one content, so a cached figure is
    # never read after the publish that changed it.
    ver = f"v{version}" if version is not None else f"cur{kb.current_version}"
    return f"knowledge:bm25:{kb.pk}:{ver}:f{in_flight}:{what}"


def bm25_stats_forget(schema: str) -> int:
    """Drop the organisation's cached statistics: a restore replaced its chunks under the same knowledge base ids
    and versions, which the cached figures would go on describing. (Stored statistics, knowledge.statistics, are
    rows of the organisation's schema: a restore brings back those of its chunks.)"""
    with in_tenant(schema):
        prefix = cache.make_key("knowledge:bm25:")  # the Django cache's own key, tenant prefix included
    return keys_delete_prefixed(prefix, settings.CACHES["default"]["LOCATION"])


@dataclass(frozen=True)
class _CollectionStats:
    n: int  # chunks (BM25's N)
    avgdl: float  # average tsvector length
    embedded: int  # chunks with a vector of the knowledge base's dimension: the unfiltered dense scope's size


@dataclass
class _Statistics:
    """What the search's first statement found: the query's lexemes and, when the version has them stored
    (knowledge.statistics), its collection statistics and the document frequencies of those lexemes."""

    lexemes: list[str]
    stored: _CollectionStats | None
    df: dict[str, int]  # stored: a lexeme without an entry occurs in no chunk
    in_flight: int  # not stored: documents in flight at or before the version (the counted figures' cache key)


def _ef_search_sql(embedded: str) -> str:
    """ef_search_for() as a SQL expression of a scope size (EF_SEARCH_BY_SCOPE_SIZE; NULL: EF_SEARCH_MAX)."""
    cases = " ".join(f"WHEN {embedded} <= {int(size)} THEN {int(ef)}" for size, ef in EF_SEARCH_BY_SCOPE_SIZE)
    return f"CASE {cases} ELSE {int(EF_SEARCH_MAX)} END"


def _first_statement(
    cursor, kb: KnowledgeBase, version: int | None, *, query: str | None, vector_options: bool, ef_search: int | None
) -> _Statistics:
    """One statement before the legs: the query's lexemes (the configuration of Chunk.search_vector, 'english'), the
    version's stored statistics with the stored document frequencies of those lexemes (two unique-index lookups),
    or, without them, how many documents are in flight; and, with `vector_options`, the vector search options
    (SET LOCAL semantics, is_local=true: only for the surrounding transaction, never leaked to a pooled connection),
    ef_search chosen from the stored scope size unless `ef_search` is given."""
    number = version if version is not None else kb.current_version
    dim = int(kb.embedding_dimension)
    terms = VersionTerm._meta.db_table
    columns = [
        "q.lexemes, s.chunks, s.avgdl, s.embedded",
        f"ARRAY(SELECT t.lexeme FROM {terms} t WHERE t.statistics_id = s.id AND t.lexeme = ANY(q.lexemes) "
        "ORDER BY t.lexeme)",
        f"ARRAY(SELECT t.documents FROM {terms} t WHERE t.statistics_id = s.id AND t.lexeme = ANY(q.lexemes) "
        "ORDER BY t.lexeme)",
        f"CASE WHEN s.id IS NULL THEN (SELECT count(*) FROM {Document._meta.db_table} d WHERE d.knowledge_base_id = %s"
        " AND d.status = ANY(%s) AND (d.ingest_version IS NULL OR d.ingest_version <= %s)) END",
    ]
    params: list = [query, kb.pk, [status.value for status in IN_FLIGHT], number]
    if vector_options:
        columns.append(
            "set_config('hnsw.iterative_scan', 'relaxed_order', true), "
            f"set_config('hnsw.ef_search', coalesce(%s::int, {_ef_search_sql('s.embedded')})::text, true)"
        )
        params.append(ef_search)
    cursor.execute(
        "WITH q AS (SELECT tsvector_to_array(to_tsvector('english', %s::text)) AS lexemes) "
        f"SELECT {', '.join(columns)} FROM q LEFT JOIN {VersionStatistics._meta.db_table} s "
        f"ON s.knowledge_base_id = %s AND s.number = %s AND s.embedding_dimension = {dim}",
        [*params, kb.pk, number],
    )
    lexemes, n, avgdl, embedded, df_lexemes, df_counts, in_flight = cursor.fetchone()[:7]
    stored = None if n is None else _CollectionStats(int(n), float(avgdl), int(embedded))
    return _Statistics(
        list(lexemes or []), stored, dict(zip(df_lexemes, map(int, df_counts), strict=True)), int(in_flight or 0)
    )


def _collection_stats(cursor, kb: KnowledgeBase, version: int | None, in_flight: int) -> _CollectionStats:
    """Counted, for a version without stored statistics; cached (KNOWLEDGE_BM25_STATS_SECONDS)."""
    dim = int(kb.embedding_dimension)
    key = _stats_key(kb, version, in_flight, f"stats:d{dim}")
    try:
        cached = cache.get(key)
    except Exception:  # noqa: BLE001
        cached = None
    if cached is not None:
        return _CollectionStats(*cached)
    base = _scope(kb, version, None, None)
    cursor.execute(
        "SELECT count(*), coalesce(avg(length(c.search_vector)), 0)::float8, "
        f"count(*) FILTER (WHERE c.embedding_dimension = {dim} AND c.embedding IS NOT NULL) "
        f"FROM {_chunk_table()} c WHERE {base.sql}",
        base.params,
    )
    n, avgdl, embedded = cursor.fetchone()
    stats = _CollectionStats(int(n), float(avgdl), int(embedded))
    try:
        cache.set(key, astuple(stats), timeout=getattr(settings, "KNOWLEDGE_BM25_STATS_SECONDS", 3600))
    except Exception:  # noqa: BLE001
        logger.warning("BM25 statistics cache unavailable", exc_info=True)
    return stats


def _document_frequencies(
    cursor, kb: KnowledgeBase, version: int | None, in_flight: int, lexemes: list[str]
) -> dict[str, int]:
    """Counted, for a version without stored statistics; cached per lexeme (KNOWLEDGE_BM25_STATS_SECONDS)."""
    keys = {
        lex: _stats_key(kb, version, in_flight, "df:" + hashlib.sha1(lex.encode()).hexdigest())  # noqa: S324
        for lex in lexemes
    }
    try:
        found = cache.get_many(list(keys.values()))
    except Exception:  # noqa: BLE001
        found = {}
    df = {lex: found[k] for lex, k in keys.items() if k in found}
    missing = [lex for lex in lexemes if lex not in df]
    if missing:
        base = _scope(kb, version, None, None)
        counts = ", ".join("count(*) FILTER (WHERE c.search_vector @@ %s::tsquery)" for _ in missing)
        cursor.execute(
            f"SELECT {counts} FROM {_chunk_table()} c WHERE {base.sql} AND c.search_vector @@ %s::tsquery",
            [*[_tsquery_of([lex]) for lex in missing], *base.params, _tsquery_of(missing)],
        )
        row = cursor.fetchone()
        fresh = {lex: int(row[i]) for i, lex in enumerate(missing)}
        df.update(fresh)
        try:
            cache.set_many(
                {keys[lex]: n for lex, n in fresh.items()},
                timeout=getattr(settings, "KNOWLEDGE_BM25_STATS_SECONDS", 3600),
            )
        except Exception:  # noqa: BLE001
            logger.warning("BM25 statistics cache unavailable", exc_info=True)
    return df


@dataclass
class _Bm25Query:
    lexemes: list[str]
    idf: list[float]
    candidate_tsquery: str
    avgdl: float


def _bm25_prepare(lexemes: list[str], stats: _CollectionStats, df: dict[str, int]) -> _Bm25Query | None:
    """IDF of the query's lexemes and the terms candidates come from, from the statistics of the whole knowledge
    base version (not of a filtered slice)."""
    n, avgdl = stats.n, stats.avgdl
    if not lexemes or n == 0:
        return None
    present = [lex for lex in lexemes if df.get(lex, 0) > 0]
    if not present:
        return None
    # Lucene's BM25 IDF: always positive, so very common terms add a little instead of subtracting.
    idf = [math.log(1 + (n - df[lex] + 0.5) / (df[lex] + 0.5)) for lex in present]
    pool, chosen = 0, []
    for lex in sorted(present, key=lambda lex: df[lex]):
        if chosen and pool + df[lex] > LEXICAL_CANDIDATE_BUDGET:
            break
        chosen.append(lex)
        pool += df[lex]
    return _Bm25Query(present, idf, _tsquery_of(chosen), max(avgdl, 1.0))


# --- Both legs in one statement -------------------------------------------------------------------------


@dataclass
class _Legs:
    """What fusion gets: each leg's candidates, best first, and both scores of every candidate of either leg
    (when completed; a chunk without a query term has no BM25 score, as before)."""

    dense: list[tuple[int, float]] = field(default_factory=list)  # (chunk id, cosine similarity)
    lexical: list[tuple[int, float]] = field(default_factory=list)  # (chunk id, BM25)
    dense_scores: dict[int, float] = field(default_factory=dict)
    lexical_scores: dict[int, float] = field(default_factory=dict)


def legs_sql(
    dimension: int,
    scope: _Scope,
    *,
    vector: str | None,
    exact: bool,
    bm: _Bm25Query | None,
    limit: int,
    k1: float,
    b: float,
    complete: bool,
) -> tuple[str, list]:
    """The dense and the lexical leg in ONE statement (one round trip), with, when `complete`, the other leg's score
    of every candidate of either. Rows: (id, dense rank, cosine distance, cosine similarity of a lexical-only
    candidate, lexical rank, BM25). Each leg's query is the one it runs alone (dense_sql / exact_dense_sql; BM25 in
    two stages, below), so results do not depend on which legs run together.

    BM25 runs in two stages: every OR-candidate gets a cheap BM25 with tf = 1 (term present or not: one `@@` per
    term, no tsvector unnesting); the best LEXICAL_EXACT_CANDIDATES of those are re-scored with exact term
    frequencies, in SQL, from the version's term statistics (IDF and average length: _bm25_prepare). Knowledge
    bases with fewer candidates than that get exact BM25 throughout.
    """
    dim = int(dimension)
    table = _chunk_table()
    ctes: list[str] = []
    params: list = []
    if vector is not None:
        if exact:
            ctes.append(f"d0 AS MATERIALIZED ({exact_dense_sql(dim, scope.sql)})")
            params += [vector, *scope.params, limit]
        else:
            ctes.append(f"d0 AS MATERIALIZED ({dense_sql(dim, scope.sql)})")
            params += [vector, *scope.params, vector, limit]
        ctes.append("dense AS (SELECT id, distance, row_number() OVER (ORDER BY distance, id) AS rank FROM d0)")
    if bm is not None:
        presence = " + ".join("CASE WHEN c.search_vector @@ %s::tsquery THEN %s::float8 ELSE 0 END" for _ in bm.lexemes)
        ctes.append("q(lexeme, idf) AS (SELECT * FROM unnest(%s::text[], %s::float8[]))")
        params += [bm.lexemes, bm.idf]
        ctes.append(
            f"cand AS MATERIALIZED (SELECT c.id, c.search_vector FROM {table} c "
            f"WHERE {scope.sql} AND c.search_vector @@ %s::tsquery "
            f"ORDER BY ({presence}) / (1 + %s * (1 - %s + %s * length(c.search_vector) / %s)) DESC, c.id LIMIT %s)"
        )
        params += [*scope.params, bm.candidate_tsquery]
        for lex, idf in zip(bm.lexemes, bm.idf, strict=True):
            params += [_tsquery_of([lex]), idf]
        params += [k1, b, b, bm.avgdl, max(LEXICAL_EXACT_CANDIDATES, limit)]
        scored = "cand"
        if complete and vector is not None:  # dense candidates the lexical stage did not score
            ctes.append(
                "scored AS (SELECT id, search_vector FROM cand UNION ALL "
                f"SELECT c.id, c.search_vector FROM {table} c "
                "WHERE c.id IN (SELECT id FROM dense) AND c.id NOT IN (SELECT id FROM cand))"
            )
            scored = "scored"
        # Term frequencies of the query's lexemes only: setweight marks them 'A' and ts_filter keeps them, so each
        # chunk unnests a handful of entries instead of its whole tsvector (half the statement's time at 100k
        # chunks). Chunk.search_vector is to_tsvector() of the text: every position has the default weight 'D'
        # and every lexeme has positions, so nothing else passes the filter and nothing of the query's is lost.
        ctes.append(
            "bm AS (SELECT s.id, sum(q.idf * t.tf * %s / (t.tf + %s * (1 - %s + %s * length(s.search_vector) / %s)))"
            f" AS score FROM {scored} s CROSS JOIN LATERAL ("
            " SELECT u.lexeme, array_length(u.positions, 1)::float8 AS tf"
            " FROM unnest(ts_filter(setweight(s.search_vector, 'A', %s::text[]), '{a}')) u"
            ") t JOIN q ON q.lexeme = t.lexeme GROUP BY s.id)"
        )
        params += [k1 + 1, k1, b, b, bm.avgdl, bm.lexemes]
        # Ranked on the score rounded to 9 places: the sum's order over lexemes is the join's, so chunks with equal
        # BM25 can differ in the last bits from run to run; equal scores then rank by id, the same every time.
        ctes.append(
            "lexical AS (SELECT id, score, row_number() OVER (ORDER BY round(score::numeric, 9) DESC, id) AS rank "
            "FROM bm WHERE id IN (SELECT id FROM cand) ORDER BY round(score::numeric, 9) DESC, id LIMIT %s)"
        )
        params.append(limit)
    if vector is not None and bm is None:
        select = "SELECT id, rank, distance, NULL::float8, NULL::bigint, NULL::float8 FROM dense"
    elif vector is None:
        select = "SELECT id, NULL::bigint, NULL::float8, NULL::float8, rank, score FROM lexical"
    elif not complete:
        select = (
            "SELECT coalesce(d.id, l.id), d.rank, d.distance, NULL::float8, l.rank, l.score "
            "FROM dense d FULL JOIN lexical l ON l.id = d.id"
        )
    else:
        select = (
            "SELECT u.id, d.rank, d.distance, "
            f"CASE WHEN d.id IS NULL AND c.embedding_dimension = {dim} "
            f"THEN 1 - ((c.embedding::vector({dim})) <=> %s::vector({dim})) END, "
            "l.rank, coalesce(l.score, bm.score) "
            f"FROM (SELECT id FROM dense UNION SELECT id FROM lexical) u JOIN {table} c ON c.id = u.id "
            "LEFT JOIN dense d ON d.id = u.id LEFT JOIN lexical l ON l.id = u.id LEFT JOIN bm ON bm.id = u.id"
        )
        params.append(vector)
    return "WITH " + ", ".join(ctes) + " " + select, params


def _legs(cursor, kb: KnowledgeBase, scope: _Scope, **options: Any) -> _Legs:
    """Run legs_sql (same options) and split its rows into what fusion gets."""
    if options["vector"] is None and options["bm"] is None:
        return _Legs()
    sql, params = legs_sql(kb.embedding_dimension, scope, **options)
    cursor.execute(sql, params)
    dense, lexical, legs = [], [], _Legs()
    for chunk_id, dense_rank, distance, similarity, lexical_rank, bm25 in cursor.fetchall():
        if dense_rank is not None:
            dense.append((dense_rank, chunk_id, 1.0 - float(distance)))
        elif similarity is not None:
            legs.dense_scores[chunk_id] = float(similarity)
        if lexical_rank is not None:
            lexical.append((lexical_rank, chunk_id, float(bm25)))
        elif bm25 is not None:
            legs.lexical_scores[chunk_id] = float(bm25)
    legs.dense = [(chunk_id, score) for _, chunk_id, score in sorted(dense)]
    legs.lexical = [(chunk_id, score) for _, chunk_id, score in sorted(lexical)]
    legs.dense_scores.update(legs.dense)
    legs.lexical_scores.update(legs.lexical)
    return legs


# --- Fusion ---------------------------------------------------------------------------------------------


def _normalise(scores: dict[int, float]) -> dict[int, float]:
    """Scale to [0, 1] by the observed maximum, from a floor of 0 (BM25's minimum; a cosine similarity <= 0
    means "unrelated" for sentence embeddings, so negatives count as 0).

    Per query and per leg, so the weights mean the same thing for every query and knowledge base. Measured
    against min-max, z-score and a -1 cosine floor (bench/retrieval_quality.py): no better, and less robust.
    """
    if not scores:
        return {}
    top = max(scores.values())
    if top <= 0:
        return dict.fromkeys(scores, 0.0)
    return {i: max(s, 0.0) / top for i, s in scores.items()}


def fuse_weighted(
    dense: dict[int, float], lexical: dict[int, float], *, dense_weight: float, lexical_weight: float
) -> dict[int, float]:
    ids = set(dense) | set(lexical)
    nd, nl = _normalise(dense), _normalise(lexical)
    return {i: dense_weight * nd.get(i, 0.0) + lexical_weight * nl.get(i, 0.0) for i in ids}


# Adaptive fusion (fuse_adaptive): a leg's confidence is read from its CONFIDENCE_DEPTH best scores and scales
# its weight to this power (0 would be plain weighted fusion; 0.5 did better than 1 and 2 on the bench corpora).
CONFIDENCE_DEPTH = 10
ADAPTIVE_STRENGTH = 0.5


def leg_confidence(ranked_scores: list[float], depth: int = CONFIDENCE_DEPTH) -> float:
    """How clearly a leg's best candidate stands out of its `depth` best, in [0, 1]: the z-score of the top
    score among them, divided by its maximum sqrt(depth - 1) (one candidate far ahead of equal others).

    Scale-free, so a cosine list and a BM25 list compare. A flat list means the leg cannot tell its
    candidates apart for this query (common words only, or a query the embedding does not capture); fewer
    than two candidates says nothing, hence 0.
    """
    top = sorted(ranked_scores, reverse=True)[:depth]
    if len(top) < 2 or top[0] == top[-1]:
        return 0.0
    mean = sum(top) / len(top)
    sd = math.sqrt(sum((s - mean) ** 2 for s in top) / len(top))
    if sd == 0:
        return 0.0
    # Clamped: near-equal scores leave rounding error in the mean, which can put it above the top score.
    return max(0.0, min(1.0, (top[0] - mean) / sd / math.sqrt(len(top) - 1)))


def adaptive_weights(
    dense_ranked: list[float], lexical_ranked: list[float], *, dense_weight: float, lexical_weight: float
) -> tuple[float, float]:
    """The query's own weights: the base weights scaled by each leg's confidence (leg_confidence), rescaled
    to the base weights' sum. Both legs without confidence keep the base weights."""
    dense = dense_weight * leg_confidence(dense_ranked) ** ADAPTIVE_STRENGTH
    lexical = lexical_weight * leg_confidence(lexical_ranked) ** ADAPTIVE_STRENGTH
    if dense + lexical <= 0:
        return dense_weight, lexical_weight
    total = dense_weight + lexical_weight
    return total * dense / (dense + lexical), total * lexical / (dense + lexical)


def fuse_adaptive(
    dense: list[tuple[int, float]],
    lexical: list[tuple[int, float]],
    dense_scores: dict[int, float],
    lexical_scores: dict[int, float],
    *,
    dense_weight: float,
    lexical_weight: float,
) -> dict[int, float]:
    """Weighted fusion of the completed scores with per-query weights from the legs' own candidate lists."""
    wd, wl = adaptive_weights(
        [s for _, s in dense], [s for _, s in lexical], dense_weight=dense_weight, lexical_weight=lexical_weight
    )
    return fuse_weighted(dense_scores, lexical_scores, dense_weight=wd, lexical_weight=wl)


def fuse_rrf(
    dense_ranked: list[int],
    lexical_ranked: list[int],
    *,
    k: int,
    dense_weight: float = 1.0,
    lexical_weight: float = 1.0,
) -> dict[int, float]:
    scores: dict[int, float] = {}
    for weight, ranked in ((dense_weight, dense_ranked), (lexical_weight, lexical_ranked)):
        for rank, chunk_id in enumerate(ranked, start=1):
            scores[chunk_id] = scores.get(chunk_id, 0.0) + weight / (k + rank)
    return scores


# --- Public API -----------------------------------------------------------------------------------------


@reads_from_replica()  # the heaviest read of all: a replica takes it when there is one (core.db)
def search(
    *,
    knowledge_base: KnowledgeBase,
    query: str,
    top_k: int = DEFAULT_TOP_K,
    mode: str | None = "hybrid",
    document_ids: list[int] | None = None,
    metadata_filter: dict | None = None,
    version: int | None = None,
    search_settings: dict[str, Any] | None = None,
) -> list[SearchHit]:
    """The `top_k` best chunks of `knowledge_base` for `query`, best first.

    mode: "hybrid" (default), "dense" or "lexical"; None = the knowledge base's configured mode.
    document_ids: only chunks of these documents. metadata_filter: only documents whose metadata contains
    this JSON object (`{"team": "legal"}`). version: search the knowledge base as it was at that version
    (None = current). search_settings: search_settings_for(knowledge_base), when the caller has read them already
    (one query less). Scores are comparable within one result list only.
    """
    opts = search_settings if search_settings is not None else search_settings_for(knowledge_base)
    mode = mode or opts["mode"]
    if mode not in MODES:
        raise InvalidInput(f"mode must be one of {', '.join(MODES)}.", field="mode")
    query = _normalise_query(query or "")
    if not query:
        raise InvalidInput("The query is empty.", field="query")
    if len(query) > QUERY_MAX_CHARS:
        raise InvalidInput(f"The query is longer than {QUERY_MAX_CHARS} characters.", field="query")
    if not 1 <= int(top_k) <= MAX_TOP_K:
        raise InvalidInput(f"top_k must be between 1 and {MAX_TOP_K}.", field="top_k")
    if metadata_filter is not None and not isinstance(metadata_filter, dict):
        raise InvalidInput("metadata_filter must be a JSON object.", field="metadata_filter")
    if version is not None and not 0 <= int(version) <= knowledge_base.current_version:
        raise InvalidInput(f"No version {version} of this knowledge base.", field="version")
    if document_ids is not None:
        document_ids = [int(d) for d in document_ids]

    top_k = int(top_k)
    reranker = reranker_for(opts["reranker"])
    want = max(top_k, int(opts["rerank_candidates"])) if reranker else top_k
    pool = max(want, int(opts["candidates"])) if mode == "hybrid" else want
    k1, b = float(opts["bm25_k1"]), float(opts["bm25_b"])

    # Embed before opening the transaction: a cache miss costs milliseconds of CPU we should not hold a conn for.
    vector = _query_vector(knowledge_base, query) if mode != "lexical" else None
    scope = _scope(knowledge_base, version, document_ids, metadata_filter)
    dense: list[tuple[int, float]] = []
    lexical: list[tuple[int, float]] = []
    try:
        database = read_alias()  # raw SQL: the router never sees it
        with transaction.atomic(using=database), connections[database].cursor() as cursor:
            # Round trips: one statement for the query's lexemes, the version's stored statistics (knowledge.statistics)
            # and the vector options; one for both legs and both scores of every candidate; one for the rows shown.
            # A version without stored statistics (documents in flight) counts them, cached in Redis.
            first = _first_statement(
                cursor,
                knowledge_base,
                version,
                query=query if mode != "dense" else None,
                vector_options=vector is not None,
                ef_search=int(opts["ef_search"]) if opts["ef_search"] else None,
            )
            stats, df = first.stored, first.df
            if stats is None:
                stats = _collection_stats(cursor, knowledge_base, version, first.in_flight)
                if vector is not None:
                    _set_vector_search_options(cursor, int(opts["ef_search"] or ef_search_for(stats.embedded)))
                if mode != "dense" and stats.n:
                    df = _document_frequencies(cursor, knowledge_base, version, first.in_flight, first.lexemes)
            bm = _bm25_prepare(first.lexemes, stats, df) if mode != "dense" else None
            filtered = document_ids is not None or bool(metadata_filter)
            legs = _legs(
                cursor,
                knowledge_base,
                scope,
                vector=vector_literal(vector) if vector is not None else None,
                exact=vector is not None and _dense_is_exact(cursor, knowledge_base, scope, filtered, stats.embedded),
                bm=bm,
                limit=pool,
                k1=k1,
                b=b,
                # Complete both score vectors over the union, so fusion never guesses a missing score.
                complete=mode == "hybrid" and opts["fusion"] != "rrf",
            )
            dense, lexical = legs.dense, legs.lexical
            dense_scores, lexical_scores = legs.dense_scores, legs.lexical_scores
            fused = _fuse(mode, opts, dense, lexical, dense_scores, lexical_scores)
            ranked = sorted(fused, key=lambda i: (-fused[i], i))[:want]
            rows = _chunk_rows(cursor, ranked)  # same transaction: one consistent snapshot, no extra round trips
    except DatabaseError as exc:
        raise _search_failed(knowledge_base, "query", "the database query failed.") from exc
    hits = _hits(knowledge_base, ranked, rows, fused, dense, lexical, dense_scores, lexical_scores, version)
    return rerank_hits(reranker, query, hits, top_k)  # knowledge.reranking: a failed rerank keeps this order


def _query_vector(knowledge_base: KnowledgeBase, query: str) -> list[float]:
    try:
        vector = query_embedding(knowledge_base.embedding_model, query)
    except Exception as exc:  # noqa: BLE001 - whatever broke (model files, an embeddings server), search is down
        raise _search_failed(knowledge_base, "embedding", "its embedding model could not embed the query.") from exc
    if len(vector) != knowledge_base.embedding_dimension:
        raise _search_failed(
            knowledge_base,
            "embedding",
            f"its embedding model returned {len(vector)}-d vectors but it stores "
            f"{knowledge_base.embedding_dimension}-d ones (re-embed it with its model).",
        )
    return vector


def _fuse(mode, opts, dense, lexical, dense_scores, lexical_scores) -> dict[int, float]:
    if mode == "dense":
        return dict(dense)
    if mode == "lexical":
        return dict(lexical)
    if opts["fusion"] == "rrf":
        return fuse_rrf(
            [i for i, _ in dense],
            [i for i, _ in lexical],
            k=int(opts["rrf_k"]),
            dense_weight=float(opts["dense_weight"]),
            lexical_weight=float(opts["lexical_weight"]),
        )
    if opts["fusion"] == "adaptive":
        return fuse_adaptive(
            dense,
            lexical,
            dense_scores,
            lexical_scores,
            dense_weight=float(opts["dense_weight"]),
            lexical_weight=float(opts["lexical_weight"]),
        )
    return fuse_weighted(
        dense_scores,
        lexical_scores,
        dense_weight=float(opts["dense_weight"]),
        lexical_weight=float(opts["lexical_weight"]),
    )


def _chunk_rows(cursor, ids: list[int]) -> dict[int, tuple]:
    if not ids:
        return {}
    cursor.execute(
        f"SELECT c.id, c.document_id, c.position, c.text, c.page_start, c.page_end, c.section_path, d.title, "
        "d.source_url "
        f"FROM {_chunk_table()} c JOIN {Document._meta.db_table} d ON d.id = c.document_id WHERE c.id = ANY(%s)",
        [ids],
    )
    return {row[0]: row for row in cursor.fetchall()}


def _hits(kb, ranked, rows, fused, dense, lexical, dense_scores, lexical_scores, version) -> list[SearchHit]:
    dense_rank = {i: r for r, (i, _) in enumerate(dense, start=1)}
    lexical_rank = {i: r for r, (i, _) in enumerate(lexical, start=1)}
    hits = []
    for chunk_id in ranked:
        row = rows.get(chunk_id)
        if row is None:  # deleted between the index scan and now
            continue
        _, document_id, position, text, page_start, page_end, section_path, title, source_url = row
        section_path = (json.loads(section_path) if isinstance(section_path, str) else section_path) or []
        found_by = [leg for leg, ranks in (("dense", dense_rank), ("lexical", lexical_rank)) if chunk_id in ranks]
        hits.append(
            SearchHit(
                chunk_id=chunk_id,
                document_id=document_id,
                document_title=title,
                position=position,
                text=text,
                score=round(float(fused[chunk_id]), 6),
                dense_rank=dense_rank.get(chunk_id),
                dense_score=_round(dense_scores.get(chunk_id)),
                lexical_rank=lexical_rank.get(chunk_id),
                lexical_score=_round(lexical_scores.get(chunk_id)),
                found_by=found_by,
                page_start=page_start,
                page_end=page_end,
                section_path=section_path,
                citation={
                    "knowledge_base_id": kb.pk,
                    "document_id": document_id,
                    "document_title": title,
                    "position": position,
                    "source_url": source_url or None,
                    "page_start": page_start,
                    "page_end": page_end,
                    "section_path": section_path,
                    "version": version if version is not None else kb.current_version,
                },
            )
        )
    return hits


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)
