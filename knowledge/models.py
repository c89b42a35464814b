"""Knowledge bases (tenant schema).

Chunks are immutable rows stamped with the knowledge-base versions they are valid in
(`valid_from` <= v < `valid_to`, NULL = still current). An ingestion batch or deletion creates a new
version; querying a past version or rolling back is a filter / a re-stamp, never a re-embed.

Rows being ingested are *staged* with an empty range (valid_from == valid_to == the batch's version), so
no version query sees them; publishing a document sets their valid_to to NULL in one transaction.
"""

from django.conf import settings
from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVector, SearchVectorField
from django.db import models
from pgvector.django import VectorField

from core.models import SharedResource

from .ocr import DEFAULT_OCR_LANGUAGE

DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"
DEFAULT_EMBEDDING_DIMENSION = 384


class KnowledgeBase(SharedResource):
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    embedding_model = models.CharField(max_length=200, default=DEFAULT_EMBEDDING_MODEL)
    embedding_dimension = models.PositiveIntegerField(default=DEFAULT_EMBEDDING_DIMENSION)
    chunk_size = models.PositiveIntegerField(default=256, help_text="Target chunk size in tokens.")
    chunk_overlap = models.PositiveIntegerField(default=32, help_text="Overlap between chunks in tokens.")
    # Retrieval settings (fusion weights, modes): see knowledge.retrieval for keys and defaults.
    search_settings = models.JSONField(default=dict, blank=True)
    current_version = models.PositiveIntegerField(default=0)
    versions_retained = models.PositiveIntegerField(default=20)
    # Tesseract language codes for scanned pages and images ("eng", "eng+deu"); checked against the installed
    # ones when set (knowledge.ocr.ocr_language_validate).
    ocr_language = models.CharField(max_length=100, default=DEFAULT_OCR_LANGUAGE)
    # Whether finishing an ingestion re-tunes search on the new version (knowledge.tuning). Off until the owner
    # asks for a tuning: on the Python FAQ the pseudo-queries favoured the lexical leg and the tuned setting
    # ranked real questions worse (MRR 0.84 -> 0.74), so it is not applied behind anyone's back. A reset turns
    # it off again.
    auto_tune = models.BooleanField(default=False, db_default=False)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class DocumentStatus(models.TextChoices):
    PENDING = "pending", "Waiting"
    PROCESSING = "processing", "Processing"
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"
    DELETED = "deleted", "Deleted"


class Document(models.Model):
    knowledge_base = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="documents")
    title = models.CharField(max_length=500)
    source_type = models.CharField(max_length=8, choices=[("file", "File"), ("text", "Text"), ("url", "URL")])
    source_url = models.URLField(max_length=2000, blank=True)
    storage_path = models.CharField(max_length=1000, blank=True, help_text="tenant/<schema>/kb/<id>/... in storage")
    mime_type = models.CharField(max_length=200, blank=True)
    size_bytes = models.BigIntegerField(default=0)
    content_hash = models.CharField(max_length=64, blank=True, db_index=True)
    status = models.CharField(max_length=12, choices=DocumentStatus.choices, default=DocumentStatus.PENDING)
    error = models.TextField(blank=True)
    progress = models.PositiveSmallIntegerField(default=0)
    page_count = models.PositiveIntegerField(default=0)
    chunk_count = models.PositiveIntegerField(default=0)
    metadata = models.JSONField(default=dict, blank=True)
    # Users (public schema) are referenced without a database foreign key, here and below: core/models.py says why.
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+", db_constraint=False
    )
    processing_started_at = models.DateTimeField(null=True, blank=True)
    # Ingestion bookkeeping (knowledge.pipeline): the version this pending ingestion will publish into,
    # the claim token of the run that owns it (a stale run can never publish), runs that claimed it and never gave it
    # back (the current one plus those whose worker was killed: capped by KNOWLEDGE_INGEST_MAX_INTERRUPTIONS).
    ingest_version = models.PositiveIntegerField(null=True, blank=True)
    processing_token = models.CharField(max_length=32, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    original_filename = models.CharField(max_length=255, blank=True)
    # The stored file a re-upload replaces: deleted once the new one is published, restored if it fails.
    replaced_storage_path = models.CharField(max_length=1000, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["knowledge_base", "status"]),
            models.Index(fields=["knowledge_base", "title"], name="document_kb_title"),
        ]

    def __str__(self) -> str:
        return self.title


def passage_location(page_start: int | None, page_end: int | None, section_path: list[str]) -> str:
    """The label the dashboard shows, e.g. "p. 12 · Installation › Upgrading" ("pp. 3–4" across pages)."""
    parts = []
    if page_start is not None:
        same = page_end in (None, page_start)
        parts.append(f"p. {page_start}" if same else f"pp. {page_start}\u2013{page_end}")
    if section_path:
        parts.append(" \u203a ".join(section_path))
    return " \u00b7 ".join(parts)


class Chunk(models.Model):
    knowledge_base = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="chunks")
    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="chunks")
    position = models.PositiveIntegerField()
    text = models.TextField()
    token_count = models.PositiveIntegerField(default=0)
    content_hash = models.CharField(max_length=64)
    metadata = models.JSONField(default=dict, blank=True)  # heading path, page, offsets
    # Where the passage is in its document, for citations: PDF/scan pages (1-based, inclusive; NULL for
    # formats without pages) and the trail of headings above it (["Installation", "Upgrading"]).
    page_start = models.PositiveIntegerField(null=True, blank=True)
    page_end = models.PositiveIntegerField(null=True, blank=True)
    # A database default too: raw inserts that predate the column (bench/retrieval.py's COPY) stay valid.
    section_path = models.JSONField(
        default=list, db_default=models.Value([], output_field=models.JSONField()), blank=True
    )
    # Dimension varies per knowledge base; HNSW indexes are per dimension (see migration).
    embedding = VectorField(null=True)
    embedding_dimension = models.PositiveSmallIntegerField(default=DEFAULT_EMBEDDING_DIMENSION)
    search_vector = models.GeneratedField(
        expression=SearchVector("text", config="english"),
        output_field=SearchVectorField(),
        db_persist=True,
    )
    valid_from = models.PositiveIntegerField(help_text="First knowledge-base version containing this chunk.")
    valid_to = models.PositiveIntegerField(null=True, blank=True, help_text="First version without it.")

    class Meta:
        ordering = ["document_id", "position"]
        indexes = [
            GinIndex(fields=["search_vector"], name="chunk_search_vector_gin"),
            models.Index(fields=["knowledge_base", "valid_to"], name="chunk_kb_current"),
            models.Index(fields=["document", "content_hash"], name="chunk_doc_hash"),
        ]

    @property
    def location(self) -> str:
        return passage_location(self.page_start, self.page_end, self.section_path or [])


class KnowledgeBaseVersion(models.Model):
    knowledge_base = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    note = models.CharField(max_length=500, blank=True)
    changes = models.JSONField(default=dict, blank=True)  # {"added": n, "removed": n, "documents": [...]}
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+", db_constraint=False
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # The search tuning measured on this version's content (knowledge.tuning.TuningRecord as a dict; empty: never
    # tuned). Search uses the newest record at or below the current version (knowledge.retrieval.search_settings_for).
    search_tuning = models.JSONField(
        default=dict, db_default=models.Value({}, output_field=models.JSONField()), blank=True
    )

    class Meta:
        ordering = ["-number"]
        constraints = [
            models.UniqueConstraint(fields=["knowledge_base", "number"], name="kb_version_unique_number"),
        ]


class VersionStatistics(models.Model):
    """BM25's collection statistics of one knowledge-base version, stored once the version is settled (no document
    of it or of an earlier version still in flight: from then on its content never changes), so a search reads them
    in its first statement instead of counting over every chunk (knowledge.statistics). A version without them
    (in flight, or settled before they existed) is counted as before (knowledge.retrieval)."""

    # Indexed by the unique constraint below, which leads with it.
    knowledge_base = models.ForeignKey(
        KnowledgeBase, on_delete=models.CASCADE, related_name="statistics", db_index=False
    )
    number = models.PositiveIntegerField()
    chunks = models.PositiveIntegerField()  # BM25's N
    avgdl = models.FloatField()  # average tsvector length, as avg() computes it
    # Chunks with a vector of this dimension (the knowledge base's when counted): the unfiltered dense scope's size.
    embedded = models.PositiveIntegerField()
    embedding_dimension = models.PositiveSmallIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["knowledge_base", "number"], name="kb_statistics_unique_number"),
        ]


class VersionTerm(models.Model):
    """The document frequency of one lexeme in one version (VersionStatistics): every lexeme of the version's
    chunks has a row, so a lexeme without one occurs in none."""

    # The key is the lookup (a search reads its query's lexemes of one version): no surrogate id to index as well.
    pk = models.CompositePrimaryKey("statistics_id", "lexeme")
    statistics = models.ForeignKey(VersionStatistics, on_delete=models.CASCADE, related_name="terms", db_index=False)
    lexeme = models.TextField()
    documents = models.PositiveIntegerField()
