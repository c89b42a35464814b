"""What the dashboard offers matches what the policy allows (read-only members see no create or admin controls),
pages speak in human labels, counts on the usage page agree, and the API docs are one click away."""

from __future__ import annotations

import re

import pytest
from django.core import mail
from django_tenants.utils import tenant_context

from accounts.models import Role
from accounts.tests.helpers import api_key_client, api_key_create, client_for, jwt_client, member_create
from iam.models import IamSettings

pytestmark = pytest.mark.django_db


def _logged_in(tenant, user):
    client = client_for(tenant)
    client.force_login(user)
    return client


def _members_may_create_keys(tenant, allowed: bool) -> None:
    with tenant_context(tenant):
        IamSettings.objects.update_or_create(pk=1, defaults={"members_can_create_api_keys": allowed})


def _scope_choices(page) -> list[str]:
    return re.findall(r'name="scopes" value="(\w+)"', page.content.decode())


def test_readonly_home_and_agents_pages_offer_nothing_to_create(tenant_a):
    reader = member_create(tenant_a, role=Role.READONLY)
    client = _logged_in(tenant_a, reader)
    home = client.get("/").content.decode()
    assert "No agents are shared with you yet" in home and "Create one" not in home
    agents = client.get("/agents/").content.decode()
    assert "Create your first agent" not in agents and "New agent" not in agents and "Create one" not in agents
    # A member who may create is still invited to.
    writer = member_create(tenant_a, role=Role.USER)
    assert "Create one" in _logged_in(tenant_a, writer).get("/").content.decode()


def test_readonly_api_key_form_offers_only_the_scopes_it_may_grant(tenant_a):
    _members_may_create_keys(tenant_a, True)
    reader = member_create(tenant_a, role=Role.READONLY)
    page = _logged_in(tenant_a, reader).get("/api-keys/")
    assert page.status_code == 200
    assert _scope_choices(page) == ["read", "chat"]
    assert "Admin: manage" not in page.content.decode()


def test_admin_api_key_form_offers_every_scope(client_a, admin_a):
    client_a.force_login(admin_a)
    assert sorted(_scope_choices(client_a.get("/api-keys/"))) == ["admin", "chat", "read", "write"]


def test_member_without_key_rights_sees_no_form_and_cannot_post_one(tenant_a):
    _members_may_create_keys(tenant_a, False)
    member = member_create(tenant_a, role=Role.USER)
    client = _logged_in(tenant_a, member)
    page = client.get("/api-keys/")
    assert _scope_choices(page) == [] and b"Create key" not in page.content
    assert b"Only admins create API keys" in page.content
    refused = client.post("/api-keys/", {"name": "sneaky", "scopes": ["read"]})
    assert refused.status_code == 403


def test_api_docs_are_linked_from_the_api_keys_page_and_the_user_menu(client_a, admin_a):
    client_a.force_login(admin_a)
    keys_page = client_a.get("/api-keys/").content.decode()
    assert 'href="/api/v1/docs/"' in keys_page and "clients/python/README.md" in keys_page
    profile = client_a.get("/profile/").content.decode()
    menu = profile[profile.index('class="dropdown user-menu"') :]
    assert 'href="/api/v1/docs/"' in menu and 'href="/api-keys/#python-client"' in menu


def test_usage_headline_and_plan_limits_count_the_same_api_requests(tenant_a, admin_a, client_a):
    _, raw = api_key_create(tenant_a, admin_a, scopes=("read",))
    caller = api_key_client(tenant_a, raw)
    for _ in range(3):
        assert caller.get("/api/v1/agents/").status_code == 200
    client_a.force_login(admin_a)
    page = client_a.get("/manage/usage/")
    headline = page.context["usage"]["totals"]["api_calls"]
    plan = next(q for q in page.context["quotas"] if q["name"] == "api_calls_per_month")["used"]
    assert headline == plan == 3


def test_usage_page_uses_human_quota_names(client_a, admin_a):
    client_a.force_login(admin_a)
    page = client_a.get("/manage/usage/").content.decode()
    assert "Knowledge storage" in page and "API requests this month" in page
    for internal in (">kb_storage_bytes<", ">api_calls_per_month<", ">llm_tokens_per_month<"):  # values may stay
        assert internal not in page


def test_agent_types_have_human_labels(client_a, admin_a):
    client_a.force_login(admin_a)
    form = client_a.get("/agents/new/").content.decode()
    assert ">Answers from knowledge<" in form and ">rag<" not in form


def test_invitation_mail_and_audit_log_name_the_role_in_words(
    tenant_a, admin_a, client_a, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = jwt_client(tenant_a, admin_a).post(
            "/api/v1/invitations/", {"email": "reader@example.com", "role": "readonly"}, content_type="application/json"
        )
    assert response.status_code == 201
    body = mail.outbox[-1].body
    assert "with the role Read-only" in body and "readonly" not in body
    client_a.force_login(admin_a)
    audit = client_a.get("/manage/audit/?action=invitation.").content.decode()
    assert "reader@example.com (Read-only)" in audit and "as readonly" not in audit
