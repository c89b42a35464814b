"""Celery tasks for ingestion, all on the "ingest" queue (CELERY_TASK_ROUTES "knowledge.*"). Thin: they take
IDs and call knowledge.pipeline.

ingest_document_task(document_id)
    claim -> extract/chunk/diff -> (small) embed + publish
                                -> (large) embed_part_task x N, in parallel; the part that finds no staged row
                                   left without a vector publishes the document
tune_search_task(knowledge_base_id)
    queued (debounced) after a publish, or by the owner: knowledge.tuning measures and stores the setting
version_statistics_task(knowledge_base_id)
    queued after a deletion or a rollback (a new version, settled at once): knowledge.statistics stores its term
    statistics (a publish or failure that settles a version stores them in its own worker, knowledge.pipeline)
No Celery chord: chords need a result backend, which the product does not run (task state lives in our own
tables); the database decides which part is last. Tenant context travels in the message headers
(tenant-schemas-celery adds the current schema to every task sent, including from inside a task).
"""

from __future__ import annotations

import logging

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.db import connection
from django_tenants.utils import get_public_schema_name

from core.errors import DomainError
from core.tenancy import for_each_tenant

from . import pipeline, statistics, tuning
from .models import Document

logger = logging.getLogger(__name__)
INGEST_QUEUE = "ingest"
MAX_RETRIES = 5


def _backoff(retries: int) -> int:
    return min(300, 5 * 2**retries)  # 5 s, 10 s, 20 s ... capped at 5 minutes


def _time_limit_reason(task) -> str:
    # The ingest queue's soft limit (settings.CELERY_QUEUE_TIME_LIMITS): retrying would only hit it again.
    return (
        f"Processing stopped at the time limit ({task.soft_time_limit:.0f} s per task): the document is too large or "
        "too slow to read. Split it, or ask an operator to raise the ingest queue's limit."
    )


def _retry_or_fail(task, document_id: int, token: str, exc: Exception):
    if task.request.retries >= MAX_RETRIES:
        pipeline.document_fail(document_id, token, f"Processing failed after {MAX_RETRIES + 1} attempts: {exc}")
        return "failed"
    logger.warning("document %s: retrying after %r", document_id, exc)
    pipeline.document_release(document_id, token)
    raise task.retry(exc=exc, countdown=_backoff(task.request.retries))


@shared_task(name="knowledge.ingest_document", bind=True, acks_late=True, max_retries=MAX_RETRIES)
def ingest_document_task(self, document_id: int) -> str:
    claimed = pipeline.document_claim(document_id)
    if claimed is None:
        return "skipped"  # another run owns it, or it is already done: a duplicate delivery
    _, token = claimed
    try:
        result = pipeline.document_prepare(document_id, token)
    except pipeline.StaleRun:
        return "stale"
    except DomainError as exc:  # the document itself is the problem: retrying will not help
        pipeline.document_fail(document_id, token, exc.message)
        return "failed"
    except SoftTimeLimitExceeded:
        pipeline.document_fail(document_id, token, _time_limit_reason(self))
        return "failed"
    except Exception as exc:  # noqa: BLE001 - infrastructure trouble: retry with backoff
        return _retry_or_fail(self, document_id, token, exc)
    if result.done:
        _tune_when_settled(document_id)
        return "published"
    for first, last in result.parts:
        embed_part_task.apply_async(args=(document_id, token, first, last), queue=INGEST_QUEUE)
    return f"split into {len(result.parts)} parts"


@shared_task(name="knowledge.embed_part", bind=True, acks_late=True, max_retries=MAX_RETRIES)
def embed_part_task(self, document_id: int, token: str, first: int, last: int) -> str:
    try:
        published = pipeline.document_embed_part(document_id, token, first, last)
    except pipeline.StaleRun:
        return "stale"  # the document failed, was re-claimed or deleted meanwhile
    except DomainError as exc:  # the document itself is the problem (e.g. the model's vectors do not fit)
        pipeline.document_fail(document_id, token, exc.message)
        return "failed"
    except SoftTimeLimitExceeded:
        pipeline.document_fail(document_id, token, _time_limit_reason(self))
        return "failed"
    except Exception as exc:  # noqa: BLE001 - infrastructure trouble: retry this part with backoff
        if self.request.retries >= MAX_RETRIES:
            pipeline.document_fail(
                document_id, token, f"Embedding part {first}-{last} failed after {MAX_RETRIES + 1} attempts: {exc}"
            )
            return "failed"
        logger.warning("document %s part %s-%s: retrying after %r", document_id, first, last, exc)
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc
    if published:
        _tune_when_settled(document_id)
    return "published" if published else "embedded"


def _tune_when_settled(document_id: int) -> None:
    """A document was published: its knowledge base's search is tuned again once ingestion settles (debounced)."""
    kb_id = Document.objects.filter(id=document_id).values_list("knowledge_base_id", flat=True).first()
    if kb_id is not None:
        tuning.tuning_schedule(knowledge_base_id=kb_id, enqueue=tune_search_task.apply_async)


@shared_task(name="knowledge.tune_search", bind=True, acks_late=True, max_retries=2)
def tune_search_task(self, knowledge_base_id: int, on_demand: bool = False, requested_by: int | None = None) -> str:
    """Tune the knowledge base's search on its own documents (knowledge.tuning). Automatic runs (after ingestion)
    wait for it to settle; on-demand runs (the owner's button) measure the current version at once."""
    try:
        return tuning.tuning_run(
            knowledge_base_id=knowledge_base_id,
            on_demand=on_demand,
            requested_by=requested_by,
            enqueue=tune_search_task.apply_async,
        )
    except DomainError as exc:  # search unavailable (the embedder, the database): try again a little later
        logger.warning("tuning knowledge base %s: retrying after %r", knowledge_base_id, exc)
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc


@shared_task(name="knowledge.version_statistics", acks_late=True)
def version_statistics_task(knowledge_base_id: int) -> str:
    stored = statistics.version_statistics_build(knowledge_base_id=knowledge_base_id)
    return "stored" if stored is not None else "not settled"


@shared_task(name="knowledge.requeue_stuck_documents")
def requeue_stuck_documents_task() -> dict:
    """Beat: re-queue documents whose worker died (processing past the lease) or whose task was lost.
    Runs for every tenant when beat sends it from the public schema."""
    if connection.schema_name != get_public_schema_name():
        return {connection.schema_name: pipeline.requeue_stuck(ingest_document_task.delay)}
    found = {}
    for schema in for_each_tenant():
        ids = pipeline.requeue_stuck(ingest_document_task.delay)
        if ids:
            found[schema] = ids
    return found
