"""Backups of whole organisations (backups.archive writes and restores them). The records live in the public schema:
restoring an organisation's schema must never rewrite the list of its own backups."""

from __future__ import annotations

import uuid

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django_celery_beat.models import PeriodicTask


class BackupStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class BackupPurpose(models.TextChoices):
    BACKUP = "backup", "Backup"  # restorable: every row, secrets as stored (encrypted or hashed)
    EXPORT = "export", "Export"  # the organisation's data taken out: the same format, secrets left out


class Backup(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    purpose = models.CharField(max_length=6, choices=BackupPurpose.choices, default=BackupPurpose.BACKUP)
    status = models.CharField(max_length=8, choices=BackupStatus.choices, default=BackupStatus.PENDING)
    scheduled = models.BooleanField(default=False)  # made by the schedule, not by a person
    include_conversations = models.BooleanField(default=True)
    requested_by_id = models.BigIntegerField(null=True, blank=True)  # a user id (public schema); None: the schedule
    path = models.CharField(max_length=1000, blank=True)  # tenant/<schema>/backups/<id>.zip in the storage
    size_bytes = models.BigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, blank=True)  # of the whole archive, as stored
    counts = models.JSONField(default=dict, blank=True)  # rows per table, files
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["tenant", "-created_at"], name="backup_tenant_created")]

    def __str__(self) -> str:
        return f"backup {self.id} of {self.tenant_id} ({self.status})"


class RestoreStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    VERIFYING = "verifying", "Verifying the backup"
    RESTORING = "restoring", "Restoring"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class Restore(models.Model):
    """A restore of `backup` into `tenant` (its own organisation, or a new one made for it)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    backup = models.ForeignKey(Backup, null=True, on_delete=models.SET_NULL, related_name="restores")
    source_tenant_id = models.BigIntegerField(null=True, blank=True)  # where the backup was made
    status = models.CharField(max_length=10, choices=RestoreStatus.choices, default=RestoreStatus.PENDING)
    requested_by_id = models.BigIntegerField(null=True, blank=True)
    counts = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"restore {self.id} into {self.tenant_id} ({self.status})"


class BackupSchedule(models.Model):
    """An organisation's own schedule and retention, set by its admins; without one, the operator's defaults apply
    (settings.BACKUP_DEFAULT_*). `periodic_task` is its django-celery-beat entry, kept in step by backups.services."""

    tenant = models.OneToOneField("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    enabled = models.BooleanField(default=True)
    minute = models.PositiveSmallIntegerField(default=30, validators=[MaxValueValidator(59)])
    hour = models.PositiveSmallIntegerField(default=2, validators=[MaxValueValidator(23)])  # UTC
    day_of_week = models.CharField(max_length=20, default="*")  # crontab field: "*", "1-5", "0,3"
    keep_last = models.PositiveSmallIntegerField(default=7, validators=[MinValueValidator(1), MaxValueValidator(365)])
    include_conversations = models.BooleanField(default=True)
    periodic_task = models.OneToOneField(PeriodicTask, null=True, blank=True, on_delete=models.SET_NULL)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"backup schedule of {self.tenant_id}"
