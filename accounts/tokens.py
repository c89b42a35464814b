"""Access-token revocation. simplejwt blacklists refresh tokens only; an access token stayed valid until it expired
(JWT_ACCESS_MINUTES). Every pair carries a session id (`sid`, kept across refresh rotations):

- logout revokes its session: `jwt:<schema>:sid:<sid>` in Redis, for as long as an access token can live;
- "revoke all tokens" (and account deletion) revokes every token of the user issued until now:
  `jwt:public:user:<id>:nbf` (users live in the public schema; a token's `iat` must be after it).

TenantJWTAuthentication reads both (with the epochs it checks next) in one MGET per request.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

from django.conf import settings

from core.redis_clients import redis_client
from core.tenancy import tenant_key

SESSION_CLAIM = "sid"
# The schema a token was issued for: iam.authentication refuses it on any other organisation's host.
TENANT_CLAIM = "tenant"


def _ttl() -> int:
    return int(settings.SIMPLE_JWT["ACCESS_TOKEN_LIFETIME"].total_seconds()) + 60


def _session_key(schema: str, sid: str) -> str:
    return tenant_key("jwt", "sid", sid, schema=schema)


def _user_key(user_id: int) -> str:
    return f"jwt:public:user:{user_id}:nbf"


def new_session_id() -> str:
    return uuid.uuid4().hex


def session_revoke(*, schema: str, sid: str) -> None:
    if sid:
        redis_client().set(_session_key(schema, sid), "1", ex=_ttl())


def user_tokens_revoke(*, user_id: int) -> None:
    redis_client().set(_user_key(user_id), str(int(time.time())), ex=_ttl())


def token_revocation_keys(*, schema: str, token) -> list[str]:
    """The Redis keys that say whether the access token was revoked; their values go to token_revoked."""
    sid, user_id = token.get(SESSION_CLAIM), token.get("user_id")
    return [_session_key(schema, str(sid or "-")), _user_key(user_id)]


def token_revoked(*, token, markers: Sequence[bytes | None]) -> bool:
    """True when the access token's session was logged out or its user revoked all tokens after it was issued.
    `markers`: the values of its token_revocation_keys, read now."""
    session, not_before = markers
    if session is not None:
        return True
    return not_before is not None and int(token.get("iat", 0)) <= int(not_before)
