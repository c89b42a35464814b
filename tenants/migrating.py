"""`migrate_schemas` over many organisations: schemas already current are skipped after one look at all of them.

django-tenants runs Django's `migrate` once per schema, which loads the migration graph and inspects the schema
even when there is nothing to apply: about a second per organisation, so a deploy without migrations spent
minutes on a thousand. The executor below (settings.GET_EXECUTOR_FUNCTION) first reads which project migrations
every tenant schema has recorded, a few statements over all schemas, and hands on only the schemas that lack one.
A schema is current when it has recorded every migration on disk, the test the template uses
(tenants.services.template_schema_is_current). Anything but a plain "migrate everything" (an app label, a target,
--fake, --plan, --prune, --check ...) runs on every schema, unchanged.
"""

from __future__ import annotations

import sys
from typing import Any

from django.db import DatabaseError, connection, transaction
from django.db.migrations.loader import MigrationLoader
from django_tenants.migration_executors import get_executor
from django_tenants.utils import get_public_schema_name

BATCH = 200  # schemas per statement: bounds the statement's size, not the number of round trips that matters
# Options under which `migrate` does more than apply what is missing: the schemas all run, as django-tenants does.
_EXACT_OPTIONS = ("app_label", "migration_name", "fake", "fake_initial", "plan", "prune", "check_unapplied")


def schemas_behind(schemas: list[str]) -> list[str]:
    """The schemas among `schemas` missing one of the project's migrations (in the order given)."""
    wanted = sorted(f"{app}.{name}" for app, name in MigrationLoader(None, ignore_no_migrations=True).disk_migrations)
    try:
        with transaction.atomic():  # a savepoint: the caller's transaction survives the error below
            current = _current(schemas, wanted)
    except DatabaseError:  # a schema without its migration table: let migrate create it, as it would anyway
        return list(schemas)
    return [schema for schema in schemas if schema not in current]


def _current(schemas: list[str], wanted: list[str]) -> set[str]:
    current: set[str] = set()
    with connection.cursor() as cursor:
        for start in range(0, len(schemas), BATCH):
            batch = schemas[start : start + BATCH]
            branches = " UNION ALL ".join(
                "SELECT %s, count(*) FROM " + _quoted(schema) + ".django_migrations m"  # noqa: S608 (identifier)
                " WHERE m.app || '.' || m.name = ANY(%s)"
                for schema in batch
            )
            cursor.execute(branches, [value for schema in batch for value in (schema, wanted)])
            current |= {schema for schema, count in cursor.fetchall() if count == len(wanted)}
    return current


def _quoted(schema: str) -> str:
    return '"' + schema.replace('"', '""') + '"' if schema else '""'


def executor_for(codename: str | None = None) -> type:
    """django-tenants' executor `codename`, skipping tenant schemas with nothing to migrate."""
    base = get_executor(codename)

    class SkippingCurrentSchemas(base):  # type: ignore[misc,valid-type]  # django-tenants is untyped
        def run_migrations(self, tenants: Any = None) -> Any:
            tenants = list(tenants or [])
            if not any(self.options.get(option) for option in _EXACT_OPTIONS):
                public = get_public_schema_name()
                behind = set(schemas_behind([schema for schema in tenants if schema != public]))
                skipped = len(tenants) - len(behind) - (public in tenants)
                if skipped and int(self.options.get("verbosity", 1)) >= 1:
                    sys.stdout.write(f"[migrate_schemas] {skipped} schema(s) already current: skipped\n")
                tenants = [schema for schema in tenants if schema == public or schema in behind]
            return super().run_migrations(tenants)

    return SkippingCurrentSchemas
