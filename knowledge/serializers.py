"""What the knowledge API reads and answers: request bodies and every response body of knowledge/apis.py and
knowledge/search_apis.py. The views answer through these, so /api/v1/schema/ describes what the server sends."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from core.openapi import ErrorSerializer

from .models import DocumentStatus
from .retrieval import DEFAULT_TOP_K, MAX_TOP_K, MODES, QUERY_MAX_CHARS

ORG_ACCESS = ["none", "viewer", "editor"]


class _KeepsUnlistedKeys(serializers.Serializer[dict[str, Any]]):
    """Listed keys are guaranteed; others (a reranker's score, a newer pipeline's field) pass through unchanged."""

    def to_representation(self, instance: Any) -> dict[str, Any]:
        return {**instance, **super().to_representation(instance)}


# --- Knowledge bases -----------------------------------------------------------------------------------


class KnowledgeBasePermissionsSerializer(serializers.Serializer[dict[str, Any]]):
    edit = serializers.BooleanField()
    delete = serializers.BooleanField()
    share = serializers.BooleanField()


class KnowledgeBaseSerializer(serializers.Serializer[dict[str, Any]]):
    id = serializers.IntegerField()
    name = serializers.CharField()
    description = serializers.CharField()
    owner_id = serializers.IntegerField(allow_null=True)
    org_access = serializers.ChoiceField(choices=ORG_ACCESS)
    embedding_model = serializers.CharField()
    embedding_dimension = serializers.IntegerField()
    chunk_size = serializers.IntegerField()
    chunk_overlap = serializers.IntegerField()
    search_settings = serializers.DictField(help_text="mode, weights, reranking: the defaults of searches.")
    ocr_language = serializers.CharField()
    current_version = serializers.IntegerField()
    versions_retained = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    can = KnowledgeBasePermissionsSerializer(
        required=False, help_text="What the caller may do with it (single knowledge base responses)."
    )


class KnowledgeBaseListSerializer(serializers.Serializer[dict[str, Any]]):
    results = KnowledgeBaseSerializer(many=True)


# --- Documents -----------------------------------------------------------------------------------------


class DocumentSerializer(serializers.Serializer[dict[str, Any]]):
    id = serializers.IntegerField()
    knowledge_base_id = serializers.IntegerField()
    title = serializers.CharField()
    source_type = serializers.ChoiceField(choices=["file", "text", "url"])
    source_url = serializers.CharField(allow_null=True)
    filename = serializers.CharField(allow_null=True)
    mime_type = serializers.CharField()
    size_bytes = serializers.IntegerField()
    content_hash = serializers.CharField()
    status = serializers.CharField(help_text="pending, processing, ready, failed, ... Poll until ready.")
    progress = serializers.IntegerField(help_text="0-100")
    error = serializers.CharField(allow_null=True)
    page_count = serializers.IntegerField()
    chunk_count = serializers.IntegerField()
    metadata = serializers.DictField()
    version = serializers.IntegerField(allow_null=True, help_text="The knowledge-base version that ingested it.")
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class DocumentListSerializer(serializers.Serializer[dict[str, Any]]):
    results = DocumentSerializer(many=True)


class DocumentListQuerySerializer(serializers.Serializer[dict[str, Any]]):
    """GET /knowledge-bases/{id}/documents/ query parameters."""

    status = serializers.ChoiceField(
        choices=DocumentStatus.values, required=False, allow_blank=True, help_text="Only this status."
    )
    deleted = serializers.BooleanField(required=False, default=False, help_text="Include deleted documents.")


class TextSourceSerializer(serializers.Serializer[dict[str, Any]]):
    title = serializers.CharField()
    text = serializers.CharField()


class DocumentCreateSerializer(serializers.Serializer[dict[str, Any]]):
    """JSON: any mix of sources; each succeeds or fails on its own."""

    title = serializers.CharField(required=False, help_text="With `text`: the document's title; with `url`: too.")
    text = serializers.CharField(required=False)
    texts = TextSourceSerializer(many=True, required=False)
    url = serializers.URLField(required=False, help_text="A public page to fetch.")
    urls = serializers.ListField(child=serializers.URLField(), required=False)
    metadata = serializers.DictField(required=False, help_text="Stored with every document (search filters).")
    note = serializers.CharField(max_length=500, required=False, help_text="The new version's note.")


class DocumentUploadSerializer(serializers.Serializer[dict[str, Any]]):
    """multipart/form-data: files (repeat `files`), plus any source of the JSON form."""

    files = serializers.ListField(child=serializers.FileField(), required=False, help_text="Repeat the field.")
    title = serializers.CharField(required=False)
    text = serializers.CharField(required=False)
    texts = serializers.CharField(required=False, help_text='A JSON list: [{"title": ..., "text": ...}].')
    url = serializers.URLField(required=False)
    metadata = serializers.CharField(required=False, help_text="A JSON object.")
    note = serializers.CharField(max_length=500, required=False)


class IngestErrorSerializer(ErrorSerializer):
    name = serializers.CharField(help_text="The file name, URL or title refused.")


class DocumentIngestSerializer(serializers.Serializer[dict[str, Any]]):
    version = serializers.IntegerField(allow_null=True, help_text="The new knowledge-base version, if any.")
    documents = DocumentSerializer(many=True, help_text="Queued for ingestion: poll each until ready.")
    unchanged = DocumentSerializer(many=True, help_text="Identical to a stored document: nothing to do.")
    errors = IngestErrorSerializer(many=True, help_text="Sources refused; the others went on.")


class DocumentIngestRefusedSerializer(ErrorSerializer):
    """Every source was refused: the error of the first, and all of them in `errors`. A request refused before any
    source was read (no source at all, a malformed form) carries the error alone."""

    version = serializers.IntegerField(allow_null=True, required=False)
    documents = DocumentSerializer(many=True, required=False)
    unchanged = DocumentSerializer(many=True, required=False)
    errors = IngestErrorSerializer(many=True, required=False)


class DocumentDeletedSerializer(serializers.Serializer[dict[str, Any]]):
    version = serializers.IntegerField(help_text="The version without the document (roll back to restore it).")
    document = DocumentSerializer()


class ChunkSerializer(serializers.Serializer[dict[str, Any]]):
    id = serializers.IntegerField()
    position = serializers.IntegerField()
    text = serializers.CharField()
    token_count = serializers.IntegerField()
    content_hash = serializers.CharField()
    metadata = serializers.DictField()
    page_start = serializers.IntegerField(allow_null=True)
    page_end = serializers.IntegerField(allow_null=True)
    section_path = serializers.JSONField(help_text="The headings above the passage, outermost first.")
    valid_from = serializers.IntegerField(help_text="First knowledge-base version containing it.")
    valid_to = serializers.IntegerField(allow_null=True, help_text="First version without it; null = current.")


class ChunkListSerializer(serializers.Serializer[dict[str, Any]]):
    results = ChunkSerializer(many=True)


# --- Versions ------------------------------------------------------------------------------------------


class KnowledgeBaseVersionSerializer(serializers.Serializer[dict[str, Any]]):
    number = serializers.IntegerField()
    note = serializers.CharField()
    changes = serializers.DictField(help_text="added, removed, documents")
    created_by_id = serializers.IntegerField(allow_null=True)
    created_at = serializers.DateTimeField()


class KnowledgeBaseRestoreToTimeSerializer(serializers.Serializer[dict[str, Any]]):
    at = serializers.DateTimeField(
        help_text="ISO-8601 time (without an offset: UTC). The content current then becomes current as a new version."
    )


class KnowledgeBaseVersionListSerializer(serializers.Serializer[dict[str, Any]]):
    current_version = serializers.IntegerField()
    oldest_retained = serializers.IntegerField(help_text="Older versions can no longer be searched or restored.")
    results = KnowledgeBaseVersionSerializer(many=True)


class VersionDiffDocumentSerializer(serializers.Serializer[dict[str, Any]]):
    document_id = serializers.IntegerField()
    title = serializers.CharField(allow_null=True)
    added = serializers.IntegerField()
    removed = serializers.IntegerField()


class VersionDiffChunkSerializer(serializers.Serializer[dict[str, Any]]):
    document_id = serializers.IntegerField()
    position = serializers.IntegerField()
    text = serializers.CharField()


class VersionDiffSerializer(serializers.Serializer[dict[str, Any]]):
    base = serializers.IntegerField()
    target = serializers.IntegerField()
    added = serializers.IntegerField()
    removed = serializers.IntegerField()
    documents = VersionDiffDocumentSerializer(many=True)
    added_chunks = VersionDiffChunkSerializer(many=True)
    removed_chunks = VersionDiffChunkSerializer(many=True)


class KnowledgeBaseVersionDetailSerializer(KnowledgeBaseVersionSerializer):
    diff = VersionDiffSerializer()


# --- Search tuning -------------------------------------------------------------------------------------


class TuningGridEntrySerializer(serializers.Serializer[dict[str, Any]]):
    settings = serializers.DictField(help_text="What this setting changes from the defaults ({}: the defaults).")
    mrr = serializers.FloatField(help_text="Its MRR@10 on the pseudo-queries.")


class KnowledgeBaseTuningSerializer(serializers.Serializer[dict[str, Any]]):
    auto_tune = serializers.BooleanField(help_text="Whether finishing an ingestion tunes search again.")
    running = serializers.BooleanField(help_text="A tuning is queued or running.")
    overridden = serializers.ListField(
        child=serializers.CharField(), help_text="Tuned keys the knowledge base's own search_settings override."
    )
    status = serializers.ChoiceField(
        choices=["tuned", "default", "too_few_questions", "reset"],
        required=False,
        help_text="Absent until the first tuning. tuned: search uses `settings`; default: the defaults were as "
        "good; too_few_questions: not enough text to measure; reset: back to the defaults by hand.",
    )
    settings = serializers.DictField(required=False, help_text="The search settings the tuning applies.")
    version = serializers.IntegerField(required=False, help_text="The knowledge-base version it measured.")
    questions = serializers.IntegerField(required=False, help_text="Pseudo-queries made from the documents.")
    kinds = serializers.DictField(
        child=serializers.IntegerField(), required=False, help_text="Questions per kind: heading, title, sentence."
    )
    mrr_default = serializers.FloatField(required=False, allow_null=True, help_text="MRR@10 with the defaults.")
    mrr_tuned = serializers.FloatField(required=False, allow_null=True, help_text="MRR@10 with `settings`.")
    grid = TuningGridEntrySerializer(many=True, required=False, help_text="Every setting tried, defaults first.")
    level = serializers.CharField(required=False, help_text="passage: a hit is a passage of the answer.")
    requested_by = serializers.IntegerField(required=False, allow_null=True, help_text="Who asked (null: ingestion).")
    tuned_at = serializers.DateTimeField(required=False)
    seconds = serializers.FloatField(required=False, help_text="How long the measurement took.")


# --- Search --------------------------------------------------------------------------------------------


class SearchInputSerializer(serializers.Serializer[dict[str, Any]]):
    query = serializers.CharField(max_length=QUERY_MAX_CHARS, trim_whitespace=True)
    top_k = serializers.IntegerField(min_value=1, max_value=MAX_TOP_K, default=DEFAULT_TOP_K)
    mode = serializers.ChoiceField(
        choices=MODES, required=False, allow_null=True, default=None, help_text="Default: the knowledge base's."
    )
    document_ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1), required=False, allow_null=True, max_length=1000
    )
    metadata = serializers.DictField(required=False, allow_null=True, help_text="Documents whose metadata match.")
    version = serializers.IntegerField(
        min_value=0, required=False, allow_null=True, help_text="Search as of this version (default: current)."
    )


class SearchHitSerializer(_KeepsUnlistedKeys):
    chunk_id = serializers.IntegerField()
    document_id = serializers.IntegerField()
    document_title = serializers.CharField()
    position = serializers.IntegerField()
    text = serializers.CharField()
    score = serializers.FloatField()
    dense_rank = serializers.IntegerField(allow_null=True, help_text="Rank in the dense (vector) candidates.")
    dense_score = serializers.FloatField(allow_null=True, help_text="Cosine similarity.")
    lexical_rank = serializers.IntegerField(allow_null=True, help_text="Rank in the lexical (BM25) candidates.")
    lexical_score = serializers.FloatField(allow_null=True, help_text="BM25 score.")
    rerank_score = serializers.FloatField(allow_null=True)
    found_by = serializers.ListField(child=serializers.CharField(), help_text="dense, lexical")
    page_start = serializers.IntegerField(allow_null=True, help_text="First page of the passage (PDF, scans).")
    page_end = serializers.IntegerField(allow_null=True, help_text="Last page of the passage (PDF, scans).")
    section_path = serializers.ListField(
        child=serializers.CharField(), help_text='Headings above the passage, outermost first: ["Install", "Upgrade"].'
    )
    citation = serializers.DictField(help_text="How to cite the passage: document, position, pages, section.")


class SearchResultSerializer(serializers.Serializer[dict[str, Any]]):
    knowledge_base_id = serializers.IntegerField()
    query = serializers.CharField()
    mode = serializers.ChoiceField(choices=MODES)
    version = serializers.IntegerField()
    reranker = serializers.CharField(allow_null=True, help_text="The knowledge base's reranker (null: none).")
    reranked = serializers.BooleanField(
        help_text="Whether the results come in the reranker's order. False with a reranker named: it failed or "
        "timed out, and the results come in the fused order (each hit's rerank_score is then null)."
    )
    results = SearchHitSerializer(many=True)
