"""Fast tenant schemas: clone the migrated template schema instead of running every migration.

django-tenants' clone_schema() copies tables, indexes, constraints, sequences, functions and triggers
in one server-side call. Two things we do differently from its default path (measured in
bench/tenant_provisioning.py):
- the 4,000-line PL/pgSQL clone function is (re)installed once per process, not once per tenant;
- the template's migration history (and content types) is copied as rows, instead of running a
  faked `migrate_schemas` that loads the whole migration graph for every new tenant;
- row-level security (core.rls) is copied by us: clone_schema deparses policies under the caller's search_path,
  so their sub-selects would name the template's tables, and it leaves partitioned tables unprotected.
"""

from __future__ import annotations

from typing import Any

from django.db import connection
from django_tenants.clone import CloneSchema

from core.tenancy import tenant_connection

_function_installed = False
# Small bookkeeping tables copied with their rows (the clone itself is NODATA: see Tenant.clone_mode).
COPIED_TABLES = ("django_migrations", "django_content_type")
_POLICY_COMMANDS = {"r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE", "*": "ALL"}


def schema_clone(base_schema: str, new_schema: str) -> None:
    """Create `new_schema` as a copy of `base_schema`'s structure plus its migration history."""
    global _function_installed
    cloner = CloneSchema()
    with connection.cursor() as cursor:
        if not _function_installed:
            cloner._create_clone_schema_function()
            _function_installed = True
        cursor.execute("SELECT clone_schema(%s, %s, 'NODATA')", [base_schema, new_schema])
        for table in COPIED_TABLES:
            cursor.execute(f'INSERT INTO "{new_schema}".{table} SELECT * FROM "{base_schema}".{table}')  # noqa: S608
            max_id = f'SELECT COALESCE(max(id), 0) + 1 FROM "{new_schema}".{table}'  # noqa: S608
            sequence = f'"{new_schema}".{table}'
            cursor.execute(f"SELECT setval(pg_get_serial_sequence(%s, 'id'), ({max_id}), false)", [sequence])
        row_security_copy(cursor, base_schema, new_schema)


def row_security_copy(cursor: Any, base_schema: str, new_schema: str) -> None:
    """Give `new_schema` the row-level security of `base_schema`: the same policies, their expressions resolved
    against the new schema's own tables, enabled on the same tables."""
    try:
        cursor.execute("SELECT set_config('search_path', %s, false)", [f'"{base_schema}", public, extensions'])
        # Deparsed with the template first in the search_path, the expressions name its tables unqualified.
        cursor.execute(
            "SELECT c.relname, p.polname, p.polcmd, p.polpermissive, pg_get_expr(p.polqual, p.polrelid),"
            " pg_get_expr(p.polwithcheck, p.polrelid)"
            " FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s ORDER BY c.relname, p.polname",
            [base_schema],
        )
        policies = cursor.fetchall()
        cursor.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND c.relrowsecurity",
            [base_schema],
        )
        protected = [row[0] for row in cursor.fetchall()]
        cursor.execute("SELECT set_config('search_path', %s, false)", [f'"{new_schema}", public, extensions'])
        cursor.execute("SELECT tablename, policyname FROM pg_policies WHERE schemaname = %s", [new_schema])
        for table, name in cursor.fetchall():  # what clone_schema made of them
            cursor.execute(f'DROP POLICY "{name}" ON "{new_schema}"."{table}"')
        for table in protected:
            cursor.execute(f'ALTER TABLE "{new_schema}"."{table}" ENABLE ROW LEVEL SECURITY')
        for table, name, command, permissive, using, check in policies:
            cursor.execute(
                f'CREATE POLICY "{name}" ON "{new_schema}"."{table}" AS {"PERMISSIVE" if permissive else "RESTRICTIVE"}'
                f" FOR {_POLICY_COMMANDS[command]}"
                + (f" USING ({using})" if using is not None else "")
                + (f" WITH CHECK ({check})" if check is not None else "")
            )
    finally:
        # django-tenants sets its own path again before the next query.
        tenant_connection().search_path_set_schemas = None
