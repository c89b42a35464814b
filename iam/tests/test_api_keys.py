"""API keys: shown once, hashed, scopes, agent allow-list, expiry, revocation, usage, other tenants."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from django_tenants.utils import tenant_context

from accounts.models import Role
from accounts.tests.helpers import api_key_client, api_key_create, client_for, jwt_client, member_create
from iam.authentication import principal_from_credentials
from iam.keys import api_key_flush_usage, api_key_hash
from iam.models import ApiKey
from iam.policy import Principal, api_key_allows_agent

pytestmark = pytest.mark.django_db


def test_admin_creates_key_shown_once_and_stored_hashed(tenant_a, admin_a):
    client = jwt_client(tenant_a, admin_a)
    response = client.post(
        "/api/v1/api-keys/", {"name": "CI", "scopes": ["read", "chat"]}, content_type="application/json"
    )
    assert response.status_code == 201, response.content
    body = response.json()
    raw = body["key"]
    assert raw.startswith("agk_") and body["prefix"] in raw
    with tenant_context(tenant_a):
        key = ApiKey.objects.get(pk=body["id"])
        assert raw not in (key.key_hash, key.prefix) and key.key_hash == api_key_hash(raw)
    # Never shown again.
    assert "key" not in client.get(f"/api/v1/api-keys/{body['id']}/").json()
    assert all("key" not in k for k in client.get("/api/v1/api-keys/").json())
    # And it works.
    me = api_key_client(tenant_a, raw).get("/api/v1/me/")
    assert me.status_code == 200 and me.json()["via_api_key"] is True


def test_key_of_another_tenant_is_401(tenant_a, tenant_b, admin_b):
    _, raw = api_key_create(tenant_b, admin_b)
    response = api_key_client(tenant_b, raw, on=tenant_a).get("/api/v1/me/")
    assert response.status_code == 401
    assert response.json()["code"] == "api_key_invalid"


def test_revocation_is_immediate(tenant_a, admin_a):
    key, raw = api_key_create(tenant_a, admin_a)
    client = api_key_client(tenant_a, raw)
    assert client.get("/api/v1/me/").status_code == 200
    revoke = jwt_client(tenant_a, admin_a).delete(f"/api/v1/api-keys/{key.pk}/")
    assert revoke.status_code == 200 and revoke.json()["revoked_at"]
    response = client.get("/api/v1/me/")
    assert response.status_code == 401 and response.json()["code"] == "api_key_revoked"


def test_expired_key_is_401(tenant_a, admin_a):
    key, raw = api_key_create(tenant_a, admin_a)
    with tenant_context(tenant_a):
        ApiKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = api_key_client(tenant_a, raw).get("/api/v1/me/")
    assert response.status_code == 401 and response.json()["code"] == "api_key_expired"


def test_forged_and_malformed_keys_are_401(tenant_a, admin_a):
    key, raw = api_key_create(tenant_a, admin_a)
    forged = raw[:-4] + ("aaaa" if not raw.endswith("aaaa") else "bbbb")
    for value in (forged, "agk_nope", "garbage", f"{raw} extra"):
        response = api_key_client(tenant_a, value).get("/api/v1/me/")
        assert response.status_code == 401, value


def test_scopes_limit_the_key(tenant_a, admin_a):
    _, raw = api_key_create(tenant_a, admin_a, scopes=["read"])
    client = api_key_client(tenant_a, raw)
    assert client.get("/api/v1/teams/").status_code == 200
    response = client.post("/api/v1/teams/", {"name": "x"}, content_type="application/json")
    assert response.status_code == 403
    assert response.json()["code"] == "scope_required" and response.json()["required_scope"] == "admin"


def test_key_acts_for_its_creator_role(tenant_a):
    # A user's key with the admin scope still cannot do admin things: the creator's role applies.
    user = member_create(tenant_a, role=Role.USER)
    _, raw = api_key_create(tenant_a, user, scopes=["read", "write", "chat", "admin"])
    response = api_key_client(tenant_a, raw).post("/api/v1/teams/", {"name": "x"}, content_type="application/json")
    assert response.status_code == 403 and response.json()["code"] == "admin_required"


def test_members_create_own_keys_only_if_allowed(tenant_a, admin_a):
    user = member_create(tenant_a, role=Role.USER)
    client = jwt_client(tenant_a, user)
    body = {"name": "mine", "scopes": ["read"]}
    assert client.post("/api/v1/api-keys/", body, content_type="application/json").status_code == 403
    allow = jwt_client(tenant_a, admin_a).patch(
        "/api/v1/iam/settings/", {"members_can_create_api_keys": True}, content_type="application/json"
    )
    assert allow.status_code == 200
    created = client.post("/api/v1/api-keys/", body, content_type="application/json")
    assert created.status_code == 201
    # No admin scope for non-admins.
    admin_scope = client.post("/api/v1/api-keys/", {"name": "x", "scopes": ["admin"]}, content_type="application/json")
    assert admin_scope.status_code == 403
    # They see their own keys only; the admin sees all.
    assert [k["name"] for k in client.get("/api/v1/api-keys/").json()] == ["mine"]
    _, admin_raw = api_key_create(tenant_a, admin_a)
    assert len(api_key_client(tenant_a, admin_raw).get("/api/v1/api-keys/").json()) >= 2


def test_user_cannot_revoke_someone_elses_key(tenant_a, admin_a):
    key, _ = api_key_create(tenant_a, admin_a)
    user = member_create(tenant_a, role=Role.USER)
    response = jwt_client(tenant_a, user).delete(f"/api/v1/api-keys/{key.pk}/")
    assert response.status_code == 404


def _agent(tenant, owner, name):
    from agents.models import Agent

    with tenant_context(tenant):
        return Agent.objects.create(name=name, owner=owner, org_access="viewer")


def test_agent_allow_list(tenant_a, admin_a):
    allowed, other = _agent(tenant_a, admin_a, "Allowed"), _agent(tenant_a, admin_a, "Other")
    key, raw = api_key_create(tenant_a, admin_a, agent_ids=[allowed.pk])
    with tenant_context(tenant_a):
        principal = principal_from_credentials(tenant_a, f"Api-Key {raw}")
    assert api_key_allows_agent(principal, allowed.pk) and api_key_allows_agent(principal, str(allowed.pk))
    assert not api_key_allows_agent(principal, other.pk)
    assert api_key_allows_agent(Principal(tenant=tenant_a, user=admin_a, role=Role.ADMIN), other.pk)
    assert jwt_client(tenant_a, admin_a).get(f"/api/v1/api-keys/{key.pk}/").json()["agent_ids"] == [allowed.pk]
    # Through the agents API (built on iam.policy): the other agent does not exist for this key.
    client = api_key_client(tenant_a, raw)
    listed = client.get("/api/v1/agents/").json()
    names = [a["name"] for a in (listed["results"] if isinstance(listed, dict) else listed)]
    assert names == ["Allowed"]
    assert client.get(f"/api/v1/agents/{other.pk}/").status_code == 404
    assert client.get(f"/api/v1/agents/{allowed.pk}/").status_code == 200


def test_agent_allow_list_must_name_usable_agents(tenant_a, admin_a):
    response = jwt_client(tenant_a, admin_a).post(
        "/api/v1/api-keys/", {"name": "x", "scopes": ["chat"], "agent_ids": [987654]}, content_type="application/json"
    )
    assert response.status_code == 400 and response.json()["field"] == "agent_ids"


def test_usage_is_counted_cheaply(tenant_a, admin_a):
    key, raw = api_key_create(tenant_a, admin_a)
    client = api_key_client(tenant_a, raw)
    for _ in range(5):
        assert client.get("/api/v1/me/").status_code == 200
    with tenant_context(tenant_a):
        key.refresh_from_db()
        # The first request flushed to the row; the rest wait in Redis (at most one write per minute).
        assert key.last_used_at is not None and key.request_count == 1
        api_key_flush_usage(key.pk)
        key.refresh_from_db()
        assert key.request_count == 5
    assert jwt_client(tenant_a, admin_a).get(f"/api/v1/api-keys/{key.pk}/").json()["request_count"] == 5


def test_credentials_helper_for_consumers(tenant_a, tenant_b, admin_a):
    from rest_framework.exceptions import AuthenticationFailed

    _, raw = api_key_create(tenant_a, admin_a, scopes=["chat"])
    with tenant_context(tenant_a):
        principal = principal_from_credentials(tenant_a, f"Api-Key {raw}")
        assert principal.user == admin_a and principal.scopes == frozenset({"chat"})
    with tenant_context(tenant_b), pytest.raises(AuthenticationFailed):
        principal_from_credentials(tenant_b, f"Api-Key {raw}")


def test_removed_member_key_is_revoked(tenant_a, admin_a):
    user = member_create(tenant_a, role=Role.USER)
    _, raw = api_key_create(tenant_a, user, scopes=["read"])
    assert api_key_client(tenant_a, raw).get("/api/v1/me/").status_code == 200
    assert jwt_client(tenant_a, admin_a).delete(f"/api/v1/members/{user.pk}/").status_code == 204
    assert api_key_client(tenant_a, raw).get("/api/v1/me/").status_code == 401


def test_anonymous_gets_401_with_challenge(tenant_a):
    response = client_for(tenant_a).get("/api/v1/api-keys/")
    assert response.status_code == 401
    assert "Bearer" in response["WWW-Authenticate"]


def test_jwt_credentials_helper_is_tenant_bound(tenant_a, tenant_b, admin_a):
    from rest_framework.exceptions import AuthenticationFailed

    from accounts.tests.helpers import jwt_pair

    access = jwt_pair(tenant_a, admin_a)["access"]
    with tenant_context(tenant_a):
        assert principal_from_credentials(tenant_a, f"Bearer {access}").user == admin_a
    with tenant_context(tenant_b), pytest.raises(AuthenticationFailed):
        principal_from_credentials(tenant_b, f"Bearer {access}")


def test_object_actions_need_the_matching_scope(tenant_a, admin_a):
    from accounts.tests.helpers import kb_create
    from iam.policy import ScopeRequired, resource_get_for_principal
    from knowledge.models import KnowledgeBase

    kb = kb_create(tenant_a, admin_a)
    _, raw = api_key_create(tenant_a, admin_a, scopes=["read"])
    with tenant_context(tenant_a):
        principal = principal_from_credentials(tenant_a, f"Api-Key {raw}")
        assert resource_get_for_principal(principal, KnowledgeBase.objects.all(), kb.pk, "view") == kb
        for action in ("use", "edit", "delete"):
            with pytest.raises(ScopeRequired):
                resource_get_for_principal(principal, KnowledgeBase.objects.all(), kb.pk, action)


def _key_queries(client) -> tuple[int, int]:
    """(status, queries that read API keys or memberships) of one GET /api/v1/me/."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        status = client.get("/api/v1/me/").status_code
    return status, sum("iam_apikey" in q["sql"] or "accounts_membership" in q["sql"] for q in queries)


def test_a_verified_key_is_reused_from_the_process_cache_until_its_tenant_changes(
    tenant_a, admin_a, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):  # committed: the cache keeps nothing a rollback may undo
        key, raw = api_key_create(tenant_a, admin_a)
    client = api_key_client(tenant_a, raw)
    assert _key_queries(client)[1] >= 1  # first use: verified against the database
    assert _key_queries(client) == (200, 0)  # then from the cache: no key or membership query
    with tenant_context(tenant_a):  # a change that bypasses the signals is not seen while the epoch holds ...
        ApiKey.objects.filter(pk=key.pk).update(scopes=[])
    assert _key_queries(client) == (200, 0)
    from core.epochs import epoch_bump
    from iam.keys import auth_epoch

    epoch_bump(auth_epoch(tenant_a.schema_name))  # ... any change through Django bumps it: verified again
    assert client.get("/api/v1/me/").status_code == 403  # no "read" scope any more


def test_removed_member_and_deactivated_owner_lose_their_keys_at_the_next_request(tenant_a, admin_a):
    from iam.policy import principal_for_user
    from iam.services import membership_remove

    leaver, owner = member_create(tenant_a, role=Role.USER), member_create(tenant_a, role=Role.USER)
    (_, leaver_raw), (_, owner_raw) = api_key_create(tenant_a, leaver), api_key_create(tenant_a, owner)
    leaver_client, owner_client = api_key_client(tenant_a, leaver_raw), api_key_client(tenant_a, owner_raw)
    assert leaver_client.get("/api/v1/me/").status_code == owner_client.get("/api/v1/me/").status_code == 200
    with tenant_context(tenant_a):
        membership_remove(principal=principal_for_user(admin_a, tenant_a), user_id=leaver.pk)
    assert leaver_client.get("/api/v1/me/").status_code == 401  # its keys were revoked with the membership
    owner.is_active = False
    owner.save()
    response = owner_client.get("/api/v1/me/")
    assert response.status_code == 401 and response.json()["code"] == "api_key_owner_inactive"


def test_a_role_change_reaches_cached_keys_at_the_next_request(tenant_a, admin_a):
    from iam.policy import principal_for_user
    from iam.services import membership_role_change

    member = member_create(tenant_a, role=Role.ADMIN)
    _, raw = api_key_create(tenant_a, member)
    client = api_key_client(tenant_a, raw)
    assert client.get("/api/v1/me/").json()["role"] == Role.ADMIN
    with tenant_context(tenant_a):
        membership_role_change(principal=principal_for_user(admin_a, tenant_a), user_id=member.pk, role=Role.USER)
    assert client.get("/api/v1/me/").json()["role"] == Role.USER
