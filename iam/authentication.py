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
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.tokens import Token
from rest_framework_simplejwt.utils import aware_utcnow

from accounts.tokens import TENANT_CLAIM, token_revocation_keys, token_revoked
from core.epochs import epochs_read
from core.errors import ErrorCode

from .keys import ApiKeyRejected, api_key_authenticate
from .members import auth_epoch, member_get
from .models import ApiKey
from .policy import Principal, principal_act_as, principal_for_api_key, principal_for_user

API_KEY_KEYWORD = "Api-Key"


# Access tokens whose signature and claims were verified, by their exact bytes (a bounded per-process dict): a token
# is sent with every request of its client, and verifying it again gives the same answer, except for its expiry,
# which is checked on every use. Any other byte string is verified in full.
_verified_tokens: dict[bytes, Token] = {}
_VERIFIED_TOKENS_MAX = 10_000


class TenantJWTAuthentication(JWTAuthentication):
    """simplejwt tokens are valid on every host by default (django-tenants #983): ours carry the schema
    they were issued for, and a token is refused on any other tenant's host."""

    def get_validated_token(self, raw_token: bytes) -> Token:
        token = _verified_tokens.get(raw_token)
        if token is not None:
            try:
                token.check_exp(current_time=aware_utcnow())  # the token's own clock stopped when it was verified
                return token
            except TokenError:
                _verified_tokens.pop(raw_token, None)  # expired: verified again below, which refuses it
        token = super().get_validated_token(raw_token)
        if len(_verified_tokens) >= _VERIFIED_TOKENS_MAX:
            _verified_tokens.clear()
        _verified_tokens[raw_token] = token
        return token

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
        # The revocation markers and the epoch of the members' cache (the principal is read from it next): one trip.
        _, markers = epochs_read(
            [auth_epoch(tenant.schema_name)], token_revocation_keys(schema=tenant.schema_name, token=validated)
        )
        if token_revoked(token=validated, markers=markers):
            raise AuthenticationFailed("This token was revoked (signed out).", code=ErrorCode.TOKEN_REVOKED)
        return self._user(validated, tenant), validated

    def _user(self, validated, tenant):
        """A member's user from the process's cache of members (iam.members: active users only); anyone else, or
        tokens bound to a password hash, through simplejwt's own checks."""
        user_id = validated.get(jwt_settings.USER_ID_CLAIM)
        if str(user_id).isdigit() and jwt_settings.USER_ID_FIELD == "id" and not jwt_settings.CHECK_REVOKE_TOKEN:
            membership = member_get(user_id, tenant)
            if membership is not None:
                return membership.user
        return self.get_user(validated)


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
