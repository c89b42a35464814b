"""Writes of backups: request one, restore one, delete one, set the organisation's schedule. The heavy work runs in
the workers (backups.runner) after the request's transaction commits."""

from __future__ import annotations

import json

from django.core.exceptions import ValidationError
from django.db import transaction
from django_celery_beat.models import CrontabSchedule, PeriodicTask
from django_tenants.utils import get_public_schema_name

from core.audit import audit_record
from core.errors import Conflict, Forbidden, InvalidInput
from core.tenancy import in_tenant
from iam.policy import Principal, principal_can_back_up
from knowledge import storage
from tenants.models import Tenant
from tenants.services import tenant_create

from .models import Backup, BackupPurpose, BackupSchedule, BackupStatus, Restore, RestoreStatus
from .tasks import backup_run_task, restore_run_task


def _require(principal: Principal) -> None:
    if not principal_can_back_up(principal):
        raise Forbidden("Only an organisation admin can make or restore its backups.")


def backup_request(*, principal: Principal, include_conversations: bool = True) -> Backup:
    """Start a backup of the principal's organisation now; a worker writes it (backups.tasks.backup_run_task)."""
    _require(principal)
    tenant = Tenant.objects.get(pk=principal.tenant.pk)
    backup = Backup.objects.create(
        tenant=tenant, include_conversations=include_conversations, requested_by_id=principal.user.pk
    )
    audit_record(action="backup.request", target=tenant, after={"backup": str(backup.id)})
    backup_id = str(backup.id)
    transaction.on_commit(lambda: backup_run_task.delay(backup_id))
    return backup


def export_request(*, principal: Principal) -> Backup:
    """Start an export of the principal's organisation: the backup format with every conversation and without
    secrets, to take the organisation's data out (it cannot be restored); removed after runner.EXPORT_TTL."""
    _require(principal)
    tenant = Tenant.objects.get(pk=principal.tenant.pk)
    export = Backup.objects.create(
        tenant=tenant, purpose=BackupPurpose.EXPORT, include_conversations=True, requested_by_id=principal.user.pk
    )
    audit_record(action="organisation.export", target=tenant, after={"export": str(export.id)})
    export_id = str(export.id)
    transaction.on_commit(lambda: backup_run_task.delay(export_id))
    return export


def backup_delete(*, principal: Principal, backup: Backup) -> None:
    _require(principal)
    if backup.tenant_id != principal.tenant.pk:
        raise Forbidden("This backup belongs to another organisation.")
    if backup.path:
        with in_tenant(backup.tenant):
            storage.storage_delete(backup.path)
    audit_record(action="backup.delete", target=backup.tenant, before={"backup": str(backup.id)})
    backup.delete()


def restore_request(
    *, principal: Principal, backup: Backup, new_name: str | None = None, new_slug: str | None = None
) -> Restore:
    """Restore `backup` into its own organisation (replacing everything in it), or into a new organisation
    (`new_name` + `new_slug`) that the principal then administers. A worker verifies, then restores."""
    _require(principal)
    if backup.purpose != BackupPurpose.BACKUP:
        raise Conflict("An export holds no secrets and cannot be restored; restore a backup instead.")
    if backup.status != BackupStatus.DONE:
        raise Conflict("This backup is not finished; only finished backups can be restored.")
    if backup.tenant_id != principal.tenant.pk:
        raise Forbidden("This backup belongs to another organisation.")
    if Restore.objects.filter(
        tenant_id=backup.tenant_id, status__in=[RestoreStatus.PENDING, RestoreStatus.VERIFYING, RestoreStatus.RESTORING]
    ).exists():
        raise Conflict("A restore into this organisation is already running.")
    if new_slug:
        with in_tenant(get_public_schema_name()):  # organisations are made from the public schema
            target = tenant_create(name=new_name or "", slug=new_slug, owner=principal.user)
    else:
        target = backup.tenant
    restore = Restore.objects.create(
        tenant=target, backup=backup, source_tenant_id=backup.tenant_id, requested_by_id=principal.user.pk
    )
    audit_record(action="backup.restore", target=backup.tenant, after={"backup": str(backup.id), "into": target.slug})
    restore_id = str(restore.id)
    transaction.on_commit(lambda: restore_run_task.delay(restore_id))
    return restore


def restore_from_file_prepare(*, tenant: Tenant, requested_by: int | None = None) -> Restore:
    """The record of a restore from an archive file (manage.py tenant_restore: another cluster's backup)."""
    return Restore.objects.create(tenant=tenant, requested_by_id=requested_by)


def periodic_task_name(schema: str) -> str:
    return f"backups:{schema}"


def backup_schedule_update(
    *,
    principal: Principal,
    enabled: bool,
    minute: int,
    hour: int,
    day_of_week: str,
    keep_last: int,
    include_conversations: bool,
) -> BackupSchedule:
    """Set the organisation's own schedule (UTC) and retention; its beat entry (django-celery-beat) follows."""
    _require(principal)
    tenant = Tenant.objects.get(pk=principal.tenant.pk)
    with transaction.atomic():
        schedule = BackupSchedule.objects.select_for_update().filter(tenant=tenant).first() or BackupSchedule(
            tenant=tenant
        )
        before = {"enabled": schedule.enabled, "keep_last": schedule.keep_last} if schedule.pk else None
        schedule.enabled = enabled
        schedule.minute, schedule.hour, schedule.day_of_week = minute, hour, (day_of_week or "*").strip()
        schedule.keep_last = keep_last
        schedule.include_conversations = include_conversations
        try:
            schedule.full_clean(exclude=["tenant", "periodic_task"])
            crontab, _ = CrontabSchedule.objects.get_or_create(
                minute=str(minute),
                hour=str(hour),
                day_of_week=schedule.day_of_week,
                day_of_month="*",
                month_of_year="*",
                timezone="UTC",
            )
            crontab.full_clean()
        except ValidationError as error:
            raise InvalidInput(" ".join(error.messages)) from error
        task = schedule.periodic_task or PeriodicTask(name=periodic_task_name(tenant.schema_name))
        task.task = "backups.run_scheduled"
        task.crontab = crontab
        task.args = json.dumps([tenant.schema_name])
        task.enabled = enabled
        task.save()
        schedule.periodic_task = task
        schedule.save()
        audit_record(
            action="backup.schedule_update",
            target=tenant,
            before=before,
            after={
                "enabled": enabled,
                "crontab": f"{minute} {hour} * * {schedule.day_of_week}",
                "keep_last": keep_last,
            },
        )
    return schedule
