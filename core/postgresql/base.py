"""The database backend: django-tenants' (one schema per organisation) plus row-level security (core.rls).

Before a cursor runs anything, the connection is put in the state `core.rls.current_db_principal` asks for: the
restricted role (settings.DB_APP_ROLE) with the acting principal, or the connection's own role as the system. The
state is set with one statement, only when it changes, on the raw driver cursor (so query counts in tests and the
debug toolbar see only the application's queries). What was applied is forgotten wherever PostgreSQL may have
dropped it or another user may have changed it: a session-level setting issued in a transaction that rolls back is
reverted, and a connection returned to the pool goes to another request. An unknown state is always re-applied.

Behind a transaction pooler (PgBouncer `pool_mode = transaction`, settings.DB_TRANSACTION_POOLING) a session is
shared: each transaction may run on another server connection, and a session-level `SET` stays behind for whoever
gets that connection next. There the state (search_path, role, principal) lives in transactions instead: every
statement run outside a transaction carries it, transaction-local (`set_config(..., true)`), in the same request to
the server (one implicit transaction, so one server connection), and a transaction applies it before its first
statement and again whenever it changes. Nothing is set for the session, so nothing leaks to another client.

The read replica's alias (core.db) follows the default connection's tenant: django-tenants switches the schema of
`django.db.connection` only, and a query routed to the replica must run in the same organisation.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, Self, cast

import psycopg
from django.conf import settings
from django.db import DatabaseError, connections
from django.db.backends.postgresql.base import Cursor as DjangoCursor
from django_tenants.postgresql_backend import base as tenants_base
from django_tenants.utils import get_tenant_database_alias, quote_schema_name
from psycopg import sql
from psycopg.abc import Params, Query, QueryNoTemplate

from core.db import REPLICA
from core.rls import PRINCIPAL_SETTING, SYSTEM, current_db_principal

_APPLY = f"SELECT set_config('role', %s, false), set_config('{PRINCIPAL_SETTING}', %s, false)"
_UNRESTRICTED_ROLE = "none"  # `SET ROLE NONE`: back to the role the connection logged in as
_IDLE = psycopg.pq.TransactionStatus.IDLE
# What PostgreSQL runs only outside a transaction block (so never behind a prefix): database-level maintenance, and
# index and partition changes made CONCURRENTLY. They go to the server bare, without the per-transaction state:
# code that issues them names its tables with their schema, and migrations connect to PostgreSQL directly.
_OUTSIDE_TRANSACTIONS = re.compile(
    r"\s*(?:(?:CREATE|DROP)\s+(?:DATABASE|TABLESPACE)\b|ALTER\s+SYSTEM\b|VACUUM\b|REINDEX\b[^;]*\bCONCURRENTLY\b"
    r"|(?:CREATE|DROP)\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\b|ALTER\s+TABLE\b[^;]*\bDETACH\s+PARTITION\b[^;]*\bCONCURRENTLY\b)",
    re.IGNORECASE,
)


class TransactionPooledCursor(DjangoCursor, psycopg.ClientCursor[Any]):
    """Django's cursor (client-side binding), prefixing each statement with the connection state it needs.

    The prefix and the statement go to the server as one simple query: PostgreSQL runs them in one implicit
    transaction, so the pooler keeps them on one server connection and the transaction-local settings end with it."""

    state_sql: Callable[[], str] | None = None  # DatabaseWrapper.transaction_state_sql, on the cursors Django creates

    def execute(
        self, query: Query, params: Params | None = None, *, prepare: bool | None = None, binary: bool | None = None
    ) -> Self:
        if isinstance(query, sql.Composable):
            query = query.as_string(self.connection)
        elif isinstance(query, bytes):
            query = query.decode()
        outside = isinstance(query, str) and _OUTSIDE_TRANSACTIONS.match(query) is not None
        prefix = self.state_sql() if self.state_sql is not None and not outside else ""
        if not prefix:  # (Templates are Python 3.14 t-strings: Django sends none)
            return super().execute(cast(QueryNoTemplate, query), params, prepare=prepare, binary=binary)
        # With parameters the whole text is a %-format: the prefix's literals must not introduce placeholders.
        prefix = prefix if params is None else prefix.replace("%", "%%")
        super().execute(prefix + str(query), params, prepare=prepare, binary=binary)
        self.nextset()  # the statement's own result, after the prefix's
        return self

    def executemany(self, query: Query, params_seq: Iterable[Params], *, returning: bool = False) -> None:
        prefix = self.state_sql() if self.state_sql is not None else ""
        if not prefix:
            return super().executemany(query, params_seq, returning=returning)
        if self.connection.info.transaction_status == _IDLE:
            with self.connection.transaction():  # one transaction: the batch shares the prefix's settings
                super().execute(prefix)
                return super().executemany(query, params_seq, returning=returning)
        super().execute(prefix)
        return super().executemany(query, params_seq, returning=returning)


# django-tenants ships no type information: its wrapper is Any to the checker.
class DatabaseWrapper(tenants_base.DatabaseWrapper):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # (role, principal) the session holds, as far as we know; None: unknown, apply before the next query.
        self.rls_applied: tuple[str, str] | None = None
        super().__init__(*args, **kwargs)

    @property
    def transaction_pooled(self) -> bool:
        return bool(settings.DB_TRANSACTION_POOLING)

    def get_connection_params(self) -> dict[str, Any]:
        params = cast(dict[str, Any], super().get_connection_params())
        if self.transaction_pooled:
            params["cursor_factory"] = TransactionPooledCursor
        return params

    def create_cursor(self, name: str | None = None) -> Any:
        cursor = super().create_cursor(name)
        if isinstance(cursor, TransactionPooledCursor):
            cursor.state_sql = self.transaction_state_sql
        return cursor

    def connect(self) -> None:
        self.rls_applied = None  # a new connection, or one checked out of the pool that someone else used
        super().connect()

    def commit(self) -> None:
        super().commit()
        if self.transaction_pooled:  # the transaction-local state ended with the transaction
            self.rls_applied = None
            self.search_path_set_schemas = None

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
        self._follow_tenant_alias()
        cursor = super()._cursor(name)
        self.rls_apply()
        return cursor

    def _follow_tenant_alias(self) -> None:
        """The replica runs in the organisation the default connection is switched to."""
        if self.alias != REPLICA:
            return
        primary = cast(DatabaseWrapper, connections[get_tenant_database_alias()])
        if (self.schema_name, self.include_public_schema) != (primary.schema_name, primary.include_public_schema):
            self.set_tenant(primary.tenant, primary.include_public_schema)

    def _handle_search_path(self, cursor: Any = None) -> None:
        if self.transaction_pooled:  # set per transaction by TransactionPooledCursor, never for the session
            return
        super()._handle_search_path(cursor)

    def _rls_wanted(self) -> tuple[str, str] | None:
        """(role, principal) the current context asks for; None where row-level security is not enforced."""
        role = settings.DB_APP_ROLE
        if not role:  # row-level security not enforced: the connection's own role runs everything
            return None
        principal = current_db_principal.get()
        return (_UNRESTRICTED_ROLE, SYSTEM) if principal is None else (role, principal)

    def transaction_state_sql(self) -> str:
        """The statement that puts a transaction in the wanted state, to run before the next one (empty: the open
        transaction holds it already). Outside a transaction every statement is a transaction of its own."""
        search_path = self._get_cursor_search_paths()
        rls = self._rls_wanted()
        in_transaction = not self.connection.autocommit or self.connection.info.transaction_status != _IDLE
        if in_transaction and (search_path, rls) == (self.search_path_set_schemas, self.rls_applied):
            return ""
        settings_sql = [
            sql.SQL("set_config('search_path', {}, true)").format(
                ", ".join(quote_schema_name(schema) for schema in search_path)
            )
        ]
        if rls is not None:
            settings_sql.append(sql.SQL("set_config('role', {}, true)").format(rls[0]))
            settings_sql.append(sql.SQL(f"set_config('{PRINCIPAL_SETTING}', {{}}, true)").format(rls[1]))
        if in_transaction:  # forgotten at commit and rollback
            self.search_path_set_schemas, self.rls_applied = search_path, rls
        return (sql.SQL("SELECT ") + sql.SQL(", ").join(settings_sql) + sql.SQL("; ")).as_string(self.connection)

    def rls_apply(self) -> None:
        """Put the session in the state the current context asks for, if it is not known to be in it already."""
        wanted = self._rls_wanted()
        if wanted is None or self.transaction_pooled:
            return
        if wanted == self.rls_applied or self.connection is None:
            return
        self.rls_applied = None
        try:
            # Django's wrapper: a lost server (a restart) surfaces as django.db's OperationalError, answered 503,
            # and marks the connection for replacement.
            with self.wrap_database_errors, self.connection.cursor() as raw:
                raw.execute(_APPLY, wanted)
        except (psycopg.Error, DatabaseError):
            # In an aborted transaction the next statement fails as well, and the rollback that must follow leaves
            # the state unknown, so it is applied again then. Anything else (a missing role) must not run queries
            # unrestricted.
            if self.connection.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
                return
            raise
        self.rls_applied = wanted
