import threading
import time

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from core.tenancy import tenant_connection

from .models import Domain, Tenant

_hosts: dict[str, tuple[Tenant, float]] = {}
_hosts_lock = threading.Lock()


def tenant_list_for_user(*, user: AbstractBaseUser) -> QuerySet[Tenant]:
    return Tenant.objects.filter(memberships__user=user).exclude(schema_name="public").order_by("slug")


def tenant_get_by_slug(*, slug: str) -> Tenant | None:
    return Tenant.objects.exclude(schema_name="public").filter(slug=slug).first()


def tenant_for_host_cached(hostname: str) -> Tenant | None:
    """tenant_for_host's answer while it is cached, else None: no database, so async code may call it (a WebSocket
    handshake then needs no thread hop to learn its tenant)."""
    if getattr(settings, "TENANT_HOST_CACHE_SECONDS", 0) <= 0:
        return None
    with _hosts_lock:
        hit = _hosts.get(hostname)
    return hit[0] if hit is not None and hit[1] > time.monotonic() else None


def tenant_for_host(hostname: str) -> Tenant | None:
    """The tenant served at `hostname` (HTTP and WebSocket), cached per process for TENANT_HOST_CACHE_SECONDS:
    the lookup is the only database work of a bare request, and skipping it halves that request's cost under
    ASGI (no pooled connection checked out). Local changes clear the cache at once (tenants.signals); other
    processes see a deleted or re-pointed domain within the TTL. Unknown hosts are never cached."""
    cached = tenant_for_host_cached(hostname)
    if cached is not None:
        return cached
    ttl = getattr(settings, "TENANT_HOST_CACHE_SECONDS", 0)
    now = time.monotonic()
    tenant_connection().set_schema_to_public()
    domain = Domain.objects.select_related("tenant").filter(domain=hostname).first()
    if domain is None:
        return None
    if ttl > 0:
        with _hosts_lock:
            _hosts[hostname] = (domain.tenant, now + ttl)
    return domain.tenant


def tenant_host_cache_clear() -> None:
    with _hosts_lock:
        _hosts.clear()
