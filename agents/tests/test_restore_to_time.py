"""Point-in-time restore of an agent: the configuration current at a time comes back as a new version, through
agent_version_restore (same checks, event, audit); times before the first version or in the future are refused."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone
from django_tenants.utils import tenant_context

from accounts.models import Membership, Role, User
from agents.models import Agent, AgentVersion
from agents.services import agent_create, agent_update
from conftest import PASSWORD
from iam.policy import principal_for_user
from usage.models import AuditEntry

pytestmark = pytest.mark.django_db
T0 = timezone.now().replace(microsecond=0) - dt.timedelta(days=1)


@pytest.fixture
def agent(tenant_a, admin_a):
    """Versions 1, 2, 3 created at T0, T0+1h, T0+2h with prompts "one", "two", "three"."""
    with tenant_context(tenant_a):
        principal = principal_for_user(admin_a, tenant_a)
        made = agent_create(principal=principal, data={"name": "Support", "system_prompt": "one"})
        agent_update(principal=principal, agent=made, data={"system_prompt": "two"})
        agent_update(principal=principal, agent=made, data={"system_prompt": "three"})
        for number in (1, 2, 3):
            AgentVersion.objects.filter(agent=made, number=number).update(
                created_at=T0 + dt.timedelta(hours=number - 1)
            )
        yield made


def _restore(client, agent, at: str):
    return client.post(f"/api/v1/agents/{agent.pk}/restore-to-time/", {"at": at}, content_type="application/json")


def test_restore_to_time_brings_back_the_configuration_current_then(agent, client_a, admin_a, tenant_a):
    client_a.force_login(admin_a)
    response = _restore(client_a, agent, (T0 + dt.timedelta(minutes=59)).isoformat())
    assert response.status_code == 201, response.content
    assert response.json()["number"] == 4 and response.json()["restored_from"] == 1
    with tenant_context(tenant_a):
        assert Agent.objects.get(pk=agent.pk).system_prompt == "one"
        entry = AuditEntry.objects.get(action="agent.version_restore")
    assert entry.actor_id == admin_a.pk and entry.after["restored_from"] == 1
    # A time given with another offset names the same instant: T0+1h in UTC is 03:00+02:00 and so on.
    at = (T0 + dt.timedelta(hours=1)).astimezone(dt.timezone(dt.timedelta(hours=2))).isoformat()
    assert _restore(client_a, agent, at).json()["restored_from"] == 2


def test_restore_to_time_refuses_times_before_the_first_version_or_in_the_future(agent, client_a, admin_a):
    client_a.force_login(admin_a)
    for at, words in [
        ((T0 - dt.timedelta(seconds=1)).isoformat(), "before the agent's first version"),
        ((timezone.now() + dt.timedelta(minutes=5)).isoformat(), "in the future"),
    ]:
        response = _restore(client_a, agent, at)
        assert response.status_code == 400, response.content
        assert response.json()["code"] == "invalid" and words in response.json()["detail"]
    assert _restore(client_a, agent, "").status_code == 400
    assert _restore(client_a, agent, timezone.now().isoformat()).status_code == 409  # v3 is still current
    assert AgentVersion.objects.filter(agent=agent).count() == 3


def test_restore_to_time_needs_edit_access(agent, client_a, tenant_a):
    reader = User.objects.create_user(email="reader@acme.test", password=PASSWORD)
    Membership.objects.create(user=reader, tenant=tenant_a, role=Role.READONLY)
    client_a.force_login(reader)
    assert _restore(client_a, agent, T0.isoformat()).status_code == 403
    assert AgentVersion.objects.filter(agent=agent).count() == 3


def test_dashboard_restores_to_a_time_from_the_versions_page(agent, client_a, admin_a, tenant_a):
    client_a.force_login(admin_a)
    page = client_a.get(f"/agents/{agent.pk}/versions/")
    assert b'name="at"' in page.content and b"restore-to-time" in page.content
    at = (T0 + dt.timedelta(hours=1, minutes=1)).strftime("%Y-%m-%dT%H:%M")  # what <input type=datetime-local> sends
    response = client_a.post(f"/agents/{agent.pk}/restore-to-time/", {"at": at}, follow=True)
    assert b"Restored version 2" in response.content
    with tenant_context(tenant_a):
        assert Agent.objects.get(pk=agent.pk).system_prompt == "two"
    response = client_a.post(f"/agents/{agent.pk}/restore-to-time/", {"at": "2001-01-01T00:00"}, follow=True)
    assert b"before the agent&#x27;s first version" in response.content
