"""Usage metering, tenant-admin sub-limits and the audit log (tenant schema)."""

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models


class QuotaSubLimit(models.Model):
    """A tenant admin's limit for one user or one API key, inside the tenant's plan (core.quotas enforces)."""

    quota = models.CharField(max_length=40)
    # Users (public schema) are referenced without a database foreign key, here and below: core/models.py says why.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+", db_constraint=False
    )
    api_key_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    limit = models.DecimalField(max_digits=20, decimal_places=4, validators=[MinValueValidator(0)])
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_constraint=False,
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["quota", "id"]
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(user__isnull=False, api_key_id__isnull=True)
                    | models.Q(user__isnull=True, api_key_id__isnull=False)
                ),
                name="sublimit_user_xor_key",
            ),
            models.CheckConstraint(condition=models.Q(limit__gte=0), name="sublimit_non_negative"),
            models.UniqueConstraint(
                fields=["quota", "user"], name="sublimit_unique_user", condition=models.Q(user__isnull=False)
            ),
            models.UniqueConstraint(
                fields=["quota", "api_key_id"], name="sublimit_unique_key", condition=models.Q(api_key_id__isnull=False)
            ),
        ]


class UsageRecord(models.Model):
    """One metered chat run: tokens, model, latency and estimated cost."""

    kind = models.CharField(max_length=20, default="chat_run")
    run_id = models.CharField(max_length=64, blank=True, db_index=True)
    agent_id = models.BigIntegerField(null=True, blank=True)
    user_id = models.BigIntegerField(null=True, blank=True)
    api_key_id = models.BigIntegerField(null=True, blank=True)
    provider = models.CharField(max_length=60, blank=True)
    model = models.CharField(max_length=200, blank=True)
    tokens_in = models.BigIntegerField(default=0, validators=[MinValueValidator(0)])
    tokens_out = models.BigIntegerField(default=0, validators=[MinValueValidator(0)])
    latency_ms = models.IntegerField(null=True, blank=True)
    cost = models.DecimalField(max_digits=14, decimal_places=6, default=0)
    status = models.CharField(max_length=20, default="ok")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["agent_id", "created_at"], name="usage_agent_day"),
            models.Index(fields=["user_id", "created_at"], name="usage_user_day"),
            models.Index(fields=["api_key_id", "created_at"], name="usage_key_day"),
        ]


class ApiCallDaily(models.Model):
    """API calls per day, user and API key (flushed from Redis counters; see usage.services)."""

    day = models.DateField()
    user_id = models.BigIntegerField(null=True, blank=True)
    api_key_id = models.BigIntegerField(null=True, blank=True)
    count = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["day"]
        constraints = [
            models.UniqueConstraint(
                fields=["day", "user_id", "api_key_id"], name="apicalls_unique_day_principal", nulls_distinct=False
            ),
        ]


class AuditQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise PermissionError("audit entries are immutable")

    def delete(self):
        raise PermissionError("audit entries are immutable")


class AuditEntry(models.Model):
    """Who changed what, when, before/after. Append-only: the model refuses updates and deletes, and a
    database trigger (migration 0002) refuses them for anyone bypassing the ORM."""

    actor_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    actor_email = models.CharField(max_length=254, blank=True)
    # Who acted when it was not a member: "cli:<command> (<OS user>)". Empty with no actor at all ("system").
    actor_name = models.CharField(max_length=200, blank=True)
    api_key_id = models.BigIntegerField(null=True, blank=True)
    action = models.CharField(max_length=80, db_index=True)  # e.g. "agent.update", "quota.sublimit.set"
    target_type = models.CharField(max_length=60, blank=True, db_index=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_repr = models.CharField(max_length=200, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    objects = AuditQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise PermissionError("audit entries are immutable")
        return super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise PermissionError("audit entries are immutable")
