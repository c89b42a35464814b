"""Dashboard page routes (mounted at / on tenant hosts)."""

from django.urls import path

from . import views

KB = "knowledge/<int:kb_id>/"

urlpatterns = [
    path("knowledge/", views.kb_list_page, name="dash-knowledge"),
    path(KB, views.kb_detail_page, name="dash-kb"),
    path(f"{KB}search/", views.kb_search_page, name="dash-kb-search"),
    path(f"{KB}versions/", views.kb_versions_page, name="dash-kb-versions"),
    path(f"{KB}versions/<int:number>/rollback/", views.kb_rollback_view, name="dash-kb-rollback"),
    path(f"{KB}restore-to-time/", views.kb_restore_to_time_view, name="dash-kb-restore-to-time"),
    path(f"{KB}settings/", views.kb_settings_page, name="dash-kb-settings"),
    path(f"{KB}tuning/", views.kb_tuning_panel, name="dash-kb-tuning"),
    path(f"{KB}tuning/run/", views.kb_tune_view, name="dash-kb-tune"),
    path(f"{KB}tuning/reset/", views.kb_tuning_reset_view, name="dash-kb-tuning-reset"),
    path(f"{KB}documents/<int:document_id>/", views.kb_chunk_page, name="dash-kb-document"),
    path(f"{KB}documents/<int:document_id>/delete/", views.kb_document_delete_view, name="dash-kb-document-delete"),
]
