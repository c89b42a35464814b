"""Organisations on a Citus cluster (settings.DATABASE_CITUS): the one home of everything that differs there.

Citus' schema-based sharding makes each organisation's schema a distributed schema: all its tables become
single-shard tables of one colocation group, placed whole on one worker, so an organisation's queries run on one
node (the coordinator routes them by the schema in `search_path`). What the product does for it:

- provisioning clones the template as on one PostgreSQL, then distributes the new schema (`schema_distribute`);
  the template itself stays a plain schema on the coordinator (no requests read it);
- the public tables that tenant tables reference (users, without a database foreign key: core/models.py) become
  reference tables, copied to every node, so joins from a tenant schema stay on its worker (`reference_tables_ensure`);
- an organisation moves to another worker with `citus_move_shard_placement` over logical replication, while it
  keeps serving (`tenant_move`, `manage.py tenant_move`);
- row-level security (core.rls) is not enforced: Citus refuses policies with sub-selects on distributed tables and
  runs shard queries on the workers as the logged-in role, without our session setting. Clones are made without
  policies (tenants.cloning), a migrated schema's are dropped before distribution, and DB_APP_ROLE defaults to
  empty (config/settings/base.py); iam.policy still decides every access (docs/operations.md, "Many organisations:
  Citus").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.apps import apps
from django.conf import settings
from django.db import connection, models


def citus_enabled() -> bool:
    return bool(settings.DATABASE_CITUS)


@dataclass(frozen=True)
class Node:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def schema_distribute(schema: str, *, row_security: bool = True) -> None:
    """Make the freshly created (cloned or migrated) `schema` a distributed schema, in the caller's transaction.
    `row_security=False`: the schema was made without row-level security (a clone for Citus), nothing to drop."""
    with connection.cursor() as cursor:
        if row_security:
            _policies_drop(cursor, schema)
        reference_tables_ensure(schema, cursor=cursor)
        cursor.execute("SELECT citus_schema_distribute(%s::regnamespace)", [_quoted(schema)])


def _quoted(schema: str) -> str:
    return '"' + schema.replace('"', '""') + '"'


def _policies_drop(cursor: Any, schema: str) -> None:
    # The few policies, each table looked up by its oid: not the pg_policies view, whose scan of pg_class grows with
    # every organisation's tables (and Citus checks each row of such a scan to hide shards).
    cursor.execute(
        "SELECT p.polrelid::regclass::text, p.polname FROM pg_policy p"
        " WHERE (SELECT c.relnamespace FROM pg_class c WHERE c.oid = p.polrelid) = %s::regnamespace",
        [_quoted(schema)],
    )
    for table, name in cursor.fetchall():
        cursor.execute(f'DROP POLICY "{name}" ON {table}')
    cursor.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND c.relrowsecurity",
        [schema],
    )
    for (table,) in cursor.fetchall():
        cursor.execute(f'ALTER TABLE "{schema}"."{table}" DISABLE ROW LEVEL SECURITY')


# The public tables that `schema`'s tables reference (by foreign key, or by a model's relation without one: users,
# core/models.py), with every public table linked to them by foreign keys (either way), and what each of them
# references. The whole linked set becomes reference tables: a plain table left referencing a reference table would
# check its keys against the coordinator's empty shell. This runs at every provisioning, so nothing in it may grow
# with the organisations: a foreign key is found by its own namespace (its table's) rather than by a scan of pg_class,
# which Citus checks row by row to hide shards, and a reference table by pg_dist_partition (what citus_tables reads
# it from) rather than the citus_tables view, which asks the workers for the size of every shard.
_LINKED_SQL = """
WITH RECURSIVE public_fk AS (
    SELECT c.conrelid AS src, c.confrelid AS dst FROM pg_constraint c JOIN pg_class d ON d.oid = c.confrelid
    WHERE c.contype = 'f' AND c.connamespace = 'public'::regnamespace AND d.relnamespace = 'public'::regnamespace
), linked(oid) AS (
    SELECT c.confrelid FROM pg_constraint c JOIN pg_class d ON d.oid = c.confrelid
    WHERE c.contype = 'f' AND c.connamespace = %s::regnamespace AND d.relnamespace = 'public'::regnamespace
  UNION
    SELECT unnest(%s::regclass[])
  UNION
    SELECT CASE WHEN f.src = l.oid THEN f.dst ELSE f.src END FROM public_fk f JOIN linked l ON l.oid IN (f.src, f.dst)
)
SELECT l.oid::regclass::text,
       array(SELECT DISTINCT f.dst::regclass::text FROM public_fk f WHERE f.src = l.oid AND f.dst <> l.oid),
       EXISTS (SELECT 1 FROM pg_dist_partition p
               WHERE p.logicalrelid = l.oid AND p.partkey IS NULL AND p.repmodel = 't')
FROM linked l
"""


def reference_tables_ensure(schema: str, *, cursor: Any | None = None) -> list[str]:
    """Make the public tables that `schema`'s tables reference (and the public tables linked to them) reference
    tables, copied to every node; returns the tables converted now (none once done)."""
    if cursor is None:
        with connection.cursor() as own:
            return reference_tables_ensure(schema, cursor=own)
    cursor.execute(_LINKED_SQL, [_quoted(schema), [f"public.{table}" for table in public_tables_referenced()]])
    rows = cursor.fetchall()
    references = {table: set(referenced) for table, referenced, _ in rows}
    done = {table for table, _, is_reference in rows if is_reference}
    converted: list[str] = []
    # Referenced tables first: a reference table may only reference reference tables.
    pending = [table for table in sorted(references) if table not in done]
    while pending:
        ready = [table for table in pending if references[table] - {table} <= done]
        if not ready:
            raise RuntimeError(f"foreign keys among {pending} form a cycle: convert them by hand")
        for table in ready:
            cursor.execute("SELECT create_reference_table(%s::regclass)", [table])
            done.add(table)
            converted.append(table)
        pending = [table for table in pending if table not in done]
    return converted


def public_tables_referenced() -> list[str]:
    """The public tables that tenant models relate to, database foreign key or not (users)."""
    shared_only = {config.label for config in apps.get_app_configs() if config.name not in settings.TENANT_APPS}
    return sorted(
        {
            reference.related_model._meta.db_table
            for model in apps.get_models(include_auto_created=True)
            if model._meta.app_label not in shared_only
            for reference in model._meta.concrete_fields
            if isinstance(reference, models.ForeignKey) and reference.related_model._meta.app_label in shared_only
        }
    )


def schema_node(schema: str) -> Node:
    """The worker that holds `schema`'s shards."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT s.nodename, s.nodeport FROM citus_shards s JOIN citus_schemas d"
            " ON d.colocation_id = s.colocation_id WHERE d.schema_name = %s::regnamespace",
            [_quoted(schema)],
        )
        rows = cursor.fetchall()
    if len(rows) != 1:
        raise LookupError(f"schema {schema} is not a distributed schema on one node ({rows})")
    return Node(rows[0][0], int(rows[0][1]))


def distributed_schemas() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT schema_name::text FROM citus_schemas")
        return {row[0] for row in cursor.fetchall()}


def workers() -> list[Node]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nodename, nodeport FROM pg_dist_node WHERE noderole = 'primary' AND isactive"
            " AND shouldhaveshards AND groupid <> 0 ORDER BY nodeid"
        )
        return [Node(host, int(port)) for host, port in cursor.fetchall()]


def tenant_move(schema: str, *, to: Node | None = None) -> tuple[Node, Node]:
    """Move `schema` (all its colocated shards) to worker `to` (default: the worker holding the fewest distributed
    schemas, other than its own). Logical replication copies the shards while the organisation keeps serving; only
    the final switch-over blocks its writes briefly. Returns (from, to). Runs outside a transaction."""
    source = schema_node(schema)
    if to is None:
        candidates = [node for node in workers() if node != source]
        if not candidates:
            raise LookupError("no other worker to move to")
        load = _schemas_per_node()
        to = min(candidates, key=lambda node: load.get(node, 0))
    if to == source:
        return source, to
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT min(s.shardid) FROM citus_shards s JOIN citus_schemas d ON d.colocation_id = s.colocation_id"
            " WHERE d.schema_name = %s::regnamespace",
            [_quoted(schema)],
        )
        (shard,) = cursor.fetchone()
        # One shard moves its whole colocation group: every table of the schema.
        cursor.execute(
            "SELECT citus_move_shard_placement(%s, %s, %s, %s, %s, shard_transfer_mode => 'auto')",
            [shard, source.host, source.port, to.host, to.port],
        )
    return source, to


def _schemas_per_node() -> dict[Node, int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT s.nodename, s.nodeport, count(DISTINCT d.schema_name) FROM citus_schemas d"
            " JOIN citus_shards s ON s.colocation_id = d.colocation_id GROUP BY 1, 2"
        )
        return {Node(host, int(port)): count for host, port, count in cursor.fetchall()}
