"""Reranking cost and gain: search() without a reranker vs with one, on the Python FAQ set, in the same run.

    python scripts/devstack.py run bench/reranking.py [--cross-encoder /path/to/model] [--candidates 20]

Always: a loopback fake of the Cohere/Jina `/rerank` endpoint (knowledge.tests.fakes, word-overlap scores)
measures what the HTTP path adds to a search (serialising the candidates, the round trip, applying the order):
p50/p95 latency of search() with and without it, question by question, alternating A-B / B-A. The fake's order
means nothing, so no quality is reported for it.
With --cross-encoder: a local sentence-transformers CrossEncoder directory (none ships in any package; give one
you have). Then MRR@10 and recall@1 of the answer document, with and without it, and its latency.
Everything lives in its own database (agentry_bench_reranking) and tenant, deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid

from common import ROOT, bench_django_setup, percentile

DATA = ROOT / "bench" / "data" / "python_faq"
TOP_K = 10


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cross-encoder", help="a local CrossEncoder directory to measure gain and latency")
    parser.add_argument("--candidates", type=int, default=20, help="rerank_candidates (default 20)")
    parser.add_argument("--questions", type=int, default=0, help="first N questions only (0 = all)")
    parser.add_argument("--documents", type=int, default=0, help="first N documents and their questions (0 = all)")
    args = parser.parse_args()

    bench_django_setup("agentry_bench_reranking")
    from django.conf import settings
    from django.db import connection
    from django_tenants.utils import tenant_context

    from accounts.models import User
    from knowledge import reranking, retrieval
    from knowledge.embeddings import embedder_for_model
    from knowledge.models import Chunk, Document, KnowledgeBase
    from knowledge.tests.fakes import FakeRerankServer
    from tenants.models import Tenant
    from tenants.services import tenant_create, tenant_delete

    for stale in Tenant.objects.filter(slug__startswith="bench-rerank-"):
        tenant_delete(tenant=stale)
    docs = [json.loads(line) for line in (DATA / "corpus.jsonl").read_text().splitlines() if line.strip()]
    questions = [json.loads(line) for line in (DATA / "questions.jsonl").read_text().splitlines() if line.strip()]
    if args.documents:  # a smaller set for a loaded machine: embedding the corpus is most of the run
        docs = docs[: args.documents]
        kept = {d["id"] for d in docs}
        questions = [q for q in questions if q["doc_id"] in kept]
    questions = questions[: args.questions] if args.questions else questions

    fake = FakeRerankServer().start()
    settings.KNOWLEDGE_RERANKERS = {"fake": {"backend": "http", "url": fake.url, "model": "fake"}}
    if args.cross_encoder:
        settings.KNOWLEDGE_RERANKERS["local"] = {"backend": "cross-encoder", "path": args.cross_encoder}
    owner, _ = User.objects.get_or_create(email="bench-rerank@bench.test")
    slug = f"bench-rerank-{uuid.uuid4().hex[:6]}"
    tenant = tenant_create(name=slug, slug=slug, owner=owner)
    try:
        with tenant_context(tenant):
            kb = KnowledgeBase.objects.create(owner=owner, name="python faq", current_version=1)
            texts = [c for d in docs for c in d["chunks"]]
            vectors = embedder_for_model(kb.embedding_model).embed(texts)
            rows = Document.objects.bulk_create(
                Document(knowledge_base=kb, title=d["id"], source_type="text", status="ready") for d in docs
            )
            chunks, k = [], 0
            for d, row in zip(docs, rows, strict=True):
                for position, text in enumerate(d["chunks"]):
                    chunks.append(
                        Chunk(
                            knowledge_base=kb,
                            document=row,
                            position=position,
                            text=text,
                            content_hash=str(k),
                            embedding=vectors[k],
                            embedding_dimension=kb.embedding_dimension,
                            valid_from=1,
                        )
                    )
                    k += 1
            Chunk.objects.bulk_create(chunks, batch_size=500)
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE knowledge_chunk")

            def run(reranker: str, question: dict) -> tuple[list[float], list[int | None]]:
                kb.search_settings = {"reranker": reranker, "rerank_candidates": args.candidates}
                start = time.perf_counter()
                hits = retrieval.search(knowledge_base=kb, query=question["question"], top_k=TOP_K)
                seconds = time.perf_counter() - start
                if reranker != "none":
                    assert reranking.rerank_applied(hits), f"reranker {reranker} did not run"
                titles = [h.document_title for h in hits]
                rank = titles.index(question["doc_id"]) + 1 if question["doc_id"] in titles else None
                return [seconds], [rank]

            names = ["none", "fake"] + (["local"] if args.cross_encoder else [])
            latency: dict[str, list[float]] = {n: [] for n in names}
            ranks: dict[str, list[int | None]] = {n: [] for n in names}
            for question in questions[:3]:  # warm caches (query vectors, BM25 statistics, a local model's load)
                for name in names:
                    run(name, question)
            for index, question in enumerate(questions):
                for name in names if index % 2 == 0 else reversed(names):  # alternate: same machine drift
                    seconds, rank = run(name, question)
                    latency[name] += seconds
                    ranks[name] += rank
    finally:
        fake.stop()
        connection.set_schema_to_public()
        tenant_delete(tenant=tenant)

    def mrr(values: list[int | None]) -> float:
        return statistics.mean(1 / r if r else 0.0 for r in values)

    base = statistics.median(latency["none"])
    print(
        f"reranking benchmark: python_faq, {len(docs)} documents, {len(texts)} chunks, {len(questions)} questions, "
        f"top_k {TOP_K}, rerank_candidates {args.candidates}"
    )
    print(f"  {'reranker':10} {'p50 ms':>8} {'p95 ms':>8} {'p50 / none':>11} {'MRR@10':>7} {'R@1':>6}")
    for name in names:
        p50 = statistics.median(latency[name])
        quality = name != "fake"  # the fake's word-overlap order is no measure of quality
        print(
            f"  {name:10} {p50 * 1000:8.1f} {percentile(latency[name], 95) * 1000:8.1f} {p50 / base:11.2f}"
            + (f" {mrr(ranks[name]):7.3f} {sum(r == 1 for r in ranks[name]) / len(questions):6.3f}" if quality else "")
        )
    if not args.cross_encoder:
        print("  no --cross-encoder given: no local model ships, so no quality gain is measured")
    return 0


if __name__ == "__main__":
    sys.exit(main())
