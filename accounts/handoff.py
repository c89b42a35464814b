"""Login handoff from the public site to an organisation's host.

Browser sessions are per host: a session cookie set by `localhost` is not sent to `acme.localhost`, and widening
the cookie to every subdomain would let one organisation's pages read another's session. So a login on the public
site ends with a handoff: the public host signs a token naming the user and one organisation, and the browser
carries it to that organisation's host, which checks it and starts its own session there.

The token is
- signed (django.core.signing with its own salt): it cannot be forged or altered;
- bound to one organisation (its schema): redeeming it on another organisation's host fails;
- short-lived (HANDOFF_MAX_AGE seconds): it exists only for the redirect that carries it;
- single-use: its nonce is claimed in Redis with SET NX, so a token read from a log or history is spent.
"""

from __future__ import annotations

import secrets

from django.core import signing

from core.errors import DomainError, ErrorCode
from core.redis_clients import redis_client
from core.tenancy import TenantRecord, tenant_key

from .models import Membership, User

HANDOFF_SALT = "accounts.login-handoff"
HANDOFF_MAX_AGE = 60  # seconds: the redirect that carries the token takes well under one


class HandoffInvalid(DomainError):
    code = ErrorCode.TOKEN_NOT_VALID
    status = 400


def login_handoff_issue(*, user: User, tenant: TenantRecord) -> str:
    """A token that logs `user` in on `tenant`'s host once. The caller has checked the membership; the redeeming
    host checks it again (it may be revoked in between)."""
    payload = {"u": user.pk, "t": tenant.schema_name, "n": secrets.token_urlsafe(16)}
    return signing.dumps(payload, salt=HANDOFF_SALT, compress=True)


def login_handoff_redeem(*, token: str, tenant: TenantRecord) -> User:
    """The user a handoff token names, if it is genuine, fresh, unused, meant for `tenant`, and the user is still an
    active member there. The token is spent by this call whatever happens next."""
    refused = HandoffInvalid("This sign-in link has expired or was already used. Log in here instead.")
    try:
        payload = signing.loads(token, salt=HANDOFF_SALT, max_age=HANDOFF_MAX_AGE)
    except signing.BadSignature as exc:  # includes SignatureExpired
        raise refused from exc
    if not isinstance(payload, dict) or payload.get("t") != tenant.schema_name:
        raise refused
    nonce_key = tenant_key("login-handoff", str(payload.get("n")), schema=tenant.schema_name)
    if not redis_client().set(nonce_key, "1", nx=True, ex=HANDOFF_MAX_AGE + 5):
        raise refused
    membership = (
        Membership.objects.select_related("user")
        .filter(user_id=payload.get("u"), tenant_id=tenant.pk, user__is_active=True)
        .first()
    )
    if membership is None:
        raise refused
    return membership.user
