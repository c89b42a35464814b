"""One ledger for concurrent runs, one error code per refusal on every surface, and a kernel that reads limits only
through the provider usage registers."""

from __future__ import annotations

import json

import pytest

from agents.tests.conftest import chat_over_websocket, run_inline
from core import quotas
from core.quotas import (
    ConcurrencyLimited,
    LimitsProvider,
    QuotaExceeded,
    chat_run_admit,
    quota_check,
    register_limits_provider,
    tenant_limits,
)
from tenants.models import Plan
from usage import sources

from .conftest import set_quota


@pytest.mark.parametrize("scope", ["agent", "tenant"])
def test_too_many_runs_is_concurrency_limited_over_rest_sse_and_websocket(committed, scope):
    """Whichever limit is full (the agent's own or the tenant's plan), every surface refuses with one code."""
    if scope == "agent":
        agent = committed.agent(limits={"max_concurrent_runs": 1})
    else:
        agent = committed.agent()
        set_quota(committed.tenant_a, max_concurrent_runs=1)
    client = committed.client()
    url = f"/api/v1/agents/{agent.pk}/chat/"
    first = client.post(url, {"message": "one", "wait": False}, content_type="application/json")
    assert first.status_code == 202, first.content

    over_rest = client.post(url, {"message": "two", "wait": False}, content_type="application/json")
    over_sse = client.post(url, {"message": "two"}, content_type="application/json", HTTP_ACCEPT="text/event-stream")
    frame = chat_over_websocket(committed.tenant_a, committed.admin_a, agent.pk, "two")

    assert over_rest.status_code == over_sse.status_code == 429
    assert int(over_rest["Retry-After"]) > 0
    body = over_rest.json()
    assert body["code"] == "concurrency_limited" and body["scope"] == scope and body["limit"] == 1
    assert frame["type"] == "error" and frame["data"] == body
    assert json.loads(over_sse.content) == body  # an SSE client gets the JSON error before any stream starts

    run_inline(committed.tenant_a, first.json()["run_id"])  # its end frees the slot on every surface
    third = client.post(url, {"message": "three", "wait": False}, content_type="application/json")
    assert third.status_code == 202, third.content
    run_inline(committed.tenant_a, third.json()["run_id"])


@pytest.mark.django_db
def test_a_run_whose_worker_died_frees_its_slot_when_its_lease_ends(tenant_a, admin_a, settings, monkeypatch):
    """Nobody releases a crashed run: its lease (the run's time limit plus slack) expires and the slot is free."""
    settings.CHAT_RUN_LEASE_SECONDS = 30
    chat_run_admit(tenant=tenant_a, user=admin_a, run_id="crashed", agent_id=7, agent_limit=1, run_seconds=120)
    with pytest.raises(ConcurrencyLimited) as refused:
        chat_run_admit(tenant=tenant_a, user=admin_a, run_id="next", agent_id=7, agent_limit=1, run_seconds=120)
    assert refused.value.as_dict()["scope"] == "agent"

    now = quotas.time.time()
    clock = type("Clock", (), {"time": staticmethod(lambda: now + 150), "monotonic": quotas.time.monotonic})
    monkeypatch.setattr(quotas, "time", clock)
    with pytest.raises(ConcurrencyLimited):  # still within 120 s + slack: a slow live run keeps its slot
        chat_run_admit(tenant=tenant_a, user=admin_a, run_id="next", agent_id=7, agent_limit=1, run_seconds=120)
    monkeypatch.setattr(clock, "time", staticmethod(lambda: now + 200))
    chat_run_admit(tenant=tenant_a, user=admin_a, run_id="next", agent_id=7, agent_limit=1, run_seconds=120).release()


@pytest.mark.django_db
def test_quota_limits_come_from_the_registered_provider_and_a_plan_change_applies(tenant_a, admin_a):
    consulted: list[int] = []

    def plan_limits(tenant) -> dict:
        consulted.append(tenant.pk)
        return sources.tenant_limits_load(tenant)

    register_limits_provider(
        LimitsProvider(
            tenant_limits=plan_limits, sub_limits=sources.sub_limits_load, tenant_for_schema=sources.tenant_for_schema
        )
    )
    try:
        plan = Plan.objects.create(slug="tiny", name="Tiny", max_documents_per_month=1)
        set_quota(tenant_a, plan=plan)
        quota_check(tenant=tenant_a, quota="documents_per_month", amount=1, user=admin_a)
        with pytest.raises(QuotaExceeded) as refused:
            quota_check(tenant=tenant_a, quota="documents_per_month", amount=1, user=admin_a)
        assert refused.value.as_dict()["limit"] == 1

        plan.max_documents_per_month = 3  # the plan changes: every process reads it at its next check
        plan.save()
        quota_check(tenant=tenant_a, quota="documents_per_month", amount=2, user=admin_a)
        assert tenant_limits(tenant_a)["documents_per_month"] == 3
        assert consulted and set(consulted) == {tenant_a.pk}
    finally:
        sources.register()
