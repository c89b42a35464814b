"""REST API for agents (mounted under /api/v1/). Thin: parse, call a service or selector, shape the output.

Chat transports over HTTP:
- POST /agents/{id}/chat/ with `Accept: text/event-stream`: the run's events as SSE (id = seq);
- the same POST with `{"wait": false}` (or `Prefer: respond-async`): 202 with the run id, then long-polling on
  GET /runs/{id}/events/?after=N (waits up to 25 s for new events);
- the same POST otherwise: the whole answer as JSON once the run ends.
GET /runs/{id}/events/ with `Accept: text/event-stream` and `Last-Event-ID` resumes an SSE stream.
Streams never block a server thread: they are async iterators over the run's Redis stream.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from django.db import connection
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from core.errors import InvalidInput, NotFound
from core.openapi import error_responses
from iam.policy import principal_from_request
from tenants.models import DepartedMemberMessages, Tenant
from tenants.services import tenant_data_policy_update

from . import selectors, services
from .lifecycle import message_retention_days
from .models import Agent, ApprovedHost, CustomTool, ProviderCredential
from .registry import get_registry
from .rendering import answer_html
from .runtime.runner import run_close_if_orphaned
from .runtime.stream import TERMINAL, iter_events, iter_raw_batches, read_events, read_events_now, sse_format_raw
from .serializers import (
    AgentListSerializer,
    AgentRestoreToTimeSerializer,
    AgentSerializer,
    AgentVersionDiffSerializer,
    AgentVersionListSerializer,
    AgentVersionRestoreSerializer,
    AgentVersionSerializer,
    ApprovedHostListSerializer,
    ApprovedHostSerializer,
    ChatAcceptedSerializer,
    ChatAnswerSerializer,
    ChatInputSerializer,
    ConversationListSerializer,
    ConversationMessagesSerializer,
    CustomToolInputSerializer,
    CustomToolListSerializer,
    CustomToolSummarySerializer,
    LlmProviderListSerializer,
    LlmProviderSerializer,
    RunCancelSerializer,
    RunEventsQuerySerializer,
    RunEventsSerializer,
    ToolCatalogSerializer,
)

LONG_POLL_SECONDS = 25

# --- The chat contract (OpenAPI) ---------------------------------------------------------------------

CHAT_DESCRIPTION = """One question, answered in the form the request asks for:

- **JSON** (default): the whole answer once the run ends (`ChatAnswer`).
- **SSE**: send `Accept: text/event-stream`. The run's events as they happen: `id:` is the event's `seq`,
  `event:` its type, `data:` the event (`RunEvent`); comment lines keep the connection alive. The run id is in
  the `X-Run-Id` header: after a dropped connection, `GET /runs/{run_id}/events/` with `Last-Event-ID` resumes.
- **Async**: `{"wait": false}` or `Prefer: respond-async`: 202 with the run id at once, then long-poll
  `GET /runs/{run_id}/events/?after=N`.

**WebSocket** (not expressible in OpenAPI): `/ws/agents/{agent_id}/chat/`, authenticated like HTTP (header, or
`?token=` / `?api_key=`). Send `{"type": "chat", "message": "...", "conversation_id": null}`; receive
`{"type": "run.accepted", "run_id", "conversation_id", "message_id", "agent_version"}` then the same `RunEvent`
objects. `{"type": "resume", "run_id", "after": N}` resumes, `{"type": "cancel"}` stops the run. Errors before a
run exists arrive as `{"type": "error", "seq": 0, "data": <Error>}`."""

SSE_RESPONSE = OpenApiResponse(
    OpenApiTypes.STR,
    description="Server-sent events, one per run event, until message.end.",
    examples=[
        OpenApiExample(
            "stream",
            value='id: 1\nevent: message.start\ndata: {"seq": 1, "type": "message.start", "run_id": "6f1c...", '
            '"data": {"conversation_id": "0b7e...", "message_id": 42, "agent_id": 3, "agent_version_id": 7}, '
            '"ts": 1767225600.1}\n\nid: 2\nevent: token\ndata: {"seq": 2, "type": "token", "run_id": "6f1c...", '
            '"data": {"text": "Rotate"}, "ts": 1767225600.2}\n\n',
            media_type="text/event-stream",
        )
    ],
)
PREFER_ASYNC = OpenApiParameter(
    "Prefer", str, OpenApiParameter.HEADER, enum=["respond-async"], description="Answer 202 at once."
)
RUN_EVENTS_PARAMETERS = [
    OpenApiParameter("after", int, description="Events after this seq (default 0: from the start)."),
    OpenApiParameter("wait", float, description=f"Long-poll up to this many seconds (0-{LONG_POLL_SECONDS})."),
    OpenApiParameter("Last-Event-ID", int, OpenApiParameter.HEADER, description="SSE resume: the last seq received."),
]


class EventStreamRenderer(BaseRenderer):
    media_type = "text/event-stream"
    format = "sse"
    charset = None

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return json.dumps(data).encode() if data is not None else b""


class EventStreamApi(APIView):
    """A view that streams SSE when asked (`Accept: text/event-stream`, or `?format=sse`). The stream is a
    StreamingHttpResponse of its own; anything answered with a DRF Response (an error, a JSON body) is JSON and
    says so, since no stream was started."""

    renderer_classes = [JSONRenderer, EventStreamRenderer]

    def finalize_response(self, request, response, *args, **kwargs):
        if isinstance(response, Response):
            request.accepted_renderer, request.accepted_media_type = JSONRenderer(), JSONRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)


# --- Serializers ---------------------------------------------------------------------------------


class AgentInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False)
    description = serializers.CharField(required=False, allow_blank=True)
    agent_type = serializers.CharField(max_length=60, required=False)
    provider_id = serializers.IntegerField(required=False, allow_null=True)
    model = serializers.CharField(max_length=200, required=False, allow_blank=True)
    system_prompt = serializers.CharField(required=False, allow_blank=True)
    sampling = serializers.DictField(required=False)
    knowledge_base_ids = serializers.ListField(child=serializers.IntegerField(), required=False)
    retrieval = serializers.DictField(required=False)
    tools = serializers.ListField(required=False)
    limits = serializers.DictField(required=False)
    is_enabled = serializers.BooleanField(required=False)
    org_access = serializers.ChoiceField(choices=["none", "viewer", "editor"], required=False)
    change_note = serializers.CharField(max_length=500, required=False, allow_blank=True)


def agent_out(agent: Agent) -> dict[str, Any]:
    version = agent.current_version
    return {
        "id": agent.pk,
        **services.agent_config(agent),
        "org_access": agent.org_access,
        "owner_id": agent.owner_id,
        "version": version.number if version else None,
        "created_at": agent.created_at,
        "updated_at": agent.updated_at,
    }


def version_out(version) -> dict[str, Any]:
    return {
        "number": version.number,
        "config": version.config,
        "author_id": version.author_id,
        "note": version.note,
        "restored_from": version.restored_from,
        "created_at": version.created_at,
    }


def provider_out(p: ProviderCredential) -> dict[str, Any]:
    # The key itself never leaves the server, only whether one is stored.
    return {
        "id": p.pk,
        "name": p.name,
        "kind": p.kind,
        "base_url": p.base_url,
        "default_model": p.default_model,
        "enabled": p.enabled,
        "timeout_seconds": p.timeout_seconds,
        "has_api_key": bool(p.api_key_encrypted),
    }


def message_out(m) -> dict[str, Any]:
    return {
        "id": m.pk,
        "role": m.role,
        "content": m.content,
        "content_html": answer_html(m.content) if m.role == "assistant" else None,
        "alternative_of": m.alternative_of_id,
        "citations": m.citations,
        "tool_calls": m.tool_calls,
        "usage": m.usage,
        "latency_ms": m.latency_ms,
        "first_token_ms": m.first_token_ms,
        "agent_version_id": m.agent_version_id,
        "kb_versions": m.kb_versions,
        "status": m.status,
        "error": m.error or None,
        "run_id": str(m.run_id) if m.run_id else None,
        "created": m.created,
    }


# --- Agents ----------------------------------------------------------------------------------------


class AgentListApi(APIView):
    required_scope = {"GET": "read", "POST": "write"}

    @extend_schema(responses=AgentListSerializer)
    def get(self, request):
        principal = principal_from_request(request)
        agents = [agent_out(a) for a in selectors.agent_list(principal=principal)]
        return Response(AgentListSerializer({"results": agents}).data)

    @extend_schema(request=AgentInputSerializer, responses={201: AgentSerializer, **error_responses(402)})
    def post(self, request):
        principal = principal_from_request(request)
        serializer = AgentInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        if not data.get("name"):
            raise InvalidInput("The name is required.", field="name")
        note = data.pop("change_note", "") or "Created"
        agent = services.agent_create(principal=principal, data=data, note=note)
        return Response(AgentSerializer(agent_out(agent)).data, status=status.HTTP_201_CREATED)


class AgentDetailApi(APIView):
    required_scope = {"GET": "read", "PATCH": "write", "PUT": "write", "DELETE": "write"}

    @extend_schema(responses=AgentSerializer)
    def get(self, request, agent_id: int):
        agent = selectors.agent_get_for_principal(principal_from_request(request), agent_id)
        return Response(AgentSerializer(agent_out(agent)).data)

    @extend_schema(request=AgentInputSerializer, responses=AgentSerializer)
    def patch(self, request, agent_id: int):
        principal = principal_from_request(request)
        agent = selectors.agent_get_for_principal(principal, agent_id, action="edit")
        serializer = AgentInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        note = data.pop("change_note", "")
        agent = services.agent_update(principal=principal, agent=agent, data=data, note=note)
        agent = Agent.objects.select_related("current_version").get(pk=agent.pk)
        return Response(AgentSerializer(agent_out(agent)).data)

    put = patch

    @extend_schema(responses={204: None})
    def delete(self, request, agent_id: int):
        agent = selectors.agent_get_for_principal(principal_from_request(request), agent_id, action="delete")
        services.agent_delete(agent=agent)
        return Response(status=status.HTTP_204_NO_CONTENT)


class AgentVersionListApi(APIView):
    required_scope = "read"

    @extend_schema(responses=AgentVersionListSerializer)
    def get(self, request, agent_id: int):
        agent = selectors.agent_get_for_principal(principal_from_request(request), agent_id)
        versions = [version_out(v) for v in selectors.agent_versions(agent=agent)]
        return Response(AgentVersionListSerializer({"results": versions}).data)


class AgentVersionDiffApi(APIView):
    required_scope = "read"

    @extend_schema(
        parameters=[
            OpenApiParameter("from", int, required=True, description="The older version number."),
            OpenApiParameter("to", int, required=True, description="The newer version number."),
        ],
        responses=AgentVersionDiffSerializer,
    )
    def get(self, request, agent_id: int):
        agent = selectors.agent_get_for_principal(principal_from_request(request), agent_id)
        try:
            a, b = int(request.query_params["from"]), int(request.query_params["to"])
        except (KeyError, ValueError):
            raise InvalidInput("Give two version numbers: ?from=N&to=M.") from None
        old, new = (
            selectors.agent_version_get(agent=agent, number=a),
            selectors.agent_version_get(agent=agent, number=b),
        )
        diff = {"from": a, "to": b, "changes": selectors.config_diff(old.config, new.config)}
        return Response(AgentVersionDiffSerializer(diff).data)


class AgentVersionRestoreApi(APIView):
    required_scope = "write"

    @extend_schema(request=AgentVersionRestoreSerializer, responses={201: AgentVersionSerializer})
    def post(self, request, agent_id: int, number: int):
        principal = principal_from_request(request)
        agent = selectors.agent_get_for_principal(principal, agent_id, action="edit")
        data = AgentVersionRestoreSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        version = services.agent_version_restore(
            principal=principal, agent=agent, number=number, note=data.validated_data["note"]
        )
        return Response(AgentVersionSerializer(version_out(version)).data, status=status.HTTP_201_CREATED)


class AgentRestoreToTimeApi(APIView):
    """Point-in-time restore: the configuration the agent had at `at` becomes a new version."""

    required_scope = "write"

    @extend_schema(
        request=AgentRestoreToTimeSerializer, responses={201: AgentVersionSerializer, **error_responses(409)}
    )
    def post(self, request, agent_id: int):
        principal = principal_from_request(request)
        agent = selectors.agent_get_for_principal(principal, agent_id, action="edit")
        data = AgentRestoreToTimeSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        version = services.agent_restore_to_time(
            principal=principal, agent=agent, at=data.validated_data["at"], note=data.validated_data["note"]
        )
        return Response(AgentVersionSerializer(version_out(version)).data, status=status.HTTP_201_CREATED)


# --- Chat ------------------------------------------------------------------------------------------


async def _sse(schema: str, run_id: str, after: int):
    on_idle = functools.partial(run_close_if_orphaned, schema, run_id)  # the worker may have died
    async for batch in iter_raw_batches(schema, run_id, after, heartbeat=15.0, on_idle=on_idle):
        # The events that arrived together leave in one write (one chunk, one send through the server).
        yield b": keep-alive\n\n" if batch is None else b"".join(sse_format_raw(*entry) for entry in batch)


def _streaming(body, content_type: str) -> StreamingHttpResponse:
    """A response that streams from Redis for seconds or minutes: give the request's database connection back
    to the pool first, or every open stream would hold one (Django returns it only when the response closes).
    Not inside a transaction (tests wrap each one in a transaction; closing would end it)."""
    if not connection.in_atomic_block:
        connection.close()
    return StreamingHttpResponse(body, content_type=content_type)


def _sse_response(schema: str, run_id: str, after: int, headers: dict[str, str] | None = None):
    response = _streaming(_sse(schema, run_id, after), "text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # proxies must not buffer the stream
    for key, value in (headers or {}).items():
        response[key] = value
    return response


async def _whole_answer(schema: str, run_id: str, handles: dict[str, Any]):
    text: list[str] = []
    citations, tool_calls, error, end = [], [], None, {}
    async for event in iter_events(schema, run_id, 0, on_idle=functools.partial(run_close_if_orphaned, schema, run_id)):
        kind, data = event["type"], event["data"]
        if kind == "token":
            text.append(data["text"])
        elif kind == "citation":
            citations.append(data)
        elif kind in ("tool.call", "tool.result"):
            tool_calls.append({"type": kind, **data})
        elif kind == "error":
            error = data
        elif kind == TERMINAL:
            end = data
    answer = ChatAnswerSerializer(
        {
            **handles,
            "content": "".join(text),
            "citations": citations,
            "tool_calls": tool_calls,
            "status": end.get("status", "incomplete"),
            "usage": end.get("usage"),
            "timings": end.get("timings"),
            "kb_versions": end.get("kb_versions"),
            "error": error,
        }
    )
    yield json.dumps(answer.data, default=str).encode()


def _wants_sse(request) -> bool:
    return "text/event-stream" in request.headers.get("Accept", "")


class AgentChatApi(EventStreamApi):
    required_scope = "chat"
    rate_limit_group = "chat"  # core.ratelimit

    @extend_schema(
        summary="Ask an agent",
        description=CHAT_DESCRIPTION,
        request=ChatInputSerializer,
        parameters=[PREFER_ASYNC],
        examples=[OpenApiExample("question", value={"message": "How do I rotate an API key?"}, request_only=True)],
        responses={
            (200, "application/json"): ChatAnswerSerializer,
            (200, "text/event-stream"): SSE_RESPONSE,
            202: ChatAcceptedSerializer,
            **error_responses(402, 409, 503),
        },
    )
    def post(self, request, agent_id: int):
        principal = principal_from_request(request)
        agent = selectors.agent_get_for_chat(principal, agent_id)
        data = ChatInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        args = data.validated_data
        handles = services.chat_start(
            principal=principal,
            agent=agent,
            message=args["message"],
            conversation_id=args["conversation_id"],
            regenerate=args["regenerate"],
        )
        schema = connection.schema_name
        if _wants_sse(request):
            return _sse_response(
                schema,
                handles["run_id"],
                0,
                {"X-Run-Id": handles["run_id"], "X-Conversation-Id": handles["conversation_id"]},
            )
        if args["wait"] is False or "respond-async" in request.headers.get("Prefer", ""):
            accepted = {**handles, "events_url": f"/api/v1/runs/{handles['run_id']}/events/"}
            return Response(ChatAcceptedSerializer(accepted).data, status=status.HTTP_202_ACCEPTED)
        return _streaming(_whole_answer(schema, handles["run_id"], handles), "application/json")


async def _long_poll(schema: str, run_id: str, after: int, wait: float):
    events = await read_events(schema, run_id, after, block_ms=int(wait * 1000))
    yield json.dumps(_poll_body(run_id, after, events), default=str).encode()


def _poll_body(run_id: str, after: int, events: list[dict]) -> dict[str, Any]:
    body = {
        "run_id": run_id,
        "events": events,
        "next_after": events[-1]["seq"] if events else after,
        "done": any(e["type"] == TERMINAL for e in events),
    }
    return RunEventsSerializer(body).data


class RunEventsApi(EventStreamApi):
    """Long-polling (JSON) or SSE resume (Accept: text/event-stream + Last-Event-ID) of one run's events."""

    required_scope = "chat"

    @extend_schema(
        summary="Read a run's events",
        description="Long-polling: JSON with the events after `after` (waits up to `wait` seconds for the first "
        "one). With `Accept: text/event-stream`: an SSE stream from the event after `Last-Event-ID` (or `after`) "
        "to message.end.",
        parameters=RUN_EVENTS_PARAMETERS,
        responses={(200, "application/json"): RunEventsSerializer, (200, "text/event-stream"): SSE_RESPONSE},
    )
    def get(self, request, run_id: str):
        principal = principal_from_request(request)
        selectors.run_get_for_principal(principal, run_id)
        schema = connection.schema_name
        params = request.query_params.dict()
        if request.headers.get("Last-Event-ID"):
            params["after"] = request.headers["Last-Event-ID"]  # an SSE client resuming
        query = RunEventsQuerySerializer(data=params)
        query.is_valid(raise_exception=True)
        after: int = query.validated_data["after"]
        wait = min(query.validated_data.get("wait", LONG_POLL_SECONDS), LONG_POLL_SECONDS)
        if _wants_sse(request):
            return _sse_response(schema, str(run_id), after)
        ready = read_events_now(schema, str(run_id), after)
        if ready or wait <= 0:
            return Response(_poll_body(str(run_id), after, ready))
        return _streaming(_long_poll(schema, str(run_id), after, wait), "application/json")


# --- Conversations ---------------------------------------------------------------------------------


class RunCancelApi(APIView):
    """POST: stop a queued or streaming run (the dashboard's Stop). 202, then the run's stream ends with
    message.end {"status": "cancelled"}; 409 when it has already finished."""

    required_scope = "chat"

    @extend_schema(request=None, responses={202: RunCancelSerializer, **error_responses(409)})
    def post(self, request, run_id: str):
        meta = selectors.run_get_for_principal(principal_from_request(request), run_id)
        cancelled = services.run_cancel(meta=meta, run_id=str(run_id))
        return Response(RunCancelSerializer(cancelled).data, status=status.HTTP_202_ACCEPTED)


class ConversationFilterSerializer(serializers.Serializer):
    agent = serializers.IntegerField(required=False, help_text="Only this agent's conversations.")


class ConversationListApi(APIView):
    required_scope = "read"

    @extend_schema(
        parameters=[ConversationFilterSerializer],
        responses={200: ConversationListSerializer, **error_responses(404)},
    )
    def get(self, request):
        principal = principal_from_request(request)
        query = ConversationFilterSerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        agent = None
        if "agent" in query.validated_data:
            agent = selectors.agent_get_for_principal(principal, query.validated_data["agent"])
        rows = selectors.conversation_list(principal=principal, agent=agent)[:200]
        return Response(
            ConversationListSerializer(
                {
                    "results": [
                        {
                            "id": str(c.pk),
                            "agent_id": c.agent_id,
                            "title": c.title,
                            "created_at": c.created_at,
                            "updated_at": c.updated_at,
                        }
                        for c in rows
                    ]
                }
            ).data
        )


class ConversationMessagesApi(APIView):
    required_scope = "read"

    @extend_schema(
        responses=ConversationMessagesSerializer,
        parameters=[
            OpenApiParameter(
                "after", int, description="Only the messages newer than this message id (ids grow with time)."
            )
        ],
    )
    def get(self, request, conversation_id: str):
        conversation = selectors.conversation_get_for_principal(principal_from_request(request), conversation_id)
        try:
            after = int(request.query_params["after"]) if "after" in request.query_params else None
        except ValueError:
            raise InvalidInput("after must be a message id.", field="after") from None
        messages = selectors.conversation_messages(conversation=conversation, after_id=after)
        body = {
            "conversation_id": str(conversation.pk),
            "agent_id": conversation.agent_id,
            "results": [message_out(m) for m in messages],
        }
        return Response(ConversationMessagesSerializer(body).data)


# --- Providers, tools (tenant admins) ----------------------------------------------------------------


class ProviderSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100, required=False)
    kind = serializers.CharField(max_length=20, required=False)
    base_url = serializers.URLField(required=False, allow_blank=True)
    api_key = serializers.CharField(required=False, allow_blank=True, write_only=True, trim_whitespace=False)
    default_model = serializers.CharField(max_length=200, required=False, allow_blank=True)
    enabled = serializers.BooleanField(required=False)
    timeout_seconds = serializers.IntegerField(min_value=1, max_value=600, required=False)


class ProviderListApi(APIView):
    required_scope = {"GET": "read", "POST": "admin"}

    @extend_schema(responses=LlmProviderListSerializer)
    def get(self, request):
        principal_from_request(request)
        providers = [provider_out(p) for p in ProviderCredential.objects.all()]
        return Response(LlmProviderListSerializer({"results": providers}).data)

    @extend_schema(request=ProviderSerializer, responses={201: LlmProviderSerializer})
    def post(self, request):
        principal = principal_from_request(request)
        serializer = ProviderSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        if not data.get("name") or not data.get("kind"):
            raise InvalidInput("name and kind are required.")
        provider = services.provider_create(principal=principal, **data)
        return Response(LlmProviderSerializer(provider_out(provider)).data, status=status.HTTP_201_CREATED)


class ProviderDetailApi(APIView):
    required_scope = {"GET": "read", "PATCH": "admin", "DELETE": "admin"}

    def _get(self, provider_id):
        provider = ProviderCredential.objects.filter(pk=provider_id).first()
        if provider is None:
            raise NotFound("Not found.")
        return provider

    @extend_schema(responses=LlmProviderSerializer)
    def get(self, request, provider_id: int):
        principal_from_request(request)
        return Response(LlmProviderSerializer(provider_out(self._get(provider_id))).data)

    @extend_schema(request=ProviderSerializer, responses=LlmProviderSerializer)
    def patch(self, request, provider_id: int):
        principal = principal_from_request(request)
        serializer = ProviderSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        provider = services.provider_update(  # principal: the audit log records who changed it
            provider=self._get(provider_id), data=dict(serializer.validated_data), principal=principal
        )
        return Response(LlmProviderSerializer(provider_out(provider)).data)

    @extend_schema(responses={204: None})
    def delete(self, request, provider_id: int):
        principal = principal_from_request(request)
        services.provider_delete(provider=self._get(provider_id), principal=principal)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ToolCatalogApi(APIView):
    """Installed agent types, tools (built-in and from plugins), providers and custom tools."""

    required_scope = "read"

    @extend_schema(responses=ToolCatalogSerializer)
    def get(self, request):
        principal_from_request(request)
        catalog = get_registry().describe()
        catalog["custom_tools"] = [
            {
                "id": t.pk,
                "name": t.name,
                "description": t.description,
                "template": t.template,
                "has_secrets": bool(t.secrets_encrypted),
            }
            for t in CustomTool.objects.all()
        ]
        return Response(ToolCatalogSerializer(catalog).data)


class CustomToolListApi(APIView):
    required_scope = {"GET": "read", "POST": "admin"}

    @extend_schema(responses=CustomToolListSerializer)
    def get(self, request):
        principal_from_request(request)
        return Response(
            CustomToolListSerializer(
                {
                    "results": [
                        {
                            "id": t.pk,
                            "name": t.name,
                            "description": t.description,
                            "template": t.template,
                            "openapi": t.openapi,
                            "has_secrets": bool(t.secrets_encrypted),
                        }
                        for t in CustomTool.objects.all()
                    ]
                }
            ).data
        )

    @extend_schema(request=CustomToolInputSerializer, responses={201: CustomToolSummarySerializer})
    def post(self, request):
        principal = principal_from_request(request)
        serializer = CustomToolInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        if data["template"]:
            tool = services.custom_tool_from_template(
                principal=principal, template=data["template"], name=data["name"], params=data["params"]
            )
        else:
            tool = services.custom_tool_create(
                principal=principal,
                name=data["name"],
                openapi=data["openapi"],
                secrets=data["secrets"],
                description=data["description"],
            )
        created = {
            "id": tool.pk,
            "name": tool.name,
            "template": tool.template,
            "has_secrets": bool(tool.secrets_encrypted),
        }
        return Response(CustomToolSummarySerializer(created).data, status=status.HTTP_201_CREATED)


class CustomToolDetailApi(APIView):
    required_scope = {"DELETE": "admin"}

    @extend_schema(responses={204: None})
    def delete(self, request, tool_id: int):
        services.custom_tool_delete(principal=principal_from_request(request), tool_id=tool_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ApprovedHostListApi(APIView):
    required_scope = {"GET": "read", "POST": "admin"}

    @extend_schema(responses=ApprovedHostListSerializer)
    def get(self, request):
        principal_from_request(request)
        return Response(ApprovedHostListSerializer({"results": ApprovedHost.objects.all()}).data)

    @extend_schema(request=ApprovedHostSerializer, responses={201: ApprovedHostSerializer})
    def post(self, request):
        principal = principal_from_request(request)
        data = ApprovedHostSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        host = services.approved_host_add(principal=principal, **data.validated_data)
        return Response(ApprovedHostSerializer(host).data, status=status.HTTP_201_CREATED)


class ApprovedHostDetailApi(APIView):
    required_scope = {"DELETE": "admin"}

    @extend_schema(responses={204: None})
    def delete(self, request, host_id: int):
        services.approved_host_delete(principal=principal_from_request(request), host_id=host_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- Data lifecycle: the organisation's data policy and its whole export (docs/operations.md) ------------------


class DataPolicySerializer(serializers.Serializer):
    message_retention_days = serializers.IntegerField(
        allow_null=True,
        help_text="Days conversations are kept; null: the operator's default (message_retention_"
        "days_effective, null: forever).",
    )
    message_retention_days_effective = serializers.IntegerField(read_only=True, allow_null=True)
    departed_member_messages = serializers.ChoiceField(choices=DepartedMemberMessages.choices)


def _data_policy(tenant: Tenant) -> dict[str, Any]:
    return {
        "message_retention_days": tenant.message_retention_days,
        "message_retention_days_effective": message_retention_days(tenant),
        "departed_member_messages": tenant.departed_member_messages,
    }


class DataPolicyApi(APIView):
    required_scope = "admin"

    @extend_schema(responses=DataPolicySerializer)
    def get(self, request):
        return Response(DataPolicySerializer(_data_policy(request.tenant)).data)

    @extend_schema(request=DataPolicySerializer, responses={200: DataPolicySerializer, **error_responses(400, 403)})
    def patch(self, request):
        if not isinstance(request.data, dict):  # a JSON list or scalar cannot be merged into the policy
            raise InvalidInput("Send a JSON object.")
        data = DataPolicySerializer(data={**_data_policy(request.tenant), **request.data})
        data.is_valid(raise_exception=True)
        tenant = tenant_data_policy_update(principal=principal_from_request(request), **data.validated_data)
        return Response(DataPolicySerializer(_data_policy(tenant)).data)
