"""Who did it: every configuration change is audited with the principal that made it, whatever the surface
(API, dashboard, account deletion, command line)."""

from __future__ import annotations

import getpass
import io
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django_tenants.utils import tenant_context

from accounts.models import Membership, Role, User
from accounts.tests.helpers import client_for, jwt_pair
from iam.policy import Principal
from usage.models import AuditEntry

_seen_before: dict[str, int] = {}


@pytest.fixture(autouse=True)
def _only_this_tests_entries(tenant_a):
    """Audit entries are immutable: those that end-to-end tests committed earlier stay. Look at this test's only."""
    with tenant_context(tenant_a):
        _seen_before[tenant_a.schema_name] = (
            AuditEntry.objects.order_by("-id").values_list("id", flat=True).first() or 0
        )


def _entries(tenant, action: str) -> list[AuditEntry]:
    with tenant_context(tenant):
        newer = AuditEntry.objects.filter(id__gt=_seen_before.get(tenant.schema_name, 0))
        return list(newer.filter(action=action).order_by("id"))


def _member(tenant, email: str, role: str = Role.USER) -> User:
    user = User.objects.create_user(email=email, password="correct-horse-battery-9")
    Membership.objects.create(user=user, tenant=tenant, role=role)
    return user


@pytest.mark.django_db
def test_knowledge_base_created_in_the_dashboard_is_audited_with_the_member_who_created_it(client_a, tenant_a):
    member = _member(tenant_a, "dash-creator@acme.test")
    client_a.force_login(member)
    response = client_a.post("/knowledge/", {"name": "Dashboard KB", "description": "", "org_access": "none"})
    assert response.status_code == 302, response.content
    [entry] = _entries(tenant_a, "knowledge_base.create")
    assert (entry.actor_id, entry.actor_email) == (member.pk, member.email)
    assert entry.after["name"] == "Dashboard KB" and entry.ip == "127.0.0.1"


@pytest.mark.django_db
def test_dashboard_upload_is_audited_with_the_uploader(client_a, tenant_a):
    from knowledge.services import knowledge_base_create

    member = _member(tenant_a, "uploader@acme.test")
    with tenant_context(tenant_a):
        kb = knowledge_base_create(owner=member, name="Uploads", embedding_model="hashing-384")
    client_a.force_login(member)  # the dashboard's upload widget posts with the browser session
    response = client_a.post(
        f"/api/v1/knowledge-bases/{kb.pk}/documents/",
        {"files": [SimpleUploadedFile("notes.md", b"# Notes\nRefunds within 30 days.", content_type="text/markdown")]},
    )
    assert response.status_code in (201, 202), response.content
    [entry] = _entries(tenant_a, "knowledge_base.documents_upload")
    assert (entry.actor_id, entry.actor_email) == (member.pk, member.email)
    assert entry.target_id == str(kb.pk)
    assert [d["title"] for d in entry.after["documents"]] == ["notes.md"]


@pytest.mark.django_db
def test_account_deletion_hands_over_each_object_audited_announced_and_fresh_in_the_agent_cache(
    tenant_a, admin_a, django_capture_on_commit_callbacks
):
    from agents.selectors import agent_get_for_chat
    from agents.services import agent_create
    from core.events import stream_read
    from knowledge.services import knowledge_base_create

    leaver = _member(tenant_a, "leaver-audited@acme.test")
    admin = Principal(tenant=tenant_a, user=admin_a, role=Role.ADMIN)
    with tenant_context(tenant_a):
        mine = Principal(tenant=tenant_a, user=leaver, role=Role.USER)
        agent = agent_create(principal=mine, data={"name": "Leaver's agent"})
        kb = knowledge_base_create(owner=leaver, name="Leaver's KB", embedding_model="hashing-384")
        assert agent_get_for_chat(admin, agent.pk).owner_id == leaver.pk  # now cached in this process
    client = client_for(tenant_a, HTTP_AUTHORIZATION=f"Bearer {jwt_pair(tenant_a, leaver)['access']}")
    with django_capture_on_commit_callbacks(execute=True):
        done = client.post(
            "/api/v1/me/delete/",
            {"confirm_email": leaver.email, "transfer_owned": True},
            content_type="application/json",
        )
    assert done.status_code == 200, done.content

    entries = _entries(tenant_a, "resource.transfer")
    assert sorted((e.target_type, e.target_id) for e in entries) == sorted(
        [("agents.agent", str(agent.pk)), ("knowledge.knowledgebase", str(kb.pk))]
    )
    for entry in entries:
        assert (entry.actor_id, entry.actor_email) == (leaver.pk, "leaver-audited@acme.test")  # who deleted
        assert (entry.before, entry.after) == ({"owner_id": leaver.pk}, {"owner_id": admin_a.pk})
    with tenant_context(tenant_a):
        assert agent_get_for_chat(admin, agent.pk).owner_id == admin_a.pk  # the cached copy did not outlive it
    moved = [e["data"] for _, e in stream_read(tenant_a.schema_name) if e["type"] == "resource.ownership_transferred"]
    assert sorted((d["resource_type"], d["resource_id"], d["to"]) for d in moved) == sorted(
        [("agent", agent.pk, admin_a.pk), ("knowledge_base", kb.pk, admin_a.pk)]
    )


@pytest.mark.django_db
def test_a_management_command_is_audited_as_the_command_line_and_os_user(tenant_a, admin_a):
    from agents.services import provider_create

    with tenant_context(tenant_a):
        provider_create(
            principal=Principal(tenant=tenant_a, user=admin_a, role=Role.ADMIN),
            name="Rotated",
            kind="openai",
            api_key="sk-rotate-me",
        )
    call_command("rotate_secrets", stdout=io.StringIO())
    [entry] = _entries(tenant_a, "secrets.rotate")
    assert entry.actor_id is None and entry.actor_email == ""
    assert entry.actor_name == f"cli:rotate_secrets ({getpass.getuser()})"
    assert entry.after == {"providers": 1, "custom_tools": 0}


@pytest.mark.django_db
def test_custom_tool_and_approved_host_changes_are_audited_with_the_admin_and_without_secrets(
    client_a, admin_a, tenant_a
):
    client_a.force_login(admin_a)
    tool = client_a.post(
        "/api/v1/custom-tools/",
        {
            "template": "slack_webhook",
            "name": "audited_alerts",
            "params": {"webhook_url": "https://hooks.slack.com/services/T0/SECRET-PATH"},
        },
        content_type="application/json",
    )
    assert tool.status_code == 201, tool.content
    assert client_a.delete(f"/api/v1/custom-tools/{tool.json()['id']}/").status_code == 204
    host = client_a.post(
        "/api/v1/approved-hosts/", {"host": "API.Example.com", "note": "CRM"}, content_type="application/json"
    )
    assert host.status_code == 201, host.content
    assert client_a.delete(f"/api/v1/approved-hosts/{host.json()['id']}/").status_code == 204
    assert client_a.delete(f"/api/v1/approved-hosts/{host.json()['id']}/").status_code == 404

    created, deleted = _entries(tenant_a, "custom_tool.create"), _entries(tenant_a, "custom_tool.delete")
    added, removed = _entries(tenant_a, "approved_host.add"), _entries(tenant_a, "approved_host.delete")
    for entry in (*created, *deleted, *added, *removed):
        assert (entry.actor_id, entry.actor_email) == (admin_a.pk, admin_a.email)
    assert [len(created), len(deleted), len(added), len(removed)] == [1, 1, 1, 1]
    assert created[0].after["name"] == "audited_alerts" and created[0].after["has_secrets"] is True
    assert deleted[0].before["name"] == "audited_alerts"
    assert added[0].after == {"host": "api.example.com", "note": "CRM"}
    assert removed[0].before["host"] == "api.example.com"
    dumped = json.dumps([[e.before, e.after] for e in (*created, *deleted)])
    assert "SECRET-PATH" not in dumped
