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

import json
from typing import Any

from django.db import connection
from django.http import StreamingHttpResponse
from rest_framework import serializers, status
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from core.errors import InvalidInput, NotFound
from iam.policy import principal_from_request

from . import selectors, services
from .models import Agent, ApprovedHost, CustomTool, ProviderCredential
from .registry import get_registry
from .runtime.stream import TERMINAL, iter_events, iter_raw_events, read_events, read_events_now, sse_format_raw

LONG_POLL_SECONDS = 25


class EventStreamRenderer(BaseRenderer):
    media_type = "text/event-stream"
    format = "sse"
    charset = None

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return json.dumps(data).encode() if data is not None else b""


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

    def get(self, request):
        principal = principal_from_request(request)
        return Response({"results": [agent_out(a) for a in selectors.agent_list(principal=principal)]})

    def post(self, request):
        principal = principal_from_request(request)
        serializer = AgentInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        if not data.get("name"):
            raise InvalidInput("The name is required.", field="name")
        note = data.pop("change_note", "") or "Created"
        agent = services.agent_create(principal=principal, data=data, note=note)
        return Response(agent_out(agent), status=status.HTTP_201_CREATED)


class AgentDetailApi(APIView):
    required_scope = {"GET": "read", "PATCH": "write", "PUT": "write", "DELETE": "write"}

    def get(self, request, agent_id: int):
        agent = selectors.agent_get_for_principal(principal_from_request(request), agent_id)
        return Response(agent_out(agent))

    def patch(self, request, agent_id: int):
        principal = principal_from_request(request)
        agent = selectors.agent_get_for_principal(principal, agent_id, action="edit")
        serializer = AgentInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        note = data.pop("change_note", "")
        agent = services.agent_update(principal=principal, agent=agent, data=data, note=note)
        return Response(agent_out(Agent.objects.select_related("current_version").get(pk=agent.pk)))

    put = patch

    def delete(self, request, agent_id: int):
        agent = selectors.agent_get_for_principal(principal_from_request(request), agent_id, action="delete")
        services.agent_delete(agent=agent)
        return Response(status=status.HTTP_204_NO_CONTENT)


class AgentVersionListApi(APIView):
    required_scope = "read"

    def get(self, request, agent_id: int):
        agent = selectors.agent_get_for_principal(principal_from_request(request), agent_id)
        return Response({"results": [version_out(v) for v in selectors.agent_versions(agent=agent)]})


class AgentVersionDiffApi(APIView):
    required_scope = "read"

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
        return Response({"from": a, "to": b, "changes": selectors.config_diff(old.config, new.config)})


class AgentVersionRestoreApi(APIView):
    required_scope = "write"

    def post(self, request, agent_id: int, number: int):
        principal = principal_from_request(request)
        agent = selectors.agent_get_for_principal(principal, agent_id, action="edit")
        version = services.agent_version_restore(
            principal=principal, agent=agent, number=number, note=str(request.data.get("note", ""))[:500]
        )
        return Response(version_out(version), status=status.HTTP_201_CREATED)


# --- Chat ------------------------------------------------------------------------------------------


async def _sse(schema: str, run_id: str, after: int):
    async for item in iter_raw_events(schema, run_id, after, heartbeat=15.0):
        yield b": keep-alive\n\n" if item is None else sse_format_raw(*item)


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
    async for event in iter_events(schema, run_id, 0):
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
    yield json.dumps(
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
        },
        default=str,
    ).encode()


def _wants_sse(request) -> bool:
    return "text/event-stream" in request.headers.get("Accept", "")


class AgentChatApi(APIView):
    required_scope = "chat"
    rate_limit_group = "chat"  # core.ratelimit
    renderer_classes = [JSONRenderer, EventStreamRenderer]

    def post(self, request, agent_id: int):
        principal = principal_from_request(request)
        agent = selectors.agent_get_for_chat(principal, agent_id)
        message = request.data.get("message")
        if not isinstance(message, str):
            raise InvalidInput('Send {"message": "..."}.', field="message")
        handles = services.chat_start(
            principal=principal, agent=agent, message=message, conversation_id=request.data.get("conversation_id")
        )
        schema = connection.schema_name
        if _wants_sse(request):
            return _sse_response(
                schema,
                handles["run_id"],
                0,
                {"X-Run-Id": handles["run_id"], "X-Conversation-Id": handles["conversation_id"]},
            )
        if request.data.get("wait") is False or "respond-async" in request.headers.get("Prefer", ""):
            return Response(
                {**handles, "events_url": f"/api/v1/runs/{handles['run_id']}/events/"}, status=status.HTTP_202_ACCEPTED
            )
        return _streaming(_whole_answer(schema, handles["run_id"], handles), "application/json")


async def _long_poll(schema: str, run_id: str, after: int, wait: float):
    events = await read_events(schema, run_id, after, block_ms=int(wait * 1000))
    yield json.dumps(_poll_body(run_id, after, events), default=str).encode()


def _poll_body(run_id: str, after: int, events: list[dict]) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "events": events,
        "next_after": events[-1]["seq"] if events else after,
        "done": any(e["type"] == TERMINAL for e in events),
    }


class RunEventsApi(APIView):
    """Long-polling (JSON) or SSE resume (Accept: text/event-stream + Last-Event-ID) of one run's events."""

    required_scope = "chat"
    renderer_classes = [JSONRenderer, EventStreamRenderer]

    def get(self, request, run_id: str):
        principal = principal_from_request(request)
        selectors.run_get_for_principal(principal, run_id)
        schema = connection.schema_name
        try:
            after = int(request.headers.get("Last-Event-ID") or request.query_params.get("after") or 0)
            wait = min(float(request.query_params.get("wait", LONG_POLL_SECONDS)), LONG_POLL_SECONDS)
        except ValueError:
            raise InvalidInput("after and wait must be numbers.") from None
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

    def post(self, request, run_id: str):
        meta = selectors.run_get_for_principal(principal_from_request(request), run_id)
        return Response(services.run_cancel(meta=meta, run_id=str(run_id)), status=status.HTTP_202_ACCEPTED)


class ConversationListApi(APIView):
    required_scope = "read"

    def get(self, request):
        principal = principal_from_request(request)
        agent = None
        if request.query_params.get("agent"):
            agent = selectors.agent_get_for_principal(principal, request.query_params["agent"])
        rows = selectors.conversation_list(principal=principal, agent=agent)[:200]
        return Response(
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
        )


class ConversationMessagesApi(APIView):
    required_scope = "read"

    def get(self, request, conversation_id: str):
        conversation = selectors.conversation_get_for_principal(principal_from_request(request), conversation_id)
        return Response(
            {
                "conversation_id": str(conversation.pk),
                "agent_id": conversation.agent_id,
                "results": [message_out(m) for m in selectors.conversation_messages(conversation=conversation)],
            }
        )


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

    def get(self, request):
        principal_from_request(request)
        return Response({"results": [provider_out(p) for p in ProviderCredential.objects.all()]})

    def post(self, request):
        principal = principal_from_request(request)
        serializer = ProviderSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        if not data.get("name") or not data.get("kind"):
            raise InvalidInput("name and kind are required.")
        provider = services.provider_create(principal=principal, **data)
        return Response(provider_out(provider), status=status.HTTP_201_CREATED)


class ProviderDetailApi(APIView):
    required_scope = {"GET": "read", "PATCH": "admin", "DELETE": "admin"}

    def _get(self, provider_id):
        provider = ProviderCredential.objects.filter(pk=provider_id).first()
        if provider is None:
            raise NotFound("Not found.")
        return provider

    def get(self, request, provider_id: int):
        principal_from_request(request)
        return Response(provider_out(self._get(provider_id)))

    def patch(self, request, provider_id: int):
        principal = principal_from_request(request)
        serializer = ProviderSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        provider = services.provider_update(  # principal: the audit log records who changed it
            provider=self._get(provider_id), data=dict(serializer.validated_data), principal=principal
        )
        return Response(provider_out(provider))

    def delete(self, request, provider_id: int):
        principal = principal_from_request(request)
        services.provider_delete(provider=self._get(provider_id), principal=principal)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ToolCatalogApi(APIView):
    """Installed agent types, tools (built-in and from plugins), providers and custom tools."""

    required_scope = "read"

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
        return Response(catalog)


class CustomToolListApi(APIView):
    required_scope = {"GET": "read", "POST": "admin"}

    def get(self, request):
        principal_from_request(request)
        return Response(
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
        )

    def post(self, request):
        principal = principal_from_request(request)
        data = request.data
        if data.get("template"):
            tool = services.custom_tool_from_template(
                principal=principal,
                template=str(data["template"]),
                name=str(data.get("name", "")),
                params=data.get("params") or {},
            )
        else:
            tool = services.custom_tool_create(
                principal=principal,
                name=str(data.get("name", "")),
                openapi=data.get("openapi") or {},
                secrets=data.get("secrets") or {},
                description=str(data.get("description", "")),
            )
        return Response(
            {"id": tool.pk, "name": tool.name, "template": tool.template, "has_secrets": bool(tool.secrets_encrypted)},
            status=status.HTTP_201_CREATED,
        )


class CustomToolDetailApi(APIView):
    required_scope = {"DELETE": "admin"}

    def delete(self, request, tool_id: int):
        services.custom_tool_delete(principal=principal_from_request(request), tool_id=tool_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ApprovedHostListApi(APIView):
    required_scope = {"GET": "read", "POST": "admin"}

    def get(self, request):
        principal_from_request(request)
        return Response({"results": [{"id": h.pk, "host": h.host, "note": h.note} for h in ApprovedHost.objects.all()]})

    def post(self, request):
        principal = principal_from_request(request)
        host = services.approved_host_add(
            principal=principal, host=str(request.data.get("host", "")), note=str(request.data.get("note", ""))
        )
        return Response({"id": host.pk, "host": host.host, "note": host.note}, status=status.HTTP_201_CREATED)


class ApprovedHostDetailApi(APIView):
    required_scope = {"DELETE": "admin"}

    def delete(self, request, host_id: int):
        services.approved_host_delete(principal=principal_from_request(request), host_id=host_id)
        return Response(status=status.HTTP_204_NO_CONTENT)
