"""Dashboard page routes (mounted at / on tenant hosts)."""

from django.urls import path

from . import views

urlpatterns = [
    path("agents/", views.agent_list_page, name="dash-agents"),
    path("agents/new/", views.agent_create_page, name="dash-agent-create"),
    path("agents/<int:agent_id>/", views.agent_edit_page, name="dash-agent-edit"),
    path("agents/<int:agent_id>/versions/", views.agent_versions_page, name="dash-agent-versions"),
    path(
        "agents/<int:agent_id>/versions/<int:number>/restore/",
        views.agent_version_restore_view,
        name="dash-agent-restore",
    ),
    path(
        "agents/<int:agent_id>/restore-to-time/",
        views.agent_restore_to_time_view,
        name="dash-agent-restore-to-time",
    ),
    path("manage/providers/", views.providers_page, name="dash-providers"),
    path("manage/data/", views.data_page, name="dash-data"),
    path("manage/providers/<int:provider_id>/", views.provider_action_view, name="dash-provider-action"),
    path("chat/", views.chat_home_page, name="dash-chat-home"),
    path("agents/<int:agent_id>/chat/", views.chat_page, name="dash-chat"),
]
