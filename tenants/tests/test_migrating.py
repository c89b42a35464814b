"""migrate_schemas skips the organisations whose schema already has every migration (tenants.migrating)."""

import pytest
from django.core.management import call_command
from django.db import connection

from tenants.migrating import schemas_behind


@pytest.mark.django_db
def test_only_schemas_missing_a_migration_are_behind(tenant_a, tenant_b):
    schemas = [tenant_a.schema_name, tenant_b.schema_name]
    assert schemas_behind(schemas) == []
    with connection.cursor() as cursor:
        cursor.execute(
            f'DELETE FROM "{tenant_b.schema_name}".django_migrations'  # noqa: S608
            ' WHERE id = (SELECT max(id) FROM "' + tenant_b.schema_name + '".django_migrations)'
        )
    assert schemas_behind(schemas) == [tenant_b.schema_name]


@pytest.mark.django_db
def test_migrate_schemas_with_nothing_to_migrate_runs_no_schema(tenant_a, capsys):
    call_command("migrate_schemas", tenant=True, interactive=False, verbosity=1)
    out = capsys.readouterr().out
    assert "already current: skipped" in out
    assert f":{tenant_a.schema_name}]" not in out  # django-tenants prefixes every line of a schema it migrates
