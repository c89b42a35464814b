"""Search latency and HNSW recall with 100k chunks in one tenant.

    python scripts/devstack.py run bench/retrieval.py [N_CHUNKS] [N_QUERIES]

1. Builds a tenant with one knowledge base of N_CHUNKS (default 100,000) chunks, written with COPY:
   - vectors: mixtures of real all-MiniLM-L6-v2 embeddings of the python_faq corpus plus noise (so neighbours
     look like real sentence embeddings, not uniform noise, which no ANN index is built for);
   - text: words drawn Zipf-like from that corpus's vocabulary (realistic document frequencies for BM25).
   The HNSW and GIN indexes are built after the load (the same definitions as the migrations), then the version's
   term statistics are stored as a publish that settles a version stores them (knowledge.statistics), checked
   against a count of the questions' words.
2. Queries: real questions (the python_faq questions), embedded by the real model.
3. Measures, over the same queries, interleaved query by query (so load on the machine hits all alike):
   - raw: the exact pgvector SQL the API runs (same HNSW index, same iterative-scan settings), top 10;
   - API: POST /api/v1/knowledge-bases/{id}/search/ through the whole Django stack (Django test client:
     middleware, session auth, tenant resolution, access check, serialisation), dense and hybrid modes, with
     the query-embedding cache cold (first time a query is seen) and warm (repeat within the TTL);
   - bare request (GET /api/v1/me/ on the tenant host) and embedding alone, to decompose the API time;
   - recall@10 of the HNSW search vs exact search (sequential scan), unfiltered and filtered to one document.
Everything lives in its own database (BENCH_DB_NAME, default agentry_bench_retrieval) and tenant, deleted at the end.
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import statistics
import sys
import time
import uuid
from collections import Counter

from common import ROOT, bench_django_setup, summary

DATA = ROOT / "bench" / "data" / "python_faq"
DIM = 384
WORDS_PER_CHUNK = 80
DOCS = 100


def synthetic_corpus(n: int, seed: int = 42):
    """(vectors float32 [n, 384] L2-normalised, texts) built from the python_faq corpus."""
    import numpy as np
    from retrieval_quality import corpus_embeddings, load_data

    docs, _ = load_data("python_faq")
    texts = [c for d in docs for c in d["chunks"]]
    base = np.asarray(corpus_embeddings("python_faq", texts)[0], dtype=np.float32)
    rng = np.random.default_rng(seed)
    a = rng.integers(0, len(base), n)
    b = rng.integers(0, len(base), n)
    mix = rng.uniform(0.55, 1.0, (n, 1)).astype(np.float32)
    vectors = mix * base[a] + (1 - mix) * base[b] + rng.normal(0, 0.03, (n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)

    counts = Counter(w for t in texts for w in re.findall(r"[a-z]{2,}", t.lower()))
    vocab = [w for w, _ in counts.most_common(20000)]
    weights = np.array([counts[w] for w in vocab], dtype=np.float64)
    weights /= weights.sum()
    words = rng.choice(len(vocab), size=(n, WORDS_PER_CHUNK), p=weights)
    out_texts = [" ".join(vocab[i] for i in row) for row in words]
    return vectors, out_texts


def load(kb, vectors, texts) -> None:
    """COPY the chunks in, then (re)build the indexes the migrations define, in bulk."""
    from django.db import connection

    from knowledge.models import Document

    docs = Document.objects.bulk_create(
        [
            Document(
                knowledge_base=kb,
                title=f"Synthetic document {i}",
                source_type="text",
                status="ready",
                metadata={"group": f"g{i % 10}"},
            )
            for i in range(DOCS)
        ]
    )
    per_doc = len(texts) // DOCS + 1
    fmt = "[" + ",".join(["%.6f"] * DIM) + "]"
    with connection.cursor() as cursor:
        cursor.execute("DROP INDEX IF EXISTS chunk_embedding_hnsw_384")
        cursor.execute("DROP INDEX IF EXISTS chunk_search_vector_gin")
        buf = io.StringIO()
        for i, (vec, text) in enumerate(zip(vectors, texts, strict=True)):
            doc = docs[i // per_doc]
            buf.write(
                f"{kb.pk}\t{doc.pk}\t{i % per_doc}\t{text}\t{WORDS_PER_CHUNK}\th{i}\t{{}}\t"
                f"{fmt % tuple(vec.tolist())}\t{DIM}\t1\t\\N\n"
            )
        raw = cursor.cursor  # psycopg 3 cursor under Django's wrapper
        start = time.perf_counter()
        with raw.copy(
            "COPY knowledge_chunk (knowledge_base_id, document_id, position, text, token_count, content_hash, "
            "metadata, embedding, embedding_dimension, valid_from, valid_to) FROM STDIN"
        ) as copy:
            copy.write(buf.getvalue())
        print(f"  COPY {len(texts)} chunks: {time.perf_counter() - start:.1f} s")
        cursor.execute("SET maintenance_work_mem = '1GB'")
        cursor.execute("SET max_parallel_maintenance_workers = 1")
        start = time.perf_counter()
        cursor.execute(
            "CREATE INDEX chunk_embedding_hnsw_384 ON knowledge_chunk "
            "USING hnsw ((embedding::vector(384)) vector_cosine_ops) WHERE embedding_dimension = 384"
        )
        print(f"  HNSW index build: {time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
        cursor.execute("CREATE INDEX chunk_search_vector_gin ON knowledge_chunk USING gin (search_vector)")
        print(f"  GIN index build: {time.perf_counter() - start:.1f} s")
        cursor.execute("ANALYZE knowledge_chunk")


def ms(stats: dict[str, float]) -> str:
    return f"p50 {stats['p50'] * 1e3:7.2f} ms   p95 {stats['p95'] * 1e3:7.2f} ms"


def main() -> int:
    n_chunks = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    n_queries = int(sys.argv[2]) if len(sys.argv) > 2 else 150
    # Our own Redis database for the query-embedding and BM25-statistics caches (test runs flush theirs).
    redis_base = os.environ["REDIS_URL"].rsplit("/", 1)[0]
    os.environ.setdefault("TEST_REDIS_URL", f"{redis_base}/3")
    # One user sends ~900 searches in a few minutes: the product's search rate limit (120/min per user) would
    # refuse most of them. The limiter still runs on every request, at the same cost.
    os.environ.setdefault("RATE_LIMITS", '{"search": "100000/m"}')
    os.environ.setdefault("RATE_LIMITS_TENANT", '{"search": "1000000/m"}')
    bench_django_setup(os.environ.get("BENCH_DB_NAME", "agentry_bench_retrieval"))
    from django.db import connection, transaction
    from django.test import Client
    from django_tenants.utils import tenant_context

    from accounts.models import User
    from knowledge import retrieval
    from knowledge.embeddings import embedder_for_model
    from knowledge.models import KnowledgeBase, KnowledgeBaseVersion
    from knowledge.statistics import version_statistics_build
    from tenants.services import tenant_create, tenant_delete

    questions = [json.loads(line)["question"] for line in (DATA / "questions.jsonl").read_text().splitlines()]
    rng = random.Random(1)
    queries = (questions * (n_queries // len(questions) + 1))[:n_queries]
    queries = [q if i < len(questions) else f"{q} ({i})" for i, q in enumerate(queries)]  # all distinct
    rng.shuffle(queries)

    start = time.perf_counter()
    vectors, texts = synthetic_corpus(n_chunks)
    print(f"generated {n_chunks} synthetic chunks in {time.perf_counter() - start:.1f} s")

    owner, _ = User.objects.get_or_create(email="bench-retrieval@bench.test")
    slug = f"bench-r-{uuid.uuid4().hex[:8]}"
    tenant = tenant_create(name=slug, slug=slug, owner=owner)
    try:
        with tenant_context(tenant):
            kb = KnowledgeBase.objects.create(owner=owner, name="Bench 100k", current_version=1)
            load(kb, vectors, texts)
            # The chunks were written with COPY, not published: store the version's term statistics as a publish
            # that settles a version does (knowledge.statistics), timed.
            KnowledgeBaseVersion.objects.create(knowledge_base=kb, number=1, changes={"kind": "ingest"})
            start = time.perf_counter()
            stored = version_statistics_build(knowledge_base_id=kb.pk)
            assert stored is not None
            elapsed = time.perf_counter() - start
            print(f"  term statistics of the version: {elapsed:.1f} s ({stored.terms.count()} lexemes)")
            with connection.cursor() as cursor:  # the stored figures against a count of our own, for every question
                words = sorted({lex for q in questions for lex in retrieval.query_lexemes(cursor, q)})
                cursor.execute(
                    "SELECT u.lexeme, count(*) FROM knowledge_chunk c, unnest(c.search_vector) u "
                    "WHERE c.knowledge_base_id = %s AND u.lexeme = ANY(%s) GROUP BY 1",
                    [kb.pk, words],
                )
                counted = dict(cursor.fetchall())
                cursor.execute(
                    "SELECT count(*), avg(length(search_vector))::float8 FROM knowledge_chunk "
                    "WHERE knowledge_base_id = %s",
                    [kb.pk],
                )
                n_counted, avgdl_counted = cursor.fetchone()
            assert dict(stored.terms.filter(lexeme__in=words).values_list("lexeme", "documents")) == counted
            assert (stored.chunks, stored.avgdl, stored.embedded) == (n_counted, avgdl_counted, n_chunks)
            print(f"  stored statistics = counted ones for the questions' {len(words)} lexemes, N and avgdl")
            embedder = embedder_for_model(kb.embedding_model)
            embedder.embed(["warm up"])
            qvecs = {q: embedder.embed([q])[0] for q in queries}
            some_doc = kb.documents.order_by("id").values_list("id", flat=True)[DOCS // 2]

            # What search() chooses for this knowledge base (unless its settings name one).
            ef_chosen = retrieval.ef_search_for(n_chunks)

            def raw_sql(
                q: str, *, exact: bool = False, document_ids=None, k: int = 10, ef: int | None = None
            ) -> tuple[float, list[int]]:
                scope = retrieval._scope(kb, None, document_ids, None)
                literal = retrieval.vector_literal(qvecs[q])
                sql = retrieval.dense_sql(DIM, scope.sql)
                with transaction.atomic(), connection.cursor() as cursor:
                    if exact:
                        cursor.execute("SET LOCAL enable_indexscan = off")
                        cursor.execute("SET LOCAL enable_bitmapscan = off")
                    else:
                        retrieval._set_vector_search_options(cursor, ef or ef_chosen)
                    t0 = time.perf_counter()
                    cursor.execute(sql, [literal, *scope.params, literal, k])
                    ids = [r[0] for r in cursor.fetchall()]
                    return time.perf_counter() - t0, ids

            # Recall of the HNSW search vs exact search, by ef_search (the table behind retrieval.ef_search_for).
            exact_ids = {q: raw_sql(q, exact=True)[1] for q in queries[:100]}
            fexact_ids = {q: raw_sql(q, exact=True, document_ids=[some_doc])[1] for q in queries[:100]}
            by_ef: dict[int, tuple[float, float, float]] = {}
            for ef in sorted({20, 40, 64, 100, 200, ef_chosen}):
                rec, frec, times = [], [], []
                for q in queries[:100]:
                    elapsed, approx = raw_sql(q, ef=ef)
                    times.append(elapsed)
                    rec.append(len(set(approx) & set(exact_ids[q])) / len(exact_ids[q]))
                    _, fapprox = raw_sql(q, document_ids=[some_doc], ef=ef)
                    frec.append(len(set(fapprox) & set(fexact_ids[q])) / max(1, len(fexact_ids[q])))
                by_ef[ef] = (statistics.mean(rec), statistics.mean(frec), statistics.median(times))
            recalls, frecalls = [by_ef[ef_chosen][0]], [by_ef[ef_chosen][1]]

            # API timings.
            client = Client(HTTP_HOST=f"{tenant.slug}.localhost")
            client.force_login(owner)
            url = f"/api/v1/knowledge-bases/{kb.pk}/search/"

            def api(q: str, mode: str) -> float:
                t0 = time.perf_counter()
                response = client.post(url, {"query": q, "top_k": 10, "mode": mode}, content_type="application/json")
                elapsed = time.perf_counter() - t0
                assert response.status_code == 200, response.content[:300]
                return elapsed

            from django.core.cache import cache

            def forget(q: str) -> None:  # drop the cached query embedding (tenant-prefixed key)
                digest = retrieval.hashlib.sha256(f"{kb.embedding_model}\0{q}".encode()).hexdigest()
                cache.delete("knowledge:qemb:" + digest)

            for q in queries[:10]:  # warm up every path
                client.get("/api/v1/me/")
                for mode in ("dense", "hybrid", "lexical"):
                    api(q, mode)
            # Interleaved per query, so the machine's load hits every measurement alike.
            bare: list[float] = []
            embed_times = []
            raw_times = []
            results: dict[str, list[float]] = {
                k: []
                for k in (
                    "dense, cold query cache",
                    "dense, warm query cache",
                    "hybrid, cold query cache",
                    "hybrid, warm query cache",
                    "lexical (BM25 only)",
                )
            }
            for q in queries:
                t0 = time.perf_counter()
                assert client.get("/api/v1/me/").status_code == 200
                bare.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                embedder.embed([q])
                embed_times.append(time.perf_counter() - t0)
                raw_times.append(raw_sql(q)[0])
                forget(q)
                results["dense, cold query cache"].append(api(q, "dense"))
                results["dense, warm query cache"].append(api(q, "dense"))
                forget(q)
                results["hybrid, cold query cache"].append(api(q, "hybrid"))
                results["hybrid, warm query cache"].append(api(q, "hybrid"))
                results["lexical (BM25 only)"].append(api(q, "lexical"))
    finally:
        tenant_delete(tenant=tenant)

    raw_s, bare_s, embed_s = summary(raw_times), summary(bare), summary(embed_times)
    print(
        f"\n{n_chunks} chunks, {len(queries)} distinct queries, top 10, ef_search "
        f"{ef_chosen} (what search() chooses for this size), iterative scans (relaxed_order)"
    )
    print(f"  raw pgvector SQL (same HNSW index)     {ms(raw_s)}")
    print(f"  bare API request (GET /api/v1/me/)     {ms(bare_s)}")
    print(f"  query embedding alone (MiniLM)         {ms(embed_s)}")
    for label, values in results.items():
        print(f"  API {label:34} {ms(summary(values))}")
    print("\nratios:")
    warm = summary(results["dense, warm query cache"])
    print(
        f"  API dense (warm) / raw SQL:            p50 {warm['p50'] / raw_s['p50']:.2f}x  "
        f"p95 {warm['p95'] / raw_s['p95']:.2f}x   (goal <= 1.5)"
    )
    cold = summary(results["dense, cold query cache"])
    print(
        f"  API dense (cold) / raw SQL:            p50 {cold['p50'] / raw_s['p50']:.2f}x  "
        f"p95 {cold['p95'] / raw_s['p95']:.2f}x"
    )
    parts = bare_s["p50"] + embed_s["p50"] + raw_s["p50"]
    print(f"  API dense (cold) p50 / (bare + embed + raw) p50: {cold['p50'] / parts:.2f}   (goal <= 1.3)")
    per_query = [
        api_t / (b + e + r)
        for api_t, b, e, r in zip(results["dense, cold query cache"], bare, embed_times, raw_times, strict=True)
    ]
    print(f"  same, median of per-query ratios (robust to load drift): {statistics.median(per_query):.2f}")
    warm_parts = [
        api_t / (b + r) for api_t, b, r in zip(results["dense, warm query cache"], bare, raw_times, strict=True)
    ]
    print(f"  API dense (warm) / (bare + raw), median per query: {statistics.median(warm_parts):.2f}")
    hyb_cold = summary(results["hybrid, cold query cache"])
    print(f"  API hybrid (cold) p50 / (bare + embed + raw) p50: {hyb_cold['p50'] / parts:.2f}   (goal <= 1.3)")
    hyb_warm = summary(results["hybrid, warm query cache"])
    hyb_per_query = [
        api_t / (b + e + r)
        for api_t, b, e, r in zip(results["hybrid, cold query cache"], bare, embed_times, raw_times, strict=True)
    ]
    print(f"  same, median of per-query ratios: {statistics.median(hyb_per_query):.2f}")
    print(
        f"  API hybrid p95 / p50: cold {hyb_cold['p95'] / hyb_cold['p50']:.2f}, "
        f"warm {hyb_warm['p95'] / hyb_warm['p50']:.2f}   (goal <= 2)"
    )
    print(
        f"  API hybrid (warm) / raw SQL:           p50 {hyb_warm['p50'] / raw_s['p50']:.2f}x  "
        f"p95 {hyb_warm['p95'] / raw_s['p95']:.2f}x"
    )
    print(
        f"\nrecall@10 HNSW vs exact at ef_search {ef_chosen}: {statistics.mean(recalls):.3f} (100 queries, goal >= "
        f"0.98); filtered to one document of {DOCS}: {statistics.mean(frecalls):.3f}"
    )
    print("recall@10 by ef_search (unfiltered, filtered to one document, raw SQL p50):")
    for ef, (rec, frec, p50) in sorted(by_ef.items()):
        print(f"  ef_search {ef:4d}: {rec:.3f}  {frec:.3f}  {p50 * 1e3:6.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
