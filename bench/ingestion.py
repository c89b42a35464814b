"""Ingestion throughput: chunks per second end to end vs the embedder alone on the same text.

    python scripts/devstack.py run bench/ingestion.py [--docs N] [--worker] [--pdf-pages 1000] [--corpora]

Corpus: the python_faq entries (bench/data/python_faq, real prose) grouped into Markdown documents of
20 entries each ("# document", "## entry", paragraphs), in a knowledge base with the default settings
(256-token chunks, 32 overlap, all-MiniLM-L6-v2).

Measured document by document, alternating the order (A-B, B-A) so both see the same machine load:
1. Embedder alone: the exact chunk texts the pipeline produces, embedded in the pipeline's batch size.
2. Pipeline in-process: upload service (hash, type detection, storage write, version) + the whole
   pipeline per document (read back, extract, clean, chunk, diff, embed, COPY, publish, events).
3. With --worker: all documents uploaded at once through a real Celery worker process on the "ingest"
   queue, from the upload to the last document `ready` (queueing, tenant switching, progress events
   included), against the embedder alone on the same texts run just before and just after (mean).
Overhead = embedder-alone chunks/s / pipeline chunks/s - 1 (goal: under 25%).
4. With --pdf-pages N and/or --corpora: the same through the product's own ingest worker (config.processes:
   prefork, two processes, as production runs it), per workload: a generated N-page PDF with a text layer
   (pypdfium2, prose from the Python FAQ, a running header and footer on every page), and every corpus in
   bench/data (corpus.jsonl, 20 entries per Markdown document). Ratio = end-to-end chunks/s (upload to the
   last document ready) / embedder-alone chunks/s on the exact chunk texts (goal >= 0.75), embedder bracketing
   the worker run (A-B-A); and the peak resident memory of the worker (main process + children).
Everything lives in its own database (agentry_bench_ingestion) and tenant, deleted at the end.
"""

from __future__ import annotations

import argparse
import ctypes
import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid

import psutil
import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_raw
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


def corpora_documents() -> list[tuple[str, str]]:
    """Every corpus in bench/data (corpus.jsonl: {"title", "chunks"}), 20 entries per Markdown document."""
    docs = []
    for path in sorted((ROOT / "bench" / "data").glob("*/corpus.jsonl")):
        entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        for start in range(0, len(entries), 20):
            body = [f"# {path.parent.name} part {start // 20 + 1}"]
            for entry in entries[start : start + 20]:
                body.append(f"## {entry.get('title') or entry.get('id')}")
                body.extend(entry["chunks"])
            docs.append((f"{path.parent.name}-{start // 20 + 1:03d}.md", "\n\n".join(body)))
    return docs


def pdf_document(pages: int, *, lines_per_page: int = 46, seed: int = 0) -> bytes:
    """An N-page PDF with a real text layer (Helvetica text objects written by PDFium): sentences of the Python
    FAQ shuffled per page (no two pages alike: the pipeline would reuse a known chunk's vector instead of
    embedding it), wrapped at ~95 characters, under a running header and above a page-number footer."""
    entries = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    sentences = [s for e in entries for c in e["chunks"] for s in re.split(r"(?<=[.?!])\s+", c) if len(s) > 20]
    rng = random.Random(seed)
    pdf = pdfium.PdfDocument.new()
    font = pdfium_raw.FPDFText_LoadStandardFont(pdf.raw, b"Helvetica")

    def put(page, text: str, y: float) -> None:
        data = (text + "\0").encode("utf-16-le")
        obj = pdfium_raw.FPDFPageObj_CreateTextObj(pdf.raw, font, 9.5)
        pdfium_raw.FPDFText_SetText(obj, (ctypes.c_ushort * (len(data) // 2)).from_buffer_copy(data))
        pdfium_raw.FPDFPageObj_Transform(obj, 1, 0, 0, 1, 50, y)
        pdfium_raw.FPDFPage_InsertObject(page.raw, obj)

    for number in range(1, pages + 1):
        page = pdf.new_page(612, 792)
        put(page, "Agentry benchmark report - internal", 760)
        lines, line = [], ""
        while len(lines) < lines_per_page:
            for word in rng.choice(sentences).split():
                if len(line) + len(word) + 1 > 95:
                    lines.append(line)
                    line = ""
                line = f"{line} {word}" if line else word
        for index, text in enumerate(lines[:lines_per_page]):
            put(page, text, 735 - index * 14.5)
        put(page, f"Page {number} of {pages}", 30)
        pdfium_raw.FPDFPage_GenerateContent(page.raw)
        page.close()
    out = io.BytesIO()
    pdf.save(out)
    pdf.close()
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=8, help="number of documents (default 8, ~520 chunks; 0 = all)")
    parser.add_argument("--worker", action="store_true", help="also measure through a real Celery worker")
    parser.add_argument("--pdf-pages", type=int, default=0, help="a generated PDF of N pages via the ingest worker")
    parser.add_argument("--corpora", action="store_true", help="every bench/data corpus via the ingest worker")
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
    from tenants.models import Tenant
    from tenants.services import tenant_create, tenant_delete

    for stale in Tenant.objects.filter(slug__startswith="bench-ingest-"):  # left by an interrupted run
        tenant_delete(tenant=stale)

    # SIGTERM (e.g. a timeout) still runs the cleanup below: the bench tenant and worker never outlive us.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    documents = corpus_documents(args.docs or None)
    owner, _ = User.objects.get_or_create(email="bench-ingest@bench.test")
    slug = f"bench-ingest-{uuid.uuid4().hex[:6]}"
    tenant = tenant_create(name=slug, slug=slug, owner=owner)
    try:
        with tenant_context(tenant):
            embedder = embedder_for_model("all-MiniLM-L6-v2")
            embedder.embed(["warm up the model and the tokenizer"] * 8)

            kb = services.knowledge_base_create(owner=owner, name="bench")
            batch = settings.KNOWLEDGE_EMBED_BATCH

            def chunk_texts(body: str) -> list[str]:
                extracted = extract(io.BytesIO(body.encode()), "markdown")
                for block in extracted.blocks:
                    block.text = pipeline.clean_text(block.text)
                return [
                    p.text for p in chunk_blocks(extracted.blocks, chunk_size=kb.chunk_size, overlap=kb.chunk_overlap)
                ]

            cpu = {"alone": 0.0, "pipeline": 0.0}  # this process's CPU seconds (all threads)

            def embed_alone(body: str) -> tuple[int, float]:
                texts = chunk_texts(body)  # not timed: only the model's work is the baseline
                start, start_cpu = time.perf_counter(), time.process_time()
                for i in range(0, len(texts), batch):
                    embedder.embed(texts[i : i + batch])
                cpu["alone"] += time.process_time() - start_cpu
                return len(texts), time.perf_counter() - start

            def whole_pipeline(name: str, body: str) -> float:
                start, start_cpu = time.perf_counter(), time.process_time()
                result = services.documents_ingest(
                    kb=kb,
                    user=owner,
                    uploads=[services.Upload(title=name, file=io.BytesIO(body.encode()), filename=name)],
                )
                for document in result.documents:
                    assert pipeline.document_process(document.id), document.id
                cpu["pipeline"] += time.process_time() - start_cpu
                return time.perf_counter() - start

            # Paired and alternated (A-B, B-A, ...) document by document: on a shared machine the load
            # drifts, and both measurements must see the same drift for the ratio to mean anything.
            embed_seconds = pipeline_seconds = 0.0
            n_texts = 0
            for index, (name, body) in enumerate(documents):
                if index % 2 == 0:
                    n, alone = embed_alone(body)
                    full = whole_pipeline(name, body)
                else:
                    full = whole_pipeline(name, body)
                    n, alone = embed_alone(body)
                n_texts += n
                embed_seconds += alone
                pipeline_seconds += full
            chunks = Chunk.objects.filter(knowledge_base=kb, valid_to__isnull=True).count()
            assert chunks == n_texts, (chunks, n_texts)
            embed_rate = n_texts / embed_seconds
            pipeline_rate = chunks / pipeline_seconds

            # Incremental: re-upload with one entry changed per document -> only those chunks are embedded.
            start = time.perf_counter()
            changed = [
                services.Upload(title=name, file=io.BytesIO(body.replace(".", ";", 1).encode()), filename=name)
                for name, body in documents
            ]
            result = services.documents_ingest(kb=kb, user=owner, uploads=changed)
            for document in result.documents:
                pipeline.document_process(document.id)
            incremental_seconds = time.perf_counter() - start
            reembedded = sum(
                Document.objects.get(id=d.id).metadata["last_ingest"]["embedded"] for d in result.documents
            )

        print(
            f"ingestion benchmark: {len(documents)} Markdown documents, {chunks} chunks "
            f"(chunk_size {kb.chunk_size}, overlap {kb.chunk_overlap}, {embedder.name}, batch {batch})"
        )
        print(f"  embedder alone         : {embed_rate:8.1f} chunks/s  ({embed_seconds:6.1f} s)")
        print(f"  pipeline in-process    : {pipeline_rate:8.1f} chunks/s  ({pipeline_seconds:6.1f} s)")
        print(f"  overhead (wall clock)  : {(embed_rate / pipeline_rate - 1) * 100:8.1f} %  (goal < 25 %)")
        print(
            f"  overhead (CPU time)    : {(cpu['pipeline'] / cpu['alone'] - 1) * 100:8.1f} %  "
            f"({cpu['alone']:.1f} s vs {cpu['pipeline']:.1f} s of this process's CPU; PostgreSQL's share is "
            "only in the wall clock)"
        )
        print(f"  machine load average   : {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        print(f"  incremental re-upload  : {reembedded} of {chunks} chunks re-embedded in {incremental_seconds:.1f} s")

        if args.worker:
            n, alone, via_worker = _through_worker(
                tenant, owner, documents, services, Document, DocumentStatus, tenant_context, embed_alone
            )
            print(
                f"  with a real worker     : {n / via_worker:8.1f} chunks/s  ({via_worker:6.1f} s, upload to ready)"
                f" vs embedder alone {n / alone:.1f} chunks/s -> overhead {(via_worker / alone - 1) * 100:.1f} %"
            )
        workloads = []
        if args.pdf_pages:
            workloads.append((f"{args.pdf_pages}-page PDF", [("report.pdf", pdf_document(args.pdf_pages))]))
        if args.corpora:
            workloads.append(("bench/data corpora", [(name, body.encode()) for name, body in corpora_documents()]))
        if workloads:
            with tenant_context(tenant):
                _production_worker_suite(owner, workloads, embedder, batch)
    finally:
        connection.set_schema_to_public()
        tenant_delete(tenant=tenant)


def _through_worker(tenant, owner, documents, services, Document, DocumentStatus, tenant_context, embed_alone):
    """Upload all documents at once and wait until the worker made them ready (A-B-A with embed_alone)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    log = open(ROOT / "var" / "bench-ingest-worker.log", "w")  # noqa: SIM115
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "--pool=solo",
            "-Q",
            "ingest",
            "-l",
            "warning",
            "-n",
            f"bench-ingest-{os.getpid()}@%h",
            "--without-gossip",
            "--without-mingle",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
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
            warm = services.documents_ingest(
                kb=kb,
                user=owner,
                uploads=[services.upload_from_text(title="warm-up", text="# Warm\n\nLoad the model.")],
            )
            _wait_ready(Document, DocumentStatus, [d.id for d in warm.documents])

            # Throughput: every document uploaded at once (the worker drains the queue), bracketed by the
            # embedder alone on the same texts before and after (A-B-A) to cancel load drift.
            def alone_all() -> tuple[int, float]:
                runs = [embed_alone(body) for _, body in documents]
                return sum(n for n, _ in runs), sum(t for _, t in runs)

            total, before = alone_all()
            start = time.perf_counter()
            result = services.documents_ingest(
                kb=kb,
                user=owner,
                uploads=[
                    services.Upload(title=name, file=io.BytesIO(body.encode()), filename=name)
                    for name, body in documents
                ],
            )
            _wait_ready(Document, DocumentStatus, [d.id for d in result.documents])
            worker_seconds = time.perf_counter() - start
            _, after = alone_all()
            alone_seconds = (before + after) / 2
        return total, alone_seconds, worker_seconds
    finally:
        worker.terminate()
        try:
            worker.wait(60)
        except subprocess.TimeoutExpired:
            worker.kill()
        log.close()


def pipeline_texts(name: str, data: bytes, chunk_size: int, overlap: int) -> list[str]:
    """The chunk texts the pipeline makes of a file (the same steps as pipeline._extract_document + chunking)."""
    from knowledge import pipeline
    from knowledge.chunking import chunk_blocks
    from knowledge.extraction import detect_kind, extract

    extracted = extract(io.BytesIO(data), detect_kind(io.BytesIO(data), name))
    for block in extracted.blocks:
        block.text = pipeline.clean_text(block.text)
    blocks = [b for b in extracted.blocks if b.text]
    return [p.text for p in chunk_blocks(blocks, chunk_size=chunk_size, overlap=overlap)]


class PeakRss(threading.Thread):
    """Samples the resident memory of a process and all its children (prefork pool) every 0.2 s; keeps the peak."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.process, self.peak, self.running = psutil.Process(pid), 0, True

    def current(self) -> int:
        total = 0
        for proc in [self.process, *self.process.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.current())
            time.sleep(0.2)


def _embed_all(embedder, texts: list[str], batch: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(texts), batch):
        embedder.embed(texts[i : i + batch])
    return time.perf_counter() - start


def _production_worker_suite(owner, workloads, embedder, batch) -> None:
    """Each workload uploaded at once to the product's ingest worker (config.processes.INGEST_WORKER, as
    production runs it), timed from the upload to the last document ready, bracketed by the embedder alone on
    the same chunk texts (A-B-A). Runs in the bench tenant's context."""
    from config.celery import app
    from config.processes import INGEST_WORKER, command
    from knowledge import services
    from knowledge.models import Chunk, Document, DocumentStatus

    argv = [sys.executable, "-m", *command(INGEST_WORKER), "-n", f"bench-ingest-{os.getpid()}@%h"]
    log = open(ROOT / "var" / "bench-ingest-worker.log", "w")  # noqa: SIM115
    worker = subprocess.Popen(argv, cwd=ROOT, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT)
    rss = PeakRss(worker.pid)
    try:
        deadline = time.monotonic() + 120
        while not app.control.ping(timeout=0.5):
            if time.monotonic() > deadline or worker.poll() is not None:
                raise RuntimeError("worker did not start; see var/bench-ingest-worker.log")
        kb = services.knowledge_base_create(owner=owner, name="warm-up")
        warm = services.documents_ingest(
            kb=kb, user=owner, uploads=[services.upload_from_text(title="warm-up", text="# Warm\n\nLoad the model.")]
        )
        _wait_ready(Document, DocumentStatus, [d.id for d in warm.documents])
        idle_rss = rss.current()
        rss.start()
        print(f"production ingest worker ({' '.join(command(INGEST_WORKER))}), idle RSS {idle_rss / 2**20:.0f} MiB")
        for label, documents in workloads:
            kb = services.knowledge_base_create(owner=owner, name=label)
            started = time.perf_counter()
            texts = [t for name, data in documents for t in pipeline_texts(name, data, kb.chunk_size, kb.chunk_overlap)]
            extract_seconds = time.perf_counter() - started

            before = _embed_all(embedder, texts, batch)
            rss.peak = 0
            start = time.perf_counter()
            result = services.documents_ingest(
                kb=kb,
                user=owner,
                uploads=[services.Upload(title=name, file=io.BytesIO(data), filename=name) for name, data in documents],
            )
            _wait_ready(Document, DocumentStatus, [d.id for d in result.documents])
            end_to_end = time.perf_counter() - start
            peak = rss.peak
            after = _embed_all(embedder, texts, batch)
            chunks = Chunk.objects.filter(knowledge_base=kb, valid_to__isnull=True).count()
            assert chunks == len(texts), (chunks, len(texts))
            embed_rate = len(texts) / ((before + after) / 2)
            rate = chunks / end_to_end
            size = sum(len(data) for _, data in documents)
            print(
                f"  {label}: {len(documents)} document(s), {size / 2**20:.1f} MiB, {chunks} chunks"
                f" (extract + chunk in-process: {extract_seconds:.1f} s)\n"
                f"    embedder alone {embed_rate:7.1f} chunks/s (A {before:.1f} s, A {after:.1f} s)\n"
                f"    end to end     {rate:7.1f} chunks/s ({end_to_end:.1f} s upload to ready)"
                f" -> ratio {rate / embed_rate:.2f} (goal >= 0.75)\n"
                f"    worker peak RSS {peak / 2**20:.0f} MiB (main + pool processes; idle {idle_rss / 2**20:.0f} MiB)"
            )
    finally:
        rss.running = False
        worker.terminate()
        try:
            worker.wait(60)
        except subprocess.TimeoutExpired:
            worker.kill()
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
