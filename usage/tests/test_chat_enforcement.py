"""Chat is refused before any provider call; runs are metered; a flooding tenant does not starve another."""

from __future__ import annotations

import json

import pytest
from django_tenants.utils import tenant_context

from agents.tests.conftest import run_inline
from agents.tests.fakes import FakeOpenAI
from core.quotas import QuotaExceeded, quota_consume, quota_usage

from .conftest import set_quota


def _quota_row_cleanup(tenant):
    from tenants.models import TenantQuota

    TenantQuota.objects.filter(tenant=tenant).delete()


def test_chat_over_token_quota_is_refused_before_the_provider_sees_a_request(committed):
    with FakeOpenAI([{"text": ["never"]}]) as fake:
        provider = committed.provider(base_url=fake.url + "/v1", api_key="sk-test", default_model="gpt-4o-mini")
        agent = committed.agent(agent_type="tools", provider_id=provider.pk)
        try:
            used = quota_usage(tenant=committed.tenant_a, quota="llm_tokens_per_month")  # earlier committed runs
            set_quota(committed.tenant_a, max_llm_tokens_per_month=used + 100)
            quota_consume(tenant=committed.tenant_a, quota="llm_tokens_per_month", amount=100)
            response = committed.client().post(
                f"/api/v1/agents/{agent.pk}/chat/", {"message": "hi", "wait": False}, content_type="application/json"
            )
            assert response.status_code == 402, response.content
            body = response.json()
            assert body["code"] == "quota_exceeded" and body["quota"] == "llm_tokens_per_month"
            assert body["limit"] == used + 100 and body["used"] == used + 100 and body["resets_at"]
            with tenant_context(committed.tenant_a), pytest.raises(QuotaExceeded):
                from agents.services import chat_start

                chat_start(principal=committed.principal(), agent=agent, message="hi")
            assert fake.requests == []  # the provider never saw a request
        finally:
            _quota_row_cleanup(committed.tenant_a)


def test_chat_over_cost_cap_is_refused_and_a_finished_run_is_metered(committed):
    from usage.models import UsageRecord

    with FakeOpenAI([{"text": ["Hello", " there"]}]) as fake:
        provider = committed.provider(base_url=fake.url + "/v1", api_key="sk-test", default_model="gpt-4o-mini")
        agent = committed.agent(agent_type="tools", provider_id=provider.pk)
        try:
            from agents.services import chat_start

            with tenant_context(committed.tenant_a):
                handles = chat_start(principal=committed.principal(), agent=agent, message="hello")
            assert run_inline(committed.tenant_a, handles["run_id"])["status"] == "complete"
            assert len(fake.requests) == 1
            with tenant_context(committed.tenant_a):
                record = UsageRecord.objects.get(run_id=handles["run_id"])
                assert (record.tokens_in, record.tokens_out) == (11, 2)  # from the provider's usage chunk
                assert record.model == "gpt-4o-mini" and record.agent_id == agent.pk and record.latency_ms >= 0
                assert record.user_id == committed.admin_a.pk and record.cost > 0
                UsageRecord.objects.filter(pk=record.pk).delete()
            set_quota(committed.tenant_a, max_llm_cost_per_month="0.0000001")
            with tenant_context(committed.tenant_a), pytest.raises(QuotaExceeded) as refused:
                chat_start(principal=committed.principal(), agent=agent, message="again")
            assert refused.value.as_dict()["quota"] == "llm_cost_per_month"
            assert len(fake.requests) == 1
        finally:
            _quota_row_cleanup(committed.tenant_a)


def test_noisy_neighbour_floods_chat_while_the_other_tenant_chats(committed, settings):
    """acme floods the chat endpoint; its runs are capped by its concurrency limit; globex still gets in."""
    settings.CHAT_POOL_SLOTS = 6
    agent_a = committed.agent(name="Flooded")
    agent_b = committed.agent(tenant=committed.tenant_b, name="Calm")
    try:
        set_quota(committed.tenant_a, max_concurrent_runs=3)
        client_a = committed.client()
        codes = [
            client_a.post(
                f"/api/v1/agents/{agent_a.pk}/chat/",
                {"message": "flood", "wait": False},
                content_type="application/json",
            ).status_code
            for _ in range(12)
        ]
        assert codes.count(202) == 3 and codes.count(429) == 9
        response = committed.client(committed.tenant_b).post(
            f"/api/v1/agents/{agent_b.pk}/chat/", {"message": "hello", "wait": False}, content_type="application/json"
        )
        assert response.status_code == 202, response.content
        assert run_inline(committed.tenant_b, response.json()["run_id"])["status"] == "complete"
    finally:
        _quota_row_cleanup(committed.tenant_a)


@pytest.mark.django_db
def test_noisy_neighbour_uploads_are_dispatched_round_robin(tenant_a, tenant_b, settings):
    """10k-page style flood: acme queues 200 ingest jobs, globex 2; globex's are sent within the first few."""
    import redis

    from core.queues import fair_backlog, fair_dispatch, fair_enqueue

    queue = "fairtest"  # a queue no worker consumes, so the order on the broker stays inspectable
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    broker.delete(queue)
    try:
        settings.FAIR_QUEUE_LOW_WATER = 0  # hold everything back while we enqueue
        with tenant_context(tenant_a):
            for n in range(200):
                fair_enqueue("knowledge.noop", args=[n], queue=queue)
        with tenant_context(tenant_b):
            fair_enqueue("knowledge.noop", args=["b1"], queue=queue)
            fair_enqueue("knowledge.noop", args=["b2"], queue=queue)
        assert fair_backlog(queue) == {tenant_a.schema_name: 200, tenant_b.schema_name: 2}
        assert fair_dispatch(queue, low_water=6) == 6
        # kombu LPUSHes and workers BRPOP: consumption order is the list reversed.
        sent = [json.loads(m) for m in reversed(broker.lrange(queue, 0, -1))]
        schemas = [m["headers"]["_schema_name"] for m in sent]
        assert schemas.count(tenant_b.schema_name) == 2  # both of globex's jobs are in the first six
        assert schemas[:4] == [tenant_a.schema_name, tenant_b.schema_name] * 2  # round-robin
        assert fair_dispatch(queue, low_water=6) == 0  # backlog at the low-water mark: nothing more yet
    finally:
        broker.delete(queue)
