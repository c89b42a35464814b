"""Thin DRF views: JWT (token, refresh, logout), the caller's profile, sessions, export, deletion,
and the OpenAPI schema + Swagger UI."""

from __future__ import annotations

import threading

from csp.decorators import csp_update
from django.contrib.auth.views import redirect_to_login
from django.http import JsonResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerSplitView
from rest_framework import serializers, status
from rest_framework.exceptions import AuthenticationFailed, NotAuthenticated
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from core.errors import InvalidInput
from core.openapi import error_responses
from iam.policy import principal_from_request

from . import selectors, services


class _PublicApi(APIView):
    """Credentials are in the body (email/password or a refresh token): no header authentication.
    `required_scope = "public"` tells the isolation matrix to probe these with bad bodies instead."""

    required_scope = "public"
    rate_limit_group = "auth"  # per IP and per tenant (core.ratelimit)
    authentication_classes: list = []
    permission_classes = [AllowAny]


# --- JWT ----------------------------------------------------------------------------------------


class TokenPairSerializer(serializers.Serializer):
    access = serializers.CharField()
    refresh = serializers.CharField()


class TokenObtainApi(_PublicApi):
    """Email + password -> access + refresh tokens, valid on this organisation's host only."""

    class TokenObtainInputSerializer(serializers.Serializer):
        email = serializers.EmailField()
        password = serializers.CharField(trim_whitespace=False)

    @extend_schema(
        request=TokenObtainInputSerializer, responses={200: TokenPairSerializer, **error_responses(401)}, auth=[]
    )
    def post(self, request):
        data = self.TokenObtainInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        pair = services.jwt_pair_issue(
            tenant=request.tenant, ip=request.META.get("REMOTE_ADDR", ""), **data.validated_data
        )
        return Response(pair)


class RefreshSerializer(serializers.Serializer):
    refresh = serializers.CharField()


class TokenRefreshApi(_PublicApi):
    """Rotation: the presented refresh token is blacklisted and a new pair returned."""

    @extend_schema(request=RefreshSerializer, responses={200: TokenPairSerializer, **error_responses(401)}, auth=[])
    def post(self, request):
        data = RefreshSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(services.jwt_refresh(tenant=request.tenant, refresh_token=data.validated_data["refresh"]))


class LogoutApi(_PublicApi):
    """End the session of this refresh token: it is blacklisted and its access tokens stop working at once."""

    @extend_schema(request=RefreshSerializer, responses={204: None, **error_responses(401)}, auth=[])
    def post(self, request):
        data = RefreshSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.jwt_logout(tenant=request.tenant, refresh_token=data.validated_data["refresh"])
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- Profile ------------------------------------------------------------------------------------


class MeApi(APIView):
    """The caller, their role in this organisation and their preferences."""

    required_scope = {"GET": "read", "PATCH": "write"}
    self_service = True  # own profile: read-only members may edit it too

    class ProfileSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        email = serializers.EmailField()
        display_name = serializers.CharField()
        time_zone = serializers.CharField()
        ui_theme = serializers.CharField()
        default_agent_id = serializers.IntegerField(allow_null=True)
        tenant = serializers.CharField()
        role = serializers.CharField()
        via_api_key = serializers.BooleanField()

    class ProfileUpdateSerializer(serializers.Serializer):
        display_name = serializers.CharField(max_length=100, required=False, allow_blank=True)
        time_zone = serializers.CharField(max_length=64, required=False)
        ui_theme = serializers.CharField(max_length=8, required=False)
        default_agent_id = serializers.IntegerField(required=False, allow_null=True)

    def _body(self, request):
        principal = principal_from_request(request)
        user = principal.user
        membership = principal.membership or user.memberships.get(tenant=request.tenant)
        # Already the ProfileSerializer's shape and types (it documents the response): building one per request
        # would only deep-copy its fields.
        return {
            "id": user.pk,
            "email": user.email,
            "display_name": user.display_name,
            "time_zone": user.time_zone,
            "ui_theme": user.ui_theme,
            "default_agent_id": membership.default_agent_id,
            "tenant": request.tenant.slug,
            "role": str(principal.role),
            "via_api_key": principal.api_key is not None,
        }

    @extend_schema(responses=ProfileSerializer)
    def get(self, request):
        return Response(self._body(request))

    @extend_schema(request=ProfileUpdateSerializer, responses=ProfileSerializer)
    def patch(self, request):
        data = self.ProfileUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        principal = principal_from_request(request)
        services.user_profile_update(
            user=principal.user,
            membership=principal.membership or principal.user.memberships.get(tenant=request.tenant),
            **data.validated_data,
        )
        return Response(self._body(request))


class SessionSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    ip = serializers.CharField()
    user_agent = serializers.CharField()
    created_at = serializers.DateTimeField()
    last_seen_at = serializers.DateTimeField()
    current = serializers.SerializerMethodField()

    def get_current(self, session) -> bool:
        request = self.context.get("request")
        return bool(
            request and getattr(request, "session", None) and request.session.session_key == session.session_key
        )


class MySessionListApi(APIView):
    """The caller's active browser sessions (all organisations)."""

    required_scope = "read"
    self_service = True

    @extend_schema(responses=SessionSerializer(many=True))
    def get(self, request):
        user = principal_from_request(request).user
        return Response(SessionSerializer(selectors.user_sessions(user), many=True, context={"request": request}).data)


class MySessionDetailApi(APIView):
    required_scope = "write"
    self_service = True

    @extend_schema(responses={204: None}, description="End (log out) one of your sessions.")
    def delete(self, request, session_id):
        services.user_session_end(user=principal_from_request(request).user, session_id=session_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class TokensRevokedSerializer(serializers.Serializer):
    revoked = serializers.IntegerField(help_text="How many refresh tokens were revoked.")


class MyTokensRevokeApi(APIView):
    """Revoke every JWT refresh token of the caller (log out all API clients)."""

    required_scope = "write"
    self_service = True

    @extend_schema(request=None, responses=TokensRevokedSerializer)
    def post(self, request):
        revoked = services.jwt_revoke_all(user=principal_from_request(request).user)
        return Response(TokensRevokedSerializer({"revoked": revoked}).data)


class MyExportApi(APIView):
    required_scope = "read"
    self_service = True

    @extend_schema(
        responses={200: OpenApiTypes.OBJECT},
        description="Everything stored about you (profile, memberships, conversations, ...) as a JSON download.",
    )
    def get(self, request):
        principal = principal_from_request(request)
        response = JsonResponse(selectors.user_export(principal=principal))
        response["Content-Disposition"] = 'attachment; filename="agentry-my-data.json"'
        return response


class TransferredSerializer(serializers.Serializer):
    tenant = serializers.CharField()
    resource_type = serializers.CharField()
    id = serializers.IntegerField()
    to = serializers.IntegerField(help_text="The admin who now owns it.")


class AccountDeletedSerializer(serializers.Serializer):
    transferred = TransferredSerializer(many=True, help_text="What you owned, now owned by an admin.")


class AccountDeleteApi(APIView):
    """Delete your account. Refused (409, listing them) while you own agents or knowledge bases unless
    `transfer_owned` is true: each then goes to an admin of its organisation. See services.user_delete."""

    required_scope = "write"
    self_service = True

    class AccountDeleteSerializer(serializers.Serializer):
        confirm_email = serializers.EmailField()
        transfer_owned = serializers.BooleanField(default=False)

    @extend_schema(request=AccountDeleteSerializer, responses={200: AccountDeletedSerializer, **error_responses(409)})
    def post(self, request):
        principal = principal_from_request(request)
        if principal.api_key is not None:
            raise InvalidInput("Accounts cannot be deleted with an API key.")
        data = self.AccountDeleteSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        if data.validated_data["confirm_email"].lower() != principal.user.email.lower():
            raise InvalidInput("Type your email address to confirm.", field="confirm_email")
        result = services.user_delete(user=principal.user, transfer_owned=data.validated_data["transfer_owned"])
        request.session.flush()
        return Response(AccountDeletedSerializer(result).data)


# --- OpenAPI ------------------------------------------------------------------------------------


_schema_generation = threading.Lock()


class SchemaApi(SpectacularAPIView):
    """The OpenAPI document, generated one request at a time per process: drf-spectacular resolves its extension
    classes lazily and not thread-safely (two first generations at once, as the Swagger page and a client fetching
    the schema make, saw a class half-resolved to None and answered 500)."""

    required_scope = "read"

    def _get_schema_response(self, request):
        with _schema_generation:
            return super()._get_schema_response(request)


class _SignInFirst(APIView):
    """A reference page a person opens in the browser: signed out, it sends them to sign in and back here, not to a
    bare 401 body (the schema itself stays an API answer)."""

    def handle_exception(self, exc):
        if isinstance(exc, NotAuthenticated | AuthenticationFailed):
            return redirect_to_login(self.request.get_full_path())
        return super().handle_exception(exc)


class SwaggerUiApi(_SignInFirst, SpectacularSwaggerSplitView):
    """Swagger UI from drf-spectacular-sidecar's static files, its init script served by this view as a file
    (`?script`): no CDN, no inline script."""

    required_scope = "read"
    template_name = "api/swagger_ui.html"


class RedocApi(_SignInFirst, SpectacularRedocView):
    """ReDoc from drf-spectacular-sidecar's static files. Its components style themselves with inline <style>
    and search in a blob: worker, which this page alone allows: it shows the schema, never user content."""

    required_scope = "read"
    template_name = "api/redoc.html"

    @extend_schema(exclude=True)
    @csp_update({"style-src": ["'unsafe-inline'"], "worker-src": ["blob:"]})
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)
