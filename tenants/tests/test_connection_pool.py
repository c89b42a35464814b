"""Pooled connections never carry one tenant's search_path into another tenant's queries.

Web processes use psycopg's pool (config/asgi.py) and settings.TENANT_LIMIT_SET_CALLS: django-tenants sets the
search_path once per checkout instead of before every query. These tests run a real pool of ONE connection, so
every checkout gets the very connection the previous tenant used.
"""

from __future__ import annotations

import pytest
from django.db import connection

POOLED = "pooled_probe"


@pytest.fixture
def pooled(settings):
    """A stand-alone django-tenants connection on the test database with a pool of one (not registered in
    django.db.connections: the test case's own connection and its transaction stay untouched)."""
    from django_tenants.postgresql_backend.base import DatabaseWrapper

    settings.TENANT_LIMIT_SET_CALLS = True
    config = {**connection.settings_dict, "CONN_MAX_AGE": 0}
    config["OPTIONS"] = {**config.get("OPTIONS", {}), "pool": {"min_size": 1, "max_size": 1, "timeout": 5}}
    wrapper = DatabaseWrapper(config, alias=POOLED)
    yield wrapper
    wrapper.close()
    wrapper.close_pool()


def search_path(wrapper) -> str:
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT current_setting('search_path')")
        return cursor.fetchone()[0]


def backend_pid(wrapper) -> int:
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


@pytest.mark.django_db
def test_the_next_checkout_gets_its_own_tenants_path_on_the_same_connection(pooled, tenant_a, tenant_b):
    pooled.set_tenant(tenant_a)
    pid = backend_pid(pooled)
    assert search_path(pooled).startswith("t_acme")
    pooled.close()  # back to the pool, still set to acme's path server-side

    pooled.set_tenant(tenant_b)
    assert backend_pid(pooled) == pid  # same server connection
    assert search_path(pooled).startswith("t_globex")
    pooled.close()

    pooled.set_schema_to_public()
    assert backend_pid(pooled) == pid
    assert search_path(pooled).startswith("public")


@pytest.mark.django_db
def test_a_checkout_without_a_tenant_switch_still_sets_the_path(pooled, tenant_a, tenant_b):
    """The wrapper remembers it set acme's path; closing must make it forget, because the pooled connection may
    have served another wrapper (another thread, another tenant) in between."""
    pooled.set_tenant(tenant_a)
    assert search_path(pooled).startswith("t_acme")
    pooled.close()
    with pooled.pool.connection() as raw:  # someone else uses the connection meanwhile
        raw.execute('SET search_path = "t_globex"')
    assert search_path(pooled).startswith("t_acme")


@pytest.mark.django_db
def test_a_rolled_back_transaction_does_not_leave_a_stale_path_behind(pooled, tenant_a):
    pooled.set_tenant(tenant_a)
    pooled.set_autocommit(False)
    assert search_path(pooled).startswith("t_acme")  # the SET happened inside the transaction...
    pooled.rollback()
    pooled.set_autocommit(True)
    assert search_path(pooled).startswith("t_acme")  # ...and is issued again after the rollback undid it
