"""The ingestion pipeline: claim -> fetch -> extract -> clean -> chunk -> diff -> embed -> stage -> publish.

Runs inside the tenant's schema (Celery tasks via tenant-schemas-celery, or directly in tests).
Idempotency and crash safety, in short:

- A run *claims* a document (status processing + a fresh `processing_token` + lease start). Every later
  write checks the token, so a stale run (a worker that was presumed dead) can never publish.
- New chunk rows are written *staged* (valid_from == valid_to == the batch version: invisible to every
  version query). A retry first deletes the staged rows of its document, so nothing is ever doubled.
- Publishing closes replaced rows (valid_to = v) and opens staged ones (valid_to = NULL) in one transaction.
- A worker killed mid-way leaves `processing` with an old lease; `requeue_stuck_documents` re-queues it.

Incremental: a chunk whose (position, content hash) is unchanged keeps its row; a known hash at a new
position is copied with its embedding (no model call); only new hashes are embedded.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import unicodedata
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from core.errors import DomainError
from core.events import DOCUMENT_PROGRESS, DOCUMENT_STATUS, event_subject, publish_on_commit
from core.ssrf import safe_get

from . import statistics, storage, usage
from .chunking import Piece, chunk_blocks
from .embeddings import embedder_for_model
from .extraction import MIME_TYPES, Extracted, OcrProgress, UnreadableDocument, detect_kind, extract
from .models import Chunk, Document, DocumentStatus, KnowledgeBase, KnowledgeBaseVersion

logger = logging.getLogger(__name__)

# Progress milestones (percent) for the dashboard bars.
P_CLAIMED, P_EXTRACTED, P_CHUNKED, P_EMBED_END = 5, 15, 25, 95

_CHUNK_COLUMNS = (
    "knowledge_base_id, document_id, position, text, token_count, content_hash, metadata, "
    "page_start, page_end, section_path, embedding, embedding_dimension, valid_from, valid_to"
)


class StaleRun(Exception):
    """This run no longer owns the document (another run claimed it, or it was finished/deleted)."""


@dataclass
class Plan:
    total: int
    to_embed: list[tuple[int, Piece]] = field(default_factory=list)  # (position, piece)
    reuse: list[tuple[int, Piece, int]] = field(default_factory=list)  # (position, piece, source chunk id)
    kept: int = 0
    closed: int = 0
    page_count: int = 1


# --- events and bookkeeping ------------------------------------------------------------------------


def document_event_payload(document: Document, **extra) -> dict:
    return {
        "document_id": document.id,
        "knowledge_base_id": document.knowledge_base_id,
        "title": document.title,
        "status": document.status,
        "progress": document.progress,
        "error": document.error,
        **extra,
    }


def publish_document(document: Document, event_type: str = DOCUMENT_STATUS, **extra) -> None:
    publish_on_commit(
        event_type,
        document_event_payload(document, **extra),
        subject=event_subject("knowledge_base", document.knowledge_base_id),  # a document is seen with its KB
        topic=f"kb.{document.knowledge_base_id}",
    )


def _progress(document: Document, token: str, percent: int, stage: str) -> None:
    """Store and publish progress; also renews the lease (a live run is never re-queued)."""
    updated = Document.objects.filter(id=document.id, processing_token=token, status=DocumentStatus.PROCESSING).update(
        progress=percent, processing_started_at=timezone.now()
    )
    if not updated:
        raise StaleRun(document.id)
    document.progress = percent
    publish_document(document, DOCUMENT_PROGRESS, stage=stage)


def document_claim(document_id: int) -> tuple[Document, str] | None:
    """Claim a pending document (or one whose lease expired). None if another run owns it or it is done."""
    lease = timedelta(seconds=settings.KNOWLEDGE_INGEST_LEASE_SECONDS)
    now = timezone.now()
    with transaction.atomic():
        document = Document.objects.select_for_update().filter(id=document_id).first()
        if document is None:
            return None
        stale = document.status == DocumentStatus.PROCESSING and (
            document.processing_started_at is None or document.processing_started_at < now - lease
        )
        if document.status != DocumentStatus.PENDING and not stale:
            return None
        if stale and document.attempts >= settings.KNOWLEDGE_INGEST_MAX_INTERRUPTIONS:
            # A redelivered message (the whole worker died) meets the same cap as the sweep (requeue_stuck).
            document_fail(document_id, document.processing_token, interrupted_reason(document.attempts))
            return None
        token = uuid.uuid4().hex
        document.status = DocumentStatus.PROCESSING
        document.processing_token = token
        document.processing_started_at = now
        document.attempts += 1
        document.progress = P_CLAIMED
        document.error = ""
        document.save(
            update_fields=[
                "status",
                "processing_token",
                "processing_started_at",
                "attempts",
                "progress",
                "error",
                "updated_at",
            ]
        )
        publish_document(document)
    return document, token


def document_release(document_id: int, token: str) -> None:
    """Give a claimed document back (before a Celery retry): the next attempt claims it again at once."""
    with transaction.atomic():
        Chunk.objects.filter(document_id=document_id, valid_to=F("valid_from")).delete()
        # A retry continues the same attempt: `attempts` counts only runs that never gave the document back.
        Document.objects.filter(id=document_id, processing_token=token).update(
            status=DocumentStatus.PENDING, processing_token="", processing_started_at=None, attempts=F("attempts") - 1
        )


def _staged(document: Document):
    return Chunk.objects.filter(
        document_id=document.id, valid_from=document.ingest_version, valid_to=document.ingest_version
    )


def _version_changes_add(document: Document, **counts) -> None:
    version = (
        KnowledgeBaseVersion.objects.select_for_update()
        .filter(knowledge_base_id=document.knowledge_base_id, number=document.ingest_version)
        .first()
    )
    if version is None:
        return
    changes = version.changes or {}
    for key, value in counts.items():
        if isinstance(value, int):
            changes[key] = changes.get(key, 0) + value
    for entry in changes.get("documents", []):
        if entry.get("id") == document.id:
            entry["status"] = document.status
            entry["content_hash"] = document.content_hash
            if document.error:
                entry["error"] = document.error
    version.changes = changes
    version.save(update_fields=["changes"])


def document_fail(document_id: int, token: str | None, reason: str) -> None:
    """Mark failed with a human reason; drop staged rows and the new file, restore the replaced one."""
    with transaction.atomic():
        qs = Document.objects.select_for_update().filter(id=document_id)
        if token is not None:
            qs = qs.filter(processing_token=token)
        document = qs.first()
        if document is None:
            return
        _staged(document).delete()
        new_path, new_size = document.storage_path, document.size_bytes
        if (document.metadata or {}).pop("reembed", None):
            pass  # re-embedding for a new model: the stored file is still the document's file
        elif document.replaced_storage_path:
            # A failed re-upload: the previous content stays published, as does its file.
            document.storage_path = document.replaced_storage_path
            document.size_bytes = (document.metadata or {}).get("replaced_size", 0)
            document.replaced_storage_path = ""
        else:
            document.storage_path = ""
            document.size_bytes = 0
        if new_path and new_path != document.storage_path:
            usage.usage_record(documents=0 if document.storage_path else -1, stored_bytes=-new_size)
            transaction.on_commit(lambda: storage.storage_delete(new_path))
        document.status = DocumentStatus.FAILED
        document.error = reason[:2000]
        document.progress = 0
        document.processing_token = ""
        document.save()
        _version_changes_add(document, failed=1)
        publish_document(document)
        _statistics_when_settled(document.knowledge_base_id)


# --- stages ---------------------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")


def clean_text(text: str) -> str:
    text = unicodedata.normalize("NFC", text)
    text = _CONTROL.sub("", text).replace("\u00ad", "")  # soft hyphens split words in PDFs
    text = re.sub(r"[ \t\u00a0]+", " ", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _fetch_url(document: Document) -> None:
    """URL sources: fetch the page once (SSRF-guarded) and store it like an uploaded file."""
    page = safe_get(
        document.source_url, max_bytes=settings.KNOWLEDGE_MAX_FILE_BYTES, timeout=settings.KNOWLEDGE_URL_FETCH_TIMEOUT
    )

    name = document.source_url.rstrip("/").rsplit("/", 1)[-1] or "page"
    if "html" in page.content_type and not name.endswith((".html", ".htm")):
        name += ".html"
    path = storage.storage_save(storage.document_path(document.knowledge_base_id, name), page.content)
    with transaction.atomic():
        Document.objects.filter(id=document.id).update(
            storage_path=path, size_bytes=len(page.content), content_hash=hashlib.sha256(page.content).hexdigest()
        )
        usage.usage_record(documents=0 if document.replaced_storage_path else 1, stored_bytes=len(page.content))
    document.storage_path = path
    document.size_bytes = len(page.content)
    document.original_filename = name


def _extract_document(document: Document, on_ocr_page: OcrProgress | None = None) -> Extracted:
    if document.source_type == "url" and not document.storage_path:
        _fetch_url(document)
    if document.size_bytes > settings.KNOWLEDGE_MAX_FILE_BYTES:
        raise UnreadableDocument(f"The file is larger than the limit of {settings.KNOWLEDGE_MAX_FILE_BYTES} bytes.")
    try:
        data = io.BytesIO(storage.storage_read(document.storage_path))
    except FileNotFoundError as exc:
        raise UnreadableDocument("The stored file is missing; upload it again.") from exc
    kind = detect_kind(data, document.original_filename or document.title)
    extracted = extract(data, kind, ocr_language=document.knowledge_base.ocr_language, on_ocr_page=on_ocr_page)
    for block in extracted.blocks:
        block.text = clean_text(block.text)
    extracted.blocks = [b for b in extracted.blocks if b.text]
    if not any(b.kind == "para" for b in extracted.blocks):
        raise UnreadableDocument("The document contains no text to index.")
    if kind != document.mime_type:
        Document.objects.filter(id=document.id).update(mime_type=MIME_TYPES.get(kind, kind))
    return extracted


def plan_chunks(document: Document, pieces: list[Piece]) -> Plan:
    """Compare new pieces with the document's current rows: keep, reuse (copy embedding), or embed."""
    plan = Plan(total=len(pieces))
    current = list(
        Chunk.objects.filter(
            document_id=document.id, valid_to__isnull=True, valid_from__lt=document.ingest_version
        ).values_list("id", "position", "content_hash", "page_start", "page_end")
    )
    # Kept means the same text on the same pages: a page inserted before unchanged text moves its citation,
    # so that row is replaced by a copy with the new pages (and the same embedding).
    by_position = {position: (chunk_id, (digest, start, end)) for chunk_id, position, digest, start, end in current}
    by_hash: dict[str, int] = {}
    for chunk_id, _, digest, _, _ in current:
        by_hash.setdefault(digest, chunk_id)
    if (document.metadata or {}).get("reembed"):  # the model changed: every stored vector is stale
        by_position, by_hash = {}, {}
    for position, piece in enumerate(pieces):
        here = by_position.get(position)
        if here is not None and here[1] == (piece.content_hash, piece.page_start, piece.page_end):
            plan.kept += 1
        elif piece.content_hash in by_hash:
            plan.reuse.append((position, piece, by_hash[piece.content_hash]))
        else:
            plan.to_embed.append((position, piece))
    replaced = {position for position, *_ in plan.reuse} | {position for position, _ in plan.to_embed}
    plan.closed = sum(1 for _, position, *_ in current if position in replaced or position >= plan.total)
    return plan


def _vector_literal(vector) -> str:
    return "[" + ",".join(repr(float(x)) for x in vector) + "]"


def _write_staged(document: Document, kb: KnowledgeBase, plan: Plan, embeddings: list | None) -> None:
    """Bulk-insert staged rows: new pieces with COPY, reused ones copied in SQL with their embedding."""
    version = document.ingest_version
    rows = []
    for index, (position, piece) in enumerate(plan.to_embed):
        vector = _vector_literal(embeddings[index]) if embeddings is not None else None
        rows.append(
            (
                kb.id,
                document.id,
                position,
                piece.text,
                piece.token_count,
                piece.content_hash,
                json.dumps(piece.metadata),
                piece.page_start,
                piece.page_end,
                json.dumps(piece.section_path),
                vector,
                kb.embedding_dimension,
                version,
                version,
            )
        )
    with connection.cursor() as cursor:
        if rows:
            with cursor.cursor.copy(f"COPY knowledge_chunk ({_CHUNK_COLUMNS}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        if plan.reuse:
            cursor.executemany(
                f"INSERT INTO knowledge_chunk ({_CHUNK_COLUMNS}) "  # noqa: S608 - constant column list
                "SELECT knowledge_base_id, document_id, %s, text, token_count, content_hash, %s::jsonb, "
                "%s, %s, %s::jsonb, embedding, embedding_dimension, %s, %s FROM knowledge_chunk WHERE id = %s",
                [
                    (
                        position,
                        json.dumps(piece.metadata),
                        piece.page_start,
                        piece.page_end,
                        json.dumps(piece.section_path),
                        version,
                        version,
                        source,
                    )
                    for position, piece, source in plan.reuse
                ],
            )


def _embed_batches(kb: KnowledgeBase, texts: list[str], on_batch) -> list[list[float]]:
    embedder = embedder_for_model(kb.embedding_model)
    if embedder.dimension != kb.embedding_dimension:
        raise UnreadableDocument(
            f"The embedding model {kb.embedding_model} gives {embedder.dimension}-d vectors but the knowledge "
            f"base expects {kb.embedding_dimension}."
        )
    batch = settings.KNOWLEDGE_EMBED_BATCH
    vectors: list[list[float]] = []
    for start in range(0, len(texts), batch):
        vectors.extend(embedder.embed(texts[start : start + batch]))
        on_batch(len(vectors))
    return vectors


@dataclass
class PrepareResult:
    done: bool
    parts: list[tuple[int, int]] = field(default_factory=list)  # position ranges to embed in parallel


def document_prepare(document_id: int, token: str) -> PrepareResult:
    """Extract, chunk and diff; small documents are embedded and published here, large ones are staged
    and split into parts for `document_embed_part` (the last part publishes)."""
    document = Document.objects.select_related("knowledge_base").get(id=document_id)
    if document.processing_token != token:
        raise StaleRun(document_id)
    kb = document.knowledge_base
    _staged(document).delete()  # leftovers of an interrupted attempt: never doubled

    def on_ocr_page(done: int, total: int) -> None:
        # Seconds per page: each page moves the bar and renews the lease, so a long scan is never re-queued.
        _progress(document, token, P_CLAIMED + (P_EXTRACTED - P_CLAIMED) * done // max(total, 1), "ocr")

    extracted = _extract_document(document, on_ocr_page)
    _progress(document, token, P_EXTRACTED, "extracted")
    pieces = chunk_blocks(extracted.blocks, chunk_size=kb.chunk_size, overlap=kb.chunk_overlap)
    plan = plan_chunks(document, pieces)
    plan.page_count = extracted.page_count
    document.metadata = {
        **(document.metadata or {}),
        "kind": extracted.kind,
        **({"html_title": extracted.title} if extracted.title else {}),
        "last_ingest": {
            "chunks": plan.total,
            "kept": plan.kept,
            "reused": len(plan.reuse),
            "embedded": len(plan.to_embed),
            "closed": plan.closed,
        },
    }
    Document.objects.filter(id=document.id).update(metadata=document.metadata, page_count=extracted.page_count)
    _progress(document, token, P_CHUNKED, "chunked")

    part_size = settings.KNOWLEDGE_INGEST_PART_CHUNKS
    if len(plan.to_embed) <= part_size:
        total = max(len(plan.to_embed), 1)

        def on_batch(done: int) -> None:
            _progress(document, token, P_CHUNKED + (P_EMBED_END - P_CHUNKED) * done // total, "embedding")

        vectors = _embed_batches(kb, [piece.text for _, piece in plan.to_embed], on_batch)
        with transaction.atomic():
            _write_staged(document, kb, plan, vectors)
            document_publish(document_id, token, embedded=len(plan.to_embed))
        return PrepareResult(done=True)

    with transaction.atomic():
        _write_staged(document, kb, plan, None)
    positions = [position for position, _ in plan.to_embed]
    parts = [
        (positions[i], positions[min(i + part_size, len(positions)) - 1]) for i in range(0, len(positions), part_size)
    ]
    document.metadata["last_ingest"]["parts"] = len(parts)
    Document.objects.filter(id=document.id).update(metadata=document.metadata)
    return PrepareResult(done=False, parts=parts)


def document_embed_part(document_id: int, token: str, first: int, last: int) -> bool:
    """Embed the staged rows of one part (positions first..last) that still lack a vector, then publish the
    document if no staged row is left without one. Idempotent; returns True if this call published.

    Parts run in any order on any worker. Each commits its vectors before it checks, and checks under the
    document's row lock, so the last part to finish always sees every other part's vectors: exactly one call
    publishes (document_publish is a no-op on a document that is no longer processing)."""
    document = Document.objects.select_related("knowledge_base").get(id=document_id)
    if document.processing_token != token or document.status != DocumentStatus.PROCESSING:
        raise StaleRun(document_id)
    kb = document.knowledge_base
    rows = list(
        _staged(document)
        .filter(position__gte=first, position__lte=last, embedding__isnull=True)
        .order_by("position")
        .values_list("id", "text")
    )
    # Batch by batch, each committed and reported: the bar moves while a part embeds, and the progress renews the
    # lease, so a part slower than the lease (a busy machine) is not taken for a dead run and started over.
    batch = settings.KNOWLEDGE_EMBED_BATCH
    for start in range(0, len(rows), batch):
        batch_rows = rows[start : start + batch]
        vectors = _embed_batches(kb, [text for _, text in batch_rows], lambda done: None)
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.executemany(
                "UPDATE knowledge_chunk SET embedding = %s::vector WHERE id = %s AND valid_to = valid_from",
                [(_vector_literal(v), chunk_id) for (chunk_id, _), v in zip(batch_rows, vectors, strict=True)],
            )
        if start + batch < len(rows):
            _embed_progress(document, token)
    with transaction.atomic():
        locked = Document.objects.select_for_update().filter(id=document_id, processing_token=token).first()
        if locked is None or locked.status != DocumentStatus.PROCESSING:
            raise StaleRun(document_id)
        if _embed_progress(document, token):
            return False
        return document_publish(document_id, token)


def _embed_progress(document: Document, token: str) -> int:
    """Report the share of the document's staged rows that have their vector (every part's); returns how many
    still lack one (0: nothing reported, the caller publishes)."""
    staged = _staged(document)
    missing = staged.filter(embedding__isnull=True).count()
    if missing:
        total = staged.count() or 1
        _progress(document, token, P_CHUNKED + (P_EMBED_END - P_CHUNKED) * (total - missing) // total, "embedding")
    return missing


def document_publish(document_id: int, token: str, *, embedded: int | None = None) -> bool:
    """Atomically swap the document's current chunks for its staged ones and mark it ready."""
    with transaction.atomic():
        document = Document.objects.select_for_update().filter(id=document_id, processing_token=token).first()
        if document is None or document.status != DocumentStatus.PROCESSING:
            return False  # already published by an earlier delivery of this step, or superseded
        staged = _staged(document)
        if staged.filter(embedding__isnull=True).exists():
            raise RuntimeError(f"document {document_id}: parts still missing embeddings")
        version = document.ingest_version
        stats = (document.metadata or {}).get("last_ingest", {})
        total = stats.get("chunks", 0)
        staged_positions = list(staged.values_list("position", flat=True))
        current = Chunk.objects.filter(document_id=document.id, valid_to__isnull=True, valid_from__lt=version)
        closed = current.filter(position__in=staged_positions).update(valid_to=version)
        closed += current.filter(position__gte=total).update(valid_to=version)
        added = staged.update(valid_to=None)
        old_path = document.replaced_storage_path
        document.status = DocumentStatus.READY
        document.progress = 100
        document.chunk_count = total
        document.processing_token = ""
        document.replaced_storage_path = ""
        document.metadata.pop("reembed", None)
        document.save()
        if old_path and old_path != document.storage_path:
            usage.usage_record(stored_bytes=-(document.metadata or {}).get("replaced_size", 0))
            transaction.on_commit(lambda: storage.storage_delete(old_path))
        usage.usage_record(pages_processed=document.page_count)
        _version_changes_add(
            document,
            added=added,
            removed=closed,
            reembedded=stats.get("embedded", 0) if embedded is None else embedded,
        )
        publish_document(document)
        _statistics_when_settled(document.knowledge_base_id)
    return True


def _statistics_when_settled(knowledge_base_id: int) -> None:
    """After the commit of a publish or a failure, which may have settled the current version: store its term
    statistics (knowledge.statistics; nothing while documents are in flight). In the worker, after the commit that
    settles it, so whichever of a version's documents finishes last sees every other one finished; a failure here
    is logged (search counts what is not stored) and never fails the publish."""
    transaction.on_commit(lambda: statistics.version_statistics_build(knowledge_base_id=knowledge_base_id), robust=True)


# --- the whole run, in-process (tests, benchmarks); Celery tasks split the same steps ----------------


def document_process(document_id: int) -> bool:
    """Run the whole pipeline for one document in this process. Returns True if it got published."""
    claimed = document_claim(document_id)
    if claimed is None:
        return False
    _, token = claimed
    try:
        result = document_prepare(document_id, token)
        published = result.done
        for first, last in result.parts:
            published = document_embed_part(document_id, token, first, last)
        return published
    except StaleRun:
        return False
    except DomainError as exc:
        document_fail(document_id, token, exc.message)
        return False


def interrupted_reason(times: int) -> str:
    return (
        f"Processing was interrupted {times} times (worker killed: time limit or memory). The document is probably "
        "too large or too slow to read: split it, or ask an operator to raise the ingest workers' limits."
    )


def requeue_stuck(enqueue) -> list[int]:
    """Re-queue documents stuck in processing past their lease, or pending with no live task for a lease.

    A run past its lease was interrupted: its worker was killed (the hard time limit, the memory limit, a crash)
    without giving the document back. `attempts` counts such runs (plus the current one), so a document that kills
    every worker that takes it fails after KNOWLEDGE_INGEST_MAX_INTERRUPTIONS of them instead of being re-queued,
    and killing a worker, forever."""
    cutoff = timezone.now() - timedelta(seconds=settings.KNOWLEDGE_INGEST_LEASE_SECONDS)
    interrupted = Document.objects.filter(status=DocumentStatus.PROCESSING, processing_started_at__lt=cutoff)
    stuck = []
    for document_id, token, attempts in interrupted.values_list("id", "processing_token", "attempts"):
        if attempts >= settings.KNOWLEDGE_INGEST_MAX_INTERRUPTIONS:
            logger.warning("document %s: interrupted %d times, failed", document_id, attempts)
            document_fail(document_id, token, interrupted_reason(attempts))
        else:
            stuck.append(document_id)
    stuck += Document.objects.filter(status=DocumentStatus.PENDING, updated_at__lt=cutoff).values_list("id", flat=True)
    for document_id in stuck:
        Document.objects.filter(id=document_id, status=DocumentStatus.PENDING).update(updated_at=timezone.now())
        enqueue(document_id)
    if stuck:
        logger.warning("re-queued %d stuck documents: %s", len(stuck), stuck)
    return stuck
