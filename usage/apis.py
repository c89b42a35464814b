"""Thin DRF views: quotas and usage (members see their own; admins everyone), sub-limits and audit (admins)."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from core.errors import Forbidden, InvalidInput, NotFound
from core.quotas import quota_overview
from iam.policy import principal_acts_for, principal_can_manage, principal_from_request

from . import selectors, services
from .models import QuotaSubLimit
from .serializers import AuditListQuerySerializer


def _int_param(request, name: str, default=None):
    value = request.query_params.get(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise InvalidInput(f"{name} must be a whole number.", field=name) from exc


class QuotaSerializer(serializers.Serializer):
    quota = serializers.CharField(help_text="llm_tokens_per_month, documents, storage_bytes, ...")
    unit = serializers.CharField()
    limit = serializers.JSONField(help_text="A number; null = unlimited.")
    used = serializers.JSONField(help_text="A number.")
    percent = serializers.FloatField(allow_null=True)
    resets_at = serializers.DateTimeField(allow_null=True, help_text="Monthly quotas: when the count restarts.")


class QuotaOverviewSerializer(serializers.Serializer):
    tenant = QuotaSerializer(many=True, help_text="The organisation's plan.")
    user = QuotaSerializer(many=True, help_text="The user's share (their sub-limits).")
    api_key = QuotaSerializer(many=True, required=False, help_text="Calls with an API key: that key's.")


class QuotaOverviewApi(APIView):
    """Limits and current use of every quota for the tenant (and for `?user=` / the caller's own key)."""

    required_scope = "read"

    @extend_schema(
        parameters=[OpenApiParameter("user", int, description="Another member's use (admins).")],
        responses=QuotaOverviewSerializer,
    )
    def get(self, request):
        principal = principal_from_request(request)
        user_id = _int_param(request, "user")
        if user_id is not None and not principal_acts_for(principal, user_id):
            raise Forbidden("Only admins may see other members' usage.")
        data = {
            "tenant": quota_overview(tenant=principal.tenant),
            "user": quota_overview(tenant=principal.tenant, user=user_id or principal.user.pk),
        }
        if principal.api_key is not None:
            data["api_key"] = quota_overview(tenant=principal.tenant, api_key=principal.api_key)
        return Response(QuotaOverviewSerializer(data).data)


class UsageFiguresSerializer(serializers.Serializer):
    runs = serializers.IntegerField()
    tokens_in = serializers.IntegerField()
    tokens_out = serializers.IntegerField()
    cost = serializers.CharField(help_text="A decimal, in the providers' currency.")
    api_calls = serializers.IntegerField()


class UsageDaySerializer(UsageFiguresSerializer):
    date = serializers.DateField()


class UsageByModelSerializer(serializers.Serializer):
    model = serializers.CharField()
    runs = serializers.IntegerField()
    tokens = serializers.IntegerField(allow_null=True)
    cost = serializers.CharField()


class UsageSummarySerializer(serializers.Serializer):
    scope = serializers.ChoiceField(choices=selectors.SCOPES)
    id = serializers.IntegerField(allow_null=True)
    days = serializers.IntegerField()
    totals = UsageFiguresSerializer()
    daily = UsageDaySerializer(many=True)
    by_model = UsageByModelSerializer(many=True)


class UsageSummaryApi(APIView):
    """Daily series for charts: ?scope=tenant|user|agent|api_key&id=..&days=30. Members: their own only."""

    required_scope = "read"

    @extend_schema(
        parameters=[
            OpenApiParameter("scope", str, enum=list(selectors.SCOPES), description="Default: tenant (admins)."),
            OpenApiParameter("id", int, description="The user, agent or API key (scope other than tenant)."),
            OpenApiParameter("days", int, description=f"1-{selectors.MAX_DAYS}, default 30."),
        ],
        responses=UsageSummarySerializer,
    )
    def get(self, request):
        principal = principal_from_request(request)
        admin = principal_can_manage(principal)
        scope = request.query_params.get("scope", "tenant" if admin else "user")
        scope_id = _int_param(request, "id")
        if scope == "user" and scope_id is None:
            scope_id = principal.user.pk
        if not admin and not (scope == "user" and scope_id == principal.user.pk):
            raise Forbidden("Only admins may see usage beyond their own.")
        services.usage_flush_api_calls()  # include calls counted in the last minute
        summary = selectors.usage_daily(scope=scope, scope_id=scope_id, days=_int_param(request, "days", 30))
        return Response(UsageSummarySerializer(summary).data)


class SubLimitSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    quota = serializers.CharField(max_length=40)
    user_id = serializers.IntegerField(required=False, allow_null=True)
    api_key_id = serializers.IntegerField(required=False, allow_null=True)
    limit = serializers.CharField(max_length=40)  # validated by core.quotas.validate_limit
    updated_at = serializers.DateTimeField(read_only=True)


class SubLimitListApi(APIView):
    required_scope = {"GET": "admin", "POST": "admin"}

    @extend_schema(responses=SubLimitSerializer(many=True))
    def get(self, request):
        return Response(SubLimitSerializer(selectors.sublimit_list(), many=True).data)

    @extend_schema(request=SubLimitSerializer, responses={201: SubLimitSerializer})
    def post(self, request):
        data = SubLimitSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        row = services.sublimit_set(principal=principal_from_request(request), **data.validated_data)
        return Response(SubLimitSerializer(row).data, status=status.HTTP_201_CREATED)


class SubLimitDetailApi(APIView):
    required_scope = "admin"

    @extend_schema(responses={204: None})
    def delete(self, request, sublimit_id: int):
        row = QuotaSubLimit.objects.filter(pk=sublimit_id).first()
        if row is None:
            raise NotFound("Not found.")
        services.sublimit_delete(principal=principal_from_request(request), sublimit=row)
        return Response(status=status.HTTP_204_NO_CONTENT)


class AuditEntrySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    actor_id = serializers.IntegerField(allow_null=True)
    actor_email = serializers.CharField()
    actor_name = serializers.CharField()  # a command line's "cli:<command> (<OS user>)"; "" for members and system
    api_key_id = serializers.IntegerField(allow_null=True)
    action = serializers.CharField()
    target_type = serializers.CharField()
    target_id = serializers.CharField()
    target_repr = serializers.CharField()
    before = serializers.JSONField(allow_null=True)
    after = serializers.JSONField(allow_null=True)
    request_id = serializers.CharField()
    ip = serializers.CharField(allow_null=True)


class AuditPageSerializer(serializers.Serializer):
    results = AuditEntrySerializer(many=True)
    next_before_id = serializers.IntegerField(allow_null=True, help_text="Pass as before_id for the next page.")


class AuditListApi(APIView):
    """?action=<prefix>&actor=<user id>&target_type=&target_id=&since=&until=&before_id=&limit= (newest first)."""

    required_scope = "admin"

    @extend_schema(
        parameters=[
            OpenApiParameter("action", str, description="Actions starting with this, e.g. agent."),
            OpenApiParameter("actor", int, description="The user who acted."),
            OpenApiParameter("target_type", str),
            OpenApiParameter("target_id", str),
            OpenApiParameter("since", OpenApiTypes.DATETIME),
            OpenApiParameter("until", OpenApiTypes.DATETIME),
            OpenApiParameter("before_id", int, description="Entries older than this id (paging)."),
            OpenApiParameter("limit", int, description="1-500, default 100."),
        ],
        responses=AuditPageSerializer,
    )
    def get(self, request):
        query = AuditListQuerySerializer.from_query(request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        limit = min(max(params["limit"], 1), 500)
        rows = selectors.audit_list(
            action=params.get("action"),
            actor_id=params.get("actor"),
            target_type=params.get("target_type"),
            target_id=params.get("target_id"),
            since=params.get("since"),
            until=params.get("until"),
            before_id=params.get("before_id"),
        )[:limit]
        data = AuditEntrySerializer(rows, many=True).data
        page = {"results": data, "next_before_id": data[-1]["id"] if len(data) == limit else None}
        return Response(AuditPageSerializer(page).data)
