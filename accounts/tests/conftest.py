import pytest

from .helpers import reset_counters


@pytest.fixture(autouse=True)
def _fresh_counters():
    reset_counters()
    yield
    reset_counters()  # revocations (jwt:*) live in Redis: the next tests' tokens must not inherit them
