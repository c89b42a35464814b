"""Epoch-checked caches: per-process copies of rows that the hot paths read on every request, trusted only while
a token in Redis (the epoch) is the one they were loaded under.

Readers: `epoch = epoch_get(name)` *before* reading the rows, then `cache.get(key, epoch)` or load and
`cache.put(key, epoch, value)`. Writers: `epoch_bump(name)` for every change the cached rows depend on. A bump
replaces the token now and again when the transaction commits, so a reader that loaded the old rows in between
never keeps them; epochs are random tokens, so a Redis flush invalidates everything. Every process reads the same
token, so a change reaches all of them at their next request.

Used for verified API keys and the members a request authenticates (iam.members: name "auth:<schema>") and the
agent a chat starts with (agents.selectors: "agents:<schema>").

Inside `epochs_snapshot()` (every HTTP request: core.middleware) each epoch is read from Redis at most once, and
`epochs_read` reads several, with any other keys a hot path needs, in one round trip. A bump made inside the block is
read again by the block's next reader.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Hashable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Generic, TypeVar

import redis
from django.conf import settings
from django.db import transaction

from .redis_clients import redis_client, reply_bytes


def _redis() -> redis.Redis:
    return redis_client()


def _key(name: str) -> str:
    return f"epoch:{name}"


def epoch_key(name: str) -> str:
    """The Redis key of epoch `name`, for a reader on an event loop that reads it in a round trip of its own (a GET
    reply of None means no epoch yet: trust nothing cached, and let epoch_get create one)."""
    return _key(name)


# The epochs read in the current request (epochs_snapshot); None outside one.
_snapshot: ContextVar[dict[str, bytes] | None] = ContextVar("epochs_snapshot", default=None)


@contextmanager
def epochs_snapshot() -> Iterator[None]:
    """Read each epoch at most once inside this block (one request): the block's readers see the epochs as they were
    at its first read of each, and any bump the block makes itself."""
    token = _snapshot.set({})
    try:
        yield
    finally:
        _snapshot.reset(token)


def epoch_get(name: str) -> bytes:
    memo = _snapshot.get()
    if memo is not None and name in memo:
        return memo[name]
    epoch = _epoch_or_new(name, _redis().get(_key(name)))
    if memo is not None:
        memo[name] = epoch
    return epoch


def epochs_read(names: Sequence[str], keys: Sequence[str] = ()) -> tuple[list[bytes], list[bytes | None]]:
    """The epochs `names` (as epoch_get: kept in the current snapshot) and the values of the plain `keys`, all in one
    round trip: a hot path reads the epochs it checks next together with keys of its own (JWT revocation markers)."""
    memo = _snapshot.get()
    wanted = [name for name in dict.fromkeys(names) if memo is None or name not in memo]
    values = _redis().mget([*(_key(name) for name in wanted), *keys]) if wanted or keys else []
    read = {name: _epoch_or_new(name, value) for name, value in zip(wanted, values, strict=False)}
    if memo is not None:
        memo.update(read)
    known = {**(memo or {}), **read}
    return [known[name] for name in names], [
        None if value is None else reply_bytes(value) for value in values[len(wanted) :]
    ]


def _epoch_or_new(name: str, epoch: bytes | str | None) -> bytes:
    if epoch is None:  # first use, or Redis lost it: a new epoch (nothing cached under another one is trusted)
        client = _redis()
        fresh = uuid.uuid4().hex
        client.set(_key(name), fresh, nx=True)
        epoch = client.get(_key(name))
        if epoch is None:  # lost again in between: a token no other reader holds, so nothing is trusted
            epoch = fresh
    return reply_bytes(epoch)


# Epochs this process set inside a transaction that has not committed: rows read under one may yet be rolled back,
# so no EpochCache keeps them (a rolled-back transaction leaves its epoch in Redis until the next bump).
_unsettled: set[bytes] = set()
_UNSETTLED_MAX = 10_000


def epoch_bump(name: str) -> None:
    epoch = uuid.uuid4().hex.encode()
    if len(_unsettled) >= _UNSETTLED_MAX:  # rolled-back transactions leave theirs behind
        _unsettled.clear()
    _unsettled.add(epoch)
    _epoch_set(name, epoch)

    def settle() -> None:
        _unsettled.discard(epoch)
        _epoch_set(name, uuid.uuid4().hex.encode())

    transaction.on_commit(settle)


def _epoch_set(name: str, epoch: bytes) -> None:
    _redis().set(_key(name), epoch)
    memo = _snapshot.get()
    if memo is not None:  # this block's next reader reads the new epoch
        memo.pop(name, None)


_V = TypeVar("_V")


class EpochCache(Generic[_V]):
    """A bounded per-process dict whose entries count only under the epoch they were stored with, and for at most
    `settings.<max_age_setting>` seconds (a backstop for rows changed outside Django; 0 turns the cache off)."""

    def __init__(self, max_age_setting: str, *, max_entries: int = 10_000) -> None:
        self.max_age_setting = max_age_setting
        self.max_entries = max_entries
        self._entries: dict[Hashable, tuple[bytes, float, _V]] = {}

    def get(self, key: Hashable, epoch: bytes) -> _V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] != epoch or time.monotonic() - entry[1] > getattr(settings, self.max_age_setting):
            self._entries.pop(key, None)
            return None
        return entry[2]

    def put(self, key: Hashable, epoch: bytes, value: _V) -> None:
        if getattr(settings, self.max_age_setting) <= 0 or epoch in _unsettled:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[key] = (epoch, time.monotonic(), value)

    def clear(self) -> None:
        self._entries.clear()
