"""Organisation backups: an organisation backed up and restored into a new one is identical (every row of every table,
embeddings, stored files, the offline provider's answer); a damaged or altered backup is refused with nothing
changed; a backup of an older release is migrated forward (one of a newer release refused), a restore failing half-way
leaves the organisation as it was, and a restore leaves no cache serving the rows it replaced; retention expires old
backups; only admins reach them.

The organisations here are the tests' own (created and dropped), with committed data: a backup reads its schema
in a transaction of its own, as in production.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import uuid
import zipfile
from pathlib import Path

import psycopg
import pytest
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.db import OperationalError, connection
from django.db.migrations.loader import MigrationLoader
from django.test import Client, override_settings
from django_celery_beat.models import PeriodicTask

from accounts.models import User
from accounts.tests.helpers import member_create
from agents.models import Agent, Message, ProviderCredential
from agents.selectors import agent_get_for_chat
from agents.services import agent_create, agent_update, chat_start
from agents.tests.conftest import run_inline
from backups.archive import FILE_COLUMNS, MANIFEST, MANIFEST_CHECKSUM, schema_migrations, schema_tables
from backups.models import Backup, BackupSchedule, Restore
from backups.services import backup_schedule_update
from backups.tasks import backup_run_task, backup_scheduled_task, restore_run_task
from conftest import PASSWORD, host_of
from core.crypto import decrypt_str, encrypt_str
from core.epochs import epoch_get
from core.errors import DomainError
from core.quotas import quota_usage
from core.redis_clients import redis_client
from core.rls import db_as_system
from core.tenancy import in_tenant
from iam.members import auth_epoch
from iam.policy import Principal
from knowledge import pipeline, storage
from knowledge.retrieval import search
from knowledge.services import Upload, documents_ingest, knowledge_base_create
from tenants.models import Tenant
from tenants.services import tenant_create, tenant_delete
from webhooks.models import WebhookEndpoint
from webhooks.selectors import subscribed_types
from webhooks.services import endpoint_delete

pytestmark = pytest.mark.django_db

QUESTION = "How many days do I have to return an item?"
GUIDE = (
    b"# Returns\n\nItems may be returned within 30 days with the receipt. Refunds reach the card in five days.\n\n"
    b"# Shipping\n\nOrders ship from Lyon within two working days; express delivery costs 12 euros.\n"
)


def _client(tenant, user) -> Client:
    client = Client(HTTP_HOST=host_of(tenant))
    client.force_login(user)
    return client


def _ask(tenant, user, agent_id: int) -> str:
    with in_tenant(tenant):
        agent = Agent.objects.get(pk=agent_id)
        handles = chat_start(principal=Principal(tenant=tenant, user=user, role="admin"), agent=agent, message=QUESTION)
    assert run_inline(tenant, handles["run_id"])["status"] == "complete"
    with in_tenant(tenant):
        return Message.objects.get(id=handles["message_id"]).content


def _rows(schema: str) -> dict[str, list[dict]]:
    """Every row of every table of the schema, as PostgreSQL renders it (embeddings in pgvector's text form)."""
    with connection.cursor() as cursor:
        tables = schema_tables(cursor, schema)
        found = {}
        for name, table in tables.items():
            order = ", ".join(f'"{c}"' for c in table.key) or "1"
            cursor.execute(f'SELECT to_jsonb(t)::text FROM "{schema}"."{name}" t ORDER BY {order}')
            found[name] = [json.loads(row[0]) for row in cursor.fetchall()]
    return found


@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker):
    """A source organisation of its own with an admin and a member, a knowledge base with an ingested document,
    an agent with three versions and a conversation answered by the offline provider."""
    from django.conf import settings

    # Files go to the test settings' storage, which the session's workers share; tenant_delete removes them.
    old_enqueue = getattr(settings, "AGENTS_ENQUEUE_RUNS", True)
    settings.AGENTS_ENQUEUE_RUNS = False  # runs are executed here (run_inline)
    suffix = uuid.uuid4().hex[:6]
    made: list[Tenant] = []
    with django_db_blocker.unblock():
        admin = User.objects.create_user(email=f"admin-{suffix}@backup.test", password=PASSWORD)
        source = tenant_create(name="Backup source", slug=f"bk-src-{suffix}", owner=admin)
        made.append(source)
        member = member_create(source, email=f"member-{suffix}@backup.test")
        principal = Principal(tenant=source, user=admin, role="admin")
        with in_tenant(source), db_as_system():
            kb = knowledge_base_create(owner=admin, name="Handbook", embedding_model="hashing-384", chunk_size=64)
            ingested = documents_ingest(
                kb=kb, user=admin, uploads=[Upload(title="Guide", file=io.BytesIO(GUIDE), filename="guide.md")]
            )
            for document in ingested.documents:
                pipeline.document_process(document.id)
            agent = agent_create(principal=principal, data={"name": "Support", "knowledge_base_ids": [kb.pk]})
            agent_update(principal=principal, agent=agent, data={"system_prompt": "Answer from the handbook."})
            agent_update(principal=principal, agent=agent, data={"description": "Returns and shipping"})
        answer = _ask(source, admin, agent.pk)
        state = {"admin": admin, "member": member, "source": source, "agent_id": agent.pk, "answer": answer}
        state["made"] = made
        try:
            yield state
        finally:
            connection.set_schema_to_public()
            for tenant in made:
                if Tenant.objects.filter(pk=tenant.pk).exists():
                    tenant_delete(tenant=tenant)
            # Django's cascade also visits per-tenant tables (API keys, shares): run it in a schema that has them.
            with in_tenant(Tenant.objects.get(slug="acme")):
                User.objects.filter(email__endswith=f"-{suffix}@backup.test").delete()
            settings.AGENTS_ENQUEUE_RUNS = old_enqueue


def _backup(world) -> Backup:
    started = _client(world["source"], world["admin"]).post(
        "/api/v1/organisation/backups/", {"include_conversations": True}, content_type="application/json"
    )
    assert started.status_code == 202, started.content
    backup = _finished(Backup, started.json()["id"], backup_run_task)
    assert backup.status == "done", backup.error
    return backup


def _finished(model, pk: str, task):
    """Run the task the request queued, here (a session's Celery worker may have claimed it first: then wait for
    it), and return the record once it is done or failed."""
    try:
        task(pk)
    except DomainError:
        pass  # recorded on the row, which the caller checks
    deadline = time.monotonic() + 180
    while (record := model.objects.get(pk=pk)).status not in ("done", "failed"):
        assert time.monotonic() < deadline, f"{model.__name__} {pk} still {record.status}"
        time.sleep(0.5)
    return record


def _assert_identical(before: dict, after: dict, source, restored, manifest: dict) -> None:
    """Every row of every table equal, stored paths moved to the new organisation's prefix; the audit log holds the
    backup's entries after the new organisation's own (with new ids)."""
    assert before.keys() == after.keys()
    old_prefix, new_prefix = storage.tenant_prefix(source.schema_name), storage.tenant_prefix(restored.schema_name)
    moved = {(table, column) for table, columns in FILE_COLUMNS.items() for column in columns}
    for table, rows in before.items():
        if table == "usage_auditentry":
            backed_up = manifest["tables"][table]["rows"]
            restored_entries = after[table][len(after[table]) - backed_up :]
            assert [r | {"id": 0} for r in rows[:backed_up]] == [r | {"id": 0} for r in restored_entries]
            continue
        expected = [
            {k: (v.replace(old_prefix, new_prefix, 1) if (table, k) in moved and v else v) for k, v in row.items()}
            for row in rows
        ]
        assert after[table] == expected, f"{table} differs after the restore"


def test_an_organisation_restored_into_a_new_one_is_identical(world, django_db_blocker):
    with django_db_blocker.unblock():
        source, admin = world["source"], world["admin"]
        backup = _backup(world)
        admin_client = _client(source, admin)
        download = admin_client.get(f"/api/v1/organisation/backups/{backup.id}/download/")
        assert download.status_code == 200 and download["Content-Type"] == "application/zip"
        archive = zipfile.ZipFile(io.BytesIO(b"".join(download.streaming_content)))
        manifest = json.loads(archive.read(MANIFEST))
        assert manifest["tables"]["agents_agentversion"]["rows"] == 3
        assert manifest["tables"]["knowledge_chunk"]["rows"] >= 2 and manifest["counts"]["files"] == 1

        slug = f"bk-new-{uuid.uuid4().hex[:6]}"
        started = admin_client.post(
            f"/api/v1/organisation/backups/{backup.id}/restore/",
            {"new_organisation": {"name": "Restored", "slug": slug}},
            content_type="application/json",
        )
        assert started.status_code == 202, started.content
        restored = Tenant.objects.get(slug=slug)
        world["made"].append(restored)
        _finished(Restore, started.json()["id"], restore_run_task)
        status = admin_client.get(f"/api/v1/organisation/backups/restores/{started.json()['id']}/").json()
        assert status["status"] == "done", status

        before, after = _rows(source.schema_name), _rows(restored.schema_name)
        _assert_identical(before, after, source, restored, manifest)
        assert before["knowledge_chunk"] and all(row["embedding"] for row in after["knowledge_chunk"])
        # The term statistics stored when its version settled come back with the chunks they describe.
        assert before["knowledge_versionstatistics"] and before["knowledge_versionterm"]
        with in_tenant(restored):
            [path] = [r["storage_path"] for r in after["knowledge_document"]]
            assert storage.storage_read(path) == GUIDE
        # The backup's members are members of the new organisation, with their roles.
        member_client = _client(restored, world["member"])
        assert member_client.get("/api/v1/organisation/backups/").status_code == 403
        assert _client(restored, admin).get("/api/v1/organisation/backups/").status_code == 200
        # Same question, same agent, same knowledge: the same answer in both organisations.
        answer_source = _ask(source, admin, world["agent_id"])
        answer_restored = _ask(restored, admin, world["agent_id"])
        assert answer_restored == answer_source == world["answer"]
        assert "30 days" in answer_restored


def test_an_organisation_moves_to_another_cluster_through_a_file(world, django_db_blocker, tmp_path: Path):
    """`tenant_backup --output` on one cluster, `tenant_restore --file --name` on the other (here: the same)."""
    with django_db_blocker.unblock():
        source = world["source"]
        path = tmp_path / "moving.zip"
        call_command("tenant_backup", source.slug, output=str(path))
        before = _rows(source.schema_name)
        slug = f"bk-moved-{uuid.uuid4().hex[:6]}"
        call_command("tenant_restore", slug, file=str(path), name="Moved")
        moved = Tenant.objects.get(slug=slug)
        world["made"].append(moved)
        with zipfile.ZipFile(path) as archive:
            manifest = json.loads(archive.read(MANIFEST))
        _assert_identical(before, _rows(moved.schema_name), source, moved, manifest)
        assert _client(moved, world["member"]).get("/api/v1/agents/").status_code == 200  # a member there too
        with pytest.raises(CommandError, match="exists"):
            call_command("tenant_restore", slug, file=str(path), name="Moved")


def test_a_restore_into_the_same_organisation_brings_back_its_state_and_keeps_its_audit_log(world, django_db_blocker):
    with django_db_blocker.unblock():
        source, admin = world["source"], world["admin"]
        backup = _backup(world)
        before = _rows(source.schema_name)
        principal = Principal(tenant=source, user=admin, role="admin")
        with in_tenant(source), db_as_system():
            agent = Agent.objects.get(pk=world["agent_id"])
            agent_update(principal=principal, agent=agent, data={"system_prompt": "Changed after the backup."})
            kb = agent.knowledge_bases.get()
            later = documents_ingest(
                kb=kb, user=admin, uploads=[Upload(title="Later", file=io.BytesIO(b"# Later\n\nNew."), filename="l.md")]
            )
            [document] = later.documents
            pipeline.document_process(document.id)
            document.refresh_from_db()
            later_file = document.storage_path
        assert _rows(source.schema_name) != before

        call_command("tenant_restore", source.slug, backup=str(backup.id), replace=True)

        now = _rows(source.schema_name)
        log = now.pop("usage_auditentry")  # append-only: what happened since the backup stays recorded
        assert log[: len(before["usage_auditentry"])] == before.pop("usage_auditentry")
        assert now == before
        with in_tenant(source):
            assert not storage.knowledge_storage().exists(later_file)  # the document the restore removed
            [kept] = [row["storage_path"] for row in now["knowledge_document"]]
            assert storage.storage_read(kept) == GUIDE
        assert _ask(source, admin, world["agent_id"]) == world["answer"]


def test_an_admin_exports_everything_in_the_backup_format_without_secrets(world, django_db_blocker):
    with django_db_blocker.unblock():
        source, admin = world["source"], world["admin"]
        ciphertext = encrypt_str("sk-MARKER-42")
        with in_tenant(source):
            ProviderCredential.objects.create(name="vendor", kind="offline", api_key_encrypted=ciphertext)
        as_member = _client(source, world["member"])
        assert as_member.post("/api/v1/organisation/exports/").status_code == 403
        admin_client = _client(source, admin)
        started = admin_client.post("/api/v1/organisation/exports/")
        assert started.status_code == 202, started.content
        export_id = started.json()["id"]
        assert as_member.get(f"/api/v1/organisation/exports/{export_id}/download/").status_code == 403
        _finished(Backup, export_id, backup_run_task)
        assert admin_client.get(f"/api/v1/organisation/exports/{export_id}/").json()["status"] == "done"
        assert admin_client.get(f"/api/v1/organisation/backups/{export_id}/").status_code == 404  # not a backup
        download = admin_client.get(f"/api/v1/organisation/exports/{export_id}/download/")
        assert download.status_code == 200 and download["Content-Type"] == "application/zip"
        archive = zipfile.ZipFile(io.BytesIO(b"".join(download.streaming_content)))

        manifest = json.loads(archive.read(MANIFEST))
        assert manifest["format"] == "agentry-organisation-backup" and manifest["secrets_redacted"]
        for name, entry in manifest["files"].items():  # every file listed, with its checksum
            assert hashlib.sha256(archive.read(name)).hexdigest() == entry["sha256"], name
        organisation = json.loads(archive.read("organisation.json"))
        assert {(m["email"], m["role"]) for m in organisation["members"]} == {
            (admin.email, "admin"),
            (world["member"].email, "user"),
        }
        [kb] = [json.loads(line) for line in archive.read("tables/knowledge_knowledgebase.jsonl").splitlines()]
        assert {"ocr_language", "versions_retained", "search_settings"} <= kb.keys()  # every column, by construction
        versions = [json.loads(line) for line in archive.read("tables/agents_agentversion.jsonl").splitlines()]
        assert [v["number"] for v in versions if v["agent_id"] == world["agent_id"]][:3] == [1, 2, 3]
        [document] = [json.loads(line) for line in archive.read("tables/knowledge_document.jsonl").splitlines()]
        assert archive.read("files/" + document["storage_path"].removeprefix(manifest["storage_prefix"])) == GUIDE
        messages = [json.loads(line) for line in archive.read("tables/agents_message.jsonl").splitlines()]
        assert world["answer"] in [m["content"] for m in messages]
        # No secret leaves: neither the provider key nor its ciphertext, nor any password hash.
        everything = b"".join(archive.read(name) for name in archive.namelist())
        assert b"sk-MARKER-42" not in everything and ciphertext.encode() not in everything
        assert b"pbkdf2" not in everything and b"argon2" not in everything
        # An export is for taking data out: it cannot be restored.
        refused = admin_client.post(f"/api/v1/organisation/backups/{export_id}/restore/", {}, "application/json")
        assert refused.status_code == 404


def _tampered(original: bytes, *, edit) -> bytes:
    """The archive rebuilt member by member, `edit(name, body) -> body` applied to each."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(original)) as source, zipfile.ZipFile(out, "w") as target:
        for name in source.namelist():
            target.writestr(name, edit(name, source.read(name)))
    return out.getvalue()


def test_a_damaged_or_altered_backup_is_refused_and_nothing_changes(world, django_db_blocker, tmp_path: Path):
    with django_db_blocker.unblock():
        source, admin = world["source"], world["admin"]
        backup = _backup(world)
        with in_tenant(source):
            original = storage.storage_read(backup.path)
        with zipfile.ZipFile(io.BytesIO(original)) as archive:
            manifest = json.loads(archive.read(MANIFEST))
            rows_member = "tables/agents_agent.jsonl"
            stored = archive.getinfo(rows_member)

        def flip_in_rows(name: str, body: bytes) -> bytes:
            return body.replace(b"Support", b"Sapport", 1) if name == rows_member else body

        def fewer_rows(name: str, body: bytes) -> bytes:
            if name not in (MANIFEST, MANIFEST_CHECKSUM):
                return body
            edited = json.loads(json.dumps(manifest))
            edited["tables"]["agents_agent"]["rows"] += 1
            text = json.dumps(edited).encode()
            return text if name == MANIFEST else hashlib.sha256(text).hexdigest().encode()

        def manifest_only(name: str, body: bytes) -> bytes:
            return (
                body.replace(b'"include_conversations": true', b'"include_conversations": false')
                if name == MANIFEST
                else body
            )

        flipped = bytearray(original)
        offset = stored.header_offset + 30 + len(stored.filename) + len(stored.extra) + stored.compress_size // 2
        flipped[offset] ^= 0x01  # one bit inside the compressed rows of the agents table
        cases = {
            "a flipped byte": (bytes(flipped), "damaged"),
            "an edited row": (_tampered(original, edit=flip_in_rows), "checksum does not match"),
            "an edited manifest": (_tampered(original, edit=manifest_only), "manifest was altered"),
            "a manifest edited with its checksum": (_tampered(original, edit=fewer_rows), "rows"),
        }
        before = _rows(source.schema_name)
        restores_before = Restore.objects.count()
        for label, (body, reason) in cases.items():
            path = tmp_path / "backup.zip"
            path.write_bytes(body)
            with pytest.raises(CommandError, match=reason):
                call_command("tenant_restore", source.slug, file=str(path), replace=True)
            assert _rows(source.schema_name) == before, f"{label}: the organisation changed"
        assert Restore.objects.count() == restores_before  # refused before a restore even began

        # The same through the API: the stored backup damaged, the restore fails with the reason, nothing changes.
        with in_tenant(source):
            storage.storage_delete(backup.path)
            storage.storage_save(backup.path, bytes(flipped))
        started = _client(source, admin).post(
            f"/api/v1/organisation/backups/{backup.id}/restore/", {}, "application/json"
        )
        assert started.status_code == 202, started.content
        failed = _finished(Restore, started.json()["id"], restore_run_task)
        assert failed.status == "failed" and "damaged" in failed.error
        now = _rows(source.schema_name)
        log = now.pop("usage_auditentry")  # the request to restore is logged; nothing else moved
        assert log[: len(before["usage_auditentry"])] == before.pop("usage_auditentry")
        assert [entry["action"] for entry in log[-1:]] == ["backup.restore"]
        assert now == before


def test_retention_keeps_the_last_backups_and_the_schedule_is_a_beat_entry(world, django_db_blocker):
    with django_db_blocker.unblock():
        source, admin = world["source"], world["admin"]
        client = _client(source, admin)
        saved = client.put(
            "/api/v1/organisation/backups/schedule/",
            {
                "enabled": True,
                "minute": 15,
                "hour": 4,
                "day_of_week": "1-5",
                "keep_last": 2,
                "include_conversations": False,
            },
            content_type="application/json",
        )
        assert saved.status_code == 200, saved.content
        assert saved.json()["own"] and saved.json()["crontab"] == "15 4 * * 1-5"
        task = BackupSchedule.objects.get(tenant=source).periodic_task
        assert task is not None and task.enabled and json.loads(task.args) == [source.schema_name]
        assert (task.crontab.minute, task.crontab.hour, task.crontab.day_of_week) == ("15", "4", "1-5")
        assert PeriodicTask.objects.filter(name=f"backups:{source.schema_name}").count() == 1

        made = [_backup(world) for _ in range(2)]
        backup_scheduled_task(source.schema_name)  # what the organisation's beat entry runs (here, at once)
        made.append(Backup.objects.filter(tenant=source, scheduled=True).latest("created_at"))
        assert made[2].status == "done" and not made[2].include_conversations  # the schedule's choice
        assert "agents_message" not in made[2].counts["tables"] and "agents_agent" in made[2].counts["tables"]
        kept = set(Backup.objects.filter(tenant=source, purpose="backup").values_list("pk", flat=True))
        assert kept == {made[1].pk, made[2].pk}
        with in_tenant(source):
            assert not storage.knowledge_storage().exists(made[0].path)
            assert storage.knowledge_storage().exists(made[2].path)
        # The dashboard page shows them, and makes one now.
        page = client.get("/manage/backups/")
        assert page.status_code == 200 and b"Back up now" in page.content and b"scheduled" in page.content
        assert client.post("/manage/backups/", {"intent": "backup"}).status_code == 302
        assert Backup.objects.filter(tenant=source, status="pending", requested_by_id=admin.pk).exists()


def test_members_and_other_organisations_cannot_reach_backups(world, django_db_blocker):
    with django_db_blocker.unblock():
        source, member = world["source"], world["member"]
        backup = Backup.objects.filter(tenant=source, status="done").first() or _backup(world)
        as_member = _client(source, member)
        for method, path in (
            ("get", "/api/v1/organisation/backups/"),
            ("post", "/api/v1/organisation/backups/"),
            ("get", f"/api/v1/organisation/backups/{backup.id}/"),
            ("get", f"/api/v1/organisation/backups/{backup.id}/download/"),
            ("post", f"/api/v1/organisation/backups/{backup.id}/restore/"),
            ("get", "/api/v1/organisation/backups/schedule/"),
            ("get", "/manage/backups/"),
        ):
            response = getattr(as_member, method)(path, {}, content_type="application/json")
            assert response.status_code == 403, (method, path, response.status_code)
        stranger = User.objects.get(email="admin@globex.test")
        other = _client(Tenant.objects.get(slug="globex"), stranger)
        assert other.get(f"/api/v1/organisation/backups/{backup.id}/").status_code == 404
        assert (
            other.post(f"/api/v1/organisation/backups/{backup.id}/restore/", {}, "application/json").status_code == 404
        )


def test_a_deleted_organisation_takes_its_beat_entry_with_it(world, django_db_blocker):
    with django_db_blocker.unblock():
        admin = world["admin"]
        doomed = tenant_create(name="Doomed", slug=f"bk-gone-{uuid.uuid4().hex[:6]}", owner=admin)
        world["made"].append(doomed)
        with in_tenant(doomed):
            backup_schedule_update(
                principal=Principal(tenant=doomed, user=admin, role="admin"),
                enabled=True,
                minute=0,
                hour=1,
                day_of_week="*",
                keep_last=3,
                include_conversations=True,
            )
        name = f"backups:{doomed.schema_name}"
        assert PeriodicTask.objects.filter(name=name, enabled=True).exists()
        connection.set_schema_to_public()
        tenant_delete(tenant=doomed)
        assert not PeriodicTask.objects.filter(name=name).exists()
        assert backup_scheduled_task(doomed.schema_name)["backup"] is None  # a late firing finds nothing to do


# --- Backups of an older release -------------------------------------------------------------------------------

# Real migrations of this repository that a backup made before them lacks: webhook secrets encrypted at rest (a data
# migration: the plaintext column is encrypted into a new one, then dropped) and the search-tuning fields (defaults).
LATER_MIGRATIONS = {("webhooks", "0002_endpoint_secret_encrypted"), ("knowledge", "0006_search_tuning")}
WEBHOOK_SECRET = "whsec_made-before-encryption"


def _as_made_before(original: bytes, later: set[tuple[str, str]], *, also: list[list[str]] = ()) -> bytes:
    """The archive as the release before `later` would have written it: those migrations missing from its manifest,
    and its rows in the schema they had then (the columns those migrations add absent, the plaintext webhook secret
    the encryption migration removed present); `also`: migrations to add to the manifest. Checksums redone.
    Migrations that need one of `later` (those after it in its app) are later too: their tables and columns go."""
    loader = MigrationLoader(None, ignore_no_migrations=True)
    graph = loader.graph
    later = {key for migration in later for key in graph.backwards_plan(migration)}
    with zipfile.ZipFile(io.BytesIO(original)) as archive:
        manifest = json.loads(archive.read(MANIFEST))
        kept = [m for m in manifest["migrations"] if tuple(m) not in later]
        assert len(kept) == len(manifest["migrations"]) - len(later)
        for app, name in kept:  # a state a migrate could have left: nothing kept depends on what is taken out
            assert not {parent.key for parent in graph.node_map[(app, name)].parents} & later, (app, name)
        manifest["migrations"] = sorted(kept + list(also))
        older = loader.project_state(nodes=[(app, name) for app, name in kept], at_end=True).apps
        older_columns = {
            model._meta.db_table: {field.column for field in model._meta.concrete_fields}
            for model in older.get_models(include_auto_created=True)
        }
        for table in [t for t in manifest["tables"] if t not in older_columns]:  # made by a later migration
            del manifest["tables"][table], manifest["files"][f"tables/{table}.jsonl"]

        def older_row(table: str, row: dict) -> dict:
            if table == "webhooks_webhookendpoint" and ("webhooks", "0002_endpoint_secret_encrypted") in later:
                row["secret"] = decrypt_str(row.pop("secret_encrypted"))
            if table == "knowledge_knowledgebase" and ("knowledge", "0006_search_tuning") in later:
                del row["auto_tune"]
            if table == "knowledge_knowledgebaseversion" and ("knowledge", "0006_search_tuning") in later:
                del row["search_tuning"]
            return {column: value for column, value in row.items() if column in older_columns[table]}

        def edit(name: str, body: bytes) -> bytes:
            if not name.startswith("tables/"):
                return body
            table = name.removeprefix("tables/").removesuffix(".jsonl")
            return b"".join(
                json.dumps(older_row(table, json.loads(line)), sort_keys=True).encode() + b"\n"
                for line in body.splitlines()
            )

    return _resigned(original, edit=edit, manifest=manifest)


def _secrets_decrypted(rows: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """Webhook secrets compared by what they decrypt to (each encryption draws a new nonce)."""
    endpoints = rows.get("webhooks_webhookendpoint", [])
    return rows | {
        "webhooks_webhookendpoint": [e | {"secret_encrypted": decrypt_str(e["secret_encrypted"])} for e in endpoints]
    }


def _staging_schemas() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(r"SELECT nspname FROM pg_namespace WHERE nspname LIKE 'restore\_%'")
        return [row[0] for row in cursor.fetchall()]


@pytest.fixture
def older_backup(world, django_db_blocker, tmp_path: Path):
    """A backup of the source (with a webhook endpoint) as the release before LATER_MIGRATIONS wrote it: its path,
    and the source's rows when it was taken."""
    with django_db_blocker.unblock():
        source = world["source"]
        with in_tenant(source):
            if not WebhookEndpoint.objects.filter(description="older backup").exists():
                WebhookEndpoint.objects.create(
                    url="https://hooks.example.test/agentry",
                    description="older backup",
                    event_types=["agent.updated"],
                    secret_encrypted=encrypt_str(WEBHOOK_SECRET),
                    created_by=world["admin"],
                )
        current = tmp_path / "current.zip"
        call_command("tenant_backup", source.slug, output=str(current))
        before = _rows(source.schema_name)
        path = tmp_path / "older.zip"
        path.write_bytes(_as_made_before(current.read_bytes(), LATER_MIGRATIONS))
        with zipfile.ZipFile(path) as archive:
            kept = json.loads(archive.read(MANIFEST))["tables"]
        # A table the older release did not have comes back empty (the version statistics: search counts until the
        # knowledge base's next version stores them).
        return {"path": path, "rows": {table: rows if table in kept else [] for table, rows in before.items()}}


def test_a_backup_of_an_older_release_is_migrated_forward_into_a_new_organisation(
    world, older_backup, django_db_blocker
):
    with django_db_blocker.unblock():
        source = world["source"]
        with zipfile.ZipFile(older_backup["path"]) as archive:
            manifest = json.loads(archive.read(MANIFEST))
            [endpoint] = [
                json.loads(line) for line in archive.read("tables/webhooks_webhookendpoint.jsonl").splitlines()
            ]
        assert "secret_encrypted" not in endpoint and endpoint["secret"] == WEBHOOK_SECRET  # the older schema's row
        slug = f"bk-old-{uuid.uuid4().hex[:6]}"
        call_command("tenant_restore", slug, file=str(older_backup["path"]), name="From an older release")
        restored = Tenant.objects.get(slug=slug)
        world["made"].append(restored)

        after = _rows(restored.schema_name)
        _assert_identical(
            _secrets_decrypted(older_backup["rows"]), _secrets_decrypted(after), source, restored, manifest
        )
        # The data migration ran on the backup's rows: the plaintext secret is now stored encrypted, and the
        # organisation's schema is this release's, with nothing left of the staging schema.
        [row] = after["webhooks_webhookendpoint"]
        assert "secret" not in row and row["secret_encrypted"] != WEBHOOK_SECRET
        assert decrypt_str(row["secret_encrypted"]) == WEBHOOK_SECRET
        with connection.cursor() as cursor:
            assert schema_migrations(cursor, restored.schema_name) == schema_migrations(cursor, source.schema_name)
        assert _staging_schemas() == []
        assert _ask(restored, world["admin"], world["agent_id"]) == world["answer"]


def test_a_backup_of_a_newer_release_is_refused_with_its_reason_and_nothing_changes(
    world, older_backup, django_db_blocker, tmp_path: Path
):
    with django_db_blocker.unblock():
        source = world["source"]
        newer = tmp_path / "newer.zip"
        newer.write_bytes(
            _as_made_before(older_backup["path"].read_bytes(), set(), also=[["agents", "0099_from_a_later_release"]])
        )
        before, restores = _rows(source.schema_name), Restore.objects.count()
        with pytest.raises(CommandError, match="made by a newer release.*agents.0099_from_a_later_release"):
            call_command("tenant_restore", source.slug, file=str(newer), replace=True)
        with pytest.raises(CommandError, match="newer release"):
            call_command("tenant_restore", f"bk-nw-{uuid.uuid4().hex[:6]}", file=str(newer), name="Newer")
        assert _rows(source.schema_name) == before and Restore.objects.count() == restores


@override_settings(AGENT_CACHE_SECONDS=3600)  # the cached agent must outlive the restores: only the epoch drops it
def test_an_older_backup_restored_over_its_organisation_fails_half_way_without_a_trace_then_succeeds_and_clears_caches(
    world, older_backup, django_db_blocker
):
    """Into the same organisation, changed since: a restore that fails after every row was replaced (the
    organisation's row is locked by someone else) leaves it as it was; the next one brings the backup back, and
    nothing cached from the rows it replaced is served afterwards."""
    with django_db_blocker.unblock():
        source, admin = world["source"], world["admin"]
        schema = source.schema_name
        principal = Principal(tenant=source, user=admin, role="admin")
        with in_tenant(source), db_as_system():
            agent = Agent.objects.get(pk=world["agent_id"])
            backed_up_version = agent.current_version.number
            agent_update(principal=principal, agent=agent, data={"system_prompt": "Changed after the backup."})
            endpoint_delete(principal=principal, endpoint=WebhookEndpoint.objects.get(description="older backup"))
            # Caches filled from the changed rows: the agent a chat starts with, retrieval statistics, the
            # webhook event types, this month's document counter.
            assert agent_get_for_chat(principal, agent.pk).current_version.number == backed_up_version + 1
            kb = agent.knowledge_bases.get()
            # Without its stored statistics (rows of the organisation, which the restore brings back with the
            # chunks: knowledge.statistics) the version's are counted, and cached.
            kb.statistics.all().delete()
            assert search(knowledge_base=kb, query="return the item", mode="lexical")
            stats_keys = redis_client().keys(cache.make_key("knowledge:bm25:*"))
        assert stats_keys
        assert "agent.updated" not in subscribed_types(schema)
        quota_usage(tenant=source, quota="documents_per_month")
        assert redis_client().keys(f"quota:{schema}:documents_per_month:*")
        changed = _rows(schema)
        auth_before = epoch_get(auth_epoch(schema))

        locker = psycopg.connect(
            host=connection.settings_dict["HOST"],
            port=connection.settings_dict["PORT"],
            user=connection.settings_dict["USER"],
            password=connection.settings_dict["PASSWORD"],
            dbname=connection.settings_dict["NAME"],
        )
        try:
            # Held by another session: the restore's last step (the organisation's settings) waits for it, past
            # BACKUP_RESTORE_LOCK_TIMEOUT_MS, after the rows were brought forward and replaced.
            locker.execute("SELECT 1 FROM public.tenants_tenant WHERE id = %s FOR NO KEY UPDATE", [source.pk])
            with override_settings(BACKUP_RESTORE_LOCK_TIMEOUT_MS=1000):
                with pytest.raises(OperationalError, match="lock timeout"):
                    call_command("tenant_restore", source.slug, file=str(older_backup["path"]), replace=True)
        finally:
            locker.rollback()
            locker.close()
        assert Restore.objects.filter(tenant=source).latest("created_at").status == "failed"
        assert _rows(schema) == changed and _staging_schemas() == []

        call_command("tenant_restore", source.slug, file=str(older_backup["path"]), replace=True)
        now = _secrets_decrypted(_rows(schema))
        before = _secrets_decrypted(older_backup["rows"])
        log = now.pop("usage_auditentry")  # append-only: what happened since the backup stays recorded
        assert log[: len(before["usage_auditentry"])] == before.pop("usage_auditentry")
        assert now == before and _staging_schemas() == []
        with in_tenant(source), db_as_system():
            assert agent_get_for_chat(principal, agent.pk).current_version.number == backed_up_version
            assert not redis_client().keys(cache.make_key("knowledge:bm25:*"))
        assert epoch_get(auth_epoch(schema)) != auth_before  # members and API keys are read again
        assert "agent.updated" in subscribed_types(schema)  # the endpoint the restore brought back gets events
        assert not redis_client().keys(f"quota:{schema}:documents_per_month:*")  # seeded again at the next check
        assert _ask(source, admin, world["agent_id"]) == world["answer"]


def _resigned(original: bytes, *, edit, manifest: dict | None = None) -> bytes:
    """The archive with `edit(name, body) -> body` applied to its members and its checksums redone: a backup as a
    source holding those rows would have written it. `manifest`: written instead of the archive's own; members it
    does not list are left out."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(original)) as archive, zipfile.ZipFile(out, "w") as target:
        manifest = manifest or json.loads(archive.read(MANIFEST))
        for name in archive.namelist():
            if name in (MANIFEST, MANIFEST_CHECKSUM) or name not in manifest["files"]:
                continue
            body = edit(name, archive.read(name))
            manifest["files"][name] = {"sha256": hashlib.sha256(body).hexdigest(), "size": len(body)}
            target.writestr(name, body)
        body = json.dumps(manifest).encode()
        target.writestr(MANIFEST, body)
        target.writestr(MANIFEST_CHECKSUM, hashlib.sha256(body).hexdigest())
    return out.getvalue()


def _naming(user_id: int, columns: dict[str, str]):
    """An archive edit: the rows of each table in `columns` name `user_id` in that column."""

    def edit(name: str, body: bytes) -> bytes:
        table = name.removeprefix("tables/").removesuffix(".jsonl")
        if not name.startswith("tables/") or table not in columns:
            return body
        rows = [json.loads(line) for line in body.splitlines()]
        assert rows, table
        return b"".join(json.dumps(row | {columns[table]: user_id}).encode() + b"\n" for row in rows)

    return edit


def test_user_ids_the_backup_does_not_name_are_emptied_where_allowed_and_refuse_the_restore_elsewhere(
    world, django_db_blocker, tmp_path: Path
):
    """Organisation tables keep user ids without a database foreign key: rows naming an account the backup's users
    do not include (removed before the backup) never point at whoever has that id here. A creator or author is
    restored empty, as the account's deletion would have left it; an owner refuses the restore, naming the ids."""
    with django_db_blocker.unblock():
        source = world["source"]
        stranger = User.objects.create_user(email=f"stranger-{uuid.uuid4().hex[:6]}@unnamed.test", password=PASSWORD)
        try:
            current = tmp_path / "current.zip"
            call_command("tenant_backup", source.slug, output=str(current))
            before = _rows(source.schema_name)
            authored = {"agents_agentversion": "author_id", "knowledge_document": "uploaded_by_id"}
            emptied = tmp_path / "emptied.zip"
            emptied.write_bytes(_resigned(current.read_bytes(), edit=_naming(stranger.pk, authored)))
            slug = f"bk-un-{uuid.uuid4().hex[:6]}"
            call_command("tenant_restore", slug, file=str(emptied), name="Unnamed authors")
            restored = Tenant.objects.get(slug=slug)
            world["made"].append(restored)
            after = _rows(restored.schema_name)
            for table, column in authored.items():
                assert [row[column] for row in after[table]] == [None] * len(before[table])
                moved = {column, *FILE_COLUMNS.get(table, ())}  # stored paths move to the new organisation
                assert [{k: v for k, v in row.items() if k not in moved} for row in after[table]] == [
                    {k: v for k, v in row.items() if k not in moved} for row in before[table]
                ]
            assert Restore.objects.filter(tenant=restored).latest("created_at").counts["users_unnamed"] == {
                f"{table}.{column}": [stranger.pk] for table, column in authored.items()
            }
            assert after["agents_agent"] == before["agents_agent"]  # owners named by the backup: mapped as always

            owned = tmp_path / "owned.zip"
            owned.write_bytes(_resigned(current.read_bytes(), edit=_naming(stranger.pk, {"agents_agent": "owner_id"})))
            refused = f"bk-un-{uuid.uuid4().hex[:6]}"
            with pytest.raises(CommandError, match=rf"agents_agent\.owner_id: user ids {stranger.pk}\b"):
                call_command("tenant_restore", refused, file=str(owned), name="Unnamed owner")
            assert not Tenant.objects.filter(slug=refused).exists()
            with pytest.raises(CommandError, match=r"agents_agent\.owner_id"):
                call_command("tenant_restore", restored.slug, file=str(owned), replace=True)
            assert _rows(restored.schema_name) == after  # refused before anything was replaced
        finally:
            with in_tenant(Tenant.objects.get(slug="acme")):  # Django's cascade visits per-tenant tables
                User.objects.filter(pk=stranger.pk).delete()
