"""A cloned organisation schema is the schema the migrations build (tenants.cloning)."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.db import connection, transaction

from tenants.cloning import UnsupportedTemplateObject, clone_script, quoted, schema_clone
from tenants.services import template_schema_is_current

# Each query reads one kind of object of the schema %(schema)s, named as seen with that schema first on the
# search_path: the same text for two schemas holding the same objects. Physical details that a copy cannot and
# need not keep (oids, attnum gaps left by dropped columns, names PostgreSQL derives from oids) are left out.
_CATALOG = {
    "relations": """
        SELECT c.relname, c.relkind, c.relpersistence, c.relispartition, c.relrowsecurity, c.relforcerowsecurity,
               c.reloptions, pg_get_partkeydef(c.oid), pg_get_expr(c.relpartbound, c.oid),
               (SELECT p.relname FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent WHERE i.inhrelid = c.oid),
               c.relowner::regrole::text
        FROM pg_class c WHERE c.relnamespace = %(schema)s::regnamespace""",
    "columns": """
        SELECT c.relname, rank() OVER (PARTITION BY c.oid ORDER BY a.attnum), a.attname,
               format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid), a.attidentity,
               a.attgenerated, a.attcollation::regcollation::text, a.attislocal, a.attinhcount, a.attstorage,
               a.attcompression
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE c.relnamespace = %(schema)s::regnamespace AND a.attnum > 0 AND NOT a.attisdropped""",
    "constraints": """
        SELECT c.relname, k.conname, k.contype, pg_get_constraintdef(k.oid), k.condeferrable, k.condeferred,
               k.convalidated, k.conislocal, k.coninhcount, k.connoinherit, p.conname, x.relname
        FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
        LEFT JOIN pg_constraint p ON p.oid = k.conparentid LEFT JOIN pg_class x ON x.oid = k.conindid
        WHERE c.relnamespace = %(schema)s::regnamespace""",
    "indexes": """
        SELECT c.relname, t.relname, pg_get_indexdef(x.indexrelid, 0, true), x.indisunique, x.indisprimary,
               x.indisvalid, x.indisready, x.indimmediate, c.reloptions,
               (SELECT p.relname FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent
                WHERE i.inhrelid = c.oid)
        FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
        WHERE c.relnamespace = %(schema)s::regnamespace""",
    "sequences": """
        SELECT c.relname, s.seqtypid::regtype::text, s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache,
               s.seqcycle, pg_sequence_last_value(c.oid), t.relname, a.attname, dep.deptype
        FROM pg_class c JOIN pg_sequence s ON s.seqrelid = c.oid
        LEFT JOIN pg_depend dep ON dep.classid = 'pg_class'::regclass AND dep.objid = c.oid
             AND dep.refclassid = 'pg_class'::regclass AND dep.deptype IN ('a', 'i')
        LEFT JOIN pg_class t ON t.oid = dep.refobjid
        LEFT JOIN pg_attribute a ON a.attrelid = dep.refobjid AND a.attnum = dep.refobjsubid
        WHERE c.relnamespace = %(schema)s::regnamespace""",
    "policies": """
        SELECT c.relname, p.polname, p.polcmd, p.polpermissive, p.polroles::regrole[]::text[],
               pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid)
        FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid WHERE c.relnamespace = %(schema)s::regnamespace""",
    "triggers": """
        SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid, true), t.tgenabled, t.tgparentid <> 0
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        WHERE c.relnamespace = %(schema)s::regnamespace AND NOT t.tgisinternal""",
    "foreign key triggers": """
        SELECT c.relname, k.conname, t.tgtype, t.tgfoid::regproc::text, t.tgdeferrable, t.tginitdeferred
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_constraint k ON k.oid = t.tgconstraint
        WHERE c.relnamespace = %(schema)s::regnamespace AND t.tgisinternal""",
    "functions": """
        SELECT p.proname, p.prokind, pg_get_function_arguments(p.oid), pg_get_function_result(p.oid),
               p.prolang, p.prosrc, p.provolatile, p.prosecdef, p.proconfig, p.proacl
        FROM pg_proc p WHERE p.pronamespace = %(schema)s::regnamespace""",
    "grants": """
        SELECT c.relname, g.grantee::regrole::text, g.privilege_type, g.is_grantable
        FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) g WHERE c.relnamespace = %(schema)s::regnamespace""",
    "schema grants": """
        SELECT g.grantee::regrole::text, g.privilege_type, g.is_grantable
        FROM pg_namespace n CROSS JOIN LATERAL aclexplode(n.nspacl) g WHERE n.oid = %(schema)s::regnamespace""",
    "column grants": """
        SELECT c.relname, a.attname, a.attacl::text[] FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        WHERE c.relnamespace = %(schema)s::regnamespace AND a.attacl IS NOT NULL""",
    "comments": """
        SELECT d.classoid::regclass::text, d.objsubid, d.description FROM pg_description d
        JOIN pg_class c ON c.oid = d.objoid AND d.classoid = 'pg_class'::regclass
        WHERE c.relnamespace = %(schema)s::regnamespace""",
    "types": """
        SELECT t.typname, t.typtype FROM pg_type t WHERE t.typnamespace = %(schema)s::regnamespace""",
}


def schema_catalog(schema: str) -> dict[str, Any]:
    catalog: dict[str, Any] = {}
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('search_path', %s, true)", [f"{quoted(schema)}, public, extensions"])
        for kind, sql in _CATALOG.items():
            cursor.execute(sql, {"schema": quoted(schema)})
            catalog[kind] = sorted(cursor.fetchall(), key=repr)
        cursor.execute(f"SELECT app, name FROM {quoted(schema)}.django_migrations")  # noqa: S608 (identifier)
        catalog["migration history"] = sorted(cursor.fetchall())
        cursor.execute(f"SELECT id, app_label, model FROM {quoted(schema)}.django_content_type")  # noqa: S608
        catalog["content types"] = sorted(cursor.fetchall())
    return catalog


def catalog_differences(one: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """What differs, kind by kind (rows as text: some hold arrays)."""
    differences = {}
    for kind in one:
        first, second = {repr(row) for row in one[kind]}, {repr(row) for row in other[kind]}
        if first != second or len(one[kind]) != len(other[kind]):
            differences[kind] = {
                "only in first": sorted(first - second)[:10],
                "only in second": sorted(second - first)[:10],
            }
    return differences


@pytest.mark.django_db
def test_a_cloned_schema_is_the_schema_the_migrations_build():
    # The template is the schema the migrations build: the session made it with migrate_schemas, from nothing
    # (platform_setup -> template_schema_ensure), and holds every migration. A second schema migrated here would
    # be the same schema again, for the time of a full migrate.
    assert template_schema_is_current()
    schema_clone(settings.TENANT_BASE_SCHEMA, "t_cloned")

    migrated, cloned = schema_catalog(settings.TENANT_BASE_SCHEMA), schema_catalog("t_cloned")

    assert catalog_differences(migrated, cloned) == {}
    # The comparison saw what matters: the vector indexes, the partitions, the policies, the audit trigger.
    indexes = {row[2] for row in cloned["indexes"]}
    assert any("USING hnsw" in definition for definition in indexes)
    assert any("USING gin" in definition for definition in indexes)
    assert any(row[3] for row in cloned["relations"])  # partitions
    assert len(cloned["policies"]) > 10
    assert {row[1] for row in cloned["triggers"]} >= {"usage_auditentry_no_update_delete"}
    assert any(row[1] == "agentry_app" for row in cloned["grants"])
    assert cloned["migration history"] and cloned["content types"]


@pytest.mark.django_db
def test_a_clone_uses_its_own_tables_and_sequences():
    template_dependents = (
        "SELECT count(*) FROM pg_depend d JOIN pg_class r ON r.oid = d.refobjid AND d.refclassid = 'pg_class'::regclass"
        " WHERE r.relnamespace = %s::regnamespace"
    )
    with connection.cursor() as cursor:
        cursor.execute(template_dependents, [quoted(settings.TENANT_BASE_SCHEMA)])
        before = cursor.fetchone()[0]
        schema_clone(settings.TENANT_BASE_SCHEMA, "t_own")
        cursor.execute(template_dependents, [quoted(settings.TENANT_BASE_SCHEMA)])
        assert cursor.fetchone()[0] == before  # no default, key, policy or index of the clone uses a template object
        cursor.execute("SELECT count(*) FROM t_own.django_migrations")
        migrations = cursor.fetchone()[0]
        cursor.execute("INSERT INTO t_own.django_migrations (app, name, applied) VALUES ('x', 'y', now()) RETURNING id")
        assert cursor.fetchone()[0] > migrations  # the sequence continues after the copied rows


@pytest.mark.django_db
def test_cloning_leaves_the_connection_search_path_as_it_was():
    raw = connection.cursor().cursor  # psycopg's own cursor: django-tenants does not set the path on it
    raw.execute("SHOW search_path")
    before = raw.fetchone()[0]
    schema_clone(settings.TENANT_BASE_SCHEMA, "t_path")
    raw.execute("SHOW search_path")
    assert raw.fetchone()[0] == before


@pytest.mark.django_db
def test_a_template_object_the_clone_cannot_copy_is_refused_by_name():
    schema_clone(settings.TENANT_BASE_SCHEMA, "_template_with_view")
    with connection.cursor() as cursor:
        cursor.execute("CREATE VIEW _template_with_view.recent_agents AS SELECT 1 AS one")
        with pytest.raises(UnsupportedTemplateObject, match="recent_agents"), transaction.atomic():
            clone_script(cursor, "_template_with_view")


@pytest.mark.django_db
def test_a_clone_for_citus_is_the_same_schema_without_row_level_security():
    schema_clone(settings.TENANT_BASE_SCHEMA, "t_secured")
    schema_clone(settings.TENANT_BASE_SCHEMA, "t_unsecured", row_security=False)

    secured, unsecured = schema_catalog("t_secured"), schema_catalog("t_unsecured")

    assert secured["policies"] and not unsecured["policies"]
    assert not any(row[4] for row in unsecured["relations"])  # relrowsecurity
    without_row_security = [(*row[:4], False, *row[5:]) for row in secured["relations"]]
    assert sorted(without_row_security, key=repr) == unsecured["relations"]
    assert set(catalog_differences(secured, unsecured)) == {"policies", "relations"}
