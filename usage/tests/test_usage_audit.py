"""Usage API (daily series per tenant/user/agent/key), sub-limits API, and the immutable, filterable audit log."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import DatabaseError, transaction
from django_tenants.utils import tenant_context

from usage.models import AuditEntry
from usage.services import audit_record, usage_record_run


@pytest.mark.django_db
def test_audit_entries_cannot_be_changed_or_deleted_even_with_raw_sql(tenant_a, principal_a):
    with tenant_context(tenant_a):
        entry = audit_record(
            principal=principal_a,
            action="agent.update",
            target_type="agents.agent",
            target_id=3,
            before={"name": "a"},
            after={"name": "b"},
        )
        with pytest.raises(PermissionError):
            entry.save()
        with pytest.raises(PermissionError):
            entry.delete()
        with pytest.raises(PermissionError):
            AuditEntry.objects.filter(pk=entry.pk).update(action="nothing")
        with pytest.raises(PermissionError):
            AuditEntry.objects.all().delete()
        from django.db import connection

        for sql in (
            "UPDATE usage_auditentry SET action = 'x'",
            "DELETE FROM usage_auditentry",
            "TRUNCATE usage_auditentry",
        ):
            with pytest.raises(DatabaseError, match="immutable"), transaction.atomic(), connection.cursor() as cur:
                cur.execute(sql)
        assert AuditEntry.objects.get(pk=entry.pk).action == "agent.update"


@pytest.mark.django_db
def test_sub_limit_api_records_who_changed_what_and_audit_is_filterable(client_a, admin_a, tenant_a):
    client_a.force_login(admin_a)
    response = client_a.post(
        "/api/v1/usage/limits/",
        {"quota": "documents_per_month", "user_id": admin_a.pk, "limit": "50"},
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    response = client_a.post(
        "/api/v1/usage/limits/",
        {"quota": "documents_per_month", "user_id": admin_a.pk, "limit": "40"},
        content_type="application/json",
    )
    assert response.status_code == 201
    bad = client_a.post(
        "/api/v1/usage/limits/",
        {"quota": "documents_per_month", "user_id": admin_a.pk, "limit": "-4"},
        content_type="application/json",
    )
    assert bad.status_code == 400 and bad.json()["field"] == "limit"
    assert len(client_a.get("/api/v1/usage/limits/").json()) == 1
    audit = client_a.get("/api/v1/audit/", {"action": "quota."}).json()["results"]
    assert [e["action"] for e in audit] == ["quota.sublimit.set", "quota.sublimit.set"]
    newest = audit[0]
    assert newest["actor_email"] == admin_a.email and newest["before"]["limit"] == "50.0000"
    assert newest["after"]["limit"] == "40.0000" and newest["request_id"]
    assert client_a.get("/api/v1/audit/", {"action": "webhook."}).json()["results"] == []
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    assert client_a.get("/api/v1/audit/", {"since": future}).json()["results"] == []
    assert client_a.get("/api/v1/audit/", {"actor": admin_a.pk, "limit": 1}).json()["next_before_id"]
    sublimit_id = client_a.get("/api/v1/usage/limits/").json()[0]["id"]
    assert client_a.delete(f"/api/v1/usage/limits/{sublimit_id}/").status_code == 204
    assert client_a.get("/api/v1/audit/", {"action": "quota.sublimit.delete"}).json()["results"]


@pytest.mark.django_db
def test_usage_summary_gives_daily_series_per_scope(client_a, admin_a, tenant_a):
    with tenant_context(tenant_a):
        usage_record_run(
            tenant=tenant_a, run_id="1", agent_id=4, user=admin_a, model="gpt-4o", tokens_in=100, tokens_out=50
        )
        usage_record_run(
            tenant=tenant_a,
            run_id="2",
            agent_id=5,
            user=admin_a,
            api_key=77,
            model="gpt-4o",
            tokens_in=10,
            tokens_out=5,
        )
    client_a.force_login(admin_a)
    body = client_a.get("/api/v1/usage/summary/", {"days": 7}).json()
    assert len(body["daily"]) == 7 and body["daily"][-1]["date"] == dt.datetime.now(dt.UTC).date().isoformat()
    assert body["totals"]["runs"] == 2 and body["totals"]["tokens_in"] == 110
    assert body["daily"][-1]["tokens_out"] == 55 and body["by_model"][0]["model"] == "gpt-4o"
    agent = client_a.get("/api/v1/usage/summary/", {"scope": "agent", "id": 4}).json()
    assert agent["totals"]["runs"] == 1 and agent["totals"]["tokens_in"] == 100
    key = client_a.get("/api/v1/usage/summary/", {"scope": "api_key", "id": 77}).json()
    assert key["totals"]["tokens_in"] == 10
    mine = client_a.get("/api/v1/usage/summary/", {"scope": "user"}).json()
    assert mine["totals"]["runs"] == 2
    assert client_a.get("/api/v1/usage/summary/", {"days": 1000}).status_code == 400
    quotas = client_a.get("/api/v1/usage/quotas/").json()
    tokens = next(q for q in quotas["tenant"] if q["quota"] == "llm_tokens_per_month")
    assert tokens["used"] == 165 and tokens["resets_at"]


@pytest.mark.django_db
def test_members_see_only_their_own_usage_and_other_tenants_nothing(client_a, client_b, admin_a, admin_b, tenant_a):
    from accounts.models import Membership, User

    with tenant_context(tenant_a):
        usage_record_run(tenant=tenant_a, run_id="1", user=admin_a, model="offline", tokens_in=1, tokens_out=1)
    member = User.objects.create_user(email="member@acme.test", password="x" * 12)
    Membership.objects.create(user=member, tenant=tenant_a, role="user")
    client_a.force_login(member)
    assert client_a.get("/api/v1/usage/summary/", {"scope": "tenant"}).status_code == 403
    assert client_a.get("/api/v1/usage/summary/").json()["totals"]["runs"] == 0
    assert client_a.get("/api/v1/audit/").status_code == 403
    assert client_a.get("/api/v1/usage/limits/").status_code == 403
    client_b.force_login(admin_b)
    assert client_b.get("/api/v1/usage/summary/").json()["totals"]["runs"] == 0
    assert client_b.get("/api/v1/audit/").json()["results"] == []
    stranger = client_a.__class__(HTTP_HOST=client_a.defaults["HTTP_HOST"])
    stranger.force_login(admin_b)
    for url in ("/api/v1/usage/summary/", "/api/v1/usage/quotas/", "/api/v1/audit/", "/api/v1/usage/limits/"):
        assert stranger.get(url).status_code in (401, 403), url


@pytest.mark.django_db
def test_api_key_calls_are_counted_per_key_and_capped_by_the_monthly_quota(client_a, admin_a, tenant_a, principal_a):
    from iam.services import api_key_create

    from .conftest import set_quota

    with tenant_context(tenant_a):
        key, secret = api_key_create(principal=principal_a, name="ci", scopes=["read"])
    set_quota(tenant_a, max_api_calls_per_month=3)
    keyed = client_a.__class__(HTTP_HOST=client_a.defaults["HTTP_HOST"], HTTP_AUTHORIZATION=f"Api-Key {secret}")
    codes = [keyed.get("/api/v1/usage/quotas/").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 402]
    body = keyed.get("/api/v1/usage/quotas/").json()
    assert body["quota"] == "api_calls_per_month" and body["limit"] == 3
    client_a.force_login(admin_a)  # session calls are not metered as API calls
    summary = client_a.get("/api/v1/usage/summary/", {"scope": "api_key", "id": key.pk}).json()
    assert summary["totals"]["api_calls"] == 3


@pytest.mark.django_db
def test_admin_changes_in_other_apps_reach_the_audit_log_with_the_actor(
    client_a, admin_a, tenant_a, django_capture_on_commit_callbacks
):
    client_a.force_login(admin_a)
    with django_capture_on_commit_callbacks(execute=True):
        response = client_a.post(
            "/api/v1/teams/", {"name": "Support"}, content_type="application/json", HTTP_X_REQUEST_ID="req-team-1"
        )
    assert response.status_code == 201, response.content
    entries = client_a.get("/api/v1/audit/", {"action": "team."}).json()["results"]
    assert [e["action"] for e in entries] == ["team.create"]  # once: explicit, not again from the event bus
    assert entries[0]["actor_id"] == admin_a.pk
    assert entries[0]["actor_email"] == admin_a.email and entries[0]["after"]["name"] == "Support"
    assert entries[0]["request_id"] == "req-team-1"
