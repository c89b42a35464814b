"""A request's member is read from the process's cache (iam.members), never from a stale or foreign entry: a role
change, a removal, a password change or a deactivation takes effect at the next request, and an entry of one
organisation never answers for another.

Changes are made with their commit hooks run (django_capture_on_commit_callbacks), as a committed change would run
them: the cache keeps only what was read under a committed epoch (core.epochs).
"""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import Membership, Role
from accounts.tests.helpers import api_key_client, api_key_create, client_for, jwt_client, member_create
from iam.members import member_get
from iam.policy import principal_for_user
from iam.services import membership_remove, membership_role_change

pytestmark = pytest.mark.django_db


def _session_client(tenant, user):
    client = client_for(tenant)
    client.force_login(user)
    return client


def _clients(tenant, user):
    """One client per credential the API accepts."""
    _, raw = api_key_create(tenant, user, scopes=("read",))
    return {
        "session": _session_client(tenant, user),
        "jwt": jwt_client(tenant, user),
        "api key": api_key_client(tenant, raw),
    }


@pytest.fixture
def committed(django_capture_on_commit_callbacks):
    """Run a block's commit hooks, as its commit would."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


def _me(client) -> dict:
    response = client.get("/api/v1/me/")
    assert response.status_code == 200, response.content
    return response.json()


@pytest.mark.parametrize("credential", ["session", "jwt", "api key"])
def test_bare_request_reads_no_row_once_its_member_is_cached(tenant_a, committed, credential):
    with committed():
        user = member_create(tenant_a, role=Role.USER)
        client = _clients(tenant_a, user)[credential]
    assert _me(client)["role"] == "user"  # fills the cache
    with CaptureQueriesContext(connection) as queries:
        assert _me(client)["role"] == "user"
    assert [q["sql"] for q in queries.captured_queries] == []


@pytest.mark.parametrize("credential", ["session", "jwt", "api key"])
def test_role_change_takes_effect_at_the_next_request(tenant_a, admin_a, committed, credential):
    with committed():
        user = member_create(tenant_a, role=Role.USER)
        client = _clients(tenant_a, user)[credential]
    assert _me(client)["role"] == "user"
    with committed():
        membership_role_change(principal=principal_for_user(admin_a, tenant_a), user_id=user.pk, role=Role.READONLY)
    assert _me(client)["role"] == "readonly"


@pytest.mark.parametrize(("credential", "status"), [("session", 403), ("jwt", 403), ("api key", 401)])
def test_removed_member_is_refused_at_the_next_request(tenant_a, admin_a, committed, credential, status):
    with committed():
        user = member_create(tenant_a, role=Role.USER)
        client = _clients(tenant_a, user)[credential]
    assert _me(client)["role"] == "user"
    with committed():
        membership_remove(principal=principal_for_user(admin_a, tenant_a), user_id=user.pk)
    assert client.get("/api/v1/me/").status_code == status


def test_password_change_ends_a_cached_session(tenant_a, committed):
    with committed():
        user = member_create(tenant_a)
        client = _session_client(tenant_a, user)
    assert _me(client)["id"] == user.pk
    with committed():
        user.set_password("another-horse-battery-7")
        user.save()
    assert client.get("/api/v1/me/").status_code == 401


@pytest.mark.parametrize("credential", ["session", "jwt"])
def test_deactivated_user_is_refused_at_the_next_request(tenant_a, committed, credential):
    with committed():
        user = member_create(tenant_a)
        client = _clients(tenant_a, user)[credential]
    assert _me(client)["id"] == user.pk
    with committed():
        user.is_active = False
        user.save(update_fields=["is_active"])
    assert client.get("/api/v1/me/").status_code in (401, 403)


def test_cached_member_never_answers_for_another_organisation(tenant_a, tenant_b, committed):
    with committed():
        both = member_create(tenant_a, role=Role.ADMIN)
        Membership.objects.create(user=both, tenant=tenant_b, role=Role.READONLY)
        only_a = member_create(tenant_a, role=Role.ADMIN)
    for tenant, role in ((tenant_a, "admin"), (tenant_b, "readonly"), (tenant_a, "admin"), (tenant_b, "readonly")):
        assert _me(_session_client(tenant, both))["role"] == role
    # Cached as an admin of A, still a stranger to B: by session, by API, and through the policy's own lookup.
    a = _session_client(tenant_a, only_a)
    assert _me(a)["role"] == "admin"
    b = client_for(tenant_b)
    b.cookies = a.cookies  # the same browser session on B's host
    assert b.get("/api/v1/me/").status_code == 403
    assert member_get(only_a.pk, tenant_a) is not None
    assert member_get(only_a.pk, tenant_b) is None
    assert principal_for_user(only_a, tenant_b) is None


def test_cached_member_is_a_copy_per_request(tenant_a, committed):
    with committed():
        user = member_create(tenant_a, role=Role.USER)
    first = member_get(user.pk, tenant_a)
    first.role = Role.ADMIN
    first.user.email = "changed@example.com"
    second = member_get(user.pk, tenant_a)
    assert (second.role, second.user.email) == (Role.USER, user.email)
