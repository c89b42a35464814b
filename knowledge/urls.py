"""API routes (mounted under /api/v1/ on tenant hosts)."""

from django.urls import path

from . import apis, search_apis

KB = "knowledge-bases/<int:kb_id>/"

urlpatterns: list = [
    path("knowledge-bases/", apis.KnowledgeBaseListApi.as_view(), name="api-knowledge-bases"),
    path(KB, apis.KnowledgeBaseDetailApi.as_view(), name="api-knowledge-base"),
    path(f"{KB}documents/", apis.DocumentListApi.as_view(), name="api-kb-documents"),
    path(f"{KB}documents/<int:document_id>/", apis.DocumentDetailApi.as_view(), name="api-kb-document"),
    path(f"{KB}documents/<int:document_id>/chunks/", apis.DocumentChunkListApi.as_view(), name="api-kb-chunks"),
    path(f"{KB}versions/", apis.VersionListApi.as_view(), name="api-kb-versions"),
    path(f"{KB}versions/<int:number>/", apis.VersionDetailApi.as_view(), name="api-kb-version"),
    path(f"{KB}versions/<int:number>/rollback/", apis.VersionRollbackApi.as_view(), name="api-kb-rollback"),
    path(f"{KB}restore-to-time/", apis.RestoreToTimeApi.as_view(), name="api-kb-restore-to-time"),
    path(f"{KB}search/", search_apis.SearchApi.as_view(), name="api-kb-search"),
    path(f"{KB}tuning/", apis.TuningApi.as_view(), name="api-kb-tuning"),
]
