"""Ingest workers under faults, with a document split into many parts (KNOWLEDGE_INGEST_PART_CHUNKS=16 in these
processes: a deployment setting, so that a few hundred kilobytes make dozens of parts):

- the worker is killed (-9, with its pool children) while the parts are being embedded: once a worker is back and
  the lease ran out, the stuck-document sweep (beat's `knowledge.requeue_stuck_documents`, sent here at once rather
  than after beat's two minutes) re-queues it, and it ends ready with every chunk exactly once;
- two workers consume the one queue: every part is processed exactly once, by one of them.

"Every chunk exactly once" is checked against the chunks the pipeline's own extraction and chunking give for the
file, computed in the test: same positions, same texts, no doubles, no gaps, nothing staged left behind.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
import time
from collections import Counter

import pytest
import redis
from django.db.models import Count
from django_tenants.utils import tenant_context

from knowledge.chunking import chunk_blocks
from knowledge.extraction import detect_kind, extract
from knowledge.models import Chunk, Document, DocumentStatus, KnowledgeBase
from knowledge.pipeline import clean_text
from tests.reliability.services import ROOT, api, private_redis, product_env, product_processes, wait_for

pytestmark = [pytest.mark.reliability, pytest.mark.e2e, pytest.mark.django_db]
PART_CHUNKS = 16
LEASE_SECONDS = 4
# What beat does every two minutes: send the sweep, from the public schema (it then visits every organisation).
SEND_SWEEP = (
    "import django; django.setup(); from config.celery import app; app.send_task('knowledge.requeue_stuck_documents')"
)
WORDS = "ledger harbour turbine lantern orchard glacier quartz meadow falcon copper violet canyon ember".split()


def document_text(paragraphs: int) -> str:
    """Distinct paragraphs (no two chunks share a hash, so every chunk is embedded, none copied)."""
    body = []
    for n in range(paragraphs):
        words = " ".join(WORDS[(n * 5 + k) % len(WORDS)] for k in range(40))
        body.append(f"## Entry {n}\n\nEntry {n} records that the {words} ledger number {n} was closed.")
    return "# Register\n\n" + "\n\n".join(body)


def expected_chunks(data: bytes, name: str, kb: KnowledgeBase) -> list[tuple[int, str]]:
    """(position, content hash) of every chunk the pipeline must publish for this file."""
    stream = io.BytesIO(data)
    extracted = extract(stream, detect_kind(stream, name))
    for block in extracted.blocks:
        block.text = clean_text(block.text)
    pieces = chunk_blocks([b for b in extracted.blocks if b.text], chunk_size=kb.chunk_size, overlap=kb.chunk_overlap)
    return [(position, piece.content_hash) for position, piece in enumerate(pieces)]


def upload(http, name: str, data: bytes) -> tuple[int, int]:
    response = http.post("/api/v1/knowledge-bases/", json={"name": f"Faults {name}", "embedding_model": "hashing-384"})
    assert response.status_code == 201, response.text
    kb_id = response.json()["id"]
    response = http.post(f"/api/v1/knowledge-bases/{kb_id}/documents/", files={"files": (name, data)})
    assert response.status_code == 202, response.text
    return kb_id, response.json()["documents"][0]["id"]


def document_state(org, document_id: int) -> tuple[str, int, int]:
    """(status, staged rows with a vector, staged rows without one)."""
    with tenant_context(org.tenant):
        document = Document.objects.get(pk=document_id)
        staged = Chunk.objects.filter(
            document_id=document_id, valid_to__isnull=False, valid_from=document.ingest_version
        )
        staged = staged.filter(valid_to=document.ingest_version)
        return (
            document.status,
            staged.filter(embedding__isnull=False).count(),
            staged.filter(embedding__isnull=True).count(),
        )


def assert_every_chunk_exactly_once(org, document_id: int, expected: list[tuple[int, str]]) -> Document:
    with tenant_context(org.tenant):
        document = Document.objects.get(pk=document_id)
        assert (document.status, document.error) == (DocumentStatus.READY, "")
        rows = Chunk.objects.filter(document_id=document_id)
        current = list(rows.filter(valid_to__isnull=True).order_by("position").values_list("position", "content_hash"))
        assert current == expected, "a chunk is missing, doubled or out of place"
        assert document.chunk_count == len(expected)
        assert rows.count() == len(expected), "staged or superseded rows were left behind"
        assert not rows.filter(embedding__isnull=True).exists()
        assert not rows.values("position").annotate(n=Count("id")).filter(n__gt=1).exists()
        return document


def cleanup(org, *kb_ids: int) -> None:
    with tenant_context(org.tenant):
        KnowledgeBase.objects.filter(pk__in=kb_ids).delete()


def test_ingest_worker_killed_mid_document_completes_once_a_worker_is_back(org, tmp_path):
    data = document_text(400).encode()
    with private_redis(tmp_path) as redis_server:
        env = product_env(
            redis_url=redis_server.url,
            KNOWLEDGE_INGEST_PART_CHUNKS=str(PART_CHUNKS),
            KNOWLEDGE_INGEST_LEASE_SECONDS=str(LEASE_SECONDS),
            WORKER_PRELOAD_EMBEDDER="0",  # these knowledge bases use the hashing embedder; the model is not needed
        )
        kb_id = None
        with product_processes("ingest-killed", env) as processes:
            try:
                _, port = processes.web()
                first = processes.worker("ingest")
                with api(port, org.slug, org.key) as http:
                    kb_id, document_id = upload(http, "register.md", data)

                # Kill once some parts are embedded, others not, and one is being embedded: half done, a part lost.
                def half_done():
                    log = first.log()
                    busy = len(_PART_RECEIVED.findall(log)) > len(_PART_DONE.findall(log))
                    state = document_state(org, document_id)
                    return busy and state[1] > 0 and state[2] > 0 and state

                in_flight = wait_for(half_done, timeout=60, interval=0.02, what="parts of the document to be embedded")
                first.kill9()
                # Messages a dead worker had taken stay in the broker's "unacked" set (redelivered only after the
                # visibility timeout, an hour): a part lost this way is recovered by the sweep's new claim. Some of
                # them may have finished their work before the kill (killed before the ack): then the queue alone
                # completes the document, in its first claim.
                unacked = redis.Redis.from_url(redis_server.url).hlen("unacked")
                status, embedded, missing = document_state(org, document_id)
                assert status == DocumentStatus.PROCESSING and missing > 0, (in_flight, status, embedded, missing)
                with tenant_context(org.tenant):
                    kb = KnowledgeBase.objects.get(pk=kb_id)
                expected = expected_chunks(data, "register.md", kb)
                assert len(expected) > 10 * PART_CHUNKS

                back_at = time.monotonic()
                processes.worker("ingest")
                time.sleep(LEASE_SECONDS + 0.5)  # the dead run's lease runs out
                subprocess.run(  # what beat sends every two minutes
                    [sys.executable, "-c", SEND_SWEEP],
                    cwd=ROOT,
                    env=env,
                    check=True,
                    timeout=60,
                    capture_output=True,
                )
                wait_for(
                    lambda: document_state(org, document_id)[0] != DocumentStatus.PROCESSING,
                    timeout=60,
                    what="the document to be finished by the new worker",
                )
                recovered_in = time.monotonic() - back_at
                document = assert_every_chunk_exactly_once(org, document_id, expected)
                assert document.attempts in (1, 2), "claimed again and again"
                assert document.metadata["last_ingest"]["parts"] >= 10
                print(
                    f"{unacked} messages unacked at the kill, {document.attempts} claims; ready {recovered_in:.1f} s "
                    f"after the worker was back (lease {LEASE_SECONDS} s)"
                )
            finally:
                if kb_id is not None:
                    cleanup(org, kb_id)


_PART_DONE = re.compile(r"Task knowledge\.embed_part\[([0-9a-f-]+)\] succeeded")
_PART_RECEIVED = re.compile(r"Task knowledge\.embed_part\[([0-9a-f-]+)\] received")


def test_two_ingest_workers_on_one_queue_process_every_part_once(org, tmp_path):
    data = document_text(300).encode()
    with private_redis(tmp_path) as redis_server:
        env = product_env(
            redis_url=redis_server.url, KNOWLEDGE_INGEST_PART_CHUNKS=str(PART_CHUNKS), WORKER_PRELOAD_EMBEDDER="0"
        )
        kb_id = None
        with product_processes("ingest-two", env) as processes:
            try:
                _, port = processes.web()
                workers = [processes.worker("ingest"), processes.worker("ingest")]
                with api(port, org.slug, org.key) as http:
                    kb_id, document_id = upload(http, "register.md", data)
                wait_for(
                    lambda: (
                        document_state(org, document_id)[0] != DocumentStatus.PROCESSING
                        and document_state(org, document_id)[0] != DocumentStatus.PENDING
                    ),
                    timeout=90,
                    what="the document to be finished",
                )
                with tenant_context(org.tenant):
                    kb = KnowledgeBase.objects.get(pk=kb_id)
                document = assert_every_chunk_exactly_once(org, document_id, expected_chunks(data, "register.md", kb))
                parts = document.metadata["last_ingest"]["parts"]
                time.sleep(1)  # the last "succeeded" lines reach the logs
                logs = [worker.log() for worker in workers]
                received = Counter(task for log in logs for task in _PART_RECEIVED.findall(log))
                done = Counter(task for log in logs for task in _PART_DONE.findall(log))
                assert len(done) == parts and set(done.values()) == {1}, "a part ran twice or not at all"
                assert received == done, "a part was delivered twice"
                assert all(_PART_DONE.search(log) for log in logs), "one worker took no part: not a shared queue"
            finally:
                if kb_id is not None:
                    cleanup(org, kb_id)
