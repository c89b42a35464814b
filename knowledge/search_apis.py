"""POST /api/v1/knowledge-bases/{id}/search/ (thin: parse, check access, call knowledge.retrieval.search)."""

from __future__ import annotations

from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from iam.policy import principal_from_request, resource_get_for_principal

from .models import KnowledgeBase
from .retrieval import MAX_TOP_K, MODES, QUERY_MAX_CHARS, search


class SearchApi(APIView):
    """Hybrid (dense + BM25) search over one knowledge base, with per-retriever ranks and citations."""

    required_scope = "read"
    rate_limit_group = "search"  # core.ratelimit

    class InputSerializer(serializers.Serializer):
        query = serializers.CharField(max_length=QUERY_MAX_CHARS, trim_whitespace=True)
        top_k = serializers.IntegerField(min_value=1, max_value=MAX_TOP_K, default=5)
        mode = serializers.ChoiceField(choices=MODES, required=False, allow_null=True, default=None)
        document_ids = serializers.ListField(
            child=serializers.IntegerField(min_value=1), required=False, allow_null=True, max_length=1000
        )
        metadata = serializers.DictField(required=False, allow_null=True)
        version = serializers.IntegerField(min_value=0, required=False, allow_null=True)

    def post(self, request, kb_id: int):
        principal = principal_from_request(request)
        # Searching is reading: action "view" needs the API key's "read" scope, like this view's required_scope
        # ("use" would demand "chat"). Read-only members still search what is shared with them.
        kb = resource_get_for_principal(principal, KnowledgeBase.objects.all(), kb_id, action="view")
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        args = data.validated_data
        mode = args.get("mode") or (kb.search_settings or {}).get("mode") or "hybrid"
        hits = search(
            knowledge_base=kb,
            query=args["query"],
            top_k=args["top_k"],
            mode=mode,
            document_ids=args.get("document_ids"),
            metadata_filter=args.get("metadata") or None,
            version=args.get("version"),
        )
        version = args.get("version")
        return Response(
            {
                "knowledge_base_id": kb.pk,
                "query": args["query"],
                "mode": mode,
                "version": kb.current_version if version is None else version,
                "results": [hit.as_dict() for hit in hits],
            }
        )
