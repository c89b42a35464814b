"""Helpers for authentication tests (also used by the isolation matrix in tests/)."""

from __future__ import annotations

from django.test import Client
from django_tenants.utils import tenant_context

from accounts.models import Membership, Role, User
from conftest import PASSWORD, host_of


def member_create(tenant, *, role: str = Role.USER, email: str | None = None) -> User:
    email = email or f"{role}-{User.objects.count() + 1}@{tenant.slug}.test"
    user = User.objects.create_user(email=email, password=PASSWORD)
    Membership.objects.create(user=user, tenant=tenant, role=role)
    return user


def client_for(tenant, **headers) -> Client:
    return Client(HTTP_HOST=host_of(tenant), **headers)


def jwt_pair(tenant, user: User) -> dict:
    response = client_for(tenant).post(
        "/api/v1/auth/token/", {"email": user.email, "password": PASSWORD}, content_type="application/json"
    )
    assert response.status_code == 200, response.content
    return response.json()


def jwt_client(tenant, user: User, *, on=None) -> Client:
    """A client on `on` (default: the same tenant) carrying a JWT issued on `tenant`."""
    access = jwt_pair(tenant, user)["access"]
    return client_for(on or tenant, HTTP_AUTHORIZATION=f"Bearer {access}")


def api_key_create(tenant, user: User, *, scopes=("read", "write", "chat", "admin"), agent_ids=None, expires_at=None):
    """(ApiKey, raw key) created in `tenant` for `user` (must be a member)."""
    from iam.policy import principal_for_user
    from iam.services import api_key_create as create

    with tenant_context(tenant):
        principal = principal_for_user(user, tenant)
        # Bypass the "admins only" rule for test setup of non-admin keys.
        from iam.keys import api_key_generate, api_key_hash
        from iam.models import ApiKey

        if principal.is_admin:
            return create(
                principal=principal, name="test key", scopes=list(scopes), agent_ids=agent_ids, expires_at=expires_at
            )
        raw, prefix = api_key_generate()
        key = ApiKey.objects.create(
            name="test key",
            prefix=prefix,
            key_hash=api_key_hash(raw),
            created_by=user,
            scopes=list(scopes),
            all_agents=agent_ids is None,
            agent_ids=agent_ids or [],
            expires_at=expires_at,
        )
        return key, raw


def api_key_client(tenant, raw: str, *, on=None) -> Client:
    return client_for(on or tenant, HTTP_AUTHORIZATION=f"Api-Key {raw}")


def kb_create(tenant, owner: User, **fields):
    from knowledge.models import KnowledgeBase

    with tenant_context(tenant):
        return KnowledgeBase.objects.create(name=fields.pop("name", "Handbook"), owner=owner, **fields)


# Counters our tests trip on purpose (login throttles, rate limits, API-key usage). Only these keys are
# deleted: flushing the whole test Redis DB would also wipe Celery's queues and channel-layer groups.
_COUNTER_PATTERNS = ("jwt:*", "*allauth*", "*accounts:jwt-login-failures*", "*iam:apikey*", "*rl:*", "*rl.*")


def reset_counters() -> None:
    import redis
    from django.conf import settings

    client = redis.Redis.from_url(settings.REDIS_URL)
    for pattern in _COUNTER_PATTERNS:
        keys = list(client.scan_iter(match=pattern, count=1000))
        if keys:
            client.delete(*keys)
