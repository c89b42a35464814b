"""DRF authentication classes: tenant-bound JWT and API keys (sessions use DRF's own class).

Who may do what is decided afterwards by iam.policy.IsTenantMember; these classes only establish
identity and refuse credentials that are invalid *here* (401).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed, NotAuthenticated
from rest_framework_simplejwt.authentication import JWTAuthentication

from accounts.tokens import TENANT_CLAIM, token_revoked
from core.errors import ErrorCode

from .keys import ApiKeyRejected, api_key_authenticate
from .models import ApiKey
from .policy import Principal, principal_act_as, principal_for_api_key, principal_for_user

API_KEY_KEYWORD = "Api-Key"


class TenantJWTAuthentication(JWTAuthentication):
    """simplejwt tokens are valid on every host by default (django-tenants #983): ours carry the schema
    they were issued for, and a token is refused on any other tenant's host."""

    def authenticate(self, request):
        header = self.get_header(request)
        if header is None:
            return None
        raw_token = self.get_raw_token(header)
        if raw_token is None:
            return None
        validated = self.get_validated_token(raw_token)  # expired / tampered -> InvalidToken (401)
        tenant = getattr(request, "tenant", None)
        if tenant is None or validated.get(TENANT_CLAIM) != tenant.schema_name:
            raise AuthenticationFailed(
                "This token was issued for another organisation.", code=ErrorCode.TOKEN_WRONG_TENANT
            )
        if token_revoked(schema=tenant.schema_name, token=validated):
            raise AuthenticationFailed("This token was revoked (signed out).", code=ErrorCode.TOKEN_REVOKED)
        return self.get_user(validated), validated


class ApiKeyAuthentication(BaseAuthentication):
    """`Authorization: Api-Key agk_<prefix>_<secret>`; the key is looked up in the tenant's schema."""

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        keyword, _, raw_key = header.partition(" ")
        if keyword != API_KEY_KEYWORD:
            return None
        raw_key = raw_key.strip()
        if not raw_key or " " in raw_key:
            raise AuthenticationFailed("Malformed Api-Key header.", code=ErrorCode.API_KEY_INVALID)
        tenant = getattr(request, "tenant", None)
        if tenant is None or tenant.schema_name == "public":
            raise AuthenticationFailed(
                "API keys are only valid on an organisation's host.", code=ErrorCode.API_KEY_INVALID
            )
        try:
            key = api_key_authenticate(raw_key, tenant)
        except ApiKeyRejected as exc:
            raise AuthenticationFailed(exc.message, code=exc.code) from None
        return key.created_by, key

    def authenticate_header(self, request) -> str:
        return API_KEY_KEYWORD


def principal_from_credentials(tenant: Any, authorization: str) -> Principal:
    """The principal an `Authorization` value names ("Bearer <jwt>" or "Api-Key <key>"), for surfaces that do not
    go through DRF (WebSocket consumers). The same classes as HTTP decide; call inside the tenant's context.

    Raises AuthenticationFailed (invalid here) or NotAuthenticated (no usable credential).
    """

    class _Credentials:  # the attributes the authentication classes read
        META = {"HTTP_AUTHORIZATION": authorization}

    _Credentials.tenant = tenant  # type: ignore[attr-defined]
    for backend in (TenantJWTAuthentication(), ApiKeyAuthentication()):
        result = backend.authenticate(_Credentials)  # type: ignore[arg-type]
        if result is None:
            continue
        user, auth = result
        principal = (
            principal_for_api_key(auth, tenant) if isinstance(auth, ApiKey) else principal_for_user(user, tenant)
        )
        if principal is not None:
            return principal
        break
    raise NotAuthenticated("Authentication credentials were not provided.")


def credentials_from_scope(scope: dict[str, Any]) -> str:
    """The `Authorization` value a WebSocket handshake carries: the header, or `?token=<jwt or key>` /
    `?api_key=<key>` for browsers that cannot set headers. "" when it carries none (a session may still)."""
    value = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin1")
    if value:
        return value
    query = parse_qs((scope.get("query_string") or b"").decode())
    if query.get("api_key"):
        return f"{API_KEY_KEYWORD} {query['api_key'][0]}"
    token = (query.get("token") or [""])[0]
    if token:
        return f"Bearer {token}" if token.count(".") == 2 else f"{API_KEY_KEYWORD} {token}"
    return ""


def principal_from_scope(scope: dict[str, Any], tenant: Any) -> Principal:
    """Who opened this WebSocket: its credentials (as over HTTP), else the session's member. Call inside the
    tenant's context; the socket then acts as it (iam.policy.principal_act_as). Raises AuthenticationFailed /
    NotAuthenticated."""
    credentials = credentials_from_scope(scope)
    if credentials:
        principal = principal_from_credentials(tenant, credentials)
    else:
        found = principal_for_user(scope.get("user"), tenant)
        if found is None:
            raise NotAuthenticated("Authentication credentials were not provided.")
        principal = found
    principal_act_as(principal)  # a socket's database threads copy its context: they act as it from here on
    return principal
