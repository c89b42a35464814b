"""What the agents API reads and answers: the request bodies and every response body of agents/apis.py.

The views answer through these serializers, so /api/v1/schema/ describes what the server really sends. A chat
run's events are the same over SSE, long-polling and WebSocket: `RunEventSerializer`.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from core.openapi import ErrorSerializer

from .runtime.stream import EVENT_TYPES

ORG_ACCESS = ["none", "viewer", "editor"]


class _KeepsUnlistedKeys(serializers.Serializer[dict[str, Any]]):
    """A payload whose listed keys are guaranteed and whose other keys (added by providers, plugins or newer
    versions) pass through unchanged."""

    def to_representation(self, instance: dict[str, Any]) -> dict[str, Any]:
        return {**instance, **super().to_representation(instance)}


class RunErrorSerializer(_KeepsUnlistedKeys, ErrorSerializer):
    """The error body (see Error), with any context keys it carries."""


# --- Agents --------------------------------------------------------------------------------------------


class AgentSerializer(serializers.Serializer[dict[str, Any]]):
    id = serializers.IntegerField()
    name = serializers.CharField()
    description = serializers.CharField()
    agent_type = serializers.CharField(help_text="An installed agent type (GET /agent-tools/): rag, tools, ...")
    provider_id = serializers.IntegerField(allow_null=True, help_text="LLM provider; null = the offline provider.")
    model = serializers.CharField()
    system_prompt = serializers.CharField()
    sampling = serializers.DictField(help_text="temperature, top_p, max_tokens ...")
    knowledge_base_ids = serializers.ListField(child=serializers.IntegerField())
    retrieval = serializers.DictField(help_text="top_k, min_score")
    tools = serializers.ListField(child=serializers.JSONField(), help_text="Tool names or {name, config}.")
    limits = serializers.DictField(help_text="max_tokens, context_tokens, run_timeout_seconds, ...")
    is_enabled = serializers.BooleanField()
    org_access = serializers.ChoiceField(choices=ORG_ACCESS)
    owner_id = serializers.IntegerField(allow_null=True)
    version = serializers.IntegerField(allow_null=True, help_text="Current configuration version.")
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class AgentListSerializer(serializers.Serializer[dict[str, Any]]):
    results = AgentSerializer(many=True)


class AgentVersionSerializer(serializers.Serializer[dict[str, Any]]):
    number = serializers.IntegerField()
    config = serializers.DictField(help_text="The agent's configuration at this version.")
    author_id = serializers.IntegerField(allow_null=True)
    note = serializers.CharField()
    restored_from = serializers.IntegerField(allow_null=True)
    created_at = serializers.DateTimeField()


class AgentVersionListSerializer(serializers.Serializer[dict[str, Any]]):
    results = AgentVersionSerializer(many=True)


class AgentVersionRestoreSerializer(serializers.Serializer[dict[str, Any]]):
    note = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")


class AgentRestoreToTimeSerializer(serializers.Serializer[dict[str, Any]]):
    at = serializers.DateTimeField(
        help_text="ISO-8601 time (without an offset: UTC). The version current then is restored as a new version."
    )
    note = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")


class ConfigChangeSerializer(serializers.Serializer[dict[str, Any]]):
    field = serializers.CharField(help_text="A configuration key, or key.subkey.")

    def get_fields(self) -> dict[str, Any]:
        # "from" is a Python keyword, so it cannot be a class attribute.
        return {**super().get_fields(), "from": serializers.JSONField(), "to": serializers.JSONField()}


class AgentVersionDiffSerializer(serializers.Serializer[dict[str, Any]]):
    changes = ConfigChangeSerializer(many=True)

    def get_fields(self) -> dict[str, Any]:
        return {"from": serializers.IntegerField(), "to": serializers.IntegerField(), **super().get_fields()}


# --- Chat ----------------------------------------------------------------------------------------------


class ChatInputSerializer(serializers.Serializer[dict[str, Any]]):
    message = serializers.CharField(
        trim_whitespace=False, allow_blank=True, help_text="The question (ignored, may be empty, with `regenerate`)."
    )
    conversation_id = serializers.CharField(
        required=False, allow_null=True, default=None, help_text="Continue this conversation (a UUID)."
    )
    regenerate = serializers.IntegerField(
        required=False,
        allow_null=True,
        default=None,
        help_text="Answer the latest question of `conversation_id` again instead of asking a new one: the id of "
        "one of its answers. The new answer is stored as another alternative of that turn (`alternative_of`); "
        "`message` is then ignored.",
    )
    wait = serializers.BooleanField(
        required=False,
        default=True,
        help_text="false: answer 202 at once with the run id, then read GET /runs/{run_id}/events/ "
        "(same as the header `Prefer: respond-async`).",
    )


class CitationSerializer(_KeepsUnlistedKeys):
    n = serializers.IntegerField(help_text="The [n] marker in the answer.")
    chunk_id = serializers.IntegerField(allow_null=True)
    document_id = serializers.IntegerField(allow_null=True)
    document_title = serializers.CharField()
    position = serializers.IntegerField(allow_null=True, help_text="The passage's position in its document.")
    score = serializers.FloatField()
    knowledge_base_id = serializers.IntegerField(allow_null=True)
    snippet = serializers.CharField()
    page_start = serializers.IntegerField(allow_null=True, help_text="First page of the passage (PDF, scans).")
    page_end = serializers.IntegerField(allow_null=True, help_text="Last page of the passage (PDF, scans).")
    section_path = serializers.ListField(
        child=serializers.CharField(), required=False, help_text='Headings above the passage: ["Install", "Upgrade"].'
    )


class ChatHandlesSerializer(serializers.Serializer[dict[str, Any]]):
    run_id = serializers.CharField(help_text="UUID of the run: its events, cancellation.")
    conversation_id = serializers.CharField()
    message_id = serializers.IntegerField(help_text="The answer's message id.")
    agent_version = serializers.IntegerField()
    queued_position = serializers.IntegerField(help_text="0: started at once; n: waits behind n-1 runs.")


class ChatAcceptedSerializer(ChatHandlesSerializer):
    events_url = serializers.CharField(help_text="Long-poll or stream the run's events here.")


class ChatAnswerSerializer(ChatHandlesSerializer):
    content = serializers.CharField(help_text="The whole answer.")
    citations = CitationSerializer(many=True)
    tool_calls = serializers.ListField(
        child=serializers.DictField(), help_text="tool.call and tool.result events' data, with their `type`."
    )
    status = serializers.CharField(help_text="complete, incomplete, cancelled or error.")
    usage = serializers.DictField(allow_null=True, help_text="input_tokens, output_tokens")
    timings = serializers.DictField(allow_null=True, help_text="first_token_ms, total_ms")
    kb_versions = serializers.DictField(
        child=serializers.IntegerField(), allow_null=True, help_text="The version of each knowledge base used."
    )
    error = RunErrorSerializer(allow_null=True)


class RunEventSerializer(serializers.Serializer[dict[str, Any]]):
    """One event of a run: the same over SSE (`id:` = seq, `event:` = type, `data:` = this object), long-polling
    and WebSocket. message.end is always the last."""

    seq = serializers.IntegerField(help_text="1, 2, 3 ...: resume after the last one seen.")
    type = serializers.ChoiceField(choices=list(EVENT_TYPES))
    run_id = serializers.CharField()
    data = serializers.DictField(
        help_text="token: {text}; citation: a Citation; tool.call: {id, name, arguments}; tool.result: "
        "{id, name, result | error}; message.start: {conversation_id, message_id, agent_id, agent_version_id}; "
        "message.end: {status, message_id, conversation_id, usage, kb_versions, finish_reason, timings}; "
        "error: an Error; run.queued: {position}."
    )
    ts = serializers.FloatField(help_text="Unix time the event was written.")


class RunEventsSerializer(serializers.Serializer[dict[str, Any]]):
    run_id = serializers.CharField()
    events = RunEventSerializer(many=True)
    next_after = serializers.IntegerField(help_text="Pass as `after` in the next poll.")
    done = serializers.BooleanField(help_text="true once message.end was delivered.")


class RunEventsQuerySerializer(serializers.Serializer[dict[str, Any]]):
    """GET /runs/{run_id}/events/ query parameters (an SSE client's Last-Event-ID header stands for `after`)."""

    # Event seqs are stream entry ids "0-<seq>": Redis refuses anything outside 64 bits.
    after = serializers.IntegerField(min_value=0, max_value=2**63 - 1, default=0, help_text="Events after this seq.")
    wait = serializers.FloatField(
        min_value=0, required=False, help_text="Long-poll up to this many seconds (longer waits are shortened)."
    )


class RunCancelSerializer(serializers.Serializer[dict[str, Any]]):
    run_id = serializers.CharField()
    status = serializers.CharField(help_text="cancelling")


# --- Conversations -------------------------------------------------------------------------------------


class ConversationSerializer(serializers.Serializer[dict[str, Any]]):
    id = serializers.CharField()
    agent_id = serializers.IntegerField()
    title = serializers.CharField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class ConversationListSerializer(serializers.Serializer[dict[str, Any]]):
    results = ConversationSerializer(many=True)


class MessageSerializer(serializers.Serializer[dict[str, Any]]):
    id = serializers.IntegerField()
    role = serializers.CharField(help_text="user or assistant")
    content = serializers.CharField(help_text="As written: Markdown for answers.")
    content_html = serializers.CharField(
        allow_null=True,
        help_text="An answer's Markdown rendered to sanitised HTML, safe to insert as is (answers only).",
    )
    alternative_of = serializers.IntegerField(
        allow_null=True,
        help_text="A regenerated answer: the id of its turn's first answer. Answers sharing it (and that first answer) "
        "are alternatives of one turn; the newest is the one later turns continue from.",
    )
    citations = serializers.ListField(child=serializers.DictField())
    tool_calls = serializers.ListField(child=serializers.DictField())
    usage = serializers.DictField()
    latency_ms = serializers.IntegerField(allow_null=True)
    first_token_ms = serializers.IntegerField(allow_null=True)
    agent_version_id = serializers.IntegerField(allow_null=True)
    kb_versions = serializers.DictField()
    status = serializers.CharField()
    error = RunErrorSerializer(allow_null=True)
    run_id = serializers.CharField(allow_null=True)
    created = serializers.DateTimeField()


class ConversationMessagesSerializer(serializers.Serializer[dict[str, Any]]):
    conversation_id = serializers.CharField()
    agent_id = serializers.IntegerField()
    results = MessageSerializer(many=True)


# --- Providers, tools, hosts ---------------------------------------------------------------------------


class LlmProviderSerializer(serializers.Serializer[dict[str, Any]]):
    id = serializers.IntegerField()
    name = serializers.CharField()
    kind = serializers.CharField()
    base_url = serializers.CharField()
    default_model = serializers.CharField()
    enabled = serializers.BooleanField()
    timeout_seconds = serializers.IntegerField()
    has_api_key = serializers.BooleanField(help_text="The key itself never leaves the server.")


class LlmProviderListSerializer(serializers.Serializer[dict[str, Any]]):
    results = LlmProviderSerializer(many=True)


class CustomToolSummarySerializer(serializers.Serializer[dict[str, Any]]):
    id = serializers.IntegerField()
    name = serializers.CharField()
    template = serializers.CharField()
    has_secrets = serializers.BooleanField()


class CustomToolSerializer(CustomToolSummarySerializer):
    description = serializers.CharField()
    openapi = serializers.DictField(help_text="The OpenAPI document the tool calls.")


class CustomToolListSerializer(serializers.Serializer[dict[str, Any]]):
    results = CustomToolSerializer(many=True)


class CustomToolInputSerializer(serializers.Serializer[dict[str, Any]]):
    name = serializers.CharField(required=False, allow_blank=True, default="")
    template = serializers.CharField(
        required=False, allow_blank=True, default="", help_text="Build from a template (slack_webhook, rest, ...)."
    )
    params = serializers.DictField(required=False, default=dict, help_text="The template's parameters.")
    openapi = serializers.DictField(required=False, default=dict, help_text="Without a template: the document.")
    secrets = serializers.DictField(required=False, default=dict, help_text="Stored encrypted, never shown again.")
    description = serializers.CharField(required=False, allow_blank=True, default="")


class ToolSerializer(serializers.Serializer[dict[str, Any]]):
    name = serializers.CharField()
    description = serializers.CharField()
    parameters = serializers.DictField(help_text="JSON Schema of the tool's arguments.")
    source = serializers.CharField(help_text="builtin, or the plugin that installed it.")


class ToolCatalogSerializer(serializers.Serializer[dict[str, Any]]):
    agent_types = serializers.ListField(child=serializers.CharField())
    tools = ToolSerializer(many=True)
    providers = serializers.ListField(child=serializers.CharField())
    plugins = serializers.DictField(child=serializers.CharField(), help_text="Plugin name: loaded, or its error.")
    custom_tools = CustomToolSummarySerializer(many=True)


class ApprovedHostSerializer(serializers.Serializer[dict[str, Any]]):
    id = serializers.IntegerField(read_only=True)
    host = serializers.CharField(max_length=253, help_text="A host tools may call, e.g. api.example.com.")
    note = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")


class ApprovedHostListSerializer(serializers.Serializer[dict[str, Any]]):
    results = ApprovedHostSerializer(many=True)
