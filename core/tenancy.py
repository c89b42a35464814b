"""Which tenant: the one home for tenant context, iteration over tenants, tenant-scoped keys and tenant URLs.

Code outside the request cycle (tasks, consumers' database threads, commands) runs queries in a tenant's schema
with `in_tenant(...)`; periodic work visits every organisation with `for_each_tenant()`; any Redis key, cache key,
channel group or file prefix that holds tenant data is built with `tenant_key(...)`, so it names its schema.
The kernel knows tenants only through django-tenants' configured model (get_tenant_model), never the tenants app.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol, cast

from django.conf import settings
from django.db import connection
from django_tenants.utils import get_public_schema_name, get_tenant_model, schema_context, tenant_context

from .context import current_tenant


class TenantRecord(Protocol):
    """An organisation as code below the tenants app sees it (an instance of django-tenants' tenant model)."""

    pk: Any
    schema_name: str
    slug: str
    name: str


@contextmanager
def in_tenant(tenant_or_schema: TenantRecord | str) -> Iterator[None]:
    """Run the block in one organisation's schema (a Tenant or a schema name), and label its log lines with it.

    Threads that database_sync_to_async starts begin on `public` (django-tenants #518): consumers wrap their
    database work in this too."""
    if isinstance(tenant_or_schema, str):
        schema, switch = tenant_or_schema, schema_context(tenant_or_schema)
    else:
        schema, switch = tenant_or_schema.schema_name, tenant_context(tenant_or_schema)
    token = current_tenant.set(schema)
    try:
        with switch:
            yield
    finally:
        current_tenant.reset(token)


def tenant_list() -> list[TenantRecord]:
    """Every organisation (not the public tenant), read in the public schema."""
    with schema_context(get_public_schema_name()):
        return list(get_tenant_model().objects.exclude(schema_name=get_public_schema_name()).order_by("pk"))


def for_each_tenant() -> Iterator[str]:
    """Yield each organisation's schema name with the loop's body running inside that organisation."""
    for tenant in tenant_list():
        with in_tenant(tenant):
            yield tenant.schema_name


class TenantConnection(Protocol):
    """What django-tenants' database backend adds to Django's connection (the stubs know only Django's wrapper)."""

    schema_name: str
    tenant: Any  # the configured tenant model's instance, or django-tenants' FakeTenant for a bare schema
    search_path_set_schemas: list[str] | None  # the path the session holds; None: set it before the next query

    def set_schema_to_public(self) -> None: ...


def tenant_connection() -> TenantConnection:
    # cast: settings.DATABASES uses django_tenants.postgresql_backend, whose wrapper has these attributes; django-stubs
    # types `connection` as Django's BaseDatabaseWrapper.
    return cast(TenantConnection, connection)


def current_schema() -> str:
    return tenant_connection().schema_name


def tenant_key(namespace: str, *parts: object, schema: str | None = None) -> str:
    """`<namespace>:<schema>:<part>...`: a Redis key, cache key or channel group of one organisation's data, naming
    its schema (default: the current one). The namespace comes first so one feature's keys scan together."""
    return ":".join([namespace, schema or current_schema(), *(str(part) for part in parts)])


def _port() -> str:
    return f":{settings.PUBLIC_PORT}" if settings.PUBLIC_PORT not in ("", "80", "443") else ""


def public_site_url() -> str:
    """Absolute URL of the public site (sign-up, landing), e.g. http://localhost:8000."""
    return f"{settings.PUBLIC_SCHEME}://{settings.BASE_DOMAIN}{_port()}"


def tenant_domain_for(slug: str) -> str:
    return f"{slug}.{settings.BASE_DOMAIN}"


def tenant_url(tenant: TenantRecord, path: str = "/") -> str:
    """Absolute URL of a page on an organisation's own host."""
    return f"{settings.PUBLIC_SCHEME}://{tenant_domain_for(tenant.slug)}{_port()}{path}"
