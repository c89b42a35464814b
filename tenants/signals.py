"""Any change to a tenant or its domains clears this process's host -> tenant cache (tenants.selectors); any change to
a plan or a staff override moves the quota-limits epoch (core.quotas)."""

from django.db.models.signals import post_delete, post_save
from django.dispatch import Signal, receiver

from core.quotas import limits_cache_clear

from .models import Domain, Plan, Tenant, TenantQuota
from .selectors import tenant_host_cache_clear

# Sent once an organisation's schema is dropped and committed (kwargs: schema): apps delete what they keep
# outside the database.
tenant_schema_dropped = Signal()


@receiver([post_save, post_delete], sender=Tenant)
@receiver([post_save, post_delete], sender=Domain)
def _forget_hosts(**kwargs) -> None:
    tenant_host_cache_clear()


@receiver([post_save, post_delete], sender=Plan)
@receiver([post_save, post_delete], sender=TenantQuota)
def _limits_changed(**kwargs) -> None:
    limits_cache_clear()  # every process reads the new limits at its next check (core.quotas)
