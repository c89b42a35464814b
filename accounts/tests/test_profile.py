"""Profile and preferences, own sessions and API keys, data export, account deletion; OpenAPI schema."""

from __future__ import annotations

import pytest
from allauth.account.models import EmailAddress
from django_tenants.utils import tenant_context

from accounts.models import Membership, Role, User
from conftest import PASSWORD
from knowledge.models import KnowledgeBase

from .helpers import api_key_client, api_key_create, client_for, jwt_client, jwt_pair, kb_create, member_create

pytestmark = pytest.mark.django_db


def test_profile_update(tenant_a):
    reader = member_create(tenant_a, role=Role.READONLY)
    client = jwt_client(tenant_a, reader)  # read-only members may still edit their own profile
    response = client.patch(
        "/api/v1/me/",
        {"display_name": "Ada", "time_zone": "Europe/Paris", "ui_theme": "dark", "default_agent_id": None},
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["display_name"], body["time_zone"], body["ui_theme"], body["role"]) == (
        "Ada",
        "Europe/Paris",
        "dark",
        "readonly",
    )
    for bad in ({"time_zone": "Mars/Olympus"}, {"ui_theme": "neon"}):
        response = client.patch("/api/v1/me/", bad, content_type="application/json")
        assert response.status_code == 400
    reader.refresh_from_db()
    assert reader.time_zone == "Europe/Paris" and reader.ui_theme == "dark"


def test_default_agent_is_per_organisation(tenant_a, tenant_b, admin_a):
    Membership.objects.create(user=admin_a, tenant=tenant_b, role=Role.USER)
    jwt_client(tenant_a, admin_a).patch("/api/v1/me/", {"default_agent_id": None}, content_type="application/json")
    assert jwt_client(tenant_b, admin_a).get("/api/v1/me/").json()["default_agent_id"] is None


def test_api_key_with_read_scope_cannot_edit_profile(tenant_a, admin_a):
    _, raw = api_key_create(tenant_a, admin_a, scopes=["read"])
    response = api_key_client(tenant_a, raw).patch(
        "/api/v1/me/", {"display_name": "x"}, content_type="application/json"
    )
    assert response.status_code == 403


def test_sessions_list_and_revoke(tenant_a, admin_a):
    EmailAddress.objects.create(user=admin_a, email=admin_a.email, verified=True, primary=True)
    laptop, phone = client_for(tenant_a), client_for(tenant_a, HTTP_USER_AGENT="phone")
    for client in (laptop, phone):
        assert client.post("/accounts/login/", {"login": admin_a.email, "password": PASSWORD}).status_code == 302
    sessions = laptop.get("/api/v1/me/sessions/").json()
    assert len(sessions) == 2
    assert sum(s["current"] for s in sessions) == 1
    phone_session = next(s for s in sessions if s["user_agent"] == "phone")
    assert phone.get("/api/v1/me/").status_code == 200
    # Another user cannot end it.
    other = jwt_client(tenant_a, member_create(tenant_a))
    assert other.delete(f"/api/v1/me/sessions/{phone_session['id']}/").status_code == 404
    assert laptop.delete(f"/api/v1/me/sessions/{phone_session['id']}/").status_code == 204
    assert phone.get("/api/v1/me/").status_code in (401, 403)
    assert laptop.get("/api/v1/me/").status_code == 200


def test_export_own_data(tenant_a, admin_a):
    kb_create(tenant_a, admin_a, name="Mine")
    api_key_create(tenant_a, admin_a)
    response = jwt_client(tenant_a, admin_a).get("/api/v1/me/export/")
    assert response.status_code == 200
    assert "attachment" in response["Content-Disposition"]
    data = response.json()
    assert data["user"]["email"] == admin_a.email
    assert data["memberships"][0]["role"] == "admin"
    assert [kb["name"] for kb in data["organisation"]["owned_resources"]["knowledge_base"]] == ["Mine"]
    assert data["organisation"]["api_keys"][0]["prefix"]
    assert "key_hash" not in response.content.decode()


def test_delete_account_refused_while_owning_then_transfers(tenant_a, admin_a):
    user = member_create(tenant_a, role=Role.USER, email="leaver@acme.test")
    kb = kb_create(tenant_a, user)
    _, raw = api_key_create(tenant_a, user, scopes=["read"])
    pair = jwt_pair(tenant_a, user)
    client = client_for(tenant_a, HTTP_AUTHORIZATION=f"Bearer {pair['access']}")
    wrong = client.post("/api/v1/me/delete/", {"confirm_email": "nope@acme.test"}, content_type="application/json")
    assert wrong.status_code == 400
    refused = client.post("/api/v1/me/delete/", {"confirm_email": user.email}, content_type="application/json")
    assert refused.status_code == 409
    assert refused.json()["owned"] == [{"tenant": "acme", "resource_type": "knowledge_base", "id": kb.pk}]
    assert User.objects.get(pk=user.pk).is_active
    done = client.post(
        "/api/v1/me/delete/", {"confirm_email": user.email, "transfer_owned": True}, content_type="application/json"
    )
    assert done.status_code == 200, done.content
    assert done.json()["transferred"][0]["to"] == admin_a.pk
    with tenant_context(tenant_a):
        assert KnowledgeBase.objects.get(pk=kb.pk).owner_id == admin_a.pk
    tomb = User.objects.get(pk=user.pk)
    assert not tomb.is_active and tomb.email.endswith("@deleted.invalid") and not tomb.has_usable_password()
    assert not Membership.objects.filter(user=tomb).exists()
    # Every credential is dead.
    assert api_key_client(tenant_a, raw).get("/api/v1/me/").status_code == 401
    assert client.get("/api/v1/me/").status_code == 401
    refresh = client_for(tenant_a).post(
        "/api/v1/auth/token/refresh/", {"refresh": pair["refresh"]}, content_type="application/json"
    )
    assert refresh.status_code == 401


def test_last_admin_cannot_delete_account(tenant_a, admin_a):
    response = jwt_client(tenant_a, admin_a).post(
        "/api/v1/me/delete/", {"confirm_email": admin_a.email}, content_type="application/json"
    )
    assert response.status_code == 409
    assert User.objects.get(pk=admin_a.pk).is_active


def test_openapi_schema_documents_both_security_schemes(tenant_a, admin_a):
    client = jwt_client(tenant_a, admin_a)
    response = client.get("/api/v1/schema/?format=json")
    assert response.status_code == 200
    schema = response.json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["jwtAuth"] == {**schemes["jwtAuth"], "type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    assert schemes["apiKeyAuth"]["type"] == "apiKey" and schemes["apiKeyAuth"]["in"] == "header"
    teams_get = schema["paths"]["/api/v1/teams/"]["get"]
    assert {"jwtAuth": []} in teams_get["security"] and {"apiKeyAuth": []} in teams_get["security"]
    assert "security" not in schema["paths"]["/api/v1/auth/token/"]["post"] or schema["paths"]["/api/v1/auth/token/"][
        "post"
    ]["security"] in ([], [{}])
    docs = client_for(tenant_a)
    docs.force_login(admin_a)
    assert docs.get("/api/v1/docs/").status_code == 200
    assert client_for(tenant_a).get("/api/v1/schema/").status_code == 401


# Not named `page`: pytest-playwright's fixture of that name would make these browser tests, and pytest would move
# the browser suite (and Playwright's event loop on the main thread) into the middle of the run.
@pytest.mark.parametrize("path", ["/api/v1/docs/", "/api/v1/redoc/"])
def test_api_reference_pages_send_a_signed_out_visitor_to_sign_in(tenant_a, path):
    response = client_for(tenant_a).get(path)
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={path}"


def test_default_agent_must_be_usable(tenant_a, admin_a):
    from agents.models import Agent

    user = member_create(tenant_a, role=Role.USER)
    with tenant_context(tenant_a):
        private = Agent.objects.create(name="Private", owner=admin_a)
        shared = Agent.objects.create(name="Shared", owner=admin_a, org_access="viewer")
    client = jwt_client(tenant_a, user)
    refused = client.patch("/api/v1/me/", {"default_agent_id": private.pk}, content_type="application/json")
    assert refused.status_code == 400 and refused.json()["field"] == "default_agent_id"
    ok = client.patch("/api/v1/me/", {"default_agent_id": shared.pk}, content_type="application/json")
    assert ok.status_code == 200 and ok.json()["default_agent_id"] == shared.pk
