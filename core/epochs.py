"""Epoch-checked caches: per-process copies of rows that the hot paths read on every request, trusted only while
a token in Redis (the epoch) is the one they were loaded under.

Readers: `epoch = epoch_get(name)` *before* reading the rows, then `cache.get(key, epoch)` or load and
`cache.put(key, epoch, value)`. Writers: `epoch_bump(name)` for every change the cached rows depend on. A bump
replaces the token now and again when the transaction commits, so a reader that loaded the old rows in between
never keeps them; epochs are random tokens, so a Redis flush invalidates everything. Every process reads the same
token, so a change reaches all of them at their next request.

Used for verified API keys (iam.keys: name "auth:<schema>") and the agent a chat starts with (agents.selectors:
"agents:<schema>").
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Hashable
from typing import Generic, TypeVar

import redis
from django.conf import settings
from django.db import transaction

from .redis_clients import redis_client, reply_bytes


def _redis() -> redis.Redis:
    return redis_client()


def _key(name: str) -> str:
    return f"epoch:{name}"


def epoch_get(name: str) -> bytes:
    client = _redis()
    epoch = client.get(_key(name))
    if epoch is None:  # first use, or Redis lost it: a new epoch (nothing cached under another one is trusted)
        fresh = uuid.uuid4().hex
        client.set(_key(name), fresh, nx=True)
        epoch = client.get(_key(name))
        if epoch is None:  # lost again in between: a token no other reader holds, so nothing is trusted
            epoch = fresh
    return reply_bytes(epoch)


def epoch_bump(name: str) -> None:
    def bump() -> None:
        _redis().set(_key(name), uuid.uuid4().hex)

    bump()
    transaction.on_commit(bump)


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
        if getattr(settings, self.max_age_setting) <= 0:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[key] = (epoch, time.monotonic(), value)

    def clear(self) -> None:
        self._entries.clear()
