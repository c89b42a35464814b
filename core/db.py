"""Where reads go: the primary, or a streaming read replica (DATABASE_REPLICA_URL) for the read-heavy selectors.

Reads go to the replica only inside `reads_from_replica()`, which the read-heavy code paths mark themselves with
(retrieval, listings, analytics), and only while the unit of work has not written:

- a request is a unit of work (ReplicaPinMiddleware); outside requests each `reads_from_replica()` block is one.
  Once it wrote through the ORM (the router sees every write), or while a transaction is open on the primary,
  its reads go to the primary: a request reads its own writes.
- across requests, a client that wrote keeps reading from the primary for DATABASE_REPLICA_PIN_SECONDS (a cookie
  the middleware sets on the response of a request that wrote): long enough for the replica to replay the write,
  so the page a form redirects to shows what the form saved. A client without cookies (an API script) sees its
  own writes in the write's response and, a moment later, on the replica.

Raw SQL that writes is not seen by the router; code that writes that way does so in a transaction, which keeps
the unit on the primary while it is open. Without DATABASE_REPLICA_URL there is no replica alias: every decision
below is "default", as Django's would be. The replica connection runs in the same organisation (schema) and as
the same row-level-security principal as the primary (core.postgresql).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections

REPLICA = "replica"


@dataclass
class UnitOfWork:
    """One request, or one `reads_from_replica()` block outside a request. Mutable on purpose: the router runs in
    copies of the request's context (sync_to_async threads), which share this object but not a variable's value."""

    wrote: bool = False
    pinned: bool = False  # its client wrote a moment ago: read from the primary from the start


_unit: ContextVar[UnitOfWork | None] = ContextVar("db_unit_of_work", default=None)
_replica_wanted: ContextVar[bool] = ContextVar("db_replica_wanted", default=False)


def replica_configured() -> bool:
    return REPLICA in settings.DATABASES


@contextmanager
def unit_of_work(*, pinned: bool = False) -> Iterator[UnitOfWork]:
    """A request's scope (`pinned`: its client wrote a moment ago)."""
    unit = UnitOfWork(pinned=pinned)
    token = _unit.set(unit)
    try:
        yield unit
    finally:
        _unit.reset(token)


@contextmanager
def reads_from_replica() -> Iterator[None]:
    """Let the block's reads go to the replica (when there is one and the unit of work has not written)."""
    wanted = _replica_wanted.set(True)
    unit = _unit.set(UnitOfWork()) if _unit.get() is None else None
    try:
        yield
    finally:
        if unit is not None:
            _unit.reset(unit)
        _replica_wanted.reset(wanted)


def read_alias() -> str:
    """The alias a read issued now goes to: for raw SQL, which the router never sees."""
    if not (replica_configured() and _replica_wanted.get()):
        return DEFAULT_DB_ALIAS
    unit = _unit.get()
    if (unit is not None and (unit.wrote or unit.pinned)) or connections[DEFAULT_DB_ALIAS].in_atomic_block:
        return DEFAULT_DB_ALIAS
    return REPLICA


class ReplicaRouter:
    """settings.DATABASE_ROUTERS: reads per `read_alias()`, writes always to the primary (and remembered)."""

    def db_for_read(self, model: type, **hints: Any) -> str | None:
        if not replica_configured():
            return None  # Django's own choice, as without this router
        # Also for an object loaded from the replica: its relations are read where the unit of work reads now.
        return read_alias()

    def db_for_write(self, model: type, **hints: Any) -> str:
        unit = _unit.get()
        if unit is not None:
            unit.wrote = True
        return DEFAULT_DB_ALIAS

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool | None:
        # The replica holds the primary's rows: an object read there may be related to one read on the primary.
        if {obj1._state.db, obj2._state.db} <= {DEFAULT_DB_ALIAS, REPLICA}:
            return True
        return None
