"""Agents, their immutable versions, provider credentials, tools, conversations and messages (tenant schema).

`Message` is a month-partitioned PostgreSQL table (see migration 0002): Django sees `id` as the primary key,
the database's key is (id, created) because a partitioned table's key must contain the partition column.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from core.models import SharedResource


class ProviderKind(models.TextChoices):
    OFFLINE = "offline", "Built-in offline (no network)"
    OPENAI = "openai", "OpenAI-compatible"
    ANTHROPIC = "anthropic", "Anthropic"


class ProviderCredential(models.Model):
    """An LLM endpoint and its key, per tenant. The key is Fernet-encrypted and never leaves through the API."""

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=20, choices=ProviderKind.choices)
    base_url = models.URLField(max_length=500, blank=True)
    api_key_encrypted = models.TextField(blank=True)
    default_model = models.CharField(max_length=200, blank=True)
    enabled = models.BooleanField(default=True)
    timeout_seconds = models.PositiveIntegerField(default=60)
    # Users (public schema) are referenced without a database foreign key, here and below: core/models.py says why.
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+", db_constraint=False
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ApprovedHost(models.Model):
    """Hosts a tenant admin allows the built-in HTTP request tool to call."""

    host = models.CharField(max_length=253, unique=True)
    note = models.CharField(max_length=200, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+", db_constraint=False
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["host"]


class CustomTool(models.Model):
    """HTTP tools a tenant defines from an OpenAPI document (or an integration template)."""

    name = models.SlugField(max_length=60, unique=True)
    description = models.CharField(max_length=500, blank=True)
    template = models.CharField(max_length=40, blank=True)  # "slack_webhook", "rest", "" = raw OpenAPI
    openapi = models.JSONField(default=dict)
    secrets_encrypted = models.TextField(blank=True)  # Fernet token of a JSON object
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+", db_constraint=False
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]


# What people read for the built-in agent types (plugins' types show their registered name).
AGENT_TYPE_LABELS = {
    "rag": "Answers from knowledge",
    "tools": "Knowledge and tools",
    "echo": "Echo (for testing)",
}


class Agent(SharedResource):
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    agent_type = models.CharField(max_length=60, default="rag")
    provider = models.ForeignKey(ProviderCredential, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    model = models.CharField(max_length=200, blank=True)
    system_prompt = models.TextField(blank=True)
    # temperature, top_p, max_tokens, stop
    sampling = models.JSONField(default=dict, blank=True)
    knowledge_bases = models.ManyToManyField("knowledge.KnowledgeBase", blank=True, related_name="agents")
    retrieval = models.JSONField(default=dict, blank=True)  # top_k, min_score
    tools = models.JSONField(default=list, blank=True)  # ["knowledge_search", {"name": "http_request"}, ...]
    limits = models.JSONField(default=dict, blank=True)  # see agents.runtime.limits.DEFAULT_LIMITS
    is_enabled = models.BooleanField(default=True)
    current_version = models.ForeignKey(
        "AgentVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def agent_type_label(self) -> str:
        return AGENT_TYPE_LABELS.get(self.agent_type, self.agent_type)


class AgentVersion(models.Model):
    """An immutable snapshot of an agent's whole configuration. Written only by agents.services."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    config = models.JSONField()
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+", db_constraint=False
    )
    note = models.CharField(max_length=500, blank=True)
    restored_from = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-number"]
        constraints = [models.UniqueConstraint(fields=["agent", "number"], name="agent_version_unique_number")]


class Conversation(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="conversations")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+", db_constraint=False
    )
    title = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]


class MessageStatus(models.TextChoices):
    COMPLETE = "complete", "Complete"
    INCOMPLETE = "incomplete", "Incomplete"
    STREAMING = "streaming", "Streaming"


class Message(models.Model):
    """One turn. Stored in a month-partitioned table (migration 0002 creates it with raw SQL)."""

    id = models.BigAutoField(primary_key=True)
    created = models.DateTimeField()
    conversation = models.ForeignKey(
        Conversation, on_delete=models.DO_NOTHING, related_name="messages", db_constraint=False
    )
    role = models.CharField(max_length=12)  # user, assistant, tool, system
    content = models.TextField(blank=True)
    citations = models.JSONField(default=list, blank=True)
    tool_calls = models.JSONField(default=list, blank=True)
    usage = models.JSONField(default=dict, blank=True)  # input_tokens, output_tokens
    latency_ms = models.IntegerField(null=True, blank=True)
    first_token_ms = models.IntegerField(null=True, blank=True)
    agent_version = models.ForeignKey(
        AgentVersion, null=True, blank=True, on_delete=models.DO_NOTHING, related_name="+", db_constraint=False
    )
    kb_versions = models.JSONField(default=dict, blank=True)  # {"<kb id>": version}
    status = models.CharField(max_length=12, choices=MessageStatus.choices, default=MessageStatus.COMPLETE)
    error = models.JSONField(default=dict, blank=True)
    run_id = models.UUIDField(null=True, blank=True)
    # Regenerating an answer adds an alternative instead of a new turn: each alternative points at the turn's
    # first answer (null on that one). The newest alternative is what later turns see as the history.
    alternative_of = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        related_name="+",
        db_constraint=False,
        db_index=False,
    )

    class Meta:
        ordering = ["created", "id"]
        managed = True
