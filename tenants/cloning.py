"""Fast tenant schemas: clone the migrated template schema instead of running every migration.

django-tenants' clone_schema() copies tables, indexes, constraints, sequences, functions and triggers
in one server-side call. Two things we do differently from its default path (measured in
bench/tenant_provisioning.py):
- the 4,000-line PL/pgSQL clone function is (re)installed once per process, not once per tenant;
- the template's migration history (and content types) is copied as rows, instead of running a
  faked `migrate_schemas` that loads the whole migration graph for every new tenant.
"""

from __future__ import annotations

from django.db import connection
from django_tenants.clone import CloneSchema

_function_installed = False
# Small bookkeeping tables copied with their rows (the clone itself is NODATA: see Tenant.clone_mode).
COPIED_TABLES = ("django_migrations", "django_content_type")


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
