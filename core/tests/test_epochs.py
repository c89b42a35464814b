import uuid

import pytest

from core import epochs
from core.epochs import EpochCache, epoch_bump, epoch_get, epochs_read, epochs_snapshot
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


class _CountingClient:
    """The real Redis client, counting the round trips made through it."""

    def __init__(self) -> None:
        self._client = redis_client()
        self.calls: list[str] = []

    def __getattr__(self, command: str):
        self.calls.append(command)
        return getattr(self._client, command)


def test_a_snapshot_reads_each_epoch_once_with_the_keys_of_its_hot_path(monkeypatch):
    counting = _CountingClient()
    monkeypatch.setattr(epochs, "_redis", lambda: counting)
    first, second, marker = (f"test:{uuid.uuid4().hex}" for _ in range(3))
    redis_client().set(marker, "revoked")
    with epochs_snapshot():
        (a, b), (value,) = epochs_read([first, second], [marker])
        assert value == b"revoked"
        calls = len(counting.calls)
        assert (epoch_get(first), epoch_get(second)) == (a, b)
        assert len(counting.calls) == calls  # both kept by the snapshot
    assert epoch_get(first) == a  # outside a snapshot: read again
    assert len(counting.calls) > calls


@pytest.mark.django_db
def test_a_bump_inside_a_snapshot_is_read_by_its_next_reader(django_capture_on_commit_callbacks):
    name = f"test:{uuid.uuid4().hex}"
    with epochs_snapshot():
        before = epoch_get(name)
        with django_capture_on_commit_callbacks(execute=True):
            epoch_bump(name)
        assert epoch_get(name) != before


@pytest.mark.django_db
def test_rows_read_under_an_epoch_of_an_uncommitted_change_are_not_kept(settings, django_capture_on_commit_callbacks):
    """A change bumps the epoch before it commits; what a reader loads then may be rolled back, so only a committed
    change's epoch lets the cache keep rows."""
    settings.AGENT_CACHE_SECONDS = 60
    cache: EpochCache[str] = EpochCache("AGENT_CACHE_SECONDS")
    name = f"test:{uuid.uuid4().hex}"
    epoch_bump(name)  # inside the test's transaction: not committed
    uncommitted = epoch_get(name)
    cache.put("row", uncommitted, "maybe rolled back")
    assert cache.get("row", uncommitted) is None
    with django_capture_on_commit_callbacks(execute=True):
        epoch_bump(name)
    committed = epoch_get(name)
    cache.put("row", committed, "committed")
    assert cache.get("row", committed) == "committed"
