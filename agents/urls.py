"""API routes (mounted under /api/v1/ on tenant hosts)."""

from django.urls import path

from . import apis

urlpatterns = [
    path("organisation/data-policy/", apis.DataPolicyApi.as_view(), name="org-data-policy"),
    path("agents/", apis.AgentListApi.as_view(), name="agent-list"),
    path("agents/<int:agent_id>/", apis.AgentDetailApi.as_view(), name="agent-detail"),
    path("agents/<int:agent_id>/versions/", apis.AgentVersionListApi.as_view(), name="agent-versions"),
    path("agents/<int:agent_id>/versions/diff/", apis.AgentVersionDiffApi.as_view(), name="agent-version-diff"),
    path(
        "agents/<int:agent_id>/versions/<int:number>/restore/",
        apis.AgentVersionRestoreApi.as_view(),
        name="agent-version-restore",
    ),
    path("agents/<int:agent_id>/restore-to-time/", apis.AgentRestoreToTimeApi.as_view(), name="agent-restore-to-time"),
    path("agents/<int:agent_id>/chat/", apis.AgentChatApi.as_view(), name="agent-chat"),
    path("runs/<str:run_id>/events/", apis.RunEventsApi.as_view(), name="run-events"),
    path("runs/<str:run_id>/cancel/", apis.RunCancelApi.as_view(), name="run-cancel"),
    path("conversations/", apis.ConversationListApi.as_view(), name="conversation-list"),
    path(
        "conversations/<str:conversation_id>/messages/",
        apis.ConversationMessagesApi.as_view(),
        name="conversation-messages",
    ),
    path("llm-providers/", apis.ProviderListApi.as_view(), name="llm-provider-list"),
    path("llm-providers/<int:provider_id>/", apis.ProviderDetailApi.as_view(), name="llm-provider-detail"),
    path("agent-tools/", apis.ToolCatalogApi.as_view(), name="agent-tool-catalog"),
    path("custom-tools/", apis.CustomToolListApi.as_view(), name="custom-tool-list"),
    path("custom-tools/<int:tool_id>/", apis.CustomToolDetailApi.as_view(), name="custom-tool-detail"),
    path("approved-hosts/", apis.ApprovedHostListApi.as_view(), name="approved-host-list"),
    path("approved-hosts/<int:host_id>/", apis.ApprovedHostDetailApi.as_view(), name="approved-host-detail"),
]
