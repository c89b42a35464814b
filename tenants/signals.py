"""Any change to a tenant or its domains clears this process's host -> tenant cache (tenants.selectors)."""

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from .models import Domain, Tenant
from .selectors import tenant_host_cache_clear


@receiver([post_save, post_delete], sender=Tenant)
@receiver([post_save, post_delete], sender=Domain)
def _forget_hosts(**kwargs) -> None:
    tenant_host_cache_clear()
