from __future__ import annotations

from typing import ClassVar

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import connection, models
from django_tenants.models import DomainMixin, TenantMixin
from django_tenants.postgresql_backend.base import _check_schema_name
from django_tenants.utils import get_creation_fakes_migrations, schema_exists

from .citus import citus_enabled, schema_distribute
from .cloning import schema_clone

# Messages are dropped a whole month partition at a time, so a shorter retention would mean nothing.
MESSAGE_RETENTION_MIN_DAYS = 31


class DepartedMemberMessages(models.TextChoices):
    """What happens to a member's conversations when they delete their account."""

    DELETE = "delete", "Delete them"
    ANONYMISE = "anonymise", "Keep them, unlinked from the person"


class Tenant(TenantMixin):
    """An organisation. Its data lives in its own PostgreSQL schema (`schema_name`)."""

    # django-tenants ships no types, so django-stubs cannot see the default manager TenantMixin inherits.
    objects: ClassVar[models.Manager[Tenant]]
    schema_name: str

    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=40, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    # Data lifecycle (docs/operations.md, "Data lifecycle"), set by the organisation's admins.
    # None: the operator's default, settings.MESSAGE_RETENTION_DAYS (itself None: kept forever).
    message_retention_days = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(MESSAGE_RETENTION_MIN_DAYS), MaxValueValidator(36500)]
    )
    departed_member_messages = models.CharField(
        max_length=10, choices=DepartedMemberMessages.choices, default=DepartedMemberMessages.DELETE
    )

    # Schemas are created by tenants.services.tenant_create (cloned from the template) and dropped
    # with the row, so a deleted organisation leaves nothing behind.
    auto_create_schema = True
    auto_drop_schema = True

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    def create_schema(self, check_if_exists=False, sync_schema=True, verbosity=1):
        """Clone the template schema (tenants.cloning); fall back to migrating when there is none. On Citus the new
        schema is then distributed (tenants.citus)."""
        base = getattr(settings, "TENANT_BASE_SCHEMA", None)
        cloned = False
        if not (sync_schema and base and get_creation_fakes_migrations() and schema_exists(base)):
            # django-tenants returns False when the schema exists, None once it created it.
            created = super().create_schema(check_if_exists, sync_schema, verbosity) is not False
        elif check_if_exists and schema_exists(self.schema_name):
            return False
        else:
            _check_schema_name(self.schema_name)
            schema_clone(base, self.schema_name, row_security=not citus_enabled())
            created = cloned = True
        if created and citus_enabled():
            schema_distribute(self.schema_name, row_security=not cloned)
        connection.set_schema_to_public()
        return created


class Domain(DomainMixin):
    objects: ClassVar[models.Manager[Domain]]  # see Tenant.objects
    tenant: Tenant
    domain: str
    is_primary: bool


# --- Plans and per-tenant quota overrides --------------------------------------------------------
# Limits are enforced only by core.quotas. NULL means "unlimited" on a Plan and "use the plan" on an
# override. Sanity bounds (no negatives, no absurd values) are validated here and in core.quotas.

QUOTA_FIELD_MAX = {
    "max_active_agents": 100_000,
    "max_kb_storage_bytes": 10 * 1024**5,  # 10 PiB
    "max_documents_per_month": 100_000_000,
    "max_api_calls_per_month": 10_000_000_000,
    "max_llm_tokens_per_month": 1_000_000_000_000,
    "max_concurrent_runs": 10_000,
}


def _quota_bounds(field_name: str):
    return [MinValueValidator(0), MaxValueValidator(QUOTA_FIELD_MAX[field_name])]


class QuotaLimits(models.Model):
    """The limits a Plan sets and a TenantQuota may override, one definition for both."""

    max_active_agents = models.BigIntegerField(null=True, blank=True, validators=_quota_bounds("max_active_agents"))
    max_kb_storage_bytes = models.BigIntegerField(
        null=True, blank=True, validators=_quota_bounds("max_kb_storage_bytes")
    )
    max_documents_per_month = models.BigIntegerField(
        null=True, blank=True, validators=_quota_bounds("max_documents_per_month")
    )
    max_api_calls_per_month = models.BigIntegerField(
        null=True, blank=True, validators=_quota_bounds("max_api_calls_per_month")
    )
    max_llm_tokens_per_month = models.BigIntegerField(
        null=True, blank=True, validators=_quota_bounds("max_llm_tokens_per_month")
    )
    max_llm_cost_per_month = models.DecimalField(
        max_digits=12, decimal_places=4, null=True, blank=True, help_text="USD per month."
    )
    max_concurrent_runs = models.BigIntegerField(null=True, blank=True, validators=_quota_bounds("max_concurrent_runs"))
    # Per endpoint group, e.g. {"chat": "30/m"}; per principal. Missing groups use settings.RATE_LIMITS.
    rate_limits = models.JSONField(default=dict, blank=True)

    class Meta:
        abstract = True
        constraints = [
            models.CheckConstraint(
                condition=models.Q(max_active_agents__gte=0)
                & models.Q(max_kb_storage_bytes__gte=0)
                & models.Q(max_documents_per_month__gte=0)
                & models.Q(max_api_calls_per_month__gte=0)
                & models.Q(max_llm_tokens_per_month__gte=0)
                & models.Q(max_llm_cost_per_month__gte=0)
                & models.Q(max_concurrent_runs__gte=0),
                name="%(class)s_non_negative",
                violation_error_message="Quota limits cannot be negative.",
            ),
        ]


class Plan(QuotaLimits):
    """A commercial plan: default limits for every tenant on it (public schema)."""

    slug = models.SlugField(max_length=40, unique=True)
    name = models.CharField(max_length=100)
    is_default = models.BooleanField(default=False, help_text="Plan of tenants that have none assigned.")

    class Meta(QuotaLimits.Meta):
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.name


class TenantQuota(QuotaLimits):
    """A tenant's plan plus staff overrides of single limits (edited in the Django admin)."""

    tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="quota")
    plan = models.ForeignKey(Plan, null=True, blank=True, on_delete=models.PROTECT, related_name="tenants")
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"quota of {self.tenant}"
