"""Fixtures for the quotas / rate limits / metering / audit tests."""

from __future__ import annotations

import time

import pytest
from django.db import connection

from agents.tests.conftest import live_state

PATTERNS = ("quota:*", "runs:*", "rl:*", "fair:*", "usage:*", "webhooks:*", "metrics:*", "events:*", "*:rl:*")


def _clear_redis() -> None:
    from core.quotas import limits_cache_forget
    from core.redis_clients import redis_client

    r = redis_client()
    for pattern in PATTERNS:
        keys = list(r.scan_iter(pattern, count=1000))
        if keys:
            r.delete(*keys)
    limits_cache_forget()


@pytest.fixture(autouse=True)
def _fresh_counters():
    """Counters live in Redis, outside the test transaction: start every test from zero."""
    _clear_redis()
    yield
    _clear_redis()
    connection.set_schema_to_public()


@pytest.fixture
def frozen_rate_clock(monkeypatch):
    """Fixed-window counters roll over at a (per-key jittered) second: a test that counts N requests must not
    straddle a window edge, so the limiter's clock stands still for the test's duration."""
    import types

    import django_ratelimit.core

    import core.ratelimit

    now = time.time()
    frozen = types.SimpleNamespace(time=lambda: now, monotonic=time.monotonic)  # intervals still pass
    monkeypatch.setattr(django_ratelimit.core, "time", frozen)
    monkeypatch.setattr(core.ratelimit, "time", frozen)
    return now


@pytest.fixture
def committed(django_db_setup, django_db_blocker, settings):
    """Committed data (autocommit, no test transaction) for threads and processes that must see it: the
    WebSocket consumer's threads, the run executor. Named apart from the agents tests' `live` fixture, whose
    collection hook marks every `live` test django_db (i.e. transactional, invisible to other threads)."""
    from tenants.models import TenantQuota

    with live_state(django_db_blocker, settings) as state:
        try:
            yield state
        finally:
            TenantQuota.objects.filter(tenant__slug__in=["acme", "globex"]).delete()


@pytest.fixture
def principal_a(tenant_a, admin_a):
    from iam.policy import Principal

    return Principal(tenant=tenant_a, user=admin_a, role="admin")


@pytest.fixture
def principal_b(tenant_b, admin_b):
    from iam.policy import Principal

    return Principal(tenant=tenant_b, user=admin_b, role="admin")


def set_quota(tenant, **limits):
    from tenants.models import TenantQuota

    row, _ = TenantQuota.objects.update_or_create(tenant=tenant, defaults=limits)
    return row


def pytest_collection_modifyitems(items):
    # pytest-django creates the test database only if a collected test is marked django_db; without this
    # a file of only `committed` tests ran against the un-migrated development database.
    for item in items:
        if "committed" in getattr(item, "fixturenames", ()) and item.get_closest_marker("django_db") is None:
            item.add_marker(pytest.mark.django_db)


@pytest.fixture(autouse=True)
def _django_db_marker(request):
    """pytest-django's marker fixture, except that `committed` tests get no wrapping transaction."""
    if request.node.get_closest_marker("django_db") and "committed" not in request.fixturenames:
        request.getfixturevalue("_django_db_helper")
