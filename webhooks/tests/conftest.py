"""Fixtures for the webhook tests (issue 6): the quota tests' counter reset and principals."""

from usage.tests.conftest import _fresh_counters, principal_a, principal_b, set_quota  # noqa: F401
