"""Reads of backups, restores and schedules, each behind the access policy (iam.policy.principal_can_back_up)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from django.conf import settings
from django.db.models import QuerySet

from core.errors import Forbidden, NotFound
from iam.policy import Principal, principal_can_back_up

from .models import Backup, BackupPurpose, BackupSchedule, Restore


@dataclass(frozen=True)
class ScheduleView:
    """An organisation's schedule, or the operator's defaults when it set none (`own` False)."""

    own: bool
    enabled: bool
    crontab: str  # "minute hour * * day_of_week", UTC
    keep_last: int
    include_conversations: bool


def _require(principal: Principal) -> None:
    if not principal_can_back_up(principal):
        raise Forbidden("Only an organisation admin can see or manage its backups.")


def backup_list(*, principal: Principal, purpose: str = BackupPurpose.BACKUP) -> QuerySet[Backup]:
    """The organisation's backups (or, with `purpose` "export", its exports), newest first."""
    _require(principal)
    return Backup.objects.filter(tenant_id=principal.tenant.pk, purpose=purpose).order_by("-created_at")


def _uuid(value: object) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError as error:
        raise NotFound("No such backup.") from error


def backup_get_for_principal(*, principal: Principal, backup_id: object, purpose: str = BackupPurpose.BACKUP) -> Backup:
    try:
        return backup_list(principal=principal, purpose=purpose).get(pk=_uuid(backup_id))
    except Backup.DoesNotExist as error:
        raise NotFound("No such backup.") from error


def restore_list(*, principal: Principal) -> QuerySet[Restore]:
    _require(principal)
    return Restore.objects.filter(tenant_id=principal.tenant.pk).order_by("-created_at")


def restore_get_for_principal(*, principal: Principal, restore_id: object) -> Restore:
    """A restore into the principal's organisation, or one it started from its own backups (into a new one)."""
    _require(principal)
    restores = Restore.objects.filter(tenant_id=principal.tenant.pk) | Restore.objects.filter(
        source_tenant_id=principal.tenant.pk, requested_by_id=principal.user.pk
    )
    try:
        return restores.get(pk=_uuid(restore_id))
    except Restore.DoesNotExist as error:
        raise NotFound("No such restore.") from error


def backup_schedule_for(tenant_id: int) -> ScheduleView:
    schedule = BackupSchedule.objects.filter(tenant_id=tenant_id).first()
    if schedule is None:
        return ScheduleView(
            own=False,
            enabled=bool(settings.BACKUP_DEFAULT_CRONTAB),
            crontab=settings.BACKUP_DEFAULT_CRONTAB,
            keep_last=settings.BACKUP_DEFAULT_KEEP_LAST,
            include_conversations=settings.BACKUP_DEFAULT_INCLUDE_CONVERSATIONS,
        )
    return ScheduleView(
        own=True,
        enabled=schedule.enabled,
        crontab=f"{schedule.minute} {schedule.hour} * * {schedule.day_of_week}",
        keep_last=schedule.keep_last,
        include_conversations=schedule.include_conversations,
    )


def backup_schedule_get(*, principal: Principal) -> ScheduleView:
    _require(principal)
    return backup_schedule_for(principal.tenant.pk)
