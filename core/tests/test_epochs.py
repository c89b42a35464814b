import uuid

import pytest

from core import epochs
from core.epochs import EpochCache, epoch_get
from core.redis_clients import redis_client


class _FlushedAfterSet:
    """The real Redis client, except that the key is gone again right after each SET (another process flushed
    Redis in between): the race epoch_get has to survive."""

    def __init__(self) -> None:
        self._client = redis_client()

    def get(self, key: str) -> bytes | None:
        return self._client.get(key)

    def set(self, key: str, value: str, **kwargs: object) -> None:
        self._client.set(key, value, **kwargs)
        self._client.delete(key)


@pytest.fixture
def flushed_after_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(epochs, "_redis", _FlushedAfterSet)


def test_epoch_lost_while_being_created_is_a_token_nothing_is_cached_under(settings, flushed_after_set):
    settings.AGENT_CACHE_SECONDS = 60
    name = f"test:{uuid.uuid4().hex}"
    cache: EpochCache[str] = EpochCache("AGENT_CACHE_SECONDS")
    first = epoch_get(name)
    cache.put("row", first, "stale")
    second = epoch_get(name)
    assert isinstance(first, bytes) and isinstance(second, bytes)
    assert cache.get("row", second) is None
