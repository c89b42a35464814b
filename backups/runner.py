"""What the workers run: make a backup, restore one, expire old ones (backups.tasks call these with ids).

A backup or restore records its progress on its row (public schema) in short transactions of their own, so the
dashboard and the API see it while the work goes on; the work itself runs in the organisation's schema as the
system (core.rls: it acts for the organisation, not for a member).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import shutil
import tempfile
from typing import IO, Any

from django.utils import timezone

from agents.runtime.compiled import tools_epoch
from agents.selectors import agents_epoch
from core.epochs import epoch_bump
from core.errors import DomainError, NotFound
from core.quotas import limits_cache_clear, quota_counters_forget
from core.rls import db_as_system
from core.tenancy import in_tenant
from iam.members import auth_epoch
from knowledge import storage
from knowledge.retrieval import bm25_stats_forget
from tenants.models import Tenant
from webhooks.selectors import subscribed_types_refresh

from .archive import archive_restore, archive_verify, archive_write
from .models import Backup, BackupPurpose, BackupStatus, Restore, RestoreStatus
from .selectors import backup_schedule_for

logger = logging.getLogger(__name__)


# Exports are taken out, not kept: each is removed this long after it was made.
EXPORT_TTL = dt.timedelta(days=7)


def backup_path(backup: Backup) -> str:
    folder = "exports" if backup.purpose == BackupPurpose.EXPORT else "backups"
    return f"{storage.tenant_prefix(backup.tenant.schema_name)}{folder}/{backup.id}.zip"


def backup_run(*, backup_id: str) -> Backup:
    """Write the backup's archive into its organisation's storage prefix, then apply the retention. A backup runs
    once: a task delivered twice finds it claimed and returns it as it is."""
    backup = Backup.objects.select_related("tenant").get(pk=backup_id)
    if not Backup.objects.filter(pk=backup.pk, status=BackupStatus.PENDING).update(status=BackupStatus.RUNNING):
        return backup
    tenant = backup.tenant
    try:
        with in_tenant(tenant), db_as_system(), tempfile.TemporaryFile() as out:
            manifest = archive_write(
                tenant=tenant,
                out=out,
                include_conversations=backup.include_conversations,
                redact_secrets=backup.purpose == BackupPurpose.EXPORT,
            )
            size, digest = _size_and_digest(out)
            path = storage.storage_save(backup_path(backup), out)
    except Exception as error:
        logger.exception("backup %s of %s failed", backup.id, tenant.slug)
        Backup.objects.filter(pk=backup.pk).update(
            status=BackupStatus.FAILED, error=type(error).__name__, finished_at=timezone.now()
        )
        raise
    Backup.objects.filter(pk=backup.pk).update(
        status=BackupStatus.DONE,
        path=path,
        size_bytes=size,
        sha256=digest,
        counts={**manifest["counts"], "tables": {t: e["rows"] for t, e in manifest["tables"].items()}},
        finished_at=timezone.now(),
    )
    backups_expire(tenant=tenant)
    backup.refresh_from_db()
    return backup


def _size_and_digest(out: IO[bytes]) -> tuple[int, str]:
    out.seek(0)
    hasher, size = hashlib.sha256(), 0
    while block := out.read(1 << 20):
        hasher.update(block)
        size += len(block)
    out.seek(0)
    return size, hasher.hexdigest()


def backups_expire(*, tenant: Tenant) -> int:
    """Keep the organisation's newest `keep_last` finished backups (its schedule, or the operator's default) and
    delete older ones, files first; failed attempts older than the oldest kept backup go too, and exports older
    than EXPORT_TTL."""
    keep = backup_schedule_for(tenant.pk).keep_last
    backups = Backup.objects.filter(tenant=tenant, purpose=BackupPurpose.BACKUP)
    done = backups.filter(status=BackupStatus.DONE).order_by("-created_at")
    expired = list(done[keep:])
    kept = list(done[:keep])
    if kept:
        expired += list(backups.filter(status=BackupStatus.FAILED, created_at__lt=kept[-1].created_at))
    expired += list(
        Backup.objects.filter(
            tenant=tenant, purpose=BackupPurpose.EXPORT, created_at__lt=timezone.now() - EXPORT_TTL
        ).exclude(status__in=[BackupStatus.PENDING, BackupStatus.RUNNING])
    )
    with in_tenant(tenant):
        for backup in expired:
            if backup.path:
                storage.storage_delete(backup.path)
            backup.delete()
    return len(expired)


def backup_file_copy(backup: Backup, out: IO[bytes]) -> None:
    with in_tenant(backup.tenant), storage.storage_open(backup.path) as source:
        shutil.copyfileobj(source, out, 1 << 20)


def restore_run(
    *, restore_id: str, path: str | None = None, create_missing_users: bool = False, created: bool = False
) -> Restore:
    """Verify the backup (its stored archive, or the file at `path`), then restore it into the restore's
    organisation. Nothing is replaced before the whole archive checked out; a failure leaves it as it was.
    `created`: the organisation was just made for this restore (another cluster's backup under the same name)."""
    restore = Restore.objects.select_related("tenant", "backup__tenant").get(pk=restore_id)
    if not Restore.objects.filter(pk=restore.pk, status=RestoreStatus.PENDING).update(status=RestoreStatus.VERIFYING):
        return restore  # claimed by another delivery of the task: a restore runs once
    tenant = restore.tenant
    try:
        with tempfile.NamedTemporaryFile(suffix=".zip") as copy:
            if path is None:
                if restore.backup is None or restore.backup.status != BackupStatus.DONE:
                    raise NotFound("The backup is no longer available.")
                backup_file_copy(restore.backup, copy)  # a private copy: verified and read from the same bytes
                copy.flush()
                path = copy.name
            manifest = archive_verify(path)
            _restore_status(restore, RestoreStatus.RESTORING)
            with in_tenant(tenant), db_as_system():
                result = archive_restore(
                    path=path,
                    manifest=manifest,
                    tenant=tenant,
                    new_organisation=created or _made_elsewhere(restore, manifest),
                    create_missing_users=create_missing_users,
                )
    except Exception as error:
        message = error.message if isinstance(error, DomainError) else "The restore failed; nothing was changed."
        if not isinstance(error, DomainError):
            logger.exception("restore %s into %s failed", restore.id, tenant.slug)
        Restore.objects.filter(pk=restore.pk).update(
            status=RestoreStatus.FAILED, error=message, finished_at=timezone.now()
        )
        raise
    try:
        caches_clear(tenant.schema_name)
    except Exception:  # the rows are restored; what stays cached ages out (each cache's own bound)
        logger.exception("restore %s into %s: its caches were not cleared", restore.id, tenant.slug)
    Restore.objects.filter(pk=restore.pk).update(
        status=RestoreStatus.DONE,
        counts={
            "rows": result.rows,
            "files_written": result.files_written,
            "users_created": result.users_created,
            "users_unnamed": result.users_unnamed,
        },
        finished_at=timezone.now(),
    )
    restore.refresh_from_db()
    return restore


def caches_clear(schema: str) -> None:
    """Forget everything cached from the organisation's rows. A restore replaces them with plain SQL, so no model
    signal moved the caches' epochs, and reused ids (sequences restart after the backup's rows) would otherwise
    find entries made for other rows: the agent a chat starts with and compiled agents, members and API keys, quota
    limits and this month's counters, retrieval statistics, the event types webhooks want."""
    for epoch in (agents_epoch(schema), tools_epoch(schema), auth_epoch(schema)):
        epoch_bump(epoch)
    limits_cache_clear()
    quota_counters_forget(schema)
    bm25_stats_forget(schema)
    subscribed_types_refresh(schema)


def _made_elsewhere(restore: Restore, manifest: dict[str, Any]) -> bool:
    if restore.source_tenant_id is not None:
        return restore.source_tenant_id != restore.tenant_id
    return manifest["organisation"]["schema"] != restore.tenant.schema_name  # a file: where it says it was made


def _restore_status(restore: Restore, status: str) -> None:
    Restore.objects.filter(pk=restore.pk).update(status=status)
