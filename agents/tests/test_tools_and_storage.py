"""Tools (SSRF guard, OpenAPI custom tools, integration templates, webhook), secrets encryption with key rotation,
the month-partitioned message table, and the plugin registry."""

import asyncio
import datetime as dt
import json

import pytest
from cryptography.fernet import Fernet
from django.db import connection
from django_tenants.utils import tenant_context

from agents.tools.base import ToolContext, run_tool
from agents.tools.builtin import HttpRequestTool, WebhookTool
from agents.tools.openapi import rest_template, slack_webhook_template, tools_for_custom

from .fakes import FakeHTTPTarget

CTX = ToolContext(schema="t_acme", agent_id=1, run_id="r")


def run(tool, arguments, ctx=CTX):
    return asyncio.run(run_tool(tool, json.dumps(arguments), ctx))


@pytest.mark.django_db
def test_http_tools_refuse_private_and_loopback_targets_without_the_operators_allowance(tenant_a, settings):
    from agents.models import ApprovedHost

    settings.SSRF_ALLOWED_NETWORKS = []
    with tenant_context(tenant_a):
        ApprovedHost.objects.create(host="127.0.0.1")
    for url in ("http://127.0.0.1:9/", "http://169.254.169.254/latest/meta-data/", "http://10.0.0.5/"):
        outcome = run(WebhookTool(url=url), {"payload": {"x": 1}})
        assert outcome.error["code"] == "unsafe_url", url
    # http_request also needs the host to be approved by a tenant admin.
    outcome = run(HttpRequestTool(), {"method": "GET", "url": "http://example.org/"})
    assert outcome.error["code"] == "host_not_approved"


def test_openapi_custom_tool_calls_the_api_with_its_secret_header(settings):
    settings.SSRF_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    with FakeHTTPTarget([{"json": {"id": 7, "status": "shipped"}}]) as target:
        document, secrets = rest_template(
            base_url=target.url,
            auth_header="Authorization",
            auth_value="Bearer s3cret",
            operations=[
                {
                    "name": "get_order",
                    "method": "get",
                    "path": "/orders/{order_id}",
                    "query": ["expand"],
                    "description": "Fetch one order",
                }
            ],
        )

        class Custom:
            name = "shop"
            openapi = document

        [tool] = tools_for_custom(Custom, secrets)
        assert tool.name == "shop__get_order" and tool.parameters["required"] == ["order_id"]
        outcome = run(tool, {"order_id": "A/7", "expand": "items"})
        bad = run(tool, {"expand": "items"})
    assert outcome.ok and json.loads(outcome.content)["status"] == 200
    sent = target.requests[0]
    assert sent["path"] == "/orders/A%2F7?expand=items"
    assert sent["headers"]["authorization"] == "Bearer s3cret"
    assert bad.error["code"] == "invalid_arguments"


def test_slack_template_posts_to_the_secret_webhook_url(settings):
    settings.SSRF_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    with FakeHTTPTarget([{"json": {"ok": True}}]) as target:
        document, secrets = slack_webhook_template(webhook_url="https://hooks.slack.com/services/T/B/X")
        secrets["base_url"] = target.url + "/services/T/B/X"  # the fake stands in for hooks.slack.com

        class Custom:
            name = "slack"
            openapi = document

        [tool] = tools_for_custom(Custom, secrets)
        outcome = run(tool, {"body": {"text": "Deploy finished"}})
    assert outcome.ok
    assert target.requests[0]["path"] == "/services/T/B/X" and target.requests[0]["body"] == {"text": "Deploy finished"}
    assert "hooks.slack.com/services/T/B/X" not in json.dumps(document)  # the URL lives only in the secrets


def test_custom_tool_api_stores_secrets_encrypted(live):
    from agents.models import CustomTool

    client = live.client()
    response = client.post(
        "/api/v1/custom-tools/",
        {
            "template": "slack_webhook",
            "name": "alerts",
            "params": {"webhook_url": "https://hooks.slack.com/services/1"},
        },
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    with tenant_context(live.tenant_a):
        tool = live.track(live.tenant_a, CustomTool.objects.get(pk=response.json()["id"]))
        assert "hooks.slack.com/services/1" not in tool.secrets_encrypted
    listing = client.get("/api/v1/custom-tools/").content.decode()
    assert "services/1" not in listing and '"has_secrets":true' in listing
    agent = client.post(
        "/api/v1/agents/",
        {"name": "notifier", "agent_type": "tools", "tools": [{"custom_tool": "alerts"}]},
        content_type="application/json",
    )
    assert agent.status_code == 201
    live.track(live.tenant_a, _agent(live, agent.json()["id"]))
    bad = client.post(
        "/api/v1/custom-tools/", {"name": "x", "openapi": {"openapi": "2.0"}}, content_type="application/json"
    )
    assert bad.status_code == 400 and bad.json()["field"] == "openapi"


def _agent(live, pk):
    from agents.models import Agent

    with tenant_context(live.tenant_a):
        return Agent.objects.get(pk=pk)


def test_secrets_survive_key_rotation(live, settings):
    from agents.models import ProviderCredential
    from agents.services import secrets_rotate
    from core.crypto import decrypt_str

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEYS = [old]
    provider = live.provider(name="rotating", api_key="sk-rotate-me")
    settings.FIELD_ENCRYPTION_KEYS = [new, old]  # new first: encrypts; old still decrypts
    with tenant_context(live.tenant_a):
        before = ProviderCredential.objects.get(pk=provider.pk).api_key_encrypted
        assert decrypt_str(before) == "sk-rotate-me"
        assert secrets_rotate() >= 1
        after = ProviderCredential.objects.get(pk=provider.pk).api_key_encrypted
    settings.FIELD_ENCRYPTION_KEYS = [new]  # old key retired
    assert after != before and decrypt_str(after) == "sk-rotate-me"


@pytest.mark.django_db
def test_messages_live_in_a_month_partitioned_table_with_a_conversation_index(tenant_a, admin_a):
    from agents.models import Conversation, Message
    from agents.partitions import message_partitions_ensure, message_partitions_list, partition_name
    from agents.services import agent_create
    from iam.policy import Principal

    with tenant_context(tenant_a):
        with connection.cursor() as cursor:
            cursor.execute("SELECT relkind FROM pg_class WHERE oid = 'agents_message'::regclass")
            assert cursor.fetchone()[0] == "p"  # partitioned
            cursor.execute("SELECT indexdef FROM pg_indexes WHERE tablename = 'agents_message'")
            assert any("(conversation_id, created)" in row[0] for row in cursor.fetchall())
        partitions = message_partitions_list()
        this_month = dt.datetime.now(dt.UTC).date().replace(day=1)
        assert partition_name(this_month) in partitions and "agents_message_default" in partitions
        agent = agent_create(principal=Principal(tenant=tenant_a, user=admin_a, role="admin"), data={"name": "p"})
        conversation = Conversation.objects.create(agent=agent, user=admin_a)
        far = dt.datetime(2031, 5, 17, tzinfo=dt.UTC)
        Message.objects.create(created=far, conversation=conversation, role="user", content="from the future")
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM agents_message_default")
            assert cursor.fetchone()[0] == 1
        # Preparing that month moves the row out of the default partition into its own.
        created = message_partitions_ensure(months_ahead=0, today=far.date())
        assert created == ["agents_message_p2031_05"]
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM agents_message_p2031_05")
            assert cursor.fetchone()[0] == 1
        assert Message.objects.get(conversation=conversation).content == "from the future"


def test_registry_loads_the_example_plugin_through_its_entry_point():
    from agents.registry import get_registry, reset_registry

    reset_registry()
    registry = get_registry()
    assert registry.plugins == {"example": "loaded"}
    assert registry.sources["tool:word_count"] == "example" and registry.sources["agent_type:echo"] == "example"
    assert registry.sources["tool:knowledge_search"] == "builtin" and "rag" in registry.agent_types


def test_a_plugin_agent_type_streams_through_the_runtime(live):
    from .conftest import events_of, run_inline
    from .test_runtime import chat

    agent = live.agent(agent_type="echo")
    handles = chat(live, agent, "echo these four words")
    run_inline(live.tenant_a, handles["run_id"])
    tokens = [e["data"]["text"] for e in events_of(live.tenant_a, handles["run_id"]) if e["type"] == "token"]
    assert "".join(tokens) == "echo these four words"
