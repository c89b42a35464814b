"""Knowledge-base REST API (thin views: parse, call a selector or service, shape the output)."""

from __future__ import annotations

import json

from django.conf import settings
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from core.db import reads_from_replica
from core.errors import ErrorCode, InvalidInput, error_body
from core.openapi import error_responses
from core.parsers import BoundedJSONParser, json_loads_bounded
from iam.policy import principal_can, principal_from_request

from . import selectors, services, tuning
from .models import DEFAULT_EMBEDDING_MODEL, Document, KnowledgeBase, KnowledgeBaseVersion
from .serializers import (
    ChunkListSerializer,
    DocumentCreateSerializer,
    DocumentDeletedSerializer,
    DocumentIngestRefusedSerializer,
    DocumentIngestSerializer,
    DocumentListQuerySerializer,
    DocumentListSerializer,
    DocumentSerializer,
    DocumentUploadSerializer,
    KnowledgeBaseListSerializer,
    KnowledgeBaseRestoreToTimeSerializer,
    KnowledgeBaseSerializer,
    KnowledgeBaseTuningSerializer,
    KnowledgeBaseVersionDetailSerializer,
    KnowledgeBaseVersionListSerializer,
    KnowledgeBaseVersionSerializer,
)
from .tasks import tune_search_task
from .uploads import LimitedUploadHandler

MAX_FILES_PER_UPLOAD = 50
VERSION_PARAMETER = OpenApiParameter("version", int, description="As of this knowledge-base version.")
_STATUS_FOR_CODE = {
    ErrorCode.UNSUPPORTED_TYPE: 415,
    ErrorCode.FILE_TOO_LARGE: 413,
    ErrorCode.EMPTY_DOCUMENT: 422,
    ErrorCode.UNREADABLE_DOCUMENT: 422,
    ErrorCode.UNSAFE_URL: 400,
    ErrorCode.CONFLICT: 409,
}


def kb_out(kb: KnowledgeBase, principal=None) -> dict:
    return {
        "id": kb.id,
        "name": kb.name,
        "description": kb.description,
        "owner_id": kb.owner_id,
        "org_access": kb.org_access,
        "embedding_model": kb.embedding_model,
        "embedding_dimension": kb.embedding_dimension,
        "chunk_size": kb.chunk_size,
        "chunk_overlap": kb.chunk_overlap,
        "search_settings": kb.search_settings,
        "ocr_language": kb.ocr_language,
        "current_version": kb.current_version,
        "versions_retained": kb.versions_retained,
        "created_at": kb.created_at,
        "updated_at": kb.updated_at,
        **({"can": {a: principal_can(principal, a, kb) for a in ("edit", "delete", "share")}} if principal else {}),
    }


def document_out(d: Document) -> dict:
    return {
        "id": d.id,
        "knowledge_base_id": d.knowledge_base_id,
        "title": d.title,
        "source_type": d.source_type,
        "source_url": d.source_url or None,
        "filename": d.original_filename or None,
        "mime_type": d.mime_type,
        "size_bytes": d.size_bytes,
        "content_hash": d.content_hash,
        "status": d.status,
        "progress": d.progress,
        "error": d.error or None,
        "page_count": d.page_count,
        "chunk_count": d.chunk_count,
        "metadata": {k: v for k, v in (d.metadata or {}).items() if k not in ("replaced_size",)},
        "version": d.ingest_version,
        "created_at": d.created_at,
        "updated_at": d.updated_at,
    }


def version_out(v: KnowledgeBaseVersion) -> dict:
    return {
        "number": v.number,
        "note": v.note,
        "changes": v.changes,
        "created_by_id": v.created_by_id,
        "created_at": v.created_at,
    }


class KnowledgeBaseInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False)
    description = serializers.CharField(required=False, allow_blank=True)
    embedding_model = serializers.CharField(max_length=200, required=False)
    chunk_size = serializers.IntegerField(required=False)
    chunk_overlap = serializers.IntegerField(required=False)
    org_access = serializers.ChoiceField(choices=["none", "viewer", "editor"], required=False)
    versions_retained = serializers.IntegerField(required=False)
    search_settings = serializers.DictField(required=False)
    ocr_language = serializers.CharField(
        max_length=100, required=False, help_text="Tesseract languages for scanned pages and images: eng, eng+deu."
    )


# --- knowledge bases -------------------------------------------------------------------------------


@extend_schema(tags=["knowledge"])
class KnowledgeBaseListApi(APIView):
    required_scope = {"GET": "read", "POST": "write"}

    @extend_schema(responses=KnowledgeBaseListSerializer)
    @reads_from_replica()  # a listing: the replica serves it when there is one (core.db)
    def get(self, request):
        principal = principal_from_request(request)
        kbs = [kb_out(kb) for kb in selectors.knowledge_base_list(principal=principal)]
        return Response(KnowledgeBaseListSerializer({"results": kbs}).data)

    @extend_schema(
        request=KnowledgeBaseInputSerializer, responses={201: KnowledgeBaseSerializer, **error_responses(402)}
    )
    def post(self, request):
        principal = principal_from_request(request)
        serializer = KnowledgeBaseInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        if not data.get("name"):
            raise InvalidInput("The name is required.", field="name")
        kb = services.knowledge_base_create(principal=principal, **{"embedding_model": DEFAULT_EMBEDDING_MODEL, **data})
        return Response(KnowledgeBaseSerializer(kb_out(kb, principal)).data, status=status.HTTP_201_CREATED)


@extend_schema(tags=["knowledge"])
class KnowledgeBaseDetailApi(APIView):
    required_scope = {"GET": "read", "PATCH": "write", "DELETE": "write"}

    @extend_schema(responses=KnowledgeBaseSerializer)
    def get(self, request, kb_id: int):
        principal = principal_from_request(request)
        kb = selectors.knowledge_base_get(principal=principal, kb_id=kb_id)
        return Response(KnowledgeBaseSerializer(kb_out(kb, principal)).data)

    @extend_schema(request=KnowledgeBaseInputSerializer, responses=KnowledgeBaseSerializer)
    def patch(self, request, kb_id: int):
        principal = principal_from_request(request)
        kb = selectors.knowledge_base_get(principal=principal, kb_id=kb_id, action="edit")
        serializer = KnowledgeBaseInputSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        kb = services.knowledge_base_update(kb=kb, principal=principal, **data)
        return Response(KnowledgeBaseSerializer(kb_out(kb, principal)).data)

    @extend_schema(responses={204: None})
    def delete(self, request, kb_id: int):
        principal = principal_from_request(request)
        kb = selectors.knowledge_base_get(principal=principal, kb_id=kb_id, action="delete")
        services.knowledge_base_delete(kb=kb)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- documents -------------------------------------------------------------------------------------


class DocumentJSONParser(BoundedJSONParser):
    """A JSON body of texts may be as large as an uploaded file."""

    def max_bytes(self) -> int:
        return int(settings.KNOWLEDGE_MAX_FILE_BYTES)


@extend_schema(tags=["knowledge"])
class DocumentListApi(APIView):
    """GET: documents with status and progress. POST: add documents, several at once:
    multipart `files` (repeat the field), and/or JSON `{"title", "text"}`, `{"url"}`, or lists
    `texts: [{"title", "text"}]`, `urls: [...]`. Each source succeeds or fails on its own."""

    required_scope = {"GET": "read", "POST": "write"}
    parser_classes = [MultiPartParser, FormParser, DocumentJSONParser]

    def initialize_request(self, request, *args, **kwargs):
        # Before anything reads the body: refuse oversized files while they stream in.
        if request.method == "POST":
            handler = LimitedUploadHandler(request, max_bytes=settings.KNOWLEDGE_MAX_FILE_BYTES)
            request.upload_handlers.insert(0, handler)
            self.upload_limit = handler
        return super().initialize_request(request, *args, **kwargs)

    @extend_schema(
        parameters=[
            OpenApiParameter("status", str, description="Only documents in this status (ready, failed, ...)."),
            OpenApiParameter("deleted", int, enum=[1], description="1: include deleted documents."),
        ],
        responses=DocumentListSerializer,
    )
    def get(self, request, kb_id: int):
        kb = selectors.knowledge_base_get(principal=principal_from_request(request), kb_id=kb_id)
        query = DocumentListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        documents = selectors.document_list(
            kb=kb, status=query.validated_data.get("status") or None, include_deleted=query.validated_data["deleted"]
        )
        return Response(DocumentListSerializer({"results": [document_out(d) for d in documents]}).data)

    @extend_schema(
        summary="Add documents",
        description="Files (multipart), texts and URLs, several at once; each source succeeds or fails on its own. "
        "202: documents queued for ingestion (poll each until `status` is ready); 200: all identical to stored "
        "ones. When every source is refused: the error of the first, with all of them in `errors`.",
        request={"multipart/form-data": DocumentUploadSerializer, "application/json": DocumentCreateSerializer},
        examples=[
            OpenApiExample(
                "text",
                value={"title": "Key rotation", "text": "Rotate API keys every 90 days."},
                request_only=True,
                media_type="application/json",
            )
        ],
        responses={
            202: DocumentIngestSerializer,
            200: DocumentIngestSerializer,
            **{status: DocumentIngestRefusedSerializer for status in (400, 413, 415, 422)},
            **error_responses(402, 409, 507),
        },
    )
    def post(self, request, kb_id: int):
        principal = principal_from_request(request)
        kb = selectors.knowledge_base_get(principal=principal, kb_id=kb_id, action="edit")
        data = request.data
        if not isinstance(data, dict):  # a JSON list or scalar; forms are QueryDicts
            raise InvalidInput("Send a JSON object (or a multipart form).")
        rejected = [
            error_body(
                ErrorCode.FILE_TOO_LARGE,
                f"{name} is larger than the limit of {settings.KNOWLEDGE_MAX_FILE_BYTES} bytes.",
                name=name,
            )
            for name in self.upload_limit.rejected
        ]
        uploads = self._uploads(data, request.FILES.getlist("files") + request.FILES.getlist("file"))
        if not uploads and not rejected:
            raise InvalidInput("Send files (multipart `files`), `text` with a `title`, or a `url`.")
        if len(uploads) > MAX_FILES_PER_UPLOAD:
            raise InvalidInput(f"At most {MAX_FILES_PER_UPLOAD} documents per upload.")
        result = services.documents_ingest(
            kb=kb, user=principal.user, uploads=uploads, rejected=rejected, note=str(data.get("note", ""))[:500]
        )
        body = DocumentIngestSerializer(
            {
                "version": result.version.number if result.version else None,
                "documents": [document_out(d) for d in result.documents],
                "unchanged": [document_out(d) for d in result.unchanged],
                "errors": result.errors,
            }
        ).data
        if result.documents or result.unchanged:
            return Response(body, status=status.HTTP_202_ACCEPTED if result.documents else status.HTTP_200_OK)
        codes = {e["code"] for e in result.errors}
        code = ErrorCode(codes.pop()) if len(codes) == 1 else ErrorCode.INVALID
        first = result.errors[0]
        return Response(
            error_body(code, f"{first['name']}: {first['detail']}", **body), status=_STATUS_FOR_CODE.get(code, 400)
        )

    @staticmethod
    def _uploads(data, files) -> list[services.Upload]:
        metadata = data.get("metadata") or {}
        if isinstance(metadata, str):
            try:
                metadata = json_loads_bounded(metadata)
            except json.JSONDecodeError as exc:
                raise InvalidInput("metadata must be a JSON object.", field="metadata") from exc
        if not isinstance(metadata, dict):
            raise InvalidInput("metadata must be a JSON object.", field="metadata")
        uploads = [services.Upload(title=f.name, file=f, filename=f.name, metadata=metadata) for f in files]
        texts = data.get("texts") or []
        if isinstance(texts, str):  # multipart forms carry lists as a JSON string
            try:
                texts = json_loads_bounded(texts)
            except json.JSONDecodeError as exc:
                raise InvalidInput("texts must be a JSON list of {title, text}.", field="texts") from exc
        if not isinstance(texts, list):
            raise InvalidInput("texts must be a list of {title, text}.", field="texts")
        texts = list(texts)
        if data.get("text"):
            texts.append({"title": data.get("title") or "", "text": data.get("text")})
        for item in texts:
            if not isinstance(item, dict) or not str(item.get("title") or "").strip():
                raise InvalidInput("Each text needs a title.", field="title")
            uploads.append(
                services.upload_from_text(title=str(item["title"]), text=str(item.get("text") or ""), metadata=metadata)
            )
        urls = data.get("urls") or []
        urls = [urls] if isinstance(urls, str) else urls
        if not isinstance(urls, list) or not all(isinstance(url, str) for url in urls):
            raise InvalidInput("urls must be a list of URLs (strings).", field="urls")
        if data.get("url"):
            urls = [*urls, str(data.get("url"))]
        for url in urls:
            uploads.append(
                services.Upload(
                    title=str(data.get("title") or url) if len(urls) == 1 else str(url), url=str(url), metadata=metadata
                )
            )
        return uploads


@extend_schema(tags=["knowledge"])
class DocumentDetailApi(APIView):
    required_scope = {"GET": "read", "DELETE": "write"}

    @extend_schema(responses=DocumentSerializer)
    def get(self, request, kb_id: int, document_id: int):
        kb = selectors.knowledge_base_get(principal=principal_from_request(request), kb_id=kb_id)
        return Response(DocumentSerializer(document_out(selectors.document_get(kb=kb, document_id=document_id))).data)

    @extend_schema(responses={200: DocumentDeletedSerializer})
    def delete(self, request, kb_id: int, document_id: int):
        principal = principal_from_request(request)
        kb = selectors.knowledge_base_get(principal=principal, kb_id=kb_id, action="edit")
        document = selectors.document_get(kb=kb, document_id=document_id)
        version = services.document_delete(document=document, user=principal.user)
        deleted = {"version": version.number, "document": document_out(document)}
        return Response(DocumentDeletedSerializer(deleted).data)


@extend_schema(tags=["knowledge"])
class DocumentChunkListApi(APIView):
    """The chunks of one document, current or at `?version=N` (for citations and debugging)."""

    required_scope = "read"

    @extend_schema(parameters=[VERSION_PARAMETER], responses=ChunkListSerializer)
    def get(self, request, kb_id: int, document_id: int):
        _, _, chunks = selectors.document_passages_for(
            principal=principal_from_request(request),
            kb_id=kb_id,
            document_id=document_id,
            version=selectors.parse_version(request.query_params.get("version")),
        )
        return Response(
            ChunkListSerializer(
                {
                    "results": [
                        {
                            "id": c.id,
                            "position": c.position,
                            "text": c.text,
                            "token_count": c.token_count,
                            "content_hash": c.content_hash,
                            "metadata": c.metadata,
                            "page_start": c.page_start,
                            "page_end": c.page_end,
                            "section_path": c.section_path,
                            "valid_from": c.valid_from,
                            "valid_to": c.valid_to,
                        }
                        for c in chunks.defer("embedding")[:1000]
                    ]
                }
            ).data
        )


# --- versions --------------------------------------------------------------------------------------


@extend_schema(tags=["knowledge"])
class VersionListApi(APIView):
    required_scope = "read"

    @extend_schema(responses=KnowledgeBaseVersionListSerializer)
    def get(self, request, kb_id: int):
        kb = selectors.knowledge_base_get(principal=principal_from_request(request), kb_id=kb_id)
        body = {
            "current_version": kb.current_version,
            "oldest_retained": services.oldest_retained_version(kb),
            "results": [version_out(v) for v in selectors.version_list(kb=kb)],
        }
        return Response(KnowledgeBaseVersionListSerializer(body).data)


@extend_schema(tags=["knowledge"])
class VersionDetailApi(APIView):
    """One version and what changed: against the previous version, or `?against=N`."""

    required_scope = "read"

    @extend_schema(
        parameters=[OpenApiParameter("against", int, description="Compare with this version (default: previous).")],
        responses=KnowledgeBaseVersionDetailSerializer,
    )
    def get(self, request, kb_id: int, number: int):
        kb = selectors.knowledge_base_get(principal=principal_from_request(request), kb_id=kb_id)
        version = selectors.version_get(kb=kb, number=number)
        against = selectors.parse_version(request.query_params.get("against"))
        diff = selectors.version_diff(kb=kb, base=number - 1 if against is None else against, target=number)
        return Response(KnowledgeBaseVersionDetailSerializer({**version_out(version), "diff": diff}).data)


@extend_schema(tags=["knowledge"])
class VersionRollbackApi(APIView):
    required_scope = "write"

    @extend_schema(request=None, responses={201: KnowledgeBaseVersionSerializer, **error_responses(400)})
    def post(self, request, kb_id: int, number: int):
        principal = principal_from_request(request)
        kb = selectors.knowledge_base_get(principal=principal, kb_id=kb_id, action="edit")
        version = services.knowledge_base_rollback(kb=kb, to_version=number, user=principal.user)
        return Response(KnowledgeBaseVersionSerializer(version_out(version)).data, status=status.HTTP_201_CREATED)


@extend_schema(tags=["knowledge"])
class TuningApi(APIView):
    """Search tuned on the knowledge base's own documents: GET the figures in force, POST to tune again now
    (202: queued; poll until `running` is false), DELETE to go back to the defaults (automatic tuning off)."""

    required_scope = {"GET": "read", "POST": "write", "DELETE": "write"}

    @extend_schema(responses=KnowledgeBaseTuningSerializer)
    def get(self, request, kb_id: int):
        kb = selectors.knowledge_base_get(principal=principal_from_request(request), kb_id=kb_id)
        return Response(KnowledgeBaseTuningSerializer(tuning.tuning_status(kb=kb).as_dict()).data)

    @extend_schema(request=None, responses={202: KnowledgeBaseTuningSerializer})
    def post(self, request, kb_id: int):
        principal = principal_from_request(request)
        kb = selectors.knowledge_base_get(principal=principal, kb_id=kb_id, action="edit")
        view = tuning.tuning_request(kb=kb, principal=principal, enqueue=tune_search_task.apply_async)
        return Response(KnowledgeBaseTuningSerializer(view.as_dict()).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(responses={200: KnowledgeBaseTuningSerializer})
    def delete(self, request, kb_id: int):
        principal = principal_from_request(request)
        kb = selectors.knowledge_base_get(principal=principal, kb_id=kb_id, action="edit")
        return Response(KnowledgeBaseTuningSerializer(tuning.tuning_reset(kb=kb, principal=principal).as_dict()).data)


@extend_schema(tags=["knowledge"])
class RestoreToTimeApi(APIView):
    """Point-in-time restore: the content the knowledge base had at `at` becomes current as a new version."""

    required_scope = "write"

    @extend_schema(
        request=KnowledgeBaseRestoreToTimeSerializer,
        responses={201: KnowledgeBaseVersionSerializer, **error_responses(409)},
    )
    def post(self, request, kb_id: int):
        principal = principal_from_request(request)
        kb = selectors.knowledge_base_get(principal=principal, kb_id=kb_id, action="edit")
        data = KnowledgeBaseRestoreToTimeSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        version = services.knowledge_base_restore_to_time(kb=kb, at=data.validated_data["at"], user=principal.user)
        return Response(KnowledgeBaseVersionSerializer(version_out(version)).data, status=status.HTTP_201_CREATED)
