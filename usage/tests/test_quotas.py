"""Quotas at their enforcement points: plan limits (402), admin sub-limits (403), bad settings refused."""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django_tenants.utils import tenant_context

from core.errors import InvalidInput
from core.quotas import (
    ConcurrencyLimited,
    Overloaded,
    QuotaExceeded,
    chat_run_admit,
    chat_run_release,
    quota_check,
    quota_consume,
    quota_usage,
)
from tenants.models import Plan, TenantQuota

from .conftest import set_quota


@pytest.mark.django_db
def test_documents_per_month_reserves_then_refuses_with_402_naming_the_quota(tenant_a, admin_a):
    set_quota(tenant_a, max_documents_per_month=3)
    for _ in range(3):
        quota_check(tenant=tenant_a, quota="documents_per_month", amount=1, user=admin_a)
    with pytest.raises(QuotaExceeded) as refused:
        quota_check(tenant=tenant_a, quota="documents_per_month", amount=1, user=admin_a)
    body = refused.value.as_dict()
    assert refused.value.status == 402
    assert body["code"] == "quota_exceeded"
    assert body["quota"] == "documents_per_month" and body["limit"] == 3 and body["used"] == 3
    assert body["scope"] == "tenant" and body["resets_at"].endswith("+00:00")
    assert quota_usage(tenant=tenant_a, quota="documents_per_month") == 3  # the refusal reserved nothing


@pytest.mark.django_db
def test_user_sub_limit_refuses_with_403_and_other_members_keep_going(tenant_a, admin_a, principal_a):
    from accounts.models import Membership, User
    from usage.services import sublimit_set

    other = User.objects.create_user(email="second@acme.test", password="x" * 12)
    Membership.objects.create(user=other, tenant=tenant_a, role="user")
    with tenant_context(tenant_a):
        sublimit_set(principal=principal_a, quota="documents_per_month", limit=1, user_id=other.pk)
    quota_check(tenant=tenant_a, quota="documents_per_month", amount=1, user=other)
    with pytest.raises(QuotaExceeded) as refused:
        quota_check(tenant=tenant_a, quota="documents_per_month", amount=1, user=other)
    assert refused.value.status == 403 and refused.value.as_dict()["scope"] == "user"
    quota_check(tenant=tenant_a, quota="documents_per_month", amount=5, user=admin_a)
    assert quota_usage(tenant=tenant_a, quota="documents_per_month") == 6


@pytest.mark.django_db
def test_negative_absurd_and_over_plan_limits_are_refused(tenant_a, principal_a, admin_a):
    from usage.services import sublimit_set

    set_quota(tenant_a, max_llm_tokens_per_month=1000)
    with tenant_context(tenant_a):
        for bad in (-1, "lots", 10**20, True):
            with pytest.raises(InvalidInput):
                sublimit_set(principal=principal_a, quota="llm_tokens_per_month", limit=bad, user_id=admin_a.pk)
        with pytest.raises(InvalidInput, match="cannot exceed your plan"):
            sublimit_set(principal=principal_a, quota="llm_tokens_per_month", limit=1001, user_id=admin_a.pk)
        with pytest.raises(InvalidInput):
            sublimit_set(principal=principal_a, quota="no_such_quota", limit=1, user_id=admin_a.pk)
    row = TenantQuota.objects.get(tenant=tenant_a)
    row.max_active_agents = -5
    with pytest.raises(ValidationError):
        row.full_clean()
    row.max_active_agents = 10**9  # absurd
    with pytest.raises(ValidationError):
        row.full_clean()
    with pytest.raises(IntegrityError), transaction.atomic():
        Plan.objects.create(slug="broken", name="Broken", max_documents_per_month=-1)


@pytest.mark.django_db
def test_plan_then_staff_override_decide_the_limit(tenant_a, admin_a):
    plan = Plan.objects.create(slug="starter", name="Starter", max_documents_per_month=1, max_active_agents=2)
    override = TenantQuota.objects.create(tenant=tenant_a, plan=plan)
    quota_check(tenant=tenant_a, quota="documents_per_month")
    with pytest.raises(QuotaExceeded):
        quota_check(tenant=tenant_a, quota="documents_per_month")
    override.max_documents_per_month = 5  # staff override wins
    override.save()
    quota_check(tenant=tenant_a, quota="documents_per_month")


@pytest.mark.django_db
def test_agent_creation_is_refused_over_active_agents(tenant_a, principal_a):
    from agents.models import Agent
    from agents.services import agent_create

    set_quota(tenant_a, max_active_agents=1)
    with tenant_context(tenant_a):
        agent_create(principal=principal_a, data={"name": "One"})
        with pytest.raises(QuotaExceeded) as refused:
            agent_create(principal=principal_a, data={"name": "Two"})
        assert refused.value.as_dict()["quota"] == "active_agents"
        assert refused.value.as_dict()["used"] == 1
        assert Agent.objects.filter(name="Two").count() == 0


@pytest.mark.django_db
def test_upload_over_storage_quota_is_refused_before_the_file_is_stored(
    tenant_a, admin_a, principal_a, settings, tmp_path
):
    from knowledge.models import Document, KnowledgeBase
    from knowledge.services import documents_ingest, upload_from_text

    settings.MEDIA_ROOT = str(tmp_path)
    set_quota(tenant_a, max_kb_storage_bytes=10)
    with tenant_context(tenant_a):
        kb = KnowledgeBase.objects.create(owner=admin_a, name="Quota KB")
        upload = upload_from_text(title="big.txt", text="x" * 100)
        with pytest.raises(QuotaExceeded) as refused:
            documents_ingest(kb=kb, user=admin_a, uploads=[upload])
        assert refused.value.as_dict()["quota"] == "kb_storage_bytes"
        assert Document.objects.filter(knowledge_base=kb).count() == 0
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


@pytest.mark.django_db
def test_upload_over_documents_per_month_is_refused(tenant_a, admin_a, settings, tmp_path):
    from knowledge.models import Document, KnowledgeBase
    from knowledge.services import documents_ingest, upload_from_text

    settings.MEDIA_ROOT = str(tmp_path)
    set_quota(tenant_a, max_documents_per_month=0)
    with tenant_context(tenant_a):
        kb = KnowledgeBase.objects.create(owner=admin_a, name="Docs KB")
        upload = upload_from_text(title="a.txt", text="hello world")
        with pytest.raises(QuotaExceeded) as refused:
            documents_ingest(kb=kb, user=admin_a, uploads=[upload])
        assert refused.value.as_dict()["quota"] == "documents_per_month"
        assert Document.objects.filter(knowledge_base=kb).count() == 0


@pytest.mark.django_db
def test_tokens_and_cost_are_metered_and_count_against_the_month(tenant_a, admin_a, settings):
    from usage.models import UsageRecord
    from usage.services import usage_record_run

    with tenant_context(tenant_a):
        record = usage_record_run(
            tenant=tenant_a,
            run_id="r1",
            agent_id=7,
            user=admin_a,
            model="gpt-4o-mini",
            provider="openai",
            tokens_in=1000,
            tokens_out=500,
            latency_ms=1234,
        )
        assert record.cost == Decimal("0.000450")  # 1000*0.15/1M + 500*0.60/1M
        settings.LLM_PRICES = {**settings.LLM_PRICES, "house-model": [10, 20]}
        record = usage_record_run(
            tenant=tenant_a.schema_name, run_id="r2", user=admin_a, model="house-model", tokens_in=100, tokens_out=100
        )
        assert record.cost == Decimal("0.003000")
        assert UsageRecord.objects.count() == 2
    assert quota_usage(tenant=tenant_a, quota="llm_tokens_per_month") == 1700
    assert quota_usage(tenant=tenant_a, quota="llm_tokens_per_month", user=admin_a) == 1700
    assert quota_usage(tenant=tenant_a, quota="llm_cost_per_month") == Decimal("0.003450")


@pytest.mark.django_db
def test_cold_counters_are_seeded_from_the_database(tenant_a, admin_a):
    """A Redis flush must not hand everyone a fresh month: counters start from the recorded usage."""
    from core.redis_clients import redis_client
    from usage.services import usage_record_run

    with tenant_context(tenant_a):
        usage_record_run(tenant=tenant_a, run_id="r1", user=admin_a, model="offline", tokens_in=40, tokens_out=2)
    for key in redis_client().scan_iter("quota:*"):
        redis_client().delete(key)
    set_quota(tenant_a, max_llm_tokens_per_month=42)
    with pytest.raises(QuotaExceeded):
        quota_check(tenant=tenant_a, quota="llm_tokens_per_month", amount=0)


@pytest.mark.django_db
def test_quota_warnings_at_80_and_100_percent_are_published_once(tenant_a):
    from core.events import stream_read

    set_quota(tenant_a, max_documents_per_month=10)
    quota_check(tenant=tenant_a, quota="documents_per_month", amount=7)
    quota_check(tenant=tenant_a, quota="documents_per_month", amount=1)  # 80%
    quota_check(tenant=tenant_a, quota="documents_per_month", amount=2)  # 100%
    for _ in range(3):
        with pytest.raises(QuotaExceeded):
            quota_check(tenant=tenant_a, quota="documents_per_month", amount=1)
    warnings = [e for _, e in stream_read(tenant_a.schema_name) if e["type"] == "quota.warning"]
    assert [(w["data"]["quota"], w["data"]["level"]) for w in warnings] == [
        ("documents_per_month", 80),
        ("documents_per_month", 100),
    ]


@pytest.mark.django_db
def test_concurrent_runs_limit_gives_429_with_retry_after(tenant_a, tenant_b, admin_a, admin_b):
    set_quota(tenant_a, max_concurrent_runs=1)
    first = chat_run_admit(tenant=tenant_a, user=admin_a, run_id="a1", wait_seconds=0)
    with pytest.raises(ConcurrencyLimited) as refused:
        chat_run_admit(tenant=tenant_a, user=admin_a, run_id="a2", wait_seconds=0)
    assert refused.value.status == 429 and int(refused.value.headers["Retry-After"]) > 0
    with chat_run_admit(tenant=tenant_b, user=admin_b, run_id="b1", wait_seconds=0):
        pass  # the other tenant is unaffected
    first.release()
    chat_run_admit(tenant=tenant_a, user=admin_a, run_id="a3", wait_seconds=0)
    chat_run_release(schema=tenant_a.schema_name, run_id="a3")
    chat_run_admit(tenant=tenant_a, user=admin_a, run_id="a4", wait_seconds=0).release()


@pytest.mark.django_db
def test_saturated_pool_queues_with_positions_then_503(tenant_a, tenant_b, admin_a, admin_b, settings):
    settings.CHAT_POOL_SLOTS = 1
    settings.CHAT_QUEUE_MAX = 1
    holder = chat_run_admit(tenant=tenant_a, user=admin_a, run_id="hold", wait_seconds=0)
    positions: list[int] = []
    admitted = {}

    def waiter():
        admitted["slot"] = chat_run_admit(
            tenant=tenant_b, user=admin_b, run_id="wait", wait_seconds=5, on_position=positions.append
        )

    thread = threading.Thread(target=waiter)
    thread.start()
    deadline = time.monotonic() + 3
    while not positions and time.monotonic() < deadline:
        time.sleep(0.02)
    assert positions == [1]
    with pytest.raises(Overloaded) as refused:  # the queue (1) is full: a clear 503 at once
        chat_run_admit(tenant=tenant_a, user=admin_a, run_id="third", wait_seconds=5)
    assert refused.value.status == 503 and refused.value.headers["Retry-After"]
    holder.release()
    thread.join(5)
    assert admitted["slot"].queued_seconds > 0
    with pytest.raises(Overloaded):  # pool full again, and waiting times out
        chat_run_admit(tenant=tenant_a, user=admin_a, run_id="late", wait_seconds=0.3)
    admitted["slot"].release()


@pytest.mark.django_db
def test_quota_consume_after_a_run_can_refuse_the_next_one(tenant_a, admin_a):
    set_quota(tenant_a, max_llm_tokens_per_month=100)
    quota_check(tenant=tenant_a, quota="llm_tokens_per_month", amount=0)
    quota_consume(tenant=tenant_a, quota="llm_tokens_per_month", amount=150, user=admin_a)
    with pytest.raises(QuotaExceeded) as refused:
        quota_check(tenant=tenant_a, quota="llm_tokens_per_month", amount=0, user=admin_a)
    assert refused.value.as_dict()["used"] == 150
