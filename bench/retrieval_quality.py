"""Retrieval quality: MRR@10 and recall@5, lexical vs dense vs the default hybrid, on a public Q/A set.

    python scripts/devstack.py run bench/retrieval_quality.py [--sweep]

Data: bench/data/python_faq/ (questions of the official Python FAQ against a corpus of its answers, with the
Python HOWTOs and the libpng manual as distractors; see SOURCE.md there). Metrics are document-level: the
ranked chunks are collapsed to their documents (first occurrence) and the question's answer document is looked
for in the first 10 (MRR@10) / 5 (recall@5) documents.

Also printed: the embedding throughput of the default model (chunks/s with the CPU cores of this machine) and
the resident memory of a process holding Django and the loaded model (what a worker pays).

The bench works in its own database (agentry_bench_retrieval) and its own tenant, deleted at the end.
Exit status 1 if the default mode scores below the best single leg.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import uuid

from common import ROOT, bench_django_setup

DATA = ROOT / "bench" / "data" / "python_faq"
CACHE_DIR = ROOT / "var" / "bench"
RSS_PROBE = r"""
import os, sys, time
sys.path.insert(0, os.getcwd())
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")
import django
django.setup()
def rss():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) / 1024
before = rss()
from knowledge.embeddings import embedder_for_model
e = embedder_for_model("all-MiniLM-L6-v2")
loaded = rss()
e.embed(["a typical chunk of documentation text " * 30] * 64)
print(f"{before:.0f} {loaded:.0f} {rss():.0f}")
"""


def load_data() -> tuple[list[dict], list[dict]]:
    docs = [json.loads(line) for line in (DATA / "corpus.jsonl").read_text().splitlines()]
    questions = [json.loads(line) for line in (DATA / "questions.jsonl").read_text().splitlines()]
    return docs, questions


def corpus_embeddings(texts: list[str]) -> tuple[list[list[float]], float | None]:
    """Embeddings of the corpus (cached in var/bench by content hash) and, if computed now, chunks/s."""
    import numpy as np

    from knowledge.embeddings import embedder_for_model

    digest = hashlib.sha256("\0".join(texts).encode()).hexdigest()[:16]
    path = CACHE_DIR / f"python_faq-minilm-{digest}.npy"
    if path.exists():
        return np.load(path).tolist(), None
    embedder = embedder_for_model("all-MiniLM-L6-v2")
    embedder.embed(texts[:16])  # warm-up
    start = time.perf_counter()
    vectors = embedder.embed(texts)
    rate = len(texts) / (time.perf_counter() - start)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    np.save(path, np.asarray(vectors, dtype=np.float32))
    return vectors, rate


def throughput(texts: list[str], n: int = 384) -> float:
    from knowledge.embeddings import embedder_for_model

    embedder = embedder_for_model("all-MiniLM-L6-v2")
    embedder.embed(texts[:16])
    sample = texts[:n]
    start = time.perf_counter()
    embedder.embed(sample)
    return len(sample) / (time.perf_counter() - start)


def worker_rss() -> tuple[float, float, float]:
    out = subprocess.run(
        [sys.executable, "-c", RSS_PROBE], cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, check=True
    ).stdout.split()
    return float(out[0]), float(out[1]), float(out[2])


def doc_ranking(ranked_chunk_ids: list[int], id_to_doc: dict[int, str]) -> list[str]:
    seen: list[str] = []
    for cid in ranked_chunk_ids:
        doc = id_to_doc[cid]
        if doc not in seen:
            seen.append(doc)
    return seen


def metrics(rankings: list[tuple[list[str], str]]) -> tuple[float, float]:
    mrr = recall = 0.0
    for ranked, gold in rankings:
        top = ranked[:10]
        if gold in top:
            mrr += 1.0 / (top.index(gold) + 1)
        if gold in ranked[:5]:
            recall += 1.0
    return mrr / len(rankings), recall / len(rankings)


def main() -> int:
    sweep = "--sweep" in sys.argv
    # Our own Redis database for the query-embedding and BM25-statistics caches (test runs flush theirs).
    redis_base = os.environ["REDIS_URL"].rsplit("/", 1)[0]
    os.environ.setdefault("TEST_REDIS_URL", f"{redis_base}/3")
    bench_django_setup("agentry_bench_retrieval")
    from django.db import connection
    from django_tenants.utils import tenant_context

    from accounts.models import User
    from knowledge import retrieval
    from knowledge.models import Chunk, Document, KnowledgeBase
    from tenants.services import tenant_create, tenant_delete

    docs, questions = load_data()
    texts = [c for d in docs for c in d["chunks"]]
    print(f"data: {len(docs)} documents, {len(texts)} chunks, {len(questions)} questions (bench/data/python_faq)")
    vectors, corpus_rate = corpus_embeddings(texts)

    owner, _ = User.objects.get_or_create(email="bench-retrieval@bench.test")
    slug = f"bench-rq-{uuid.uuid4().hex[:8]}"
    tenant = tenant_create(name=slug, slug=slug, owner=owner)
    try:
        with tenant_context(tenant):
            kb = KnowledgeBase.objects.create(owner=owner, name="Python FAQ", current_version=1)
            doc_rows = Document.objects.bulk_create(
                [
                    Document(
                        knowledge_base=kb,
                        title=d["title"],
                        source_type="text",
                        status="ready",
                        metadata={"bench_id": d["id"], "kind": d["kind"]},
                    )
                    for d in docs
                ]
            )
            chunks, k = [], 0
            for d, row in zip(docs, doc_rows, strict=True):
                for pos, text in enumerate(d["chunks"]):
                    chunks.append(
                        Chunk(
                            knowledge_base=kb,
                            document=row,
                            position=pos,
                            text=text,
                            content_hash=str(k),
                            embedding=vectors[k],
                            embedding_dimension=384,
                            valid_from=1,
                        )
                    )
                    k += 1
            Chunk.objects.bulk_create(chunks, batch_size=500)
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE knowledge_chunk")
            id_to_doc = dict(Chunk.objects.values_list("pk", "document__metadata__bench_id"))

            def run(mode: str, **settings) -> tuple[float, float]:
                kb.search_settings = settings
                rankings = []
                for q in questions:
                    hits = retrieval.search(knowledge_base=kb, query=q["question"], top_k=40, mode=mode)
                    rankings.append((doc_ranking([h.chunk_id for h in hits], id_to_doc), q["doc_id"]))
                return metrics(rankings)

            def run_sql(tsquery_fn: str) -> tuple[float, float]:
                rankings = []
                with connection.cursor() as cursor:
                    for q in questions:
                        if tsquery_fn == "or":
                            cursor.execute("SELECT tsvector_to_array(to_tsvector('english', %s))", [q["question"]])
                            lex = cursor.fetchone()[0]
                            tsq = retrieval._tsquery_of(lex) if lex else ""
                            expr = "%s::tsquery"
                        else:
                            tsq, expr = q["question"], "plainto_tsquery('english', %s)"
                        cursor.execute(
                            f"SELECT id FROM knowledge_chunk WHERE knowledge_base_id = %s AND search_vector @@ {expr} "
                            f"ORDER BY ts_rank_cd(search_vector, {expr}) DESC, id LIMIT 40",
                            [kb.pk, tsq, tsq],
                        )
                        ids = [r[0] for r in cursor.fetchall()]
                        rankings.append((doc_ranking(ids, id_to_doc), q["doc_id"]))
                return metrics(rankings)

            retrieval.search(knowledge_base=kb, query="warm up", mode="hybrid")
            rows = [
                ("ts_rank_cd, AND query (plainto_tsquery)", run_sql("and")),
                ("ts_rank_cd, OR query", run_sql("or")),
                ("lexical: BM25 over full-text candidates", run("lexical")),
                ("dense: all-MiniLM-L6-v2 (HNSW)", run("dense")),
                ("naive RRF (k=60, equal weights)", run("hybrid", fusion="rrf", dense_weight=1, lexical_weight=1)),
            ]
            start = time.perf_counter()
            default = run("hybrid")
            per_query_ms = (time.perf_counter() - start) / len(questions) * 1000
            rows.append(("DEFAULT hybrid (weighted 0.8/0.2)", default))
            print()
            print(f"{'retriever':44} {'MRR@10':>8} {'R@5':>8}")
            print("-" * 62)
            for label, (mrr, rec) in rows:
                print(f"{label:44} {mrr:8.3f} {rec:8.3f}")
            if sweep:
                print("\nweighted fusion, dense weight sweep (lexical = 1 - dense):")
                for w in (0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95):
                    mrr, rec = run("hybrid", dense_weight=w, lexical_weight=round(1 - w, 3))
                    print(f"  dense {w:4.2f}: MRR@10 {mrr:.3f}  R@5 {rec:.3f}")
            best_mrr, best_recall = max(rows[2][1][0], rows[3][1][0]), max(rows[2][1][1], rows[3][1][1])
            ok = default[0] >= best_mrr and default[1] >= best_recall
            print(
                f"\ndefault hybrid MRR@10 {default[0]:.3f} / R@5 {default[1]:.3f} vs best single leg "
                f"{best_mrr:.3f} / {best_recall:.3f}: {'OK (>=)' if ok else 'WORSE'}; "
                f"{per_query_ms:.1f} ms per hybrid search (embeddings cached)"
            )
    finally:
        tenant_delete(tenant=tenant)

    rate = throughput(texts)
    before, loaded, after = worker_rss()
    import torch

    print(
        f"\nembedding throughput (all-MiniLM-L6-v2, CPU, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} cores): {rate:.1f} chunks/s on {min(384, len(texts))} corpus chunks"
        + (f"; {corpus_rate:.1f} chunks/s on the whole corpus" if corpus_rate else "")
    )
    print(
        f"worker RSS: {before:.0f} MiB with Django, {loaded:.0f} MiB with the model loaded, "
        f"{after:.0f} MiB after embedding a batch of 64"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
