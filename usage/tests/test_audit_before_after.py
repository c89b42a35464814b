"""Admin and configuration changes record who, what, when, before and after (and never secrets)."""

from __future__ import annotations

import json

import pytest
from django_tenants.utils import tenant_context

from usage.models import AuditEntry


def _entry(action: str) -> AuditEntry:
    entries = list(AuditEntry.objects.filter(action=action).order_by("-id"))
    assert entries, f"no {action} audit entry"
    return entries[0]


@pytest.mark.django_db
def test_member_role_change_is_audited_with_before_and_after(tenant_a, principal_a, admin_a):
    from accounts.models import Membership, User
    from iam.services import membership_role_change

    member = User.objects.create_user(email="audited-member@acme.test", password="x-irrelevant-9")
    Membership.objects.create(user=member, tenant=tenant_a, role="user")
    with tenant_context(tenant_a):
        membership_role_change(principal=principal_a, user_id=member.pk, role="readonly")
        entry = _entry("member.role_change")
    assert (entry.actor_id, entry.actor_email) == (admin_a.pk, admin_a.email)  # who
    assert entry.target_id == str(member.pk) and entry.created_at  # what, when
    assert (entry.before, entry.after) == ({"role": "user"}, {"role": "readonly"})


@pytest.mark.django_db
def test_agent_update_and_restore_are_audited_with_the_configuration_before_and_after(tenant_a, principal_a):
    from agents.services import agent_create, agent_update, agent_version_restore

    with tenant_context(tenant_a):
        agent = agent_create(principal=principal_a, data={"name": "Audited", "system_prompt": "Be brief."})
        agent_update(principal=principal_a, agent=agent, data={"name": "Audited v2", "system_prompt": "Be kind."})
        update = _entry("agent.update")
        assert update.target_id == str(agent.pk) and update.actor_id == principal_a.user.pk
        assert (update.before["name"], update.before["system_prompt"]) == ("Audited", "Be brief.")
        assert (update.after["name"], update.after["system_prompt"]) == ("Audited v2", "Be kind.")
        assert update.after["version"] == 2

        agent_version_restore(principal=principal_a, agent=agent, number=1)
        restore = _entry("agent.version_restore")
        assert restore.before["name"] == "Audited v2" and restore.after["name"] == "Audited"
        assert (restore.after["version"], restore.after["restored_from"]) == (3, 1)

        count = AuditEntry.objects.filter(action="agent.update").count()
        agent_update(principal=principal_a, agent=agent, data={"name": "Audited"})  # no change: no entry
        assert AuditEntry.objects.filter(action="agent.update").count() == count


@pytest.mark.django_db
def test_sub_limit_change_is_audited_with_the_previous_limit(tenant_a, principal_a, admin_a):
    from usage.services import sublimit_set

    with tenant_context(tenant_a):
        sublimit_set(principal=principal_a, quota="concurrent_runs", limit=3, user_id=admin_a.pk)
        first = _entry("quota.sublimit.set")
        assert first.before is None and first.after["limit"].startswith("3")
        sublimit_set(principal=principal_a, quota="concurrent_runs", limit=2, user_id=admin_a.pk)
        second = _entry("quota.sublimit.set")
        assert second.before["limit"].startswith("3") and second.after["limit"].startswith("2")
        assert second.before["user_id"] == second.after["user_id"] == admin_a.pk


@pytest.mark.django_db
def test_api_key_revoke_is_audited_without_key_material(tenant_a, principal_a):
    from iam.services import api_key_create, api_key_revoke

    with tenant_context(tenant_a):
        key, secret = api_key_create(principal=principal_a, name="CI key", scopes=["read", "chat"])
        api_key_revoke(principal=principal_a, key=key)
        entry = _entry("api_key.revoke")
        assert entry.target_id == str(key.pk) and entry.actor_id == principal_a.user.pk
        assert entry.before["revoked_at"] is None and entry.after["revoked_at"]
        assert entry.before["name"] == entry.after["name"] == "CI key"
        assert entry.after["scopes"] == ["chat", "read"]
        created = _entry("api_key.create")
        for row in (entry, created):
            dumped = json.dumps([row.before, row.after])
            assert secret not in dumped and key.key_hash not in dumped and "key_hash" not in dumped


@pytest.mark.django_db
def test_provider_credential_changes_are_audited_without_the_api_key(tenant_a, principal_a):
    from agents.services import provider_create, provider_delete, provider_update

    with tenant_context(tenant_a):
        provider = provider_create(principal=principal_a, name="Audited LLM", kind="openai", api_key="sk-old-SECRET")
        provider_update(provider=provider, data={"api_key": "sk-new-SECRET", "enabled": False}, principal=principal_a)
        update = _entry("provider.update")
        assert (update.before["enabled"], update.after["enabled"]) == (True, False)
        assert update.after["api_key_changed"] is True and update.actor_id == principal_a.user.pk
        provider_delete(provider=provider, principal=principal_a)
        assert _entry("provider.delete").before["name"] == "Audited LLM"
        rows = AuditEntry.objects.filter(action__startswith="provider.")
        dumped = json.dumps([[r.before, r.after] for r in rows])
        assert "SECRET" not in dumped and provider.api_key_encrypted not in dumped


@pytest.mark.django_db
def test_team_update_and_knowledge_base_settings_are_audited_with_before(tenant_a, principal_a, admin_a):
    from iam.services import team_create, team_update
    from knowledge.services import knowledge_base_create, knowledge_base_update

    with tenant_context(tenant_a):
        team = team_create(principal=principal_a, name="Auditors")
        team_update(principal=principal_a, team=team, name="Auditors 2")
        entry = _entry("team.update")
        assert entry.before["name"] == "Auditors" and entry.after["name"] == "Auditors 2"

        kb = knowledge_base_create(owner=admin_a, name="Audited KB", embedding_model="hashing-384")
        knowledge_base_update(kb=kb, user=admin_a, chunk_size=300, description="new")
        kb_entry = _entry("knowledge_base.settings_update")
        assert kb_entry.actor_id == admin_a.pk
        assert (kb_entry.before["chunk_size"], kb_entry.after["chunk_size"]) == (256, 300)
        assert (kb_entry.before["description"], kb_entry.after["description"]) == ("", "new")


@pytest.mark.django_db
def test_a_knowledge_base_created_and_deleted_over_the_api_is_audited_once_each_with_its_caller(
    client_a, admin_a, tenant_a, django_capture_on_commit_callbacks
):
    client_a.force_login(admin_a)
    with django_capture_on_commit_callbacks(execute=True):
        body = {"name": "Once", "embedding_model": "hashing-384"}
        created = client_a.post("/api/v1/knowledge-bases/", body, content_type="application/json")
        assert created.status_code == 201, created.content
        kb_id = created.json()["id"]
        assert client_a.delete(f"/api/v1/knowledge-bases/{kb_id}/").status_code == 204
    with tenant_context(tenant_a):
        rows = list(AuditEntry.objects.filter(target_id=str(kb_id), action__startswith="knowledge_base."))
    assert sorted(r.action for r in rows) == ["knowledge_base.create", "knowledge_base.delete"]
    assert all(r.actor_id == admin_a.pk for r in rows)  # the caller, though the service took no principal
    create = next(r for r in rows if r.action.endswith("create"))
    assert create.after["name"] == "Once" and create.before is None
