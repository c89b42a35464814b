from django.urls import path

from . import apis

urlpatterns = [
    path("organisation/exports/", apis.OrgExportListApi.as_view(), name="org-export-list"),
    path("organisation/exports/<str:export_id>/", apis.OrgExportDetailApi.as_view(), name="org-export-detail"),
    path(
        "organisation/exports/<str:export_id>/download/",
        apis.OrgExportDownloadApi.as_view(),
        name="org-export-download",
    ),
    path("organisation/backups/", apis.BackupListApi.as_view(), name="backup-list"),
    path("organisation/backups/schedule/", apis.BackupScheduleApi.as_view(), name="backup-schedule"),
    path("organisation/backups/restores/<str:restore_id>/", apis.RestoreDetailApi.as_view(), name="restore-detail"),
    path("organisation/backups/<str:backup_id>/", apis.BackupDetailApi.as_view(), name="backup-detail"),
    path("organisation/backups/<str:backup_id>/download/", apis.BackupDownloadApi.as_view(), name="backup-download"),
    path("organisation/backups/<str:backup_id>/restore/", apis.BackupRestoreApi.as_view(), name="backup-restore"),
]
