"""REST API of the organisation's backups (admins only: iam.policy.principal_can_back_up)."""

from __future__ import annotations

from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from core.errors import NotFound
from core.openapi import error_responses
from core.tenancy import in_tenant
from iam.policy import principal_from_request
from knowledge import storage

from . import selectors, services
from .models import Backup, BackupPurpose, BackupStatus, Restore


class BackupSerializer(serializers.ModelSerializer):
    class Meta:
        model = Backup
        fields = [
            "id", "status", "scheduled", "include_conversations", "size_bytes", "sha256", "counts", "error",
            "created_at", "finished_at",
        ]  # fmt: skip
        read_only_fields = fields


class BackupCreateSerializer(serializers.Serializer):
    include_conversations = serializers.BooleanField(default=True)


class NewOrganisationSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    slug = serializers.CharField(max_length=40)


class RestoreCreateSerializer(serializers.Serializer):
    new_organisation = NewOrganisationSerializer(
        required=False, help_text="Restore into a new organisation (you become its admin); absent: replace this one."
    )


class RestoreSerializer(serializers.ModelSerializer):
    organisation = serializers.CharField(source="tenant.slug", read_only=True)
    backup = serializers.UUIDField(source="backup_id", read_only=True, allow_null=True)

    class Meta:
        model = Restore
        fields = ["id", "organisation", "backup", "status", "counts", "error", "created_at", "finished_at"]
        read_only_fields = fields


class BackupScheduleSerializer(serializers.Serializer):
    own = serializers.BooleanField(read_only=True, help_text="False: the operator's defaults apply.")
    enabled = serializers.BooleanField()
    minute = serializers.IntegerField(min_value=0, max_value=59, write_only=True)
    hour = serializers.IntegerField(min_value=0, max_value=23, write_only=True, help_text="UTC")
    day_of_week = serializers.CharField(max_length=20, default="*", write_only=True)
    crontab = serializers.CharField(read_only=True, help_text="minute hour * * day_of_week, UTC")
    keep_last = serializers.IntegerField(min_value=1, max_value=365)
    include_conversations = serializers.BooleanField()


class ZipRenderer(BaseRenderer):
    media_type = "application/zip"
    format = "zip"
    charset = None

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return b""


class BackupListApi(APIView):
    required_scope = "admin"

    @extend_schema(responses={200: BackupSerializer(many=True), **error_responses(403)})
    def get(self, request):
        backups = selectors.backup_list(principal=principal_from_request(request))[:200]
        return Response(BackupSerializer(backups, many=True).data)

    @extend_schema(request=BackupCreateSerializer, responses={202: BackupSerializer, **error_responses(403)})
    def post(self, request):
        data = BackupCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        backup = services.backup_request(
            principal=principal_from_request(request),
            include_conversations=data.validated_data["include_conversations"],
        )
        return Response(BackupSerializer(backup).data, status=status.HTTP_202_ACCEPTED)


class BackupDetailApi(APIView):
    required_scope = "admin"

    @extend_schema(responses={200: BackupSerializer, **error_responses(403, 404)})
    def get(self, request, backup_id: str):
        backup = selectors.backup_get_for_principal(principal=principal_from_request(request), backup_id=backup_id)
        return Response(BackupSerializer(backup).data)

    @extend_schema(responses={204: None, **error_responses(403, 404)})
    def delete(self, request, backup_id: str):
        principal = principal_from_request(request)
        backup = selectors.backup_get_for_principal(principal=principal, backup_id=backup_id)
        services.backup_delete(principal=principal, backup=backup)
        return Response(status=status.HTTP_204_NO_CONTENT)


def archive_response(backup: Backup) -> FileResponse:
    """The stored zip of a finished backup or export, as a download."""
    if backup.status != BackupStatus.DONE:
        raise NotFound("This archive is not ready.")
    with in_tenant(backup.tenant):
        body = storage.storage_open(backup.path)
    name = f"{backup.tenant.slug}-{backup.purpose}-{backup.created_at:%Y%m%d-%H%M%S}.zip"
    return FileResponse(body, as_attachment=True, filename=name, content_type="application/zip")


class BackupDownloadApi(APIView):
    required_scope = "admin"
    renderer_classes = [JSONRenderer, ZipRenderer]

    @extend_schema(responses={(200, "application/zip"): OpenApiTypes.BINARY, **error_responses(403, 404)})
    def get(self, request, backup_id: str):
        return archive_response(
            selectors.backup_get_for_principal(principal=principal_from_request(request), backup_id=backup_id)
        )

    def finalize_response(self, request, response, *args, **kwargs):
        if isinstance(response, Response):  # an error: JSON, whatever was asked
            request.accepted_renderer, request.accepted_media_type = JSONRenderer(), JSONRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)


class BackupRestoreApi(APIView):
    required_scope = "admin"

    @extend_schema(
        request=RestoreCreateSerializer, responses={202: RestoreSerializer, **error_responses(403, 404, 409)}
    )
    def post(self, request, backup_id: str):
        principal = principal_from_request(request)
        backup = selectors.backup_get_for_principal(principal=principal, backup_id=backup_id)
        data = RestoreCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        new = data.validated_data.get("new_organisation") or {}
        restore = services.restore_request(
            principal=principal, backup=backup, new_name=new.get("name"), new_slug=new.get("slug")
        )
        return Response(RestoreSerializer(restore).data, status=status.HTTP_202_ACCEPTED)


class RestoreDetailApi(APIView):
    required_scope = "admin"

    @extend_schema(responses={200: RestoreSerializer, **error_responses(403, 404)})
    def get(self, request, restore_id: str):
        restore = selectors.restore_get_for_principal(principal=principal_from_request(request), restore_id=restore_id)
        return Response(RestoreSerializer(restore).data)


class BackupScheduleApi(APIView):
    required_scope = "admin"

    @extend_schema(responses={200: BackupScheduleSerializer, **error_responses(403)})
    def get(self, request):
        schedule = selectors.backup_schedule_get(principal=principal_from_request(request))
        return Response(BackupScheduleSerializer(schedule).data)

    @extend_schema(request=BackupScheduleSerializer, responses={200: BackupScheduleSerializer, **error_responses(403)})
    def put(self, request):
        principal = principal_from_request(request)
        data = BackupScheduleSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.backup_schedule_update(principal=principal, **data.validated_data)
        return Response(BackupScheduleSerializer(selectors.backup_schedule_get(principal=principal)).data)


class OrgExportSerializer(serializers.ModelSerializer):
    class Meta:
        model = Backup
        fields = ["id", "status", "size_bytes", "sha256", "counts", "error", "created_at", "finished_at"]
        read_only_fields = fields


class OrgExportListApi(APIView):
    """An export of the whole organisation: the backup format, every conversation, no secrets."""

    required_scope = "admin"

    @extend_schema(request=None, responses={202: OrgExportSerializer, **error_responses(403)})
    def post(self, request):
        export = services.export_request(principal=principal_from_request(request))
        return Response(OrgExportSerializer(export).data, status=status.HTTP_202_ACCEPTED)


class OrgExportDetailApi(APIView):
    required_scope = "admin"

    @extend_schema(responses={200: OrgExportSerializer, **error_responses(403, 404)})
    def get(self, request, export_id: str):
        export = selectors.backup_get_for_principal(
            principal=principal_from_request(request), backup_id=export_id, purpose=BackupPurpose.EXPORT
        )
        return Response(OrgExportSerializer(export).data)


class OrgExportDownloadApi(APIView):
    required_scope = "admin"
    renderer_classes = [JSONRenderer, ZipRenderer]

    @extend_schema(responses={(200, "application/zip"): OpenApiTypes.BINARY, **error_responses(403, 404)})
    def get(self, request, export_id: str):
        return archive_response(
            selectors.backup_get_for_principal(
                principal=principal_from_request(request), backup_id=export_id, purpose=BackupPurpose.EXPORT
            )
        )

    def finalize_response(self, request, response, *args, **kwargs):
        if isinstance(response, Response):  # an error: JSON, whatever was asked
            request.accepted_renderer, request.accepted_media_type = JSONRenderer(), JSONRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)
