"""Teams, sharing (team and org-wide, viewer/editor), ownership transfer, and RBAC over them."""

from __future__ import annotations

import pytest
from django_tenants.utils import tenant_context

from accounts.models import Role
from accounts.tests.helpers import api_key_client, api_key_create, jwt_client, kb_create, member_create
from core.errors import Forbidden, NotFound
from iam.policy import principal_can, principal_for_user, resource_get_for_principal, resource_queryset_for
from knowledge.models import KnowledgeBase

pytestmark = pytest.mark.django_db


@pytest.fixture
def people(tenant_a, admin_a):
    return {
        "admin": admin_a,
        "owner": member_create(tenant_a, role=Role.USER, email="owner@acme.test"),
        "teammate": member_create(tenant_a, role=Role.USER, email="mate@acme.test"),
        "stranger": member_create(tenant_a, role=Role.USER, email="stranger@acme.test"),
        "reader": member_create(tenant_a, role=Role.READONLY, email="reader@acme.test"),
    }


def _team(tenant, admin, *members):
    client = jwt_client(tenant, admin)
    team = client.post("/api/v1/teams/", {"name": "Research"}, content_type="application/json")
    assert team.status_code == 201, team.content
    team_id = team.json()["id"]
    for user in members:
        added = client.post(f"/api/v1/teams/{team_id}/members/", {"user_id": user.pk}, content_type="application/json")
        assert added.status_code == 201
    return team_id


def _visible(tenant, user):
    with tenant_context(tenant):
        principal = principal_for_user(user, tenant)
        return set(resource_queryset_for(principal, KnowledgeBase.objects.all()).values_list("pk", flat=True))


def _can(tenant, user, action, kb):
    with tenant_context(tenant):
        kb = KnowledgeBase.objects.get(pk=kb.pk)
        return principal_can(principal_for_user(user, tenant), action, kb)


def test_private_resource_is_invisible_to_others(tenant_a, people):
    kb = kb_create(tenant_a, people["owner"])
    assert kb.pk in _visible(tenant_a, people["owner"])
    assert kb.pk in _visible(tenant_a, people["admin"])
    assert kb.pk not in _visible(tenant_a, people["teammate"])
    with tenant_context(tenant_a), pytest.raises(NotFound):
        resource_get_for_principal(principal_for_user(people["teammate"], tenant_a), KnowledgeBase.objects, kb.pk)


def test_team_viewer_share(tenant_a, people):
    kb = kb_create(tenant_a, people["owner"])
    team_id = _team(tenant_a, people["admin"], people["teammate"], people["reader"])
    response = jwt_client(tenant_a, people["owner"]).post(
        "/api/v1/shares/",
        {"resource_type": "knowledge_base", "resource_id": kb.pk, "team_id": team_id, "level": "viewer"},
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    assert kb.pk in _visible(tenant_a, people["teammate"])
    assert kb.pk in _visible(tenant_a, people["reader"])
    assert kb.pk not in _visible(tenant_a, people["stranger"])
    assert _can(tenant_a, people["teammate"], "use", kb)
    assert not _can(tenant_a, people["teammate"], "edit", kb)
    assert not _can(tenant_a, people["teammate"], "share", kb)
    with tenant_context(tenant_a), pytest.raises(Forbidden):
        resource_get_for_principal(
            principal_for_user(people["teammate"], tenant_a), KnowledgeBase.objects, kb.pk, "edit"
        )


def test_team_editor_share_lets_edit_but_not_delete(tenant_a, people):
    kb = kb_create(tenant_a, people["owner"])
    team_id = _team(tenant_a, people["admin"], people["teammate"], people["reader"])
    jwt_client(tenant_a, people["owner"]).post(
        "/api/v1/shares/",
        {"resource_type": "knowledge_base", "resource_id": kb.pk, "team_id": team_id, "level": "editor"},
        content_type="application/json",
    )
    assert _can(tenant_a, people["teammate"], "edit", kb)
    assert not _can(tenant_a, people["teammate"], "delete", kb)
    # Read-only members never edit, whatever the share says.
    assert _can(tenant_a, people["reader"], "use", kb)
    assert not _can(tenant_a, people["reader"], "edit", kb)


def test_org_wide_share_and_unshare(tenant_a, people):
    kb = kb_create(tenant_a, people["owner"])
    client = jwt_client(tenant_a, people["owner"])
    body = {"resource_type": "knowledge_base", "resource_id": kb.pk, "team_id": None, "level": "viewer"}
    assert client.post("/api/v1/shares/", body, content_type="application/json").status_code == 204
    assert kb.pk in _visible(tenant_a, people["stranger"])
    listing = client.get(f"/api/v1/shares/?resource_type=knowledge_base&resource_id={kb.pk}").json()
    assert listing["org_access"] == "viewer"
    body["level"] = "none"
    client.post("/api/v1/shares/", body, content_type="application/json")
    assert kb.pk not in _visible(tenant_a, people["stranger"])


def test_only_owner_or_admin_shares(tenant_a, people):
    kb = kb_create(tenant_a, people["owner"], org_access="editor")
    body = {"resource_type": "knowledge_base", "resource_id": kb.pk, "team_id": None, "level": "none"}
    response = jwt_client(tenant_a, people["stranger"]).post("/api/v1/shares/", body, content_type="application/json")
    assert response.status_code == 403
    hidden = kb_create(tenant_a, people["owner"], name="Private")
    body["resource_id"] = hidden.pk
    response = jwt_client(tenant_a, people["stranger"]).post("/api/v1/shares/", body, content_type="application/json")
    assert response.status_code == 404  # invisible: IDs leak nothing
    assert (
        jwt_client(tenant_a, people["admin"]).post("/api/v1/shares/", body, content_type="application/json").status_code
        == 204
    )


def test_readonly_cannot_share_even_own_things(tenant_a, people):
    kb = kb_create(tenant_a, people["reader"])
    body = {"resource_type": "knowledge_base", "resource_id": kb.pk, "team_id": None, "level": "viewer"}
    response = jwt_client(tenant_a, people["reader"]).post("/api/v1/shares/", body, content_type="application/json")
    assert response.status_code == 403
    assert response.json()["code"] == "readonly"
    with tenant_context(tenant_a):
        assert KnowledgeBase.objects.get(pk=kb.pk).org_access == "none"


def test_unknown_resource_type_is_404(tenant_a, people):
    response = jwt_client(tenant_a, people["owner"]).post(
        "/api/v1/shares/",
        {"resource_type": "nope", "resource_id": 1, "level": "viewer"},
        content_type="application/json",
    )
    assert response.status_code == 404


def test_ownership_transfer(tenant_a, people):
    kb = kb_create(tenant_a, people["owner"])
    body = {"resource_type": "knowledge_base", "resource_id": kb.pk, "new_owner_id": people["teammate"].pk}
    # Someone who cannot see it: 404.
    assert (
        jwt_client(tenant_a, people["stranger"])
        .post("/api/v1/ownership/transfer/", body, content_type="application/json")
        .status_code
        == 404
    )
    # Not to a read-only member.
    bad = dict(body, new_owner_id=people["reader"].pk)
    assert (
        jwt_client(tenant_a, people["owner"])
        .post("/api/v1/ownership/transfer/", bad, content_type="application/json")
        .status_code
        == 400
    )
    ok = jwt_client(tenant_a, people["owner"]).post(
        "/api/v1/ownership/transfer/", body, content_type="application/json"
    )
    assert ok.status_code == 200
    with tenant_context(tenant_a):
        assert KnowledgeBase.objects.get(pk=kb.pk).owner_id == people["teammate"].pk
    assert kb.pk not in _visible(tenant_a, people["owner"])
    # An admin can transfer anything.
    back = dict(body, new_owner_id=people["owner"].pk)
    assert (
        jwt_client(tenant_a, people["admin"])
        .post("/api/v1/ownership/transfer/", back, content_type="application/json")
        .status_code
        == 200
    )


def test_transfer_to_member_of_other_tenant_is_404(tenant_a, people, admin_b):
    kb = kb_create(tenant_a, people["owner"])
    body = {"resource_type": "knowledge_base", "resource_id": kb.pk, "new_owner_id": admin_b.pk}
    response = jwt_client(tenant_a, people["owner"]).post(
        "/api/v1/ownership/transfer/", body, content_type="application/json"
    )
    assert response.status_code == 404


def test_teams_admin_only_for_writes(tenant_a, people):
    client = jwt_client(tenant_a, people["owner"])
    response = client.post("/api/v1/teams/", {"name": "Mine"}, content_type="application/json")
    assert response.status_code == 403 and response.json()["code"] == "admin_required"
    team_id = _team(tenant_a, people["admin"], people["owner"])
    assert client.get(f"/api/v1/teams/{team_id}/members/").json()[0]["email"] == "owner@acme.test"
    assert client.delete(f"/api/v1/teams/{team_id}/").status_code == 403
    admin = jwt_client(tenant_a, people["admin"])
    assert (
        admin.patch(f"/api/v1/teams/{team_id}/", {"name": "Renamed"}, content_type="application/json").json()["name"]
        == "Renamed"
    )
    assert admin.delete(f"/api/v1/teams/{team_id}/members/{people['owner'].pk}/").status_code == 204
    assert admin.delete(f"/api/v1/teams/{team_id}/").status_code == 204
    assert admin.get(f"/api/v1/teams/{team_id}/").status_code == 404


def test_team_member_must_belong_to_tenant(tenant_a, admin_a, admin_b):
    team_id = _team(tenant_a, admin_a)
    response = jwt_client(tenant_a, admin_a).post(
        f"/api/v1/teams/{team_id}/members/", {"user_id": admin_b.pk}, content_type="application/json"
    )
    assert response.status_code == 404


def test_shared_resource_invisible_from_other_tenant(tenant_a, tenant_b, people, admin_b):
    kb = kb_create(tenant_a, people["owner"], org_access="viewer")
    response = jwt_client(tenant_b, admin_b).get(f"/api/v1/shares/?resource_type=knowledge_base&resource_id={kb.pk}")
    assert response.status_code == 404


def test_api_key_sharing_needs_write_scope(tenant_a, people):
    kb = kb_create(tenant_a, people["admin"])
    _, raw = api_key_create(tenant_a, people["admin"], scopes=["read"])
    response = api_key_client(tenant_a, raw).post(
        "/api/v1/shares/",
        {"resource_type": "knowledge_base", "resource_id": kb.pk, "level": "viewer"},
        content_type="application/json",
    )
    assert response.status_code == 403 and response.json()["code"] == "scope_required"
