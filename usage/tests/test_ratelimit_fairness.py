"""Rate limits under a flood: refusals spend no allowance, one principal cannot lock its organisation out, every
refusal carries Retry-After, is counted in metrics by scope, and the log stays bounded."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from django.test import Client, RequestFactory
from rest_framework.response import Response

import core.ratelimit
from conftest import host_of
from core.ratelimit import RateLimitHeadersMiddleware, RefusalLog, rate_limit_check
from core.redis_clients import redis_client

URL = "/api/v1/usage/quotas/"
pytestmark = [pytest.mark.usefixtures("frozen_rate_clock"), pytest.mark.django_db]


def _member(tenant, email: str):
    from accounts.models import Membership, User

    user = User.objects.create_user(email=email, password="x" * 12)
    Membership.objects.create(user=user, tenant=tenant, role="user")
    return user


def _client(tenant, user) -> Client:
    client = Client(HTTP_HOST=host_of(tenant))
    client.force_login(user)
    return client


def test_a_flooding_principal_leaves_the_organisation_served_and_its_refusals_are_counted_nowhere(
    tenant_a, admin_a, settings
):
    settings.RATE_LIMITS = {"read": "3/m"}
    settings.RATE_LIMITS_TENANT = {"read": "8/m"}
    flooder = _client(tenant_a, admin_a)
    codes = [flooder.get(URL).status_code for _ in range(40)]  # retries at once, never backs off
    assert codes.count(200) == 3 and codes.count(429) == 37
    refused = flooder.get(URL)
    assert refused.json()["scope"] == "user" and int(refused["Retry-After"]) >= 1

    # Had the 38 refusals been counted, the organisation's 8 would be long gone.
    second = _client(tenant_a, _member(tenant_a, "second@acme.test"))
    assert [second.get(URL).status_code for _ in range(3)] == [200, 200, 200]
    third = _client(tenant_a, _member(tenant_a, "third@acme.test"))
    assert [third.get(URL).status_code for _ in range(3)] == [200, 200, 429]  # exactly 8 admitted in all
    assert third.get(URL).json()["scope"] == "tenant"


def test_one_principal_takes_at_most_its_share_of_the_organisations_allowance(tenant_a, admin_a, settings):
    settings.RATE_LIMITS = {"read": "100/m"}  # as much as the organisation: the share binds
    settings.RATE_LIMITS_TENANT = {"read": "10/m"}
    settings.RATE_LIMIT_PRINCIPAL_SHARE = 0.5
    flooder = _client(tenant_a, admin_a)
    codes = [flooder.get(URL).status_code for _ in range(20)]
    assert codes.count(200) == 5
    other = _client(tenant_a, _member(tenant_a, "other@acme.test"))
    assert [other.get(URL).status_code for _ in range(5)] == [200] * 5


def test_refusals_are_counted_in_metrics_by_group_and_scope_with_a_bounded_tenant_label(tenant_a, admin_a, settings):
    settings.RATE_LIMITS = {"read": "2/m"}
    settings.METRICS_TENANT_LABELS = []  # no tenant listed: every tenant is "other"
    client = _client(tenant_a, admin_a)
    for _ in range(7):
        client.get(URL)
    counts = {
        tuple(sorted(json.loads(field).items())): float(value)
        for field, value in redis_client().hgetall("metrics:c:rate_limited_total").items()
    }
    assert counts == {(("group", "read"), ("scope", "user"), ("tenant", "other")): 5.0}


def test_shed_requests_write_one_summary_line_per_interval_not_one_per_refusal(
    tenant_a, admin_a, settings, caplog, monkeypatch
):
    settings.RATE_LIMITS = {"read": "1/m"}
    settings.REFUSAL_LOG_SECONDS = 3600
    log = RefusalLog()
    monkeypatch.setattr(core.ratelimit, "refusal_log", log)
    client = _client(tenant_a, admin_a)
    caplog.set_level(logging.INFO)
    codes = [client.get(URL).status_code for _ in range(200)]
    assert codes.count(429) == 199
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # django.request's 429 lines dropped

    settings.REFUSAL_LOG_SECONDS = 0  # the interval is over: the next request writes the summary
    client.get(URL)
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1
    assert lines[0].getMessage().startswith("refused 200 requests in the last")
    assert lines[0].refusals == {"rate_limited:read:user": 200}


def test_a_request_refused_after_the_limiter_admitted_it_gives_the_organisation_its_unit_back(tenant_a, settings):
    settings.RATE_LIMITS = {"chat": "100/h"}  # the caller's own counter keeps its units: far from full here
    settings.RATE_LIMITS_TENANT = {"chat": "4/m"}

    def busy_view(request):  # admitted by the limiter, then shed by run admission (as chat_start does)
        rate_limit_check(request, "chat")
        body = {"code": "concurrency_limited", "detail": "busy", "scope": "agent", "retry_after": 3}
        return Response(body, status=429, headers={"Retry-After": "3"})

    middleware = RateLimitHeadersMiddleware(busy_view)
    factory = RequestFactory()
    for _ in range(10):
        request = factory.post("/chat/")
        request.tenant = tenant_a
        response = middleware(request)
        assert response.status_code == 429 and response["Retry-After"] == "3"
        assert request.refusal_reason == "concurrency_limited:agent"
    # ten refusals later the organisation still has its 4 chat requests (the refusals were given back)
    request = factory.post("/chat/")
    request.tenant = tenant_a
    assert rate_limit_check(request, "chat", increment=False).remaining == 4


def test_a_search_past_the_processs_in_flight_bound_is_shed_with_503_and_retry_after(
    tenant_a, admin_a, settings, monkeypatch
):
    monkeypatch.setattr(core.ratelimit, "_in_flight", core.ratelimit._InFlight())
    settings.IN_FLIGHT_LIMITS = {"search": 1}
    client = _client(tenant_a, admin_a)
    url = "/api/v1/knowledge-bases/999999/search/"
    running = RequestFactory().post(url)
    core.ratelimit.in_flight_enter(running, "search")  # a search in progress holds the only place

    response = client.post(url, {"query": "anything"}, content_type="application/json")
    assert response.status_code == 503 and response.json()["code"] == "overloaded"
    assert response["Retry-After"] == "1"

    core.ratelimit.in_flight_leave(running)
    response = client.post(url, {"query": "anything"}, content_type="application/json")
    assert response.status_code == 404  # admitted: the view itself answers (no such knowledge base)


def test_chat_messages_over_the_websocket_count_in_the_chat_rate_and_a_refusal_says_when_to_retry(committed, settings):
    from channels.testing import WebsocketCommunicator
    from rest_framework_simplejwt.tokens import RefreshToken

    from accounts.services import TENANT_CLAIM
    from config.asgi import application

    settings.RATE_LIMITS = {"chat": "1/m"}
    agent = committed.agent()
    refresh = RefreshToken.for_user(committed.admin_a)
    refresh[TENANT_CLAIM] = committed.tenant_a.schema_name

    async def two_messages() -> tuple[dict, dict]:
        communicator = WebsocketCommunicator(
            application,
            f"/ws/agents/{agent.pk}/chat/?token={refresh.access_token}",
            headers=[(b"host", b"acme.localhost")],
        )
        connected, _ = await communicator.connect(timeout=10)
        assert connected
        await communicator.send_json_to({"type": "chat", "message": "hello"})
        first = await communicator.receive_json_from(timeout=10)
        await communicator.send_json_to({"type": "chat", "message": "again"})
        for _ in range(5):  # skip the first run's own events, if any arrive first
            second = await communicator.receive_json_from(timeout=10)
            if second["type"] == "error":
                break
        await communicator.disconnect()
        return first, second

    first, second = asyncio.run(two_messages())
    assert first["type"] == "run.accepted"
    assert second["type"] == "error" and second["data"]["code"] == "rate_limited"
    assert second["data"]["group"] == "chat" and second["data"]["scope"] == "user"
    assert second["data"]["retry_after"] >= 1
