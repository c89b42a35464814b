"""Fast tenant schemas: a new organisation's schema is a copy of the migrated template schema, made by one script.

Running every migration takes about a minute per schema, and django-tenants' clone_schema() (a PL/pgSQL function)
copies the template object by object with catalog queries for each: several seconds per organisation once the
catalog holds hundreds of schemas. Here the template's catalog is read once per template version (a few queries)
into a DDL script that names nothing by schema: it was deparsed with the template first on the search_path, so the
template's objects appear unqualified, and it runs with the new schema first on the search_path, where the same
names resolve to the new schema's objects (public and extensions objects resolve as they did for the template).
The script is cached per process and runs in one round trip per organisation.

The copy matches a schema built by the migrations (tenants/tests/test_cloning.py compares their catalogs): tables
and columns (defaults, identity, NOT NULL constraint names), sequences and their ownership, partitions (attached
as the migrations attached them), constraints, indexes (HNSW, GIN, partial, attached partition indexes), the
schema's functions and triggers, row-level security and its policies, grants, and the rows of the tables the
migrations filled (their migration history, content types). An object the script cannot copy makes provisioning
fail with its name rather than produce a different schema.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.db import connection

_POLICY_COMMANDS = {"r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE", "*": "ALL"}
_PRIVILEGE_TARGET = {"r": "TABLE", "p": "TABLE", "S": "SEQUENCE"}


class UnsupportedTemplateObject(RuntimeError):
    """The template holds an object the clone script does not reproduce."""


@dataclass(frozen=True)
class _Script:
    version: tuple[Any, ...]
    sql: str


_scripts: dict[tuple[str, bool], _Script] = {}


def quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def schema_clone(base_schema: str, new_schema: str, *, row_security: bool = True) -> None:
    """Create `new_schema` as a copy of `base_schema` (structure, grants and the rows its migrations wrote), in the
    caller's transaction; without its row-level security where that cannot be enforced (tenants.citus). The
    connection's search_path is as before afterwards."""
    with connection.cursor() as cursor:
        script = clone_script(cursor, base_schema, row_security=row_security)
        with _search_path(cursor, f"{quoted(new_schema)}, public, extensions"):
            cursor.execute(f"CREATE SCHEMA {quoted(new_schema)};\n{script}")


def clone_script(cursor: Any, base_schema: str, *, row_security: bool = True) -> str:
    """The script that copies `base_schema` into the first schema of the search_path, built once per version of the
    template: its migration history and the partitions it holds (created by migrations and a daily job)."""
    version = _template_version(cursor, base_schema)
    cached = _scripts.get((base_schema, row_security))
    if cached is None or cached.version != version:
        with _search_path(cursor, f"{quoted(base_schema)}, public, extensions"):
            cached = _Script(version, _script_build(cursor, base_schema, row_security=row_security))
        _scripts[(base_schema, row_security)] = cached
    return cached.sql


@contextmanager
def _search_path(cursor: Any, path: str) -> Iterator[None]:
    """Deparsing and the script depend on the search_path: set it for the block, then put back the caller's (on an
    error the transaction's rollback puts it back)."""
    cursor.execute("SELECT current_setting('search_path')")
    (previous,) = cursor.fetchone()
    cursor.execute("SELECT set_config('search_path', %s, false)", [path])
    yield
    cursor.execute("SELECT set_config('search_path', %s, false)", [previous])


def _template_version(cursor: Any, schema: str) -> tuple[Any, ...]:
    # pg_inherits is read through its index on the parents; a catalog scan of the template's relations would cost
    # a scan of pg_class, which grows with every organisation.
    cursor.execute(
        f"SELECT (SELECT count(*) FROM {quoted(schema)}.django_migrations),"  # noqa: S608 (identifier)
        f" (SELECT max(id) FROM {quoted(schema)}.django_migrations),"
        " (SELECT array_agg(i.inhrelid ORDER BY i.inhrelid) FROM pg_partitioned_table p"
        "  JOIN pg_class c ON c.oid = p.partrelid JOIN pg_inherits i ON i.inhparent = p.partrelid"
        "  WHERE c.relnamespace = %s::regnamespace)",
        [quoted(schema)],
    )
    return tuple(cursor.fetchone())


def _rows(cursor: Any, sql: str, schema: str) -> list[tuple[Any, ...]]:
    cursor.execute(sql, {"schema": quoted(schema)})
    return list(cursor.fetchall())


_RELATIONS_SQL = """
SELECT c.oid, c.relname, c.relkind, c.relpersistence, c.relispartition, c.relrowsecurity, c.relforcerowsecurity,
       c.reloptions, c.relhasrules, pg_get_partkeydef(c.oid), pg_get_expr(c.relpartbound, c.oid),
       (SELECT i.inhparent FROM pg_inherits i WHERE i.inhrelid = c.oid)
FROM pg_class c WHERE c.relnamespace = %(schema)s::regnamespace ORDER BY c.relname
"""
_COLUMNS_SQL = """
SELECT a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod), a.attislocal,
       CASE WHEN a.attcollation <> t.typcollation THEN a.attcollation::regcollation::text END,
       pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated, n.conname, n.conislocal, n.connoinherit,
       (SELECT dep.objid FROM pg_depend dep
        WHERE dep.classid = 'pg_class'::regclass AND dep.refclassid = 'pg_class'::regclass AND dep.deptype = 'i'
          AND dep.refobjid = a.attrelid AND dep.refobjsubid = a.attnum)
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
LEFT JOIN pg_constraint n ON n.conrelid = a.attrelid AND n.contype = 'n' AND n.conkey[1] = a.attnum
WHERE c.relnamespace = %(schema)s::regnamespace AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum
"""
_SEQUENCES_SQL = """
SELECT c.oid, c.relname, format_type(s.seqtypid, NULL), s.seqincrement, s.seqmin, s.seqmax, s.seqstart, s.seqcache,
       s.seqcycle, pg_sequence_last_value(c.oid),
       (SELECT quote_ident(t.relname) || '.' || quote_ident(a.attname) FROM pg_depend dep
        JOIN pg_class t ON t.oid = dep.refobjid
        JOIN pg_attribute a ON a.attrelid = dep.refobjid AND a.attnum = dep.refobjsubid
        WHERE dep.classid = 'pg_class'::regclass AND dep.objid = c.oid AND dep.refclassid = 'pg_class'::regclass
          AND dep.deptype = 'a')
FROM pg_class c JOIN pg_sequence s ON s.seqrelid = c.oid
WHERE c.relnamespace = %(schema)s::regnamespace ORDER BY c.relname
"""
_CONSTRAINTS_SQL = """
SELECT k.conrelid, k.conname, k.contype, pg_get_constraintdef(k.oid, true), k.conislocal, k.conparentid <> 0,
       t.relname, p.conname
FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
LEFT JOIN pg_constraint p ON p.oid = k.conparentid LEFT JOIN pg_class t ON t.oid = p.conrelid
WHERE c.relnamespace = %(schema)s::regnamespace AND k.contype <> 'n' ORDER BY c.relname, k.conname
"""
_INDEXES_SQL = """
SELECT c.relname, pg_get_indexdef(x.indexrelid, 0, true), x.indisclustered OR x.indisreplident
FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid
WHERE c.relnamespace = %(schema)s::regnamespace
  AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = x.indexrelid AND k.conrelid = x.indrelid
                  AND k.contype IN ('p', 'u', 'x'))
ORDER BY c.relname
"""
_INDEX_PARENTS_SQL = """
SELECT p.relname, c.relname
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
WHERE c.relnamespace = %(schema)s::regnamespace AND c.relkind IN ('i', 'I')
  AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.inhrelid AND k.conparentid <> 0)
ORDER BY 2
"""
_FUNCTIONS_SQL = """
SELECT p.proname, p.prokind, quote_ident(n.nspname) || '.' || quote_ident(p.proname), pg_get_functiondef(p.oid)
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE p.pronamespace = %(schema)s::regnamespace ORDER BY p.oid
"""
_TRIGGERS_SQL = """
SELECT pg_get_triggerdef(t.oid, true)
FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
WHERE c.relnamespace = %(schema)s::regnamespace AND NOT t.tgisinternal AND t.tgparentid = 0
ORDER BY c.relname, t.tgname
"""
_POLICIES_SQL = """
SELECT c.relname, p.polname, p.polcmd, p.polpermissive,
       CASE WHEN p.polroles = '{0}' THEN 'PUBLIC'
            ELSE (SELECT string_agg(quote_ident(r.rolname), ', ' ORDER BY r.rolname) FROM pg_roles r
                  WHERE r.oid = ANY (p.polroles)) END,
       pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid)
FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
WHERE c.relnamespace = %(schema)s::regnamespace ORDER BY c.relname, p.polname
"""
_GRANTS_SQL = """
SELECT c.relname, c.relkind, CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END,
       g.is_grantable, string_agg(g.privilege_type, ', ' ORDER BY g.privilege_type)
FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) g LEFT JOIN pg_roles r ON r.oid = g.grantee
WHERE c.relnamespace = %(schema)s::regnamespace AND g.grantee <> c.relowner AND c.relkind IN ('r', 'p', 'S')
GROUP BY 1, 2, 3, 4 ORDER BY 1, 3
"""
_SCHEMA_GRANTS_SQL = """
SELECT CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END, g.is_grantable,
       string_agg(g.privilege_type, ', ' ORDER BY g.privilege_type)
FROM pg_namespace n CROSS JOIN LATERAL aclexplode(n.nspacl) g LEFT JOIN pg_roles r ON r.oid = g.grantee
WHERE n.oid = %(schema)s::regnamespace AND g.grantee <> n.nspowner GROUP BY 1, 2 ORDER BY 1
"""
# What the script does not copy: any of it in the template makes provisioning fail with its name.
_UNSUPPORTED_SQL = """
SELECT 'relation ' || c.relname || ' of kind ' || c.relkind::text FROM pg_class c
WHERE c.relnamespace = %(schema)s::regnamespace AND c.relkind NOT IN ('r', 'p', 'S', 'i', 'I')
UNION ALL SELECT 'rules on ' || c.relname FROM pg_class c
WHERE c.relnamespace = %(schema)s::regnamespace AND c.relhasrules
UNION ALL SELECT 'type ' || t.typname FROM pg_type t
WHERE t.typnamespace = %(schema)s::regnamespace AND t.typrelid = 0 AND t.typcategory <> 'A'
UNION ALL SELECT 'function ' || p.proname || ' of kind ' || p.prokind::text FROM pg_proc p
WHERE p.pronamespace = %(schema)s::regnamespace AND p.prokind NOT IN ('f', 'p')
UNION ALL SELECT 'statistics ' || s.stxname FROM pg_statistic_ext s WHERE s.stxnamespace = %(schema)s::regnamespace
UNION ALL SELECT 'comment on ' || c.relname FROM pg_description d JOIN pg_class c ON c.oid = d.objoid
WHERE d.classoid = 'pg_class'::regclass AND c.relnamespace = %(schema)s::regnamespace
UNION ALL SELECT 'column privileges on ' || c.relname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
WHERE c.relnamespace = %(schema)s::regnamespace AND a.attacl IS NOT NULL
UNION ALL SELECT 'operator ' || o.oprname FROM pg_operator o WHERE o.oprnamespace = %(schema)s::regnamespace
UNION ALL SELECT 'collation ' || o.collname FROM pg_collation o WHERE o.collnamespace = %(schema)s::regnamespace
UNION ALL SELECT 'disabled trigger ' || t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
WHERE c.relnamespace = %(schema)s::regnamespace AND NOT t.tgisinternal AND t.tgenabled <> 'O'
UNION ALL SELECT 'constraint trigger ' || k.conname FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
WHERE c.relnamespace = %(schema)s::regnamespace AND k.contype = 't'
UNION ALL SELECT 'clustered or replica identity index ' || c.relname FROM pg_index x JOIN pg_class c
ON c.oid = x.indexrelid WHERE c.relnamespace = %(schema)s::regnamespace AND (x.indisclustered OR x.indisreplident)
"""


def _script_build(cursor: Any, schema: str, *, row_security: bool) -> str:
    """Read the template's catalog into the script (deparsed with the template first on the search_path)."""
    unsupported = [row[0] for row in _rows(cursor, _UNSUPPORTED_SQL, schema)]
    if unsupported:
        raise UnsupportedTemplateObject(f"the template schema {schema} holds what cloning cannot copy: {unsupported}")
    out: list[str] = []

    for name, kind, qualified_name, definition in _rows(cursor, _FUNCTIONS_SQL, schema):
        head = f"CREATE OR REPLACE {'PROCEDURE' if kind == 'p' else 'FUNCTION'} "
        if not definition.startswith(head + qualified_name + "("):
            raise UnsupportedTemplateObject(f"function {name}: unexpected definition {definition[:80]!r}")
        out.append(head + quoted(name) + definition[len(head + qualified_name) :].rstrip() + ";")

    relations = {row[0]: row for row in _rows(cursor, _RELATIONS_SQL, schema)}
    names = {oid: quoted(row[1]) for oid, row in relations.items()}
    columns: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
    for row in _rows(cursor, _COLUMNS_SQL, schema):
        columns[row[0]].append(row)
    sequences = _rows(cursor, _SEQUENCES_SQL, schema)
    sequence_options = {row[0]: _sequence_options(row) for row in sequences}
    identity_sequences = {column[11] for rows in columns.values() for column in rows if column[11] is not None}
    for oid, _, data_type, *_ in sequences:
        if oid not in identity_sequences:
            out.append(f"CREATE SEQUENCE {names[oid]} AS {data_type} {sequence_options[oid]};")

    constraints = _rows(cursor, _CONSTRAINTS_SQL, schema)
    checks: dict[int, list[str]] = defaultdict(list)
    for relid, name, kind, definition, is_local, *_ in constraints:
        if kind == "c" and is_local:
            checks[relid].append(f"CONSTRAINT {quoted(name)} {definition}")

    tables = [row for row in relations.values() if row[2] in ("r", "p")]

    def depth(oid: int) -> int:
        parent = relations[oid][11]
        return 0 if parent is None else 1 + depth(parent)

    # Parents before their partitions. A partition whose columns are all inherited was created PARTITION OF its
    # parent; any other was created on its own and then attached (agents.partitions' monthly partitions).
    attach: list[str] = []
    for oid, _, kind, persistence, is_partition, _, _, options, _, partition_key, bound, parent in sorted(
        tables, key=lambda row: (depth(row[0]), row[1])
    ):
        create = "CREATE UNLOGGED TABLE" if persistence == "u" else "CREATE TABLE"
        suffix = (f" PARTITION BY {partition_key}" if kind == "p" else "") + (
            f" WITH ({', '.join(options)})" if options else ""
        )
        if is_partition and not any(column[3] for column in columns[oid]):
            local = [
                f"CONSTRAINT {quoted(c[8])} NOT NULL {quoted(c[1])}" for c in columns[oid] if c[8] and c[9]
            ] + checks[oid]
            body = f" ({', '.join(local)})" if local else ""
            out.append(f"{create} {names[oid]} PARTITION OF {names[parent]}{body} {bound}{suffix};")
        else:
            elements = [_column_sql(column, names, sequence_options) for column in columns[oid]] + checks[oid]
            out.append(f"{create} {names[oid]} ({', '.join(elements)}){suffix};")
            if is_partition:
                attach.append(f"ALTER TABLE {names[parent]} ATTACH PARTITION {names[oid]} {bound};")
    out += attach
    for oid, *_, last_value, owner in sequences:
        if owner is not None:
            out.append(f"ALTER SEQUENCE {names[oid]} OWNED BY {owner};")
        if last_value is not None:
            out.append(f"SELECT setval('{names[oid]}', {int(last_value)}, true);")

    # Rows the migrations wrote (migration history, content types), copied before the constraints and indexes.
    filled = _tables_with_rows(cursor, schema, [row[1] for row in tables if row[2] == "r"])
    for oid, name, *_ in tables:
        if name in filled:
            listed = ", ".join(quoted(column[1]) for column in columns[oid] if not column[7])
            out.append(
                f"INSERT INTO {names[oid]} ({listed}) OVERRIDING SYSTEM VALUE"  # noqa: S608 (identifiers)
                f" SELECT {listed} FROM {quoted(schema)}.{names[oid]};"
            )

    # A partitioned table's constraints reach its partitions as PostgreSQL derives them (as they did when the
    # migrations built the template), then take the template's names. Other indexes are created on each table
    # only and attached to their parents (as pg_dump does).
    for relid, name, kind, definition, _, derived, *_ in constraints:
        if kind in ("p", "u", "x") and not derived:
            out.append(f"ALTER TABLE {names[relid]} ADD CONSTRAINT {quoted(name)} {definition};")
    out += [f"{definition};" for _, definition, _ in _rows(cursor, _INDEXES_SQL, schema)]
    for parent_index, child_index in _rows(cursor, _INDEX_PARENTS_SQL, schema):
        out.append(f"ALTER INDEX {quoted(parent_index)} ATTACH PARTITION {quoted(child_index)};")
    for relid, name, kind, definition, _, derived, *_ in constraints:
        if kind == "f" and not derived:
            out.append(f"ALTER TABLE {names[relid]} ADD CONSTRAINT {quoted(name)} {definition};")
    derived_names = [
        f"({_literal(relations[relid][1])}, {_literal(parent_table)}, {_literal(parent)}, {_literal(name)})"
        for relid, name, _, _, _, derived, parent_table, parent in constraints
        if derived
    ]
    if derived_names:
        out.append(_DERIVED_RENAME.replace("{values}", ", ".join(derived_names)))

    if row_security:
        out += _row_security_sql(cursor, schema, tables, names)
    out += [f"{definition};" for (definition,) in _rows(cursor, _TRIGGERS_SQL, schema)]

    # Grants as the template has them (normally what the migrating role's default privileges give anyway).
    grants: dict[tuple[str, str, str, bool], list[str]] = defaultdict(list)
    for table, kind, grantee, grantable, privileges in _rows(cursor, _GRANTS_SQL, schema):
        grants[(privileges, _PRIVILEGE_TARGET[kind], grantee, grantable)].append(quoted(table))
    for (privileges, target, grantee, grantable), tables_granted in grants.items():
        option = " WITH GRANT OPTION" if grantable else ""
        out.append(f"GRANT {privileges} ON {target} {', '.join(tables_granted)} TO {grantee}{option};")
    for grantee, grantable, privileges in _rows(cursor, _SCHEMA_GRANTS_SQL, schema):
        option = " WITH GRANT OPTION" if grantable else ""
        grant = f"GRANT {privileges} ON SCHEMA %I TO {grantee}{option}"
        out.append(f"DO $$ BEGIN EXECUTE format('{grant}', current_schema()); END $$;")
    return "\n".join(out)


def _row_security_sql(cursor: Any, schema: str, tables: list[tuple[Any, ...]], names: dict[int, str]) -> list[str]:
    out: list[str] = []
    for oid, _, _, _, _, enabled, forced, *_ in tables:
        if enabled:
            out.append(f"ALTER TABLE {names[oid]} ENABLE ROW LEVEL SECURITY;")
        if forced:
            out.append(f"ALTER TABLE {names[oid]} FORCE ROW LEVEL SECURITY;")
    for table, name, command, permissive, roles, using, check in _rows(cursor, _POLICIES_SQL, schema):
        out.append(
            f"CREATE POLICY {quoted(name)} ON {quoted(table)} AS {'PERMISSIVE' if permissive else 'RESTRICTIVE'}"
            f" FOR {_POLICY_COMMANDS[command]} TO {roles}"
            + (f" USING ({using})" if using is not None else "")
            + (f" WITH CHECK ({check})" if check is not None else "")
            + ";"
        )
    return out


_DERIVED_RENAME = """DO $$ DECLARE r record; BEGIN
FOR r IN SELECT k.conrelid::regclass AS tbl, k.conname AS current, w.wanted
    FROM (VALUES {values}) AS w (child, parent, parent_constraint, wanted)
    JOIN pg_constraint p ON p.conrelid = to_regclass(quote_ident(w.parent)) AND p.conname = w.parent_constraint
    JOIN pg_constraint k ON k.conparentid = p.oid AND k.conrelid = to_regclass(quote_ident(w.child))
    WHERE k.conname <> w.wanted
LOOP EXECUTE format('ALTER TABLE %s RENAME CONSTRAINT %I TO %I', r.tbl, r.current, r.wanted); END LOOP;
END $$;"""


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _sequence_options(row: tuple[Any, ...]) -> str:
    # Without AS <type>: an identity sequence takes its column's type.
    _, _, _, increment, minimum, maximum, start, cache, cycle, *_ = row
    return (
        f"INCREMENT BY {int(increment)} MINVALUE {int(minimum)} MAXVALUE {int(maximum)}"
        f" START WITH {int(start)} CACHE {int(cache)} {'CYCLE' if cycle else 'NO CYCLE'}"
    )


def _column_sql(column: tuple[Any, ...], names: dict[int, str], sequence_options: dict[int, str]) -> str:
    _, name, data_type, _, collation, default, identity, generated, not_null, _, no_inherit, sequence = column
    parts = [quoted(name), data_type]
    if collation:
        parts.append(f"COLLATE {collation}")
    if not_null:
        parts.append(f"CONSTRAINT {quoted(not_null)} NOT NULL" + (" NO INHERIT" if no_inherit else ""))
    if generated:
        parts.append(f"GENERATED ALWAYS AS ({default}) {'STORED' if generated == 's' else 'VIRTUAL'}")
    elif default is not None:
        parts.append(f"DEFAULT {default}")
    if identity:
        kind = "ALWAYS" if identity == "a" else "BY DEFAULT"
        parts.append(f"GENERATED {kind} AS IDENTITY (SEQUENCE NAME {names[sequence]} {sequence_options[sequence]})")
    return " ".join(parts)


def _tables_with_rows(cursor: Any, schema: str, tables: list[str]) -> set[str]:
    if not tables:
        return set()
    cursor.execute(
        " UNION ALL ".join(
            f"SELECT %s WHERE EXISTS (SELECT 1 FROM {quoted(schema)}.{quoted(table)})"  # noqa: S608 (identifiers)
            for table in tables
        ),
        tables,
    )
    return {row[0] for row in cursor.fetchall()}
