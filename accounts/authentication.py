"""DRF authentication classes: tenant-bound JWT and API keys (sessions use DRF's own class).

Who may do what is decided afterwards by core.access.IsTenantMember; these classes only establish
identity and refuse credentials that are invalid *here* (401).
"""

from __future__ import annotations

from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework_simplejwt.authentication import JWTAuthentication

TENANT_CLAIM = "tenant"
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
            raise AuthenticationFailed("This token was issued for another organisation.", code="token_wrong_tenant")
        from .revocation import token_revoked

        if token_revoked(schema=tenant.schema_name, token=validated):
            raise AuthenticationFailed("This token was revoked (signed out).", code="token_revoked")
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
            raise AuthenticationFailed("Malformed Api-Key header.", code="api_key_invalid")
        tenant = getattr(request, "tenant", None)
        if tenant is None or tenant.schema_name == "public":
            raise AuthenticationFailed("API keys are only valid on an organisation's host.", code="api_key_invalid")
        from iam.keys import ApiKeyRejected, api_key_authenticate

        try:
            key = api_key_authenticate(raw_key, tenant)
        except ApiKeyRejected as exc:
            raise AuthenticationFailed(exc.message, code=exc.code) from None
        return key.created_by, key

    def authenticate_header(self, request) -> str:
        return API_KEY_KEYWORD
