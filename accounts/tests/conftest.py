import pytest
from django.core.cache import cache


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Throttle counters and usage counters live in the (test-only) Redis DB: start each test clean."""
    cache.clear()
    yield
