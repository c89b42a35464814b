"""Celery tasks of backups (default queue). They take ids and schema names, never objects."""

from __future__ import annotations

from celery import shared_task

from tenants.models import Tenant

from .models import Backup, BackupSchedule
from .runner import backup_run, backups_expire, restore_run
from .selectors import backup_schedule_for


@shared_task(name="backups.run")
def backup_run_task(backup_id: str) -> dict:
    backup = backup_run(backup_id=backup_id)
    return {"backup": str(backup.id), "status": backup.status}


@shared_task(name="backups.run_scheduled")
def backup_scheduled_task(schema: str) -> dict:
    """An organisation's own schedule fired (its django-celery-beat PeriodicTask)."""
    tenant = Tenant.objects.filter(schema_name=schema).first()
    if tenant is None:  # deleted since beat read its schedule (its entry is deleted with it)
        return {"backup": None, "status": "no such organisation"}
    schedule = backup_schedule_for(tenant.pk)
    backup = Backup.objects.create(tenant=tenant, scheduled=True, include_conversations=schedule.include_conversations)
    return backup_run_task(str(backup.id))


@shared_task(name="backups.run_default_all")
def backup_default_all_task() -> int:
    """The operator's default schedule fired: one backup task per organisation that set no schedule of its own
    (fanned out, so workers share them; organisations with their own schedule have their own beat entry)."""
    own = BackupSchedule.objects.values("tenant_id")
    tenants = Tenant.objects.exclude(schema_name="public").exclude(pk__in=own)
    schemas = list(tenants.values_list("schema_name", flat=True))
    for schema in schemas:
        backup_scheduled_task.delay(schema)
    return len(schemas)


@shared_task(name="backups.expire_all")
def backups_expire_all_task() -> int:
    """Hourly: apply every organisation's retention (also where backups stopped being made)."""
    return sum(backups_expire(tenant=tenant) for tenant in Tenant.objects.exclude(schema_name="public"))


@shared_task(name="backups.restore")
def restore_run_task(restore_id: str) -> dict:
    restore = restore_run(restore_id=restore_id)
    return {"restore": str(restore.id), "status": restore.status}
