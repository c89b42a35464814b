"""POST /api/v1/knowledge-bases/{id}/search/ (thin: parse, check access, call knowledge.retrieval.search)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from core.openapi import error_responses
from iam.policy import principal_from_request, resource_get_for_principal

from .models import KnowledgeBase
from .reranking import rerank_applied, reranker_for
from .retrieval import search, search_settings_for
from .serializers import SearchInputSerializer, SearchResultSerializer


class SearchApi(APIView):
    """Hybrid (dense + BM25) search over one knowledge base, with per-retriever ranks and citations."""

    required_scope = "read"
    rate_limit_group = "search"  # core.ratelimit

    @extend_schema(
        tags=["knowledge"],
        summary="Search a knowledge base",
        request=SearchInputSerializer,
        examples=[
            OpenApiExample("question", value={"query": "How do I rotate an API key?", "top_k": 5}, request_only=True)
        ],
        responses={200: SearchResultSerializer, **error_responses(503)},
    )
    def post(self, request, kb_id: int):
        principal = principal_from_request(request)
        # Searching is reading: action "view" needs the API key's "read" scope, like this view's required_scope
        # ("use" would demand "chat"). Read-only members still search what is shared with them.
        kb = resource_get_for_principal(principal, KnowledgeBase.objects.all(), kb_id, action="view")
        data = SearchInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        args = data.validated_data
        mode = args.get("mode") or (kb.search_settings or {}).get("mode") or "hybrid"
        opts = search_settings_for(kb)  # read once: search() and the response's reranker both need them
        hits = search(
            knowledge_base=kb,
            query=args["query"],
            top_k=args["top_k"],
            mode=mode,
            document_ids=args.get("document_ids"),
            metadata_filter=args.get("metadata") or None,
            version=args.get("version"),
            search_settings=opts,
        )
        version = args.get("version")
        reranker = reranker_for(opts["reranker"])
        body = {
            "knowledge_base_id": kb.pk,
            "query": args["query"],
            "mode": mode,
            "version": kb.current_version if version is None else version,
            "reranker": reranker.name if reranker else None,
            "reranked": rerank_applied(hits),
            "results": [hit.as_dict() for hit in hits],
        }
        return Response(SearchResultSerializer(body).data)
