"""Fixtures of the fault tests: committed rows in the session's test organisation (the product's processes must
see them), an API key to call it with, and the organisation dropped afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.db import connection
from django_tenants.utils import tenant_context


@dataclass
class Org:
    tenant: Any
    admin: Any
    key: str = ""

    @property
    def slug(self) -> str:
        return self.tenant.slug

    def principal(self):
        from iam.policy import Principal

        return Principal(tenant=self.tenant, user=self.admin, role="admin")


@pytest.fixture
def org(django_db_setup, django_db_blocker) -> Iterator[Org]:
    """An organisation of the test's own with an API key of every scope, in autocommit (no test transaction), dropped
    afterwards with everything in it: what the product's processes write for it (runs, usage, events) cannot leak
    into the other tests' organisations."""
    from accounts.models import User
    from iam.services import api_key_create
    from tenants.models import Tenant
    from tenants.services import tenant_create, tenant_delete

    slug = f"faults-{uuid.uuid4().hex[:8]}"
    with django_db_blocker.unblock():
        connection.set_schema_to_public()
        admin = User.objects.create_user(email=f"admin@{slug}.test", password=uuid.uuid4().hex)
        state = Org(tenant=tenant_create(name=f"Faults {slug}", slug=slug, owner=admin), admin=admin)
        with tenant_context(state.tenant):
            _key, state.key = api_key_create(
                principal=state.principal(), name="reliability", scopes=["read", "write", "chat", "admin"]
            )
        try:
            yield state
        finally:
            connection.set_schema_to_public()
            tenant_delete(tenant=state.tenant)
            # Django's cascade also visits per-tenant tables (memberships, API keys): run it in a schema that has them.
            with tenant_context(Tenant.objects.get(slug="acme")):
                User.objects.filter(pk=admin.pk).delete()
            connection.set_schema_to_public()


@pytest.fixture(autouse=True)
def _django_db_marker():
    """pytest-django's marker fixture, minus the wrapping transaction: the product's processes must see what a
    fault test writes, so it writes in autocommit in an organisation of its own (the `org` fixture). The
    tests carry the django_db marker only so that pytest-django creates the test database."""
