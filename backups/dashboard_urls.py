"""Dashboard page routes (mounted at / on tenant hosts)."""

from django.urls import path

from . import views

urlpatterns = [
    path("manage/backups/", views.backups_page, name="dash-backups"),
    path("manage/backups/<str:backup_id>/download/", views.backup_download_view, name="dash-backup-download"),
    path("manage/exports/<str:export_id>/download/", views.export_download_view, name="dash-export-download"),
]
