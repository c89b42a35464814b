"""The backup format of one organisation, and how it is written, verified and restored.

A backup is one zip:
    manifest.json          format and version, migration state of the organisation's schema, rows per table,
                           partitions, the storage prefix, sha256 and size of every other member
    manifest.json.sha256   the manifest's own checksum (a damaged manifest is refused before it is trusted)
    organisation.json      the organisation's settings and members (email, role): they live in the public schema
    users.json             every user the rows name (id, email, display name), to map them in another cluster
    tables/<table>.jsonl   every row of every table of the schema, one PostgreSQL `to_jsonb(row)` per line,
                           embeddings included (pgvector's text form round-trips exactly)
    files/<path>           the stored documents, under their path inside the organisation's storage prefix

Tables are found in the database, not listed here, so a table a new migration adds is backed up without a change.
Writing reads the whole schema in one REPEATABLE READ, READ ONLY transaction: one snapshot, while the organisation
keeps working. Restoring checks everything (checksums, counts, format, migration state) before it touches the
organisation, then replaces its rows in one transaction: a failure anywhere rolls all of it back, and the
organisation is as it was. Append-only ledgers (audit log, usage records) are never emptied: the backup's entries
that are missing are added. A backup made before some of this release's migrations is brought forward first, by
those migrations, in a staging schema (see "Backups of an older release" below); one made by a newer release is
refused.

An organisation's export (docs/operations.md, "Data lifecycle") is this same archive with its secrets emptied
(SECRET_COLUMNS): the data taken out, never restored.
"""

from __future__ import annotations

import hashlib
import json
import uuid
import zipfile
import zlib
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from django.apps import apps
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, models, router, transaction
from django.db.backends.utils import CursorWrapper
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.graph import MigrationGraph
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.recorder import MigrationRecorder
from django.utils import timezone

from accounts.services import membership_ensure
from agents.models import Conversation, CustomTool, Message, ProviderCredential
from core.errors import DomainError, ErrorCode
from core.tenancy import current_schema, in_tenant
from iam.selectors import member_list
from knowledge import storage
from knowledge.models import Document
from tenants.models import Tenant
from usage.models import ApiCallDaily, AuditEntry, UsageRecord
from webhooks.models import WebhookEndpoint

FORMAT = "agentry-organisation-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MANIFEST_CHECKSUM = "manifest.json.sha256"
# Bookkeeping the target schema already holds (copied from the template when it was made).
SKIPPED_TABLES = frozenset({"django_migrations", "django_content_type"})
CONVERSATION_TABLES = frozenset({Conversation._meta.db_table, Message._meta.db_table})
# Facts that are only ever appended: a restore adds the backup's missing entries and keeps what happened since.
LEDGER_TABLES = frozenset({AuditEntry._meta.db_table, UsageRecord._meta.db_table, ApiCallDaily._meta.db_table})
# Columns holding a path in the storage (under the organisation's prefix).
FILE_COLUMNS = {Document._meta.db_table: ("storage_path", "replaced_storage_path")}
# Secrets, stored encrypted or hashed: a backup keeps them as stored (a restore needs them); an export leaves them out.
# The identity layer's tables are named, not imported (only accounts and iam import their models).
SECRET_COLUMNS = {
    ProviderCredential._meta.db_table: ("api_key_encrypted",),
    CustomTool._meta.db_table: ("secrets_encrypted",),
    WebhookEndpoint._meta.db_table: ("secret_encrypted",),
    "iam_apikey": ("key_hash",),
    "iam_invitation": ("nonce",),
}
# Tenant fields that are the organisation's settings (not its identity).
_TENANT_IDENTITY = frozenset({"id", "schema_name", "slug", "name", "created_at"})
_BATCH_ROWS = 500


class BackupCorrupt(DomainError):
    """The archive is damaged or was altered: nothing was restored."""

    code = ErrorCode.BACKUP_CORRUPT
    status = 422


class BackupIncompatible(DomainError):
    """The archive is intact but cannot be restored here (another format or database schema version)."""

    code = ErrorCode.BACKUP_INCOMPATIBLE
    status = 409


@dataclass
class Table:
    name: str
    columns: list[str]  # written and restored (generated columns are left to PostgreSQL)
    generated: list[str]
    key: list[str]  # primary key: the rows' order in the archive


@dataclass
class _Writer:
    archive: zipfile.ZipFile
    files: dict[str, dict[str, Any]] = field(default_factory=dict)

    def put(self, name: str, body: bytes) -> None:
        self.archive.writestr(name, body)
        self.files[name] = {"sha256": hashlib.sha256(body).hexdigest(), "size": len(body)}

    def put_lines(self, name: str, lines: Iterator[bytes]) -> int:
        hasher, size, count = hashlib.sha256(), 0, 0
        with self.archive.open(name, "w") as out:
            for line in lines:
                out.write(line)
                hasher.update(line)
                size += len(line)
                count += 1
        self.files[name] = {"sha256": hasher.hexdigest(), "size": size}
        return count

    def put_stream(self, name: str, source: IO[bytes]) -> None:
        hasher, size = hashlib.sha256(), 0
        with self.archive.open(name, "w", force_zip64=True) as out:
            while block := source.read(1 << 20):
                out.write(block)
                hasher.update(block)
                size += len(block)
        self.files[name] = {"sha256": hasher.hexdigest(), "size": size}


def _q(*names: str) -> str:
    return ".".join('"' + name.replace('"', '""') + '"' for name in names)


def _json(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False, indent=1, sort_keys=True, default=str).encode()


# --- The schema as the database describes it -------------------------------------------------------------------


def schema_tables(cursor: CursorWrapper, schema: str) -> dict[str, Table]:
    """The schema's tables (partitioned parents, not their partitions), with their columns and primary keys."""
    cursor.execute(
        "SELECT c.oid, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY c.relname",
        [schema],
    )
    tables = {}
    for oid, name in cursor.fetchall():
        if name in SKIPPED_TABLES:
            continue
        cursor.execute(
            "SELECT attname, attgenerated <> '' FROM pg_attribute"
            " WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            [oid],
        )
        columns = cursor.fetchall()
        cursor.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
            " AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s AND i.indisprimary ORDER BY a.attnum",
            [oid],
        )
        tables[name] = Table(
            name=name,
            columns=[c for c, generated in columns if not generated],
            generated=[c for c, generated in columns if generated],
            key=[row[0] for row in cursor.fetchall()],
        )
    return tables


def schema_partitions(cursor: CursorWrapper, schema: str) -> list[dict[str, str]]:
    cursor.execute(
        "SELECT p.relname, c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i"
        " JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relispartition AND c.relkind IN ('r', 'p') ORDER BY c.relname",
        [schema],
    )
    return [{"parent": parent, "name": name, "bound": bound} for parent, name, bound in cursor.fetchall()]


def schema_migrations(cursor: CursorWrapper, schema: str) -> list[list[str]]:
    cursor.execute(f"SELECT app, name FROM {_q(schema, 'django_migrations')} ORDER BY app, name")  # noqa: S608
    return [[app, name] for app, name in cursor.fetchall()]


def user_references(tables: Collection[str]) -> dict[tuple[str, str], models.ForeignKey]:
    """(table, column) -> field, for the columns of a tenant schema's `tables` that name users (public schema):
    mapped by email on restore. Read from the models, not the catalog: these references have no database foreign
    key (core/models.py)."""
    user_model = get_user_model()
    return {
        (table, reference.column): reference
        for table, reference in _references(tables)
        if reference.related_model is user_model
    }


def user_columns(tables: Collection[str]) -> dict[str, list[str]]:
    """The columns of a schema's `tables` (all of them) that name users, per table: the manifest's `user_columns`."""
    in_schema = set(tables) | SKIPPED_TABLES
    user_model = get_user_model()
    others = [
        f"{table}.{reference.column}"
        for table, reference in _references(tables)
        if reference.related_model is not user_model and reference.related_model._meta.db_table not in in_schema
    ]
    if others:  # a reference to another public table would need its own mapping
        raise RuntimeError(f"tenant tables reference public tables backups cannot map: {others}")
    found: dict[str, list[str]] = {}
    for table, column in user_references(tables):
        found.setdefault(table, []).append(column)
    return found


def _references(tables: Collection[str]) -> Iterator[tuple[str, models.ForeignKey]]:
    models_by_table = {model._meta.db_table: model for model in apps.get_models(include_auto_created=True)}
    for table in sorted(tables):
        model = models_by_table.get(table)
        for reference in model._meta.concrete_fields if model else ():
            if isinstance(reference, models.ForeignKey):
                yield table, reference


# --- Writing ---------------------------------------------------------------------------------------------------


def _rows(table: Table, schema: str, *, redact_secrets: bool) -> Iterator[bytes]:
    order = ", ".join(_q(c) for c in table.key) or "1"
    blanks = {c: "" for c in SECRET_COLUMNS.get(table.name, ()) if c in table.columns} if redact_secrets else {}
    sql = (
        f"SELECT ((to_jsonb(t) - %s::text[]) || %s::jsonb)::text"  # noqa: S608 - names from the catalogue, quoted
        f" FROM {_q(schema, table.name)} t ORDER BY {order}"
    )
    with connection.chunked_cursor() as cursor:
        cursor.execute(sql, [table.generated, json.dumps(blanks)])
        while rows := cursor.fetchmany(1000):
            for (row,) in rows:
                yield row.encode() + b"\n"


def _tenant_settings(tenant: Tenant) -> dict[str, Any]:
    return {
        f.name: getattr(tenant, f.attname)
        for f in Tenant._meta.concrete_fields
        if f.name not in _TENANT_IDENTITY and not f.is_relation
    }


def archive_write(
    *, tenant: Tenant, out: IO[bytes], include_conversations: bool, redact_secrets: bool = False
) -> dict[str, Any]:
    """Write the backup of `tenant` to `out` (a seekable file); returns its manifest. Runs in the organisation's
    schema (in_tenant) as the system (core.rls), outside any transaction: it opens its own snapshot.
    `redact_secrets`: an export (SECRET_COLUMNS emptied), which is never restored."""
    schema = tenant.schema_name
    prefix = storage.tenant_prefix(schema)
    counts: dict[str, int] = {}
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
        writer = _Writer(archive)
        with transaction.atomic(), connection.cursor() as cursor:
            # One snapshot for every table: the backup is one moment of the organisation.
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            tables = schema_tables(cursor, schema)
            partitions = schema_partitions(cursor, schema)
            migrations = schema_migrations(cursor, schema)
            users_by_column = user_columns(set(tables))
            for table in tables.values():
                if table.name in CONVERSATION_TABLES and not include_conversations:
                    continue
                counts[table.name] = writer.put_lines(
                    f"tables/{table.name}.jsonl", _rows(table, schema, redact_secrets=redact_secrets)
                )
            user_ids: set[int] = set()
            for table_name, columns in users_by_column.items():
                if table_name not in counts:
                    continue
                for column in columns:
                    cursor.execute(
                        f"SELECT DISTINCT {_q(column)} FROM {_q(schema, table_name)}"  # noqa: S608
                        f" WHERE {_q(column)} IS NOT NULL"
                    )
                    user_ids.update(row[0] for row in cursor.fetchall())
            paths: set[str] = set()
            for table_name, columns in FILE_COLUMNS.items():
                for column in columns:
                    cursor.execute(f"SELECT DISTINCT {_q(column)} FROM {_q(schema, table_name)}")  # noqa: S608
                    paths.update(row[0] for row in cursor.fetchall() if row[0])
        members = [{"user_id": m.user_id, "email": m.user.email, "role": m.role} for m in member_list(tenant)]
        user_ids.update(m["user_id"] for m in members)
        users = [
            {"id": u.pk, "email": u.email, "display_name": u.display_name}
            for u in get_user_model().objects.filter(pk__in=user_ids).order_by("pk")
        ]
        writer.put("users.json", _json(users))
        writer.put(
            "organisation.json",
            _json({"slug": tenant.slug, "name": tenant.name, "settings": _tenant_settings(tenant), "members": members}),
        )
        missing = []
        for path in sorted(paths):
            if not path.startswith(prefix):
                missing.append(path)
                continue
            try:
                with storage.storage_open(path) as source:
                    writer.put_stream(f"files/{path.removeprefix(prefix)}", source)
            except FileNotFoundError:
                missing.append(path)  # deleted since the snapshot, or lost before it: the rows still name it
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created_at": timezone.now().isoformat(),
            "organisation": {"slug": tenant.slug, "name": tenant.name, "schema": schema},
            "storage_prefix": prefix,
            "include_conversations": include_conversations,
            "secrets_redacted": redact_secrets,
            "migrations": migrations,
            "tables": {
                name: {"rows": rows, "user_columns": users_by_column.get(name, [])} for name, rows in counts.items()
            },
            "partitions": partitions,
            "missing_files": missing,
            "counts": {"rows": sum(counts.values()), "files": len(paths) - len(missing), "users": len(users)},
            "files": writer.files,
        }
        body = _json(manifest)
        archive.writestr(MANIFEST, body)
        archive.writestr(MANIFEST_CHECKSUM, hashlib.sha256(body).hexdigest())
    return manifest


# --- Verifying -------------------------------------------------------------------------------------------------


def archive_verify(path: str) -> dict[str, Any]:
    """The manifest of the archive at `path` once every member matches it (checksums, sizes, rows), or
    BackupCorrupt / BackupIncompatible saying what is wrong. Reads the whole archive; changes nothing."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if MANIFEST not in names or MANIFEST_CHECKSUM not in names:
                raise BackupCorrupt("This is not an organisation backup: it has no manifest.")
            body = archive.read(MANIFEST)
            if archive.read(MANIFEST_CHECKSUM).decode().strip() != hashlib.sha256(body).hexdigest():
                raise BackupCorrupt("The backup's manifest was altered or damaged (its checksum does not match).")
            try:
                manifest = json.loads(body)
            except ValueError as error:
                raise BackupCorrupt("The backup's manifest is not valid JSON.") from error
            if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
                raise BackupIncompatible("This file is not an organisation backup of this product.")
            if manifest.get("format_version") != FORMAT_VERSION:
                raise BackupIncompatible(
                    f"This backup has format version {manifest.get('format_version')}; this release restores"
                    f" version {FORMAT_VERSION}."
                )
            backup_migrations_check(manifest)
            files = manifest.get("files")
            tables = manifest.get("tables")
            if not isinstance(files, dict) or not isinstance(tables, dict):
                raise BackupCorrupt("The backup's manifest lists no files or tables.")
            if names != set(files) | {MANIFEST, MANIFEST_CHECKSUM}:
                extra = sorted(names - set(files) - {MANIFEST, MANIFEST_CHECKSUM})
                lacking = sorted(set(files) - names)
                raise BackupCorrupt(
                    f"The backup's files do not match its manifest (extra: {extra}, missing: {lacking})."
                )
            for table, entry in tables.items():
                if f"tables/{table}.jsonl" not in files or not isinstance(entry, dict):
                    raise BackupCorrupt(f"The backup's manifest names table {table!r} without its rows.")
            for name, entry in files.items():
                digest, size, lines = _digest(archive, name)
                if digest != entry.get("sha256") or size != entry.get("size"):
                    raise BackupCorrupt(f"{name} in the backup is damaged: its checksum does not match the manifest.")
                table = name.removeprefix("tables/").removesuffix(".jsonl")
                if name.startswith("tables/") and tables.get(table, {}).get("rows") != lines:
                    raise BackupCorrupt(f"{name} in the backup holds {lines} rows; its manifest says otherwise.")
    except (zipfile.BadZipFile, zlib.error, EOFError) as error:
        raise BackupCorrupt(f"The backup file is damaged: {error}.") from error
    return manifest


def backup_migrations_check(manifest: dict[str, Any]) -> None:
    """Refuse a backup whose schema has migrations this release does not have: made by a newer release (or another
    branch), it cannot be brought back to this one. Older backups pass: their restore migrates them forward."""
    migrations = manifest.get("migrations")
    if not isinstance(migrations, list) or not all(
        isinstance(m, list) and len(m) == 2 and all(isinstance(part, str) for part in m) for m in migrations
    ):
        raise BackupCorrupt("The backup's manifest does not list its schema's migrations.")
    known = MigrationLoader(None, ignore_no_migrations=True).disk_migrations
    unknown = [f"{app}.{name}" for app, name in migrations if (app, name) not in known]
    if unknown:
        raise BackupIncompatible(
            "This backup was made by a newer release than this one: its database schema has migrations this release"
            f" does not have ({', '.join(unknown[:5])}{', ...' if len(unknown) > 5 else ''}). Upgrade to that"
            " release or a later one, then restore it.",
            extra={"unknown_migrations": unknown},
        )


def _digest(archive: zipfile.ZipFile, name: str) -> tuple[str, int, int]:
    hasher, size, lines = hashlib.sha256(), 0, 0
    with archive.open(name) as member:  # zipfile checks each member's CRC as it reads to the end
        while block := member.read(1 << 20):
            hasher.update(block)
            size += len(block)
            lines += block.count(b"\n")
    return hasher.hexdigest(), size, lines


# --- Restoring -------------------------------------------------------------------------------------------------


@dataclass
class RestoreResult:
    rows: dict[str, int]
    files_written: int
    users_created: list[str]
    users_unnamed: dict[str, list[int]] = field(default_factory=dict)  # "table.column": ids restored as NULL


def _user_map(users: list[dict[str, Any]], *, create_missing: bool) -> tuple[dict[int, int], list[str]]:
    """Backup user id -> this cluster's user id, by email."""
    model = get_user_model()
    emails = {u["email"].lower(): u for u in users}
    found = {u.email.lower(): u.pk for u in model.objects.filter(email__in=list(emails))}
    missing = sorted(set(emails) - set(found))
    if missing and not create_missing:
        raise BackupIncompatible(
            "The backup names people who have no account here: " + ", ".join(missing) + ". Restore it with"
            " `manage.py tenant_restore --create-missing-users` (they then set a password by resetting it).",
            extra={"missing_users": missing},
        )
    for email in missing:  # moving an organisation to another cluster: its people come along, without passwords
        user = model.objects.create_user(email=email, password=None)
        user.display_name = emails[email].get("display_name", "")
        user.save(update_fields=["display_name"])
        found[email] = user.pk
    return {int(u["id"]): found[u["email"].lower()] for u in users}, missing


def _unnamed_user_references(
    archive: zipfile.ZipFile, manifest: dict[str, Any], *, named: set[int]
) -> dict[str, list[int]]:
    """User ids the backup's rows hold that its users.json does not name ("table.column": ids): accounts that were
    gone when it was made (tenant tables keep user ids without a database foreign key, core/models.py). Such an id
    means nobody here, even where this cluster has a user with that number: a reference whose model lets it go with
    its user (SET_NULL: creators, authors, uploaders) is restored empty, like the user's deletion would have left it;
    any other (owners, API keys, team members, sub-limits) refuses the restore, naming them."""
    fields = user_references(manifest["tables"])
    unnamed: dict[tuple[str, str], set[int]] = {}
    for table, facts in manifest["tables"].items():
        columns = facts.get("user_columns", [])
        if not columns:
            continue
        with archive.open(f"tables/{table}.jsonl") as lines:
            for line in lines:
                row = json.loads(line)
                for column in columns:
                    if row.get(column) is not None and int(row[column]) not in named:
                        unnamed.setdefault((table, column), set()).add(int(row[column]))
    refused = {}
    for (table, column), ids in sorted(unnamed.items()):
        reference = fields.get((table, column))
        if reference is None or not (reference.null and reference.remote_field.on_delete is models.SET_NULL):
            refused[f"{table}.{column}"] = sorted(ids)
    if refused:
        raise BackupIncompatible(
            "The backup's rows name users its list of users does not (accounts removed before it was made), where a"
            " row cannot be kept without them: "
            + "; ".join(f"{where}: user ids {', '.join(map(str, ids))}" for where, ids in refused.items())
            + ". Restore a backup made before they were removed.",
            extra={"unnamed_users": refused},
        )
    return {f"{table}.{column}": sorted(ids) for (table, column), ids in sorted(unnamed.items())}


def _select_list(
    table: Table, manifest: dict[str, Any], old_prefix: str, new_prefix: str, mapped: bool
) -> list[tuple[str, str]]:
    """(column, expression over the backup's row `r`) for every column: user ids mapped, stored paths moved."""
    user_cols = set(manifest["tables"][table.name].get("user_columns", []))
    file_cols = set(FILE_COLUMNS.get(table.name, ())) if old_prefix != new_prefix else set()
    parts = []
    for column in table.columns:
        value = f"r.{_q(column)}"
        if column in user_cols and mapped:
            value = f"(SELECT m.new_id FROM pg_temp.backup_user_map m WHERE m.old_id = r.{_q(column)})"  # noqa: S608
        elif column in file_cols:
            value = (
                f"CASE WHEN starts_with(r.{_q(column)}, %(old)s)"
                f" THEN %(new)s || substr(r.{_q(column)}, length(%(old)s) + 1) ELSE r.{_q(column)} END"
            )
        parts.append((column, value))
    return parts


def _into(
    table: Table, selected: list[tuple[str, str]], *, new_organisation: bool
) -> tuple[list[tuple[str, str]], str]:
    """The columns a restore inserts into `table` and its conflict clause. Ledgers are never emptied: into a new
    organisation (whose ledger already holds its own provisioning) the backup's entries get new ids; into the same
    one, entries it still has are the same entries."""
    if table.name not in LEDGER_TABLES:
        return selected, ""
    if new_organisation:
        return [(column, value) for column, value in selected if column not in table.key], ""
    return selected, " ON CONFLICT DO NOTHING"


def _load_table(
    cursor: CursorWrapper,
    archive: zipfile.ZipFile,
    table: Table,
    schema: str,
    selected: list[tuple[str, str]],
    prefixes: dict[str, str],
    conflict: str = "",
) -> int:
    target = _q(schema, table.name)
    columns = ", ".join(_q(column) for column, _ in selected)
    select = ", ".join(value for _, value in selected)
    sql = (
        f"INSERT INTO {target} ({columns}) SELECT {select}"  # noqa: S608 - names from the catalogue, quoted
        f" FROM jsonb_populate_recordset(NULL::{target}, %(rows)s::jsonb) r{conflict}"
    )
    loaded = 0
    with archive.open(f"tables/{table.name}.jsonl") as lines:
        batch: list[bytes] = []
        for line in lines:
            if not loaded and not batch:
                _check_columns(table, json.loads(line))
            batch.append(line.rstrip(b"\n"))
            if len(batch) >= _BATCH_ROWS:
                cursor.execute(sql, {"rows": _json_array(batch), **prefixes})
                loaded += len(batch)
                batch = []
        if batch:
            cursor.execute(sql, {"rows": _json_array(batch), **prefixes})
            loaded += len(batch)
    return loaded


def _check_columns(table: Table, row: dict[str, Any]) -> None:
    # jsonb_populate_recordset ignores keys that are not columns: a value the table cannot hold would be lost quietly.
    if set(row) != set(table.columns):
        raise BackupIncompatible(
            f"The backup's rows of {table.name} have other columns than its database schema makes"
            f" (in the backup only: {sorted(set(row) - set(table.columns))},"
            f" in the schema only: {sorted(set(table.columns) - set(row))})."
        )


def _json_array(lines: list[bytes]) -> str:
    return "[" + b",".join(lines).decode() + "]"


def _partitions_create(cursor: CursorWrapper, schema: str, partitions: list[dict[str, str]], tables: set[str]) -> None:
    for partition in partitions:
        if partition["parent"] in tables and partition["bound"]:
            cursor.execute(
                f"CREATE TABLE IF NOT EXISTS {_q(schema, partition['name'])}"
                f" PARTITION OF {_q(schema, partition['parent'])} {partition['bound']}"
            )


def _sequences_reset(cursor: CursorWrapper, schema: str, table: Table) -> None:
    qualified = _q(schema, table.name)
    for column in table.columns:
        cursor.execute("SELECT pg_get_serial_sequence(%s, %s)", [qualified, column])
        (sequence,) = cursor.fetchone() or (None,)
        if sequence:
            cursor.execute(
                f"SELECT setval(%s, COALESCE((SELECT max({_q(column)}) FROM {qualified}), 0) + 1, false)",  # noqa: S608
                [sequence],
            )


def _stored_paths(cursor: CursorWrapper, schema: str) -> set[str]:
    paths: set[str] = set()
    for table_name, columns in FILE_COLUMNS.items():
        for column in columns:
            cursor.execute(f"SELECT DISTINCT {_q(column)} FROM {_q(schema, table_name)}")  # noqa: S608
            paths.update(row[0] for row in cursor.fetchall() if row[0])
    return paths


def archive_restore(
    *,
    path: str,
    manifest: dict[str, Any],
    tenant: Tenant,
    new_organisation: bool,
    create_missing_users: bool = False,
) -> RestoreResult:
    """Replace the rows and files of `tenant` (the current schema, acting as the system) with those of the verified
    archive at `path`. One transaction: on any failure nothing in the database changed and the files it wrote are
    removed again. `new_organisation`: the backup was made elsewhere; its members get their roles here too.
    A backup of an older schema is first brought forward in a staging schema (_staged_forward), inside the same
    transaction and before anything of the organisation is replaced."""
    schema = tenant.schema_name
    old_prefix, new_prefix = manifest["storage_prefix"], storage.tenant_prefix(schema)
    prefixes = {"old": old_prefix, "new": new_prefix}
    written: list[str] = []
    rows: dict[str, int] = {}
    if manifest.get("secrets_redacted"):
        raise BackupIncompatible(
            "This is an export: its secrets (provider keys, API keys, webhook secrets) were left out, so it cannot be"
            " restored. Restore a backup instead."
        )
    try:
        with zipfile.ZipFile(path) as archive, transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL DEFERRED")
            cursor.execute(f"SET LOCAL lock_timeout = {int(settings.BACKUP_RESTORE_LOCK_TIMEOUT_MS)}")
            here = schema_migrations(cursor, schema)
            tables = schema_tables(cursor, schema)
            behind = _migration_set(here) != _migration_set(manifest["migrations"])
            if behind:
                _migrations_check_behind(manifest["migrations"], here)
            else:
                unknown = sorted(set(manifest["tables"]) - set(tables))
                if unknown:
                    raise BackupIncompatible(f"This backup holds tables this release does not have: {unknown}.")
            users = json.loads(archive.read("users.json"))
            user_map, created = _user_map(users, create_missing=create_missing_users)
            unnamed = _unnamed_user_references(archive, manifest, named=set(user_map))
            # Through the map, an id users.json does not name becomes NULL rather than whoever has it here.
            mapped = bool(unnamed) or any(old != new for old, new in user_map.items())
            if mapped:
                cursor.execute(
                    "CREATE TEMP TABLE backup_user_map (old_id bigint PRIMARY KEY, new_id bigint) ON COMMIT DROP"
                )
                cursor.executemany("INSERT INTO pg_temp.backup_user_map VALUES (%s, %s)", list(user_map.items()))
            staging = None
            if behind:
                staging = _staged_forward(cursor, archive, manifest, tables, prefixes=prefixes, mapped=mapped)
            before = _stored_paths(cursor, schema)
            replaced = [t for t in tables if t not in LEDGER_TABLES]
            cursor.execute("TRUNCATE " + ", ".join(_q(schema, t) for t in replaced))
            _partitions_create(cursor, schema, manifest["partitions"], set(tables))
            if staging is None:
                for name in manifest["tables"]:
                    table = tables[name]
                    selected, conflict = _into(
                        table,
                        _select_list(table, manifest, old_prefix, new_prefix, mapped),
                        new_organisation=new_organisation,
                    )
                    rows[name] = _load_table(cursor, archive, table, schema, selected, prefixes, conflict)
                    _sequences_reset(cursor, schema, table)
            else:
                for name, table in tables.items():
                    selected, conflict = _into(
                        table, [(c, f"r.{_q(c)}") for c in table.columns], new_organisation=new_organisation
                    )
                    cursor.execute(
                        f"INSERT INTO {_q(schema, name)} ({', '.join(_q(c) for c, _ in selected)})"  # noqa: S608
                        f" SELECT {', '.join(v for _, v in selected)} FROM {_q(staging, name)} r{conflict}"
                    )
                    rows[name] = cursor.rowcount
                    _sequences_reset(cursor, schema, table)
                cursor.execute(f"DROP SCHEMA {_q(staging)} CASCADE")
            _tenant_restore(tenant, json.loads(archive.read("organisation.json")), user_map, new_organisation)
            for name in manifest["files"]:
                if not name.startswith("files/"):
                    continue
                target = new_prefix + name.removeprefix("files/")
                if storage.knowledge_storage().exists(target):
                    continue  # stored paths are never reused: the same path holds the same document
                with archive.open(name) as source:
                    written.append(storage.storage_save(target, source))
                if written[-1] != target:
                    raise RuntimeError(f"the storage saved {target} under another name")
            after = _stored_paths(cursor, schema)
    except Exception:
        for stored in written:
            storage.storage_delete(stored)
        raise
    for orphan in sorted(before - after):  # documents the restore removed: their files go too
        storage.storage_delete(orphan)
    return RestoreResult(rows=rows, files_written=len(written), users_created=created, users_unnamed=unnamed)


# --- Backups of an older release -------------------------------------------------------------------------------
#
# A backup made before some of this release's migrations holds rows of an older schema. They are not patched up
# here: the older schema is rebuilt beside the organisation's, in a staging schema migrated from nothing to exactly
# the backup's migrations, the backup is loaded into it, and this release's migrations bring it forward, data
# migrations included, as they brought every organisation forward. Its tables must then match the organisation's
# column for column before they replace them. All of it runs in the restore's one transaction (PostgreSQL's DDL
# is transactional): a failure leaves the organisation as it was and no staging schema behind.


def _migration_set(migrations: list[list[str]]) -> set[tuple[str, str]]:
    # Compared as sets: the order of a list is the database's collation, which another cluster may not share.
    return {(app, name) for app, name in migrations}


def _migrations_check_behind(backup: list[list[str]], here: list[list[str]]) -> None:
    """A backup this release can bring forward: every migration it has is one of ours, and the organisation's schema
    has all of ours (backup_migrations_check refused newer backups already; this is also the restore's own check)."""
    backup_migrations_check({"migrations": backup})
    graph = MigrationLoader(None, ignore_no_migrations=True).graph
    unknown = [f"{app}.{name}" for app, name in backup if (app, name) not in graph.nodes]
    if unknown:
        raise BackupIncompatible(
            f"This backup's migrations {unknown[:5]} were replaced (squashed) in this release: restore it with a"
            " release that still has them, then upgrade."
        )
    lacking = sorted(f"{app}.{name}" for app, name in set(graph.nodes) - _migration_set(here))
    if lacking:
        raise BackupIncompatible(
            f"This organisation's schema lacks migrations of this release ({', '.join(lacking[:5])}): run"
            " migrate_schemas, then restore."
        )


def _migrate(targets: list[tuple[str, str]]) -> list[list[str]]:
    """Apply `targets` and what they depend on to the current schema (in_tenant), forwards only, inside the caller's
    transaction; its migrations after. (Django's own plan for many targets of one app rolls back the children of a
    target a previous one applied, so the plan is the union of the targets' forward plans.)

    Four in five of the project's migrations belong to the shared apps, whose tables the router keeps in public:
    in an organisation's schema every operation of theirs is skipped, yet running them made Django render the
    models' state again for each operation, most of an older backup's restore time. They are recorded without
    running, as migrate_schemas records them; the organisation apps' migrations run, in a few batches (_batches)."""
    loader = MigrationLoader(connection)
    graph = loader.graph
    wanted = {key for target in targets for key in graph.forwards_plan(target) if key not in loader.applied_migrations}
    recorder = MigrationRecorder(connection)
    recorder.ensure_schema()
    for run, batch in _batches(graph, wanted):
        if run:  # a new executor: its state has the migrations recorded since
            MigrationExecutor(connection).migrate(batch, plan=[(graph.nodes[key], False) for key in batch])
        else:
            for key in batch:  # as the executor records them (a squashed migration: the ones it replaces)
                for app, name in graph.nodes[key].replaces or [key]:
                    recorder.record_applied(app, name)
    with connection.cursor() as cursor:
        return schema_migrations(cursor, current_schema())


def _batches(graph: MigrationGraph, wanted: set[tuple[str, str]]) -> Iterator[tuple[bool, list[tuple[str, str]]]]:
    """`wanted` in an order its dependencies allow, cut into batches that alternate between migrations to record only
    (False: those of apps the router keeps out of the current schema) and migrations to run (True), each batch as
    large as the dependencies allow: this project's graph from nothing takes two of each, where the graph's own
    order would switch twelve times (each batch that runs renders every model's state once)."""
    plan = dict.fromkeys(key for leaf in graph.leaf_nodes() for key in graph.forwards_plan(leaf))
    order = [key for key in plan if key in wanted]  # parents first
    done: set[tuple[str, str]] = set()
    run = False
    while len(done) < len(order):
        batch: list[tuple[str, str]] = []
        for key in order:
            ready = all(p.key in done or p.key in batch or p.key not in wanted for p in graph.node_map[key].parents)
            if key not in done and ready and bool(router.allow_migrate(connection.alias, key[0])) == run:
                batch.append(key)
        if batch:
            yield run, batch
        done.update(batch)
        run = not run


def _staged_forward(
    cursor: CursorWrapper,
    archive: zipfile.ZipFile,
    manifest: dict[str, Any],
    tables: dict[str, Table],
    *,
    prefixes: dict[str, str],
    mapped: bool,
) -> str:
    """A staging schema holding the backup's rows (users mapped, stored paths moved) brought forward to this
    release's migrations; its tables are checked against the organisation's `tables`. Returns its name."""
    staging = f"restore_{uuid.uuid4().hex[:16]}"
    cursor.execute(f"CREATE SCHEMA {_q(staging)}")
    with in_tenant(staging):
        reached = _migrate([(app, name) for app, name in manifest["migrations"]])
        # Not a state a migrate could have left (a migration without one it depends on):
        if _migration_set(reached) != _migration_set(manifest["migrations"]):
            raise BackupIncompatible("This backup's migrations are not a state this release's migrations can rebuild.")
        cursor.execute("SET CONSTRAINTS ALL DEFERRED")  # the migrations' schema editor left them immediate
        staged = schema_tables(cursor, staging)
        missing = sorted(set(manifest["tables"]) - set(staged))
        if missing:
            raise BackupIncompatible(f"This backup holds tables its own migrations do not make: {missing}.")
        _partitions_create(cursor, staging, manifest["partitions"], set(staged))
        for name in manifest["tables"]:
            table = staged[name]
            selected = _select_list(table, manifest, prefixes["old"], prefixes["new"], mapped)
            _load_table(cursor, archive, table, staging, selected, prefixes)
            _sequences_reset(cursor, staging, table)
        # The backup's references are checked here, not at commit: PostgreSQL refuses to ALTER a table with
        # checks still pending, and the migrations below alter tables.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        graph = MigrationLoader(None, ignore_no_migrations=True).graph
        reached = _migrate(graph.leaf_nodes())
        cursor.execute("SET CONSTRAINTS ALL DEFERRED")
        forward = schema_tables(cursor, staging)
    if _migration_set(reached) != set(graph.nodes):
        raise BackupIncompatible("This backup could not be brought to this release's migrations.")
    if {name: set(t.columns) for name, t in forward.items()} != {name: set(t.columns) for name, t in tables.items()}:
        raise BackupIncompatible(
            "This backup, brought forward by this release's migrations, does not match the organisation's tables:"
            " the organisation's schema differs from what the migrations make."
        )
    return staging


def _tenant_restore(tenant: Tenant, organisation: dict[str, Any], user_map: dict[int, int], memberships: bool) -> None:
    # Settings the backup has and this release knows; identity (name, address) stays the target's.
    known = {f.name for f in Tenant._meta.concrete_fields if f.name not in _TENANT_IDENTITY and not f.is_relation}
    changed = [name for name in organisation["settings"] if name in known]
    for name in changed:
        setattr(tenant, name, organisation["settings"][name])
    if changed:
        tenant.save(update_fields=changed)
    if memberships:
        for member in organisation["members"]:
            membership_ensure(user_id=user_map[int(member["user_id"])], tenant=tenant, role=member["role"])
