import pytest

from accounts.tests.helpers import reset_counters


@pytest.fixture(autouse=True)
def _fresh_counters():
    reset_counters()
    yield
