"""The Models page: admins connect an OpenAI-compatible server or Anthropic and test the connection (against the
loopback fakes speaking the real wire protocols); other members are refused; offline agents' chat says so."""

from __future__ import annotations

import pytest
from django.test import Client
from django_tenants.utils import tenant_context

from accounts.models import Membership, Role, User
from agents.models import ProviderCredential
from agents.services import agent_create
from core.crypto import decrypt_str
from iam.policy import Principal

from .fakes import FakeAnthropic, FakeOpenAI

pytestmark = pytest.mark.django_db


@pytest.fixture
def loopback_allowed(settings):
    settings.SSRF_ALLOWED_NETWORKS = ["127.0.0.0/8"]  # the operator allows the loopback fake servers


def _member(tenant, role: str) -> User:
    user = User.objects.create_user(email=f"{role}-models@acme.test", password="x-Passw0rd-long")
    Membership.objects.create(user=user, tenant=tenant, role=role)
    return user


def _test_saved(client: Client, provider: ProviderCredential) -> dict:
    response = client.post(f"/manage/providers/{provider.pk}/", {"action": "test"}, HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    return response.json()


@pytest.mark.parametrize("role", [Role.READONLY, Role.USER])
def test_members_who_are_not_admins_are_refused_the_models_page(client_a, tenant_a, role):
    client_a.force_login(_member(tenant_a, role))
    assert client_a.get("/manage/providers/").status_code == 403
    response = client_a.post(
        "/manage/providers/",
        {"intent": "save", "name": "sneaky", "kind": "openai", "base_url": "https://api.example.com/v1"},
    )
    assert response.status_code == 403
    with tenant_context(tenant_a):
        assert not ProviderCredential.objects.filter(name="sneaky").exists()


def test_an_admin_connects_an_openai_compatible_server_with_its_key_stored_encrypted(
    client_a, admin_a, tenant_a, loopback_allowed
):
    client_a.force_login(admin_a)
    page = client_a.get("/manage/providers/").content.decode()
    assert '<h2 class="h5">Connect a model</h2>' in page and "Test connection" in page
    assert "<script>" not in page and " onclick=" not in page  # strict CSP: behaviour lives in static/js
    with FakeOpenAI() as fake:
        response = client_a.post(
            "/manage/providers/",
            {
                "intent": "save",
                "name": "Local Ollama",
                "kind": "openai",
                "base_url": fake.url + "/v1",
                "api_key": "sk-local-secret",
                "default_model": "llama3.1",
            },
        )
        assert response.status_code == 302
        with tenant_context(tenant_a):
            provider = ProviderCredential.objects.get(name="Local Ollama")
            assert provider.api_key_encrypted and "sk-local-secret" not in provider.api_key_encrypted
            assert decrypt_str(provider.api_key_encrypted) == "sk-local-secret"
            result = _test_saved(client_a, provider)
        assert result["ok"] is True and isinstance(result["latency_ms"], int)
        assert "llama3.1" in result["message"]
        sent = fake.requests[-1]
        assert sent["path"] == "/v1/chat/completions" and sent["body"]["max_tokens"] == 1
        assert sent["body"]["model"] == "llama3.1" and sent["headers"]["authorization"] == "Bearer sk-local-secret"


def test_test_connection_reports_a_rejected_key_clearly(client_a, admin_a, tenant_a, loopback_allowed):
    client_a.force_login(admin_a)
    with FakeOpenAI([{"status": 401}]) as fake, tenant_context(tenant_a):
        provider = ProviderCredential.objects.create(
            name="bad key", kind="openai", base_url=fake.url + "/v1", default_model="gpt-4o-mini"
        )
        result = _test_saved(client_a, provider)
    assert result == {"ok": False, "message": "The provider rejected the API key.", "latency_ms": None}


def test_test_connection_speaks_anthropic_before_anything_is_saved(client_a, admin_a, tenant_a, loopback_allowed):
    client_a.force_login(admin_a)
    with FakeAnthropic() as fake:
        page = client_a.post(
            "/manage/providers/",
            {
                "intent": "test",
                "kind": "anthropic",
                "base_url": fake.url,
                "api_key": "sk-ant-test",
                "default_model": "claude-test-model",
            },
        ).content.decode()
        assert fake.requests[-1]["path"] == "/v1/messages"
        headers = fake.requests[-1]["headers"]  # the SDK sends the key one way or the other, by version
        assert headers.get("x-api-key") == "sk-ant-test" or headers.get("authorization") == "Bearer sk-ant-test"
    assert "Connection works." in page and "claude-test-model answered in" in page
    with tenant_context(tenant_a):
        assert not ProviderCredential.objects.exists()  # testing saves nothing


def test_test_connection_refuses_an_internal_address_the_operator_did_not_allow(client_a, admin_a, settings):
    settings.SSRF_ALLOWED_NETWORKS = []
    client_a.force_login(admin_a)
    with FakeOpenAI() as fake:
        page = client_a.post(
            "/manage/providers/",
            {"intent": "test", "kind": "openai", "base_url": fake.url + "/v1", "default_model": "m"},
        ).content.decode()
        assert fake.requests == []
    assert "Connection failed." in page and "The provider URL is not allowed" in page


def test_test_connection_without_a_model_name_says_what_is_missing(client_a, admin_a):
    client_a.force_login(admin_a)
    page = client_a.post(
        "/manage/providers/", {"intent": "test", "kind": "openai", "base_url": "https://api.openai.com/v1"}
    ).content.decode()
    assert "Connection failed." in page and "Give a model name" in page


def test_the_chat_of_an_offline_agent_says_answers_are_extracts_and_links_to_models(client_a, admin_a, tenant_a):
    principal = Principal(tenant=tenant_a, user=admin_a, role=Role.ADMIN)
    with tenant_context(tenant_a):
        offline = agent_create(principal=principal, data={"name": "Offline helper"})
        provider = ProviderCredential.objects.create(name="hosted", kind="openai", default_model="gpt-4o-mini")
        hosted = agent_create(principal=principal, data={"name": "Hosted helper", "provider_id": provider.pk})
    client_a.force_login(admin_a)
    page = client_a.get(f"/agents/{offline.pk}/chat/").content.decode()
    assert "Answers here are extracts from your documents" in page
    assert 'href="/manage/providers/">Connect a model</a>' in page
    assert "extracts from your documents" not in client_a.get(f"/agents/{hosted.pk}/chat/").content.decode()
