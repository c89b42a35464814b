"""Writes for knowledge bases, documents and versions. Keyword-only, atomic; tasks and events on commit.

Versions: every ingestion batch that changes something, every deletion and every rollback takes the next
version number under a row lock on the knowledge base (see knowledge.models for chunk validity ranges).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, F, Q, Sum

from core.audit import actor_current, audit_record
from core.errors import Conflict, DomainError, ErrorCode, Forbidden, InvalidInput, error_body
from core.events import event_subject, publish_on_commit
from core.queues import fair_enqueue
from core.rls import db_as_system
from core.ssrf import check_url
from iam.policy import Principal, principal_for_user, resource_check_for_principal

from . import embeddings, storage, usage
from .extraction import MIME_TYPES, EmptyDocument, detect_kind
from .models import (
    DEFAULT_EMBEDDING_MODEL,
    Chunk,
    Document,
    DocumentStatus,
    KnowledgeBase,
    KnowledgeBaseVersion,
)
from .ocr import DEFAULT_OCR_LANGUAGE, ocr_language_validate
from .pipeline import publish_document
from .selectors import version_at
from .statistics import version_statistics_drop_before
from .tasks import ingest_document_task, version_statistics_task

if TYPE_CHECKING:
    # django-stubs resolves this alias to settings.AUTH_USER_MODEL; accounts.models is the identity layer's own.
    from django.contrib.auth.models import _User as User

# Known embedders and their dimensions, without loading a model in the request.
EMBEDDING_DIMENSIONS = {"all-MiniLM-L6-v2": 384, "sentence-transformers/all-MiniLM-L6-v2": 384, "hashing-384": 384}
HNSW_MAX_DIMENSION = 2000  # pgvector's limit for HNSW on `vector`
_KB_FIELDS = (
    "name",
    "description",
    "chunk_size",
    "chunk_overlap",
    "org_access",
    "versions_retained",
    "search_settings",
    "ocr_language",
)
_BUSY = (DocumentStatus.PENDING, DocumentStatus.PROCESSING)


def _embedding_dimension(model: str) -> int:
    """The model's vector size: from known tables when possible, else by loading the embedder once."""

    configured = getattr(settings, "KNOWLEDGE_EMBEDDING_DIMENSIONS", {}) or {}
    if model in configured:
        return int(configured[model])
    if model in EMBEDDING_DIMENSIONS:
        return EMBEDDING_DIMENSIONS[model]
    known = embeddings.OpenAICompatibleEmbedder.KNOWN_DIMENSIONS
    if model.startswith("openai:") and model.removeprefix("openai:") in known:
        return int(known[model.removeprefix("openai:")])
    try:
        return int(embeddings.embedder_for_model(model).dimension)
    except Exception as exc:  # noqa: BLE001 - unknown model, missing files, unreachable server: same answer
        raise InvalidInput(f"The embedding model {model!r} is not available: {exc}", field="embedding_model") from exc


def _ensure_vector_index(dimension: int) -> None:
    """One partial HNSW index per embedding dimension in the tenant's chunk table (384 ships in a migration)."""
    if dimension == 384 or dimension > HNSW_MAX_DIMENSION:
        return
    with db_as_system(), connection.cursor() as cursor:  # an index is a schema change: the migrating role's (core.rls)
        cursor.execute(
            f"CREATE INDEX IF NOT EXISTS chunk_embedding_hnsw_{dimension} ON knowledge_chunk "  # noqa: S608 - int
            f"USING hnsw ((embedding::vector({dimension})) vector_cosine_ops) WHERE embedding_dimension = {dimension}"
        )


def _validate_chunking(chunk_size: int, chunk_overlap: int, versions_retained: int) -> None:
    if not 32 <= chunk_size <= 2048:
        raise InvalidInput("chunk_size must be between 32 and 2048 tokens.", field="chunk_size")
    if not 0 <= chunk_overlap <= chunk_size // 2:
        raise InvalidInput("chunk_overlap must be between 0 and half the chunk size.", field="chunk_overlap")
    if not 1 <= versions_retained <= 1000:
        raise InvalidInput("versions_retained must be between 1 and 1000.", field="versions_retained")


def _publish_kb(kb: KnowledgeBase, event_type: str) -> None:
    publish_on_commit(
        event_type,
        {"knowledge_base_id": kb.id, "name": kb.name, "current_version": kb.current_version},
        subject=event_subject("knowledge_base", kb.id, owner_id=kb.owner_id),
        topic=f"kb.{kb.id}",
    )


# --- knowledge bases -------------------------------------------------------------------------------


@transaction.atomic
def knowledge_base_create(
    *,
    principal: Principal | None = None,
    owner: User | None = None,
    name: str,
    description: str = "",
    embedding_model: str = DEFAULT_EMBEDDING_MODEL,
    chunk_size: int = 256,
    chunk_overlap: int = 32,
    org_access: str = "none",
    versions_retained: int = 20,
    search_settings: dict[str, Any] | None = None,
    ocr_language: str = DEFAULT_OCR_LANGUAGE,
) -> KnowledgeBase:
    """A new knowledge base owned by `principal` (API, dashboard) or by `owner` (setup code acting for a member)."""
    owner = principal.user if principal is not None else owner
    if not name.strip():
        raise InvalidInput("The name is required.", field="name")
    _validate_chunking(chunk_size, chunk_overlap, versions_retained)
    ocr_language = ocr_language_validate(ocr_language)
    kb = KnowledgeBase(
        owner=owner,
        name=name.strip(),
        description=description,
        embedding_model=embedding_model,
        embedding_dimension=_embedding_dimension(embedding_model),
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        org_access=org_access,
        versions_retained=versions_retained,
        search_settings=search_settings or {},
        ocr_language=ocr_language,
    )
    kb.full_clean()
    kb.save()
    _ensure_vector_index(kb.embedding_dimension)
    _audit("knowledge_base.create", kb, principal=principal, user=owner, after=_kb_settings(kb))
    _publish_kb(kb, "knowledge_base.created")
    return kb


@transaction.atomic
def knowledge_base_update(
    *, kb: KnowledgeBase, principal: Principal | None = None, user: User | None = None, **changes: Any
) -> KnowledgeBase:
    """Change settings. A new `embedding_model` re-embeds every document in the background, as a new
    version (until each document is republished, its old vectors stay current).

    Changing `org_access` is sharing: it needs the "share" action (owner or admin) of `principal` (or, when only
    `user` is given, of that member), whoever the caller is."""
    user = principal.user if principal is not None else user
    new_model = changes.pop("embedding_model", None)
    unknown = set(changes) - set(_KB_FIELDS)
    if unknown:
        raise InvalidInput(f"These fields cannot be changed: {', '.join(sorted(unknown))}.")
    kb = _lock_kb(kb)
    if "org_access" in changes and changes["org_access"] != kb.org_access:
        sharer = principal if principal is not None else principal_for_user(user, getattr(connection, "tenant", None))
        if sharer is None:
            raise Forbidden("Only the owner or an admin may change who can use this knowledge base.")
        resource_check_for_principal(sharer, kb, "share")
    if "ocr_language" in changes:
        changes["ocr_language"] = ocr_language_validate(changes["ocr_language"])
    before = _kb_settings(kb)
    for name, value in changes.items():
        setattr(kb, name, value)
    _validate_chunking(kb.chunk_size, kb.chunk_overlap, kb.versions_retained)
    kb.full_clean()
    kb.save()
    if new_model and new_model != kb.embedding_model:
        _knowledge_base_reembed(kb=kb, model=new_model, user=user)
    after = _kb_settings(kb)  # audited with before/after, in the same transaction
    if after != before:
        _audit("knowledge_base.settings_update", kb, principal=principal, user=user, before=before, after=after)
    _publish_kb(kb, "knowledge_base.updated")
    return kb


def _audit(
    action: str, kb: KnowledgeBase, *, principal: Principal | None = None, user: User | None = None, **kwargs: Any
) -> None:
    """Changes to a knowledge base and its content, in the change's transaction. The actor is whoever acts
    (core.audit); `principal` or `user` only name who a direct call from Python acts for."""
    if principal is None and user is not None and actor_current() is None:
        principal = principal_for_user(user, getattr(connection, "tenant", None))
    audit_record(action=action, target=kb, principal=principal, **kwargs)


def _kb_settings(kb: KnowledgeBase) -> dict[str, Any]:
    """The configurable settings of a knowledge base (what an audit entry compares)."""
    return {**{name: getattr(kb, name) for name in _KB_FIELDS}, "embedding_model": kb.embedding_model}


def _knowledge_base_reembed(*, kb: KnowledgeBase, model: str, user: User | None) -> None:
    if kb.documents.filter(status__in=_BUSY).exists():
        raise Conflict("Documents are still being processed; change the model when ingestion has finished.")
    kb.embedding_dimension = _embedding_dimension(model)
    kb.embedding_model = model
    kb.save(update_fields=["embedding_model", "embedding_dimension", "updated_at"])
    _ensure_vector_index(kb.embedding_dimension)
    documents = list(kb.documents.select_for_update().filter(status=DocumentStatus.READY))
    version = _version_next(
        kb,
        user=user,
        kind="reembed",
        note=f"Embedding model changed to {model}",
        changes={
            "embedding_model": model,
            "documents": [{"id": d.id, "title": d.title, "action": "reembedded"} for d in documents],
        },
    )
    for document in documents:
        document.status = DocumentStatus.PENDING
        document.progress = 0
        document.ingest_version = version.number
        document.attempts = 0
        document.metadata = {**(document.metadata or {}), "reembed": True}  # no chunk kept or reused
        document.save()
        publish_document(document)
    ids = [d.id for d in documents]
    transaction.on_commit(lambda: _queue_processing(ids))


@transaction.atomic
def knowledge_base_delete(*, kb: KnowledgeBase) -> None:
    """Delete the knowledge base, its documents, chunks and versions, and (after commit) its stored files."""
    stored = kb.documents.exclude(storage_path="").aggregate(n=Count("id"), size=Sum("size_bytes"))
    usage.usage_record(documents=-(stored["n"] or 0), stored_bytes=-(stored["size"] or 0))
    prefix = storage.kb_prefix(kb.id)
    transaction.on_commit(lambda: storage.storage_delete_prefix(prefix))
    _audit("knowledge_base.delete", kb, before=_kb_settings(kb))
    _publish_kb(kb, "knowledge_base.deleted")
    kb.delete()


# --- versions --------------------------------------------------------------------------------------


def _version_next(
    kb: KnowledgeBase, *, user: User | None, kind: str, note: str = "", changes: dict[str, Any] | None = None
) -> KnowledgeBaseVersion:
    """Allocate the next version. Caller holds the knowledge base row lock."""
    kb.current_version += 1
    kb.save(update_fields=["current_version", "updated_at"])
    version = KnowledgeBaseVersion.objects.create(
        knowledge_base=kb,
        number=kb.current_version,
        note=note[:500],
        created_by=user,
        changes={"kind": kind, "added": 0, "removed": 0, "reembedded": 0, **(changes or {})},
    )
    _publish_kb(kb, "knowledge_base.version")
    return version


def _lock_kb(kb: KnowledgeBase) -> KnowledgeBase:
    return KnowledgeBase.objects.select_for_update().get(pk=kb.pk)


def _valid_at(version: int) -> Q:
    return Q(valid_from__lte=version) & (Q(valid_to__isnull=True) | Q(valid_to__gt=version))


# --- ingestion ---------------------------------------------------------------------------------------


@dataclass
class Upload:
    """One source to ingest: a file (stream), raw text, or a URL."""

    title: str
    file: IO[bytes] | None = None
    filename: str = ""
    url: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class IngestResult:
    version: KnowledgeBaseVersion | None
    documents: list[Document] = field(default_factory=list)  # queued for processing
    unchanged: list[Document] = field(default_factory=list)  # identical re-uploads: no work
    errors: list[dict[str, Any]] = field(default_factory=list)  # {"name", "detail", "code"} per refused source


_ToStore = tuple[Upload, str, str, int, Document | None]  # upload, kind, content hash, size, document replaced


def upload_from_text(*, title: str, text: str, metadata: dict[str, Any] | None = None) -> Upload:
    name = title if "." in title.rsplit("/", 1)[-1] else f"{title}.md"
    return Upload(title=title, file=io.BytesIO(text.encode("utf-8")), filename=name, metadata=metadata or {})


def _hash_and_size(fh: IO[bytes]) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    fh.seek(0)
    for block in iter(lambda: fh.read(1024 * 1024), b""):
        digest.update(block)
        size += len(block)
    fh.seek(0)
    return digest.hexdigest(), size


def _queue_processing(document_ids: list[int]) -> None:
    for document_id in document_ids:
        # Per-tenant round-robin into the "ingest" queue (one tenant's flood cannot starve others)
        fair_enqueue(ingest_document_task, args=[document_id], queue="ingest")


def documents_ingest(
    *,
    kb: KnowledgeBase,
    user: User | None,
    uploads: list[Upload],
    rejected: list[dict[str, Any]] | None = None,
    note: str = "",
) -> IngestResult:
    """Validate each source on its own (a bad one never blocks the others), store the files, and queue
    the changed ones for processing in one new version. Identical re-uploads do nothing."""
    errors = list(rejected or [])
    accepted: list[tuple[Upload, str, str, int]] = []  # (upload, kind, hash, size)
    titles_seen: set[str] = set()
    for upload in uploads:
        title = upload.title.strip()[:500]
        try:
            if not title:
                raise InvalidInput("A title is required.")
            if title in titles_seen:
                raise Conflict("The same title appears twice in this upload.")
            titles_seen.add(title)
            if upload.url:
                check_url(upload.url)
                accepted.append((upload, "url", "", 0))
                continue
            if upload.file is None:  # an Upload is a file (text comes as one) or a URL
                raise InvalidInput("Give a file, a text or a URL.")
            digest, size = _hash_and_size(upload.file)
            if size == 0:
                raise EmptyDocument("The file is empty.")
            if size > settings.KNOWLEDGE_MAX_FILE_BYTES:
                raise InvalidInput(f"The file is larger than the limit of {settings.KNOWLEDGE_MAX_FILE_BYTES} bytes.")
            kind = detect_kind(upload.file, upload.filename or title)
            accepted.append((upload, kind, digest, size))
        except DomainError as exc:
            errors.append({**exc.as_dict(), "name": upload.filename or upload.url or title})

    existing = {d.title: d for d in kb.documents.filter(title__in=[u.title.strip() for u, *_ in accepted])}
    to_store: list[_ToStore] = []
    unchanged: list[Document] = []
    for upload, kind, digest, size in accepted:
        document = existing.get(upload.title.strip())
        if document is not None and document.status in _BUSY:
            errors.append(
                error_body(
                    ErrorCode.CONFLICT,
                    "This document is still being processed; try again when it is ready.",
                    name=upload.filename or upload.title,
                )
            )
        elif (
            document is not None
            and digest
            and document.status == DocumentStatus.READY
            and document.content_hash == digest
        ):
            unchanged.append(document)
        else:
            to_store.append((upload, kind, digest, size, document))

    new_bytes = sum(size for *_, size, _ in to_store)
    new_docs = sum(1 for *_, document in to_store if document is None or not document.storage_path)
    if to_store:
        usage.quota_check(user=user, documents=new_docs, stored_bytes=new_bytes)

    # Store files before the transaction; if it fails, delete them again (never orphaned).
    stored_paths: list[str | None] = []
    try:
        for upload, kind, *_ in to_store:
            if kind == "url" or upload.file is None:  # a URL (every other upload has a file: checked above)
                stored_paths.append(None)
                continue
            upload.file.seek(0)
            path = storage.document_path(kb.id, upload.filename or upload.title)
            stored_paths.append(storage.storage_save(path, upload.file))
        result = _documents_record(kb=kb, user=user, to_store=to_store, stored_paths=stored_paths, note=note)
    except BaseException:
        for stored in stored_paths:
            if stored:
                storage.storage_delete(stored)
        raise
    result.unchanged = unchanged
    result.errors = errors
    return result


@transaction.atomic
def _documents_record(
    *, kb: KnowledgeBase, user: User | None, to_store: list[_ToStore], stored_paths: list[str | None], note: str
) -> IngestResult:
    if not to_store:
        return IngestResult(version=None)
    kb = _lock_kb(kb)
    if kb.documents.filter(status__in=_BUSY, title__in=[u.title.strip() for u, *_ in to_store]).exists():
        raise Conflict("A document of this upload is already being processed.")
    version = _version_next(kb, user=user, kind="ingest", note=note)
    documents: list[Document] = []
    entries: list[dict[str, Any]] = []
    for (upload, kind, digest, size, document), path in zip(to_store, stored_paths, strict=True):
        is_new = document is None
        if document is None:
            document = Document(knowledge_base=kb, title=upload.title.strip()[:500])
        replaced = document.storage_path if document.status != DocumentStatus.DELETED else ""
        document.source_type = "url" if kind == "url" else ("file" if upload.filename else "text")
        document.source_url = upload.url
        document.original_filename = storage.safe_filename(upload.filename) if upload.filename else ""
        document.mime_type = MIME_TYPES.get(kind, "")
        document.metadata = {
            **(document.metadata or {}),
            **upload.metadata,
            "replaced_size": document.size_bytes if replaced else 0,
        }
        document.storage_path = path or ""
        document.replaced_storage_path = replaced
        document.size_bytes = size
        document.content_hash = digest
        document.status = DocumentStatus.PENDING
        document.progress = 0
        document.error = ""
        document.ingest_version = version.number
        document.attempts = 0
        document.processing_token = ""
        document.uploaded_by = user
        document.save()
        if path:
            usage.usage_record(documents=0 if replaced else 1, stored_bytes=size)
        documents.append(document)
        entries.append(
            {
                "id": document.id,
                "title": document.title,
                "action": "added" if is_new else "updated",
                "status": document.status,
            }
        )
        publish_document(document)
    version.changes = {**version.changes, "documents": entries}
    version.save(update_fields=["changes"])
    _audit("knowledge_base.documents_upload", kb, user=user, after={"version": version.number, "documents": entries})
    ids = [d.id for d in documents]
    transaction.on_commit(lambda: _queue_processing(ids))
    knowledge_base_purge_old_versions(kb=kb)
    return IngestResult(version=version, documents=documents)


@transaction.atomic
def document_delete(*, document: Document, user: User | None) -> KnowledgeBaseVersion:
    """Remove a document from the current version (its chunks stay queryable in past versions)."""
    kb = _lock_kb(document.knowledge_base)
    document = Document.objects.select_for_update().get(pk=document.pk)
    if document.status in _BUSY:
        raise Conflict("The document is still being processed; delete it when it is ready or failed.")
    if document.status == DocumentStatus.DELETED:
        raise Conflict("The document is already deleted.")
    version = _version_next(kb, user=user, kind="delete", note=f"Deleted {document.title}"[:500])
    Chunk.objects.filter(document=document, valid_to=F("valid_from")).delete()  # leftovers of failed runs
    removed = Chunk.objects.filter(document=document, valid_to__isnull=True).update(valid_to=version.number)
    path, size = document.storage_path, document.size_bytes
    if path:
        usage.usage_record(documents=-1, stored_bytes=-size)
        transaction.on_commit(lambda: storage.storage_delete(path))
    document.status = DocumentStatus.DELETED
    document.storage_path = ""
    document.size_bytes = 0
    document.chunk_count = 0
    document.progress = 0
    document.save()
    version.changes = {
        **version.changes,
        "removed": removed,
        "documents": [{"id": document.id, "title": document.title, "action": "deleted"}],
    }
    version.save(update_fields=["changes"])
    _audit(
        "knowledge_base.document_delete",
        kb,
        user=user,
        before={"document_id": document.id, "title": document.title},
        after={"version": version.number},
    )
    publish_document(document)
    knowledge_base_purge_old_versions(kb=kb)
    transaction.on_commit(lambda: version_statistics_task.delay(kb.pk))  # a new version, settled at once
    return version


# --- rollback and retention --------------------------------------------------------------------------

_COPY_FOR_ROLLBACK = (
    "INSERT INTO knowledge_chunk (knowledge_base_id, document_id, position, text, token_count, content_hash, "
    "metadata, page_start, page_end, section_path, embedding, embedding_dimension, valid_from, valid_to) "
    "SELECT knowledge_base_id, document_id, position, text, token_count, content_hash, metadata, page_start, "
    "page_end, section_path, embedding, embedding_dimension, %s, NULL FROM knowledge_chunk "
    "WHERE knowledge_base_id = %s AND valid_from <= %s AND valid_to > %s AND valid_to <> valid_from"
)


@transaction.atomic
def knowledge_base_rollback(*, kb: KnowledgeBase, to_version: int, user: User | None) -> KnowledgeBaseVersion:
    """Make the content of `to_version` current again, as a new version (history is never rewritten).
    No embedding is recomputed: rows are closed or copied with their vectors."""
    kb = _lock_kb(kb)
    oldest = oldest_retained_version(kb)
    if not oldest <= to_version < kb.current_version:
        raise InvalidInput(
            f"Choose a version between {oldest} and {kb.current_version - 1} (older ones are not retained).",
            field="version",
        )
    if kb.documents.filter(status__in=_BUSY).exists():
        raise Conflict("Documents are still being processed; roll back when ingestion has finished.")
    version = _version_next(
        kb,
        user=user,
        kind="rollback",
        note=f"Rolled back to version {to_version}",
        changes={"rolled_back_to": to_version},
    )
    n = version.number
    current = Chunk.objects.filter(knowledge_base=kb, valid_to__isnull=True)
    touched = set(current.filter(valid_from__gt=to_version).values_list("document_id", flat=True))
    removed = current.filter(valid_from__gt=to_version).update(valid_to=n)
    with connection.cursor() as cursor:
        # Rows valid at `to_version` but closed since (rows closed just above started after it: not matched).
        cursor.execute(
            "SELECT DISTINCT document_id FROM knowledge_chunk WHERE knowledge_base_id = %s AND "
            "valid_from <= %s AND valid_to > %s AND valid_to <> valid_from",
            [kb.id, to_version, to_version],
        )
        touched |= {row[0] for row in cursor.fetchall()}
        cursor.execute(_COPY_FOR_ROLLBACK, [n, kb.id, to_version, to_version])
        added = cursor.rowcount
    entries = []
    for document in Document.objects.select_for_update().filter(id__in=touched):
        count = Chunk.objects.filter(document=document, valid_to__isnull=True).count()
        document.chunk_count = count
        # The stored original may no longer match: forget the hash so the next upload is re-checked chunk by chunk.
        document.content_hash = ""
        document.status = DocumentStatus.READY if count else DocumentStatus.DELETED
        document.error = ""
        document.save()
        entries.append({"id": document.id, "title": document.title, "action": "restored" if count else "removed"})
        publish_document(document)
    version.changes = {**version.changes, "added": added, "removed": removed, "documents": entries}
    version.save(update_fields=["changes"])
    _audit(
        "knowledge_base.rollback",
        kb,
        user=user,
        after={"version": n, "rolled_back_to": to_version, "documents": entries},
    )
    knowledge_base_purge_old_versions(kb=kb)
    transaction.on_commit(lambda: version_statistics_task.delay(kb.pk))  # a new version, settled at once
    return version


@transaction.atomic
def knowledge_base_restore_to_time(*, kb: KnowledgeBase, at: dt.datetime, user: User | None) -> KnowledgeBaseVersion:
    """Make the content the knowledge base had at `at` (the version current then) current again, through
    knowledge_base_rollback so the same checks, event and audit entry apply. Conflict when nothing changed since."""
    kb = _lock_kb(kb)
    source = version_at(kb=kb, at=at)
    if source.number == kb.current_version:
        raise Conflict(f"The knowledge base has not changed since then: version {source.number} is still current.")
    return knowledge_base_rollback(kb=kb, to_version=source.number, user=user)


def oldest_retained_version(kb: KnowledgeBase) -> int:
    return max(0, kb.current_version - kb.versions_retained + 1)


def knowledge_base_purge_old_versions(*, kb: KnowledgeBase) -> int:
    """Retention: drop versions older than the last `versions_retained`, and the chunks valid only in them.
    Returns the number of chunks purged."""
    oldest = oldest_retained_version(kb)
    if oldest <= 1:
        return 0
    # valid_to <= oldest: the row was closed before the oldest retained version, so no retained version sees it.
    # Staged rows (valid_to == valid_from) belong to runs in flight: theirs to publish or drop.
    purged, _ = (
        Chunk.objects.filter(knowledge_base=kb, valid_to__isnull=False, valid_to__lte=oldest)
        .exclude(valid_to=F("valid_from"))
        .delete()
    )
    KnowledgeBaseVersion.objects.filter(knowledge_base=kb, number__lt=oldest).delete()
    version_statistics_drop_before(knowledge_base=kb, number=oldest)
    return purged
