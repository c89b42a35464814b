"""Webhook signing secrets at rest: encrypted like provider keys, readable after a key rotation, and encrypted in
place by the migration for endpoints saved before."""

from __future__ import annotations

import io

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django_tenants.utils import tenant_context

from core.crypto import decrypt_str
from webhooks import services
from webhooks.models import WebhookEndpoint

pytestmark = pytest.mark.django_db


@pytest.fixture
def allow_loopback(settings):
    settings.SSRF_ALLOWED_NETWORKS = ["127.0.0.1/32"]


def _stored(endpoint_id: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT secret_encrypted FROM webhooks_webhookendpoint WHERE id = %s", [endpoint_id])
        return cursor.fetchone()[0]


def test_signing_secret_is_encrypted_at_rest_and_shown_to_admins(
    client_a, admin_a, tenant_a, principal_a, allow_loopback
):
    client_a.force_login(admin_a)
    response = client_a.post(
        "/api/v1/webhooks/endpoints/",
        {"url": "http://127.0.0.1:9/hooks", "event_types": ["agent.created"]},
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    secret = response.json()["secret"]
    assert secret.startswith("whsec_") and len(secret) > 40
    with tenant_context(tenant_a):
        stored = _stored(response.json()["id"])
        assert secret not in stored and "whsec_" not in stored
        assert decrypt_str(stored) == secret
        assert WebhookEndpoint.objects.get(pk=response.json()["id"]).secret == secret


def test_rotate_secrets_re_encrypts_signing_secrets_with_the_new_first_key(
    tenant_a, principal_a, allow_loopback, settings
):
    old_key, new_key = settings.FIELD_ENCRYPTION_KEYS[0], Fernet.generate_key().decode()
    with tenant_context(tenant_a):
        endpoint = services.endpoint_create(principal=principal_a, url="http://127.0.0.1:9/h", event_types=["*"])
        secret, before = endpoint.secret, _stored(endpoint.pk)
    settings.FIELD_ENCRYPTION_KEYS = [new_key, old_key]  # the new key encrypts, the old one still decrypts
    call_command("rotate_secrets", stdout=io.StringIO())
    with tenant_context(tenant_a):
        after = _stored(endpoint.pk)
        assert after != before
        settings.FIELD_ENCRYPTION_KEYS = [new_key]  # the old key dropped: still readable
        assert WebhookEndpoint.objects.get(pk=endpoint.pk).secret == secret
        assert Fernet(new_key.encode()).decrypt(after.encode()).decode() == secret


def test_the_migration_encrypts_secrets_saved_in_clear_before_it(tenant_a):
    with tenant_context(tenant_a):
        executor = MigrationExecutor(connection)
        executor.migrate([("webhooks", "0001_initial")])  # as before: the secret in clear (rolled back with the test)
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO webhooks_webhookendpoint (url, description, event_types, secret, is_active, "
                "disabled_reason, consecutive_failures, created_at, updated_at) VALUES "
                "('https://example.com/h', '', '[\"*\"]', 'whsec_saved_in_clear', true, '', 0, now(), now()) "
                "RETURNING id"
            )
            endpoint_id = cursor.fetchone()[0]
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # no pending trigger events before the ALTER TABLEs
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes("webhooks"))
        stored = _stored(endpoint_id)
        assert "whsec_saved_in_clear" not in stored
        assert WebhookEndpoint.objects.get(pk=endpoint_id).secret == "whsec_saved_in_clear"
