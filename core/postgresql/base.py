"""The database backend: django-tenants' (one schema per organisation) plus row-level security (core.rls).

Before a cursor runs anything, the connection is put in the state `core.rls.current_db_principal` asks for: the
restricted role (settings.DB_APP_ROLE) with the acting principal, or the connection's own role as the system. The
state is set with one statement, only when it changes, on the raw driver cursor (so query counts in tests and the
debug toolbar see only the application's queries). What was applied is forgotten wherever PostgreSQL may have
dropped it or another user may have changed it: a session-level setting issued in a transaction that rolls back is
reverted, and a connection returned to the pool goes to another request. An unknown state is always re-applied.
"""

from __future__ import annotations

from typing import Any

import psycopg
from django.conf import settings
from django_tenants.postgresql_backend import base as tenants_base

from core.rls import PRINCIPAL_SETTING, SYSTEM, current_db_principal

_APPLY = f"SELECT set_config('role', %s, false), set_config('{PRINCIPAL_SETTING}', %s, false)"
_UNRESTRICTED_ROLE = "none"  # `SET ROLE NONE`: back to the role the connection logged in as


# django-tenants ships no type information: its wrapper is Any to the checker.
class DatabaseWrapper(tenants_base.DatabaseWrapper):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # (role, principal) the session holds, as far as we know; None: unknown, apply before the next query.
        self.rls_applied: tuple[str, str] | None = None
        super().__init__(*args, **kwargs)

    def connect(self) -> None:
        self.rls_applied = None  # a new connection, or one checked out of the pool that someone else used
        super().connect()

    def close(self) -> None:
        self.rls_applied = None
        super().close()

    def rollback(self) -> None:
        self.rls_applied = None  # a set_config issued in the transaction is reverted with it
        super().rollback()

    def savepoint_rollback(self, sid: str) -> None:
        try:
            super().savepoint_rollback(sid)
        finally:
            self.rls_applied = None  # cleared after: the rollback's own cursor would otherwise re-apply too early

    def _cursor(self, name: str | None = None) -> Any:
        cursor = super()._cursor(name)
        self.rls_apply()
        return cursor

    def rls_apply(self) -> None:
        """Put the session in the state the current context asks for, if it is not known to be in it already."""
        role = settings.DB_APP_ROLE
        if not role:  # row-level security not enforced: the connection's own role runs everything
            return
        principal = current_db_principal.get()
        wanted = (_UNRESTRICTED_ROLE, SYSTEM) if principal is None else (role, principal)
        if wanted == self.rls_applied or self.connection is None:
            return
        self.rls_applied = None
        try:
            with self.connection.cursor() as raw:
                raw.execute(_APPLY, wanted)
        except psycopg.Error:
            # In an aborted transaction the next statement fails as well, and the rollback that must follow leaves
            # the state unknown, so it is applied again then. Anything else (a missing role) must not run queries
            # unrestricted.
            if self.connection.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
                return
            raise
        self.rls_applied = wanted
