"""Fixtures for the quotas / rate limits / metering / audit tests (issue 6)."""

from __future__ import annotations

import pytest
from django.db import connection

PATTERNS = ("quota:*", "runs:*", "rl:*", "fair:*", "usage:*", "webhooks:*", "metrics:*", "events:*", "*:rl:*")


def _clear_redis() -> None:
    from core.quotas import limits_cache_clear, redis_client

    r = redis_client()
    for pattern in PATTERNS:
        keys = list(r.scan_iter(pattern, count=1000))
        if keys:
            r.delete(*keys)
    limits_cache_clear()


@pytest.fixture(autouse=True)
def _fresh_counters():
    """Counters live in Redis, outside the test transaction: start every test from zero."""
    _clear_redis()
    yield
    _clear_redis()
    connection.set_schema_to_public()


@pytest.fixture
def principal_a(tenant_a, admin_a):
    from core.access import Principal

    return Principal(tenant=tenant_a, user=admin_a, role="admin")


@pytest.fixture
def principal_b(tenant_b, admin_b):
    from core.access import Principal

    return Principal(tenant=tenant_b, user=admin_b, role="admin")


def set_quota(tenant, **limits):
    from tenants.models import TenantQuota

    row, _ = TenantQuota.objects.update_or_create(tenant=tenant, defaults=limits)
    return row
