"""Ingestion throughput: chunks per second end to end vs the embedder alone on the same text (issue 4).

    python scripts/devstack.py run bench/ingestion.py [--docs N] [--worker]

Corpus: the python_faq entries (bench/data/python_faq, real prose) grouped into Markdown documents of
20 entries each ("# document", "## entry", paragraphs), in a knowledge base with the default settings
(256-token chunks, 32 overlap, all-MiniLM-L6-v2).

1. Embedder alone: the exact chunk texts the pipeline produces, embedded in the pipeline's batch size.
2. Pipeline in-process: upload service (hash, type detection, storage write, version) + the whole
   pipeline per document (read back, extract, clean, chunk, diff, embed, COPY, publish, events).
3. With --worker: the same through a real Celery worker process on the "ingest" queue, from the upload
   to the last document `ready` (queueing, tenant switching, progress events included).
Overhead = embedder-alone chunks/s / pipeline chunks/s - 1 (goal: under 25%).
Everything lives in its own database (agentry_bench_ingestion) and tenant, deleted at the end.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
import uuid

from common import ROOT, bench_django_setup

DATA = ROOT / "bench" / "data" / "python_faq" / "corpus.jsonl"


def corpus_documents(n_docs: int | None) -> list[tuple[str, str]]:
    entries = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    docs = []
    for start in range(0, len(entries), 20):
        group = entries[start : start + 20]
        body = [f"# Python FAQ part {start // 20 + 1}"]
        for entry in group:
            body.append(f"## {entry['title']}")
            body.extend(entry["chunks"])
        docs.append((f"faq-{start // 20 + 1:02d}.md", "\n\n".join(body)))
    return docs[:n_docs] if n_docs else docs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=None, help="number of documents (default: all, ~24)")
    parser.add_argument("--worker", action="store_true", help="also measure through a real Celery worker")
    args = parser.parse_args()

    bench_django_setup("agentry_bench_ingestion")
    from django.conf import settings
    from django.db import connection
    from django_tenants.utils import tenant_context

    from accounts.models import User
    from knowledge import pipeline, services
    from knowledge.chunking import chunk_blocks
    from knowledge.embeddings import embedder_for_model
    from knowledge.extraction import extract
    from knowledge.models import Chunk, Document, DocumentStatus
    from tenants.services import tenant_create, tenant_delete

    documents = corpus_documents(args.docs)
    owner, _ = User.objects.get_or_create(email="bench-ingest@bench.test")
    slug = f"bench-ingest-{uuid.uuid4().hex[:6]}"
    tenant = tenant_create(name=slug, slug=slug, owner=owner)
    try:
        with tenant_context(tenant):
            embedder = embedder_for_model("all-MiniLM-L6-v2")
            embedder.embed(["warm up the model and the tokenizer"] * 8)

            # 1. Embedder alone, on exactly the pipeline's chunk texts.
            kb = services.knowledge_base_create(owner=owner, name="bench")
            texts = []
            for _, body in documents:
                extracted = extract(io.BytesIO(body.encode()), "markdown")
                for block in extracted.blocks:
                    block.text = pipeline.clean_text(block.text)
                texts += [p.text for p in chunk_blocks(extracted.blocks, chunk_size=kb.chunk_size,
                                                        overlap=kb.chunk_overlap)]
            batch = settings.KNOWLEDGE_EMBED_BATCH
            start = time.perf_counter()
            for i in range(0, len(texts), batch):
                embedder.embed(texts[i : i + batch])
            embed_seconds = time.perf_counter() - start
            embed_rate = len(texts) / embed_seconds

            # 2. The whole pipeline, in this process.
            start = time.perf_counter()
            uploads = [services.Upload(title=name, file=io.BytesIO(body.encode()), filename=name)
                       for name, body in documents]
            result = services.documents_ingest(kb=kb, user=owner, uploads=uploads)
            for document in result.documents:
                assert pipeline.document_process(document.id), document.id
            pipeline_seconds = time.perf_counter() - start
            chunks = Chunk.objects.filter(knowledge_base=kb, valid_to__isnull=True).count()
            assert chunks == len(texts), (chunks, len(texts))
            pipeline_rate = chunks / pipeline_seconds

            # Incremental: re-upload with one entry changed per document -> only those chunks are embedded.
            start = time.perf_counter()
            changed = [services.Upload(title=name, file=io.BytesIO(body.replace(".", ";", 1).encode()),
                                       filename=name) for name, body in documents]
            result = services.documents_ingest(kb=kb, user=owner, uploads=changed)
            for document in result.documents:
                pipeline.document_process(document.id)
            incremental_seconds = time.perf_counter() - start
            reembedded = sum(Document.objects.get(id=d.id).metadata["last_ingest"]["embedded"]
                             for d in result.documents)

        print(f"ingestion benchmark: {len(documents)} Markdown documents, {len(texts)} chunks "
              f"(chunk_size {kb.chunk_size}, overlap {kb.chunk_overlap}, {embedder.name}, batch {batch})")
        print(f"  embedder alone         : {embed_rate:8.1f} chunks/s  ({embed_seconds:6.1f} s)")
        print(f"  pipeline in-process    : {pipeline_rate:8.1f} chunks/s  ({pipeline_seconds:6.1f} s)")
        print(f"  overhead               : {(embed_rate / pipeline_rate - 1) * 100:8.1f} %  (goal < 25 %)")
        print(f"  incremental re-upload  : {reembedded} of {chunks} chunks re-embedded in {incremental_seconds:.1f} s")

        if args.worker:
            worker_rate, worker_seconds = _through_worker(tenant, owner, documents, services, Document,
                                                          DocumentStatus, Chunk, tenant_context, connection)
            print(f"  pipeline via worker    : {worker_rate:8.1f} chunks/s  ({worker_seconds:6.1f} s, "
                  f"upload to last ready)")
            print(f"  overhead via worker    : {(embed_rate / worker_rate - 1) * 100:8.1f} %")
    finally:
        connection.set_schema_to_public()
        tenant_delete(tenant=tenant)


def _through_worker(tenant, owner, documents, services, Document, DocumentStatus, Chunk, tenant_context,
                    connection):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    log = open(ROOT / "var" / "bench-ingest-worker.log", "w")  # noqa: SIM115
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool=solo", "-Q", "ingest", "-l", "warning",
         "-n", f"bench-ingest-{os.getpid()}@%h", "--without-gossip", "--without-mingle"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        from config.celery import app

        deadline = time.monotonic() + 60
        while not app.control.ping(timeout=0.5):
            if time.monotonic() > deadline or worker.poll() is not None:
                raise RuntimeError("worker did not start; see var/bench-ingest-worker.log")
        with tenant_context(tenant):
            kb = services.knowledge_base_create(owner=owner, name="bench via worker")
            # Warm the worker's model with a one-chunk document first (loading is not throughput).
            warm = services.documents_ingest(kb=kb, user=owner, uploads=[services.upload_from_text(
                title="warm-up", text="# Warm\n\nLoad the model.")])
            _wait_ready(Document, DocumentStatus, [d.id for d in warm.documents])
            start = time.perf_counter()
            uploads = [services.Upload(title=name, file=io.BytesIO(body.encode()), filename=name)
                       for name, body in documents]
            result = services.documents_ingest(kb=kb, user=owner, uploads=uploads)
            _wait_ready(Document, DocumentStatus, [d.id for d in result.documents])
            seconds = time.perf_counter() - start
            chunks = Chunk.objects.filter(knowledge_base=kb, valid_to__isnull=True).exclude(
                document_id__in=[d.id for d in warm.documents]).count()
        return chunks / seconds, seconds
    finally:
        worker.terminate()
        worker.wait(30)
        log.close()


def _wait_ready(Document, DocumentStatus, ids, timeout=1800):  # noqa: N803
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        statuses = set(Document.objects.filter(id__in=ids).values_list("status", flat=True))
        if statuses <= {DocumentStatus.READY, DocumentStatus.FAILED}:
            assert statuses == {DocumentStatus.READY}, statuses
            return
        time.sleep(0.2)
    raise TimeoutError("documents not ready in time")


if __name__ == "__main__":
    main()
