"""core.tenancy: the one home of tenant context."""

from django.db import connection

from core.context import current_tenant
from core.tenancy import for_each_tenant, in_tenant, tenant_key


def test_in_tenant_switches_schema_and_log_label_and_restores_both(tenant_a, tenant_b):
    connection.set_schema_to_public()
    label_before = current_tenant.get()
    with in_tenant(tenant_a):
        assert connection.schema_name == tenant_a.schema_name
        assert current_tenant.get() == tenant_a.schema_name
        with in_tenant(tenant_b.schema_name):
            assert connection.schema_name == tenant_b.schema_name
            assert current_tenant.get() == tenant_b.schema_name
        assert connection.schema_name == tenant_a.schema_name
        assert current_tenant.get() == tenant_a.schema_name
    assert connection.schema_name == "public"
    assert current_tenant.get() == label_before


def test_for_each_tenant_runs_the_body_in_every_organisation_but_not_public(tenant_a, tenant_b):
    seen = {}
    for schema in for_each_tenant():
        seen[schema] = connection.schema_name
    assert seen[tenant_a.schema_name] == tenant_a.schema_name
    assert seen[tenant_b.schema_name] == tenant_b.schema_name
    assert "public" not in seen
    assert connection.schema_name == "public"


def test_tenant_key_names_the_current_schema_unless_given(tenant_a):
    with in_tenant(tenant_a):
        assert tenant_key("kb", 5, "vectors") == f"kb:{tenant_a.schema_name}:5:vectors"
    assert tenant_key("events", schema="other") == "events:other"
