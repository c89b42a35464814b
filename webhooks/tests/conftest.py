"""Fixtures for the webhook and event tests: the quota tests' counter reset, principals, committed data."""

from usage.tests.conftest import (  # noqa: F401
    _django_db_marker,
    _fresh_counters,
    committed,
    principal_a,
    principal_b,
    pytest_collection_modifyitems,
    set_quota,
)
