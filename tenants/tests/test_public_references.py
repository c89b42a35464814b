"""Organisation schemas reference users (public schema) without database foreign keys (core/models.py says why), and
what relied on those keys finds the references another way: backups through the models, Citus likewise."""

from __future__ import annotations

import pytest
from django.apps import apps
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, models
from django.test import Client

from backups.archive import user_columns, user_references
from tenants.citus import public_tables_referenced
from tenants.cloning import quoted, schema_clone

USER_TABLE = "accounts_user"
_FOREIGN_KEYS_OUT_OF = """
SELECT c.relname, k.conname, k.confrelid::regclass::text FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
JOIN pg_class r ON r.oid = k.confrelid
WHERE k.contype = 'f' AND c.relnamespace = %s::regnamespace AND r.relnamespace <> c.relnamespace
"""
_USER_TABLE_TRIGGERS = "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.accounts_user'::regclass"


def _tenant_models() -> list[type[models.Model]]:
    shared_only = {config.label for config in apps.get_app_configs() if config.name not in settings.TENANT_APPS}
    return [m for m in apps.get_models(include_auto_created=True) if m._meta.app_label not in shared_only]


def test_every_relation_from_a_tenant_model_to_a_public_one_has_no_database_constraint():
    tenant_labels = {m._meta.app_label for m in _tenant_models()}
    outward = [
        (model._meta.label, reference.name, reference.db_constraint)
        for model in _tenant_models()
        for reference in model._meta.concrete_fields
        if isinstance(reference, models.ForeignKey) and reference.related_model._meta.app_label not in tenant_labels
    ]
    assert len(outward) >= 17  # owners, creators, authors, members... of agents, knowledge, iam, usage, webhooks
    assert [(label, name) for label, name, constrained in outward if constrained] == []
    # They all name users: the one public table backups map (by email) and Citus copies to every node.
    assert public_tables_referenced() == [USER_TABLE]


@pytest.mark.django_db
def test_a_new_organisation_schema_adds_no_foreign_key_or_trigger_to_the_users_table():
    with connection.cursor() as cursor:
        cursor.execute(_FOREIGN_KEYS_OUT_OF, [quoted(settings.TENANT_BASE_SCHEMA)])
        assert cursor.fetchall() == []
        cursor.execute(_USER_TABLE_TRIGGERS)
        (before,) = cursor.fetchone()
        schema_clone(settings.TENANT_BASE_SCHEMA, "t_no_user_keys")
        cursor.execute(_FOREIGN_KEYS_OUT_OF, [quoted("t_no_user_keys")])
        assert cursor.fetchall() == []
        cursor.execute(_USER_TABLE_TRIGGERS)
        assert cursor.fetchone()[0] == before  # provisioning cost no longer grows with the organisations


@pytest.mark.django_db
def test_backups_find_every_user_column_from_the_models():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_class c WHERE c.relnamespace = %s::regnamespace AND c.relkind IN ('r', 'p')"
            " AND NOT c.relispartition",
            [quoted(settings.TENANT_BASE_SCHEMA)],
        )
        tables = {row[0] for row in cursor.fetchall()}
    found = user_columns(tables)
    expected = {
        (model._meta.db_table, reference.column)
        for model in _tenant_models()
        for reference in model._meta.concrete_fields
        if isinstance(reference, models.ForeignKey) and reference.related_model is get_user_model()
    }
    assert {(table, column) for table, columns in found.items() for column in columns} == expected
    assert {
        ("agents_agent", "owner_id"),
        ("iam_apikey", "created_by_id"),
        ("knowledge_document", "uploaded_by_id"),
    } <= expected
    assert set(user_references(tables)) == expected


@pytest.mark.django_db
def test_platform_staff_cannot_delete_an_account_in_the_admin_only_tombstone_it(admin_a):
    staff = get_user_model().objects.create_superuser(email="staff-no-delete@example.test", password="Staff-pass-123")
    client = Client(HTTP_HOST=settings.BASE_DOMAIN)
    client.force_login(staff)
    response = client.post(f"/admin/accounts/user/{admin_a.pk}/delete/", {"post": "yes"})
    assert response.status_code == 403
    assert get_user_model().objects.filter(pk=admin_a.pk).exists()
