"""Writes for agents: create/update (every change is a new immutable version), restore, delete, provider
credentials, custom tools, approved hosts, and starting a chat run."""

from __future__ import annotations

import datetime as dt
import functools
import time
import uuid
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django.utils.text import slugify

from core.audit import audit_record
from core.crypto import encrypt_json, encrypt_str, rotate_token
from core.errors import Conflict, DomainError, ErrorCode, InvalidInput, NotFound
from core.events import (
    AGENT_CREATED,
    AGENT_DELETED,
    AGENT_UPDATED,
    AGENT_VERSION_RESTORED,
    event_subject,
    publish_on_commit,
)
from core.quotas import chat_run_admit, chat_run_release, limits_snapshot, quota_check
from core.rls import db_as_system
from core.ssrf import refuse_internal_host, refuse_internal_url
from core.tenancy import current_schema
from iam.policy import Principal, resource_check_for_principal, resource_queryset_for
from knowledge.models import KnowledgeBase

from .models import (
    Agent,
    AgentVersion,
    ApprovedHost,
    Conversation,
    CustomTool,
    Message,
    ProviderCredential,
    ProviderKind,
)
from .providers.base import ContextTooLong
from .registry import get_registry
from .runtime.compiled import provider_stamp
from .runtime.limits import effective_limits
from .runtime.runner import estimate_tokens
from .runtime.stream import emit_sync, run_cancel_request, run_meta_write
from .selectors import agent_version_at
from .tasks import agent_run_task
from .tools.openapi import TEMPLATES, openapi_operations

# The fields that make up an agent's configuration (what a version snapshots and a restore brings back).
CONFIG_FIELDS = (
    "name",
    "description",
    "agent_type",
    "provider_id",
    "model",
    "system_prompt",
    "sampling",
    "knowledge_base_ids",
    "retrieval",
    "tools",
    "limits",
    "is_enabled",
)
MAX_MESSAGE_CHARS = 100_000


class ProviderDisabled(DomainError):
    code = ErrorCode.PROVIDER_DISABLED
    status = 409


class AgentDisabled(DomainError):
    code = ErrorCode.AGENT_DISABLED
    status = 409


def agent_config(agent: Agent) -> dict[str, Any]:
    return {
        "name": agent.name,
        "description": agent.description,
        "agent_type": agent.agent_type,
        "provider_id": agent.provider_id,
        "model": agent.model,
        "system_prompt": agent.system_prompt,
        "sampling": agent.sampling,
        "knowledge_base_ids": sorted(agent.knowledge_bases.values_list("pk", flat=True)),
        "retrieval": agent.retrieval,
        "tools": agent.tools,
        "limits": agent.limits,
        "is_enabled": agent.is_enabled,
    }


def _validate(principal: Principal, data: dict[str, Any], *, agent: Agent | None = None) -> None:
    registry = get_registry()
    if "name" in data and not (str(data["name"]).strip() and len(str(data["name"])) <= 200):
        raise InvalidInput("The name must be 1-200 characters.", field="name")
    if "agent_type" in data and data["agent_type"] not in registry.agent_types:
        raise InvalidInput(
            f"Unknown agent type {data['agent_type']!r}; installed: {', '.join(sorted(registry.agent_types))}.",
            field="agent_type",
        )
    if data.get("provider_id") is not None and not ProviderCredential.objects.filter(pk=data["provider_id"]).exists():
        raise InvalidInput("Unknown provider.", field="provider_id")
    if "knowledge_base_ids" in data:
        ids = set(data["knowledge_base_ids"] or [])
        visible = set(
            resource_queryset_for(principal, KnowledgeBase.objects.filter(pk__in=ids)).values_list("pk", flat=True)
        )
        # Knowledge bases the agent already uses stay allowed: an editor of a shared agent may keep one it cannot see.
        attached = set(agent.knowledge_bases.values_list("pk", flat=True)) if agent is not None else set()
        if ids - visible - attached:
            raise InvalidInput("Unknown knowledge base.", field="knowledge_base_ids")
    for entry in data.get("tools") or []:
        spec = {"name": entry} if isinstance(entry, str) else entry
        if not isinstance(spec, dict):
            raise InvalidInput("Each tool is a name or an object.", field="tools")
        if spec.get("custom_tool"):
            if not CustomTool.objects.filter(name=spec["custom_tool"]).exists():
                raise InvalidInput(f"Unknown custom tool {spec['custom_tool']!r}.", field="tools")
        elif spec.get("name") not in registry.tools:
            raise InvalidInput(f"Unknown tool {spec.get('name')!r}.", field="tools")
    for key in ("sampling", "retrieval", "limits"):
        if key in data and not isinstance(data[key], dict):
            raise InvalidInput(f"{key} must be an object.", field=key)
    limits = data.get("limits") or {}
    unknown = set(limits) - set(effective_limits(None))
    if unknown:
        raise InvalidInput(f"Unknown limits: {', '.join(sorted(unknown))}.", field="limits")


def _audit(principal: Principal | None, action: str, **kwargs: Any) -> None:
    """Configuration changes go to the tenant's immutable audit log with before/after (actor: core.audit)."""
    audit_record(principal=principal, action=action, **kwargs)


def _provider_snapshot(provider: ProviderCredential) -> dict[str, Any]:
    """What an audit entry may show of a provider: never the API key, only whether one is set."""
    return {
        "name": provider.name,
        "kind": provider.kind,
        "base_url": provider.base_url,
        "default_model": provider.default_model,
        "enabled": provider.enabled,
        "timeout_seconds": provider.timeout_seconds,
        "api_key_set": bool(provider.api_key_encrypted),
    }


def _apply(agent: Agent, data: dict[str, Any]) -> None:
    for key in CONFIG_FIELDS:
        if key in data and key != "knowledge_base_ids":
            setattr(agent, key, data[key])


def _version_write(*, agent: Agent, by: Principal, note: str, restored_from: int | None = None) -> AgentVersion:
    last = AgentVersion.objects.filter(agent=agent).order_by("-number").values_list("number", flat=True).first()
    version = AgentVersion.objects.create(
        agent=agent,
        number=(last or 0) + 1,
        config=agent_config(agent),
        author=by.user,
        note=note[:500],
        restored_from=restored_from,
    )
    Agent.objects.filter(pk=agent.pk).update(current_version=version, updated_at=timezone.now())
    agent.current_version = version
    return version


def _publish_agent(agent: Agent, event_type: str, payload: dict[str, Any]) -> None:
    subject = event_subject("agent", agent.pk, owner_id=agent.owner_id)
    publish_on_commit(event_type, {"agent_id": agent.pk, **payload}, subject=subject, topic=f"agent.{agent.pk}")


@transaction.atomic
def agent_create(*, principal: Principal, data: dict[str, Any], note: str = "Created") -> Agent:
    data = {"agent_type": "rag", **data}
    _validate(principal, data)
    if data.get("is_enabled", True):
        quota_check(principal=principal, quota="active_agents", amount=1)
    agent = Agent(owner=principal.user, org_access=data.get("org_access", "none"))
    _apply(agent, data)
    agent.save()
    agent.knowledge_bases.set(data.get("knowledge_base_ids") or [])
    _version_write(agent=agent, by=principal, note=note)
    _audit(principal, "agent.create", target=agent, after=agent_config(agent))
    _publish_agent(agent, AGENT_CREATED, {"name": agent.name})
    return agent


@transaction.atomic
def agent_update(*, principal: Principal, agent: Agent, data: dict[str, Any], note: str = "") -> Agent:
    """Every change is a new version (unless nothing in the configuration changed).

    Changing who in the organisation may use the agent (`org_access`) is sharing: it needs the "share" action
    (owner or admin), whatever the caller (API, dashboard form) checked for the rest of the change."""
    agent = Agent.objects.select_for_update().get(pk=agent.pk)
    if "org_access" in data and data["org_access"] != agent.org_access:
        resource_check_for_principal(principal, agent, "share")
    _validate(principal, data, agent=agent)
    before = agent_config(agent)
    before_access = agent.org_access
    _apply(agent, data)
    if "org_access" in data:
        agent.org_access = data["org_access"]
    agent.save()
    if "knowledge_base_ids" in data:
        agent.knowledge_bases.set(data["knowledge_base_ids"] or [])
    after = agent_config(agent)
    if after != before:
        version = _version_write(agent=agent, by=principal, note=note or "Updated")
        _publish_agent(agent, AGENT_UPDATED, {"version": version.number})
    if after != before or agent.org_access != before_access:
        _audit(
            principal,
            "agent.update",
            target=agent,
            before={**before, "org_access": before_access},
            after={
                **after,
                "org_access": agent.org_access,
                # An agent made outside agent_create (fixtures, the admin) may have no version yet.
                "version": agent.current_version.number if agent.current_version else None,
            },
        )
    return agent


@transaction.atomic
def agent_version_restore(*, principal: Principal, agent: Agent, number: int, note: str = "") -> AgentVersion:
    """Bring back the configuration of version `number` as a new version (history is never rewritten)."""
    agent = Agent.objects.select_for_update().get(pk=agent.pk)
    source = AgentVersion.objects.filter(agent=agent, number=number).first()
    if source is None:
        raise NotFound(f"Version {number} does not exist.")
    config = dict(source.config)
    existing_kbs = set(
        KnowledgeBase.objects.filter(pk__in=config.get("knowledge_base_ids") or []).values_list("pk", flat=True)
    )
    if config.get("provider_id") and not ProviderCredential.objects.filter(pk=config["provider_id"]).exists():
        raise Conflict(f"Version {number} uses a provider that was deleted; choose another provider first.")
    before = agent_config(agent)
    _apply(agent, config)
    agent.save()
    agent.knowledge_bases.set(sorted(existing_kbs))
    version = _version_write(agent=agent, by=principal, note=note or f"Restored version {number}", restored_from=number)
    _publish_agent(agent, AGENT_VERSION_RESTORED, {"version": version.number, "restored_from": number})
    _audit(
        principal,
        "agent.version_restore",
        target=agent,
        before=before,
        after={**agent_config(agent), "version": version.number, "restored_from": number},
    )
    return version


@transaction.atomic
def agent_restore_to_time(*, principal: Principal, agent: Agent, at: dt.datetime, note: str = "") -> AgentVersion:
    """Bring back the configuration the agent had at `at` (the version current then), as a new version, through
    agent_version_restore so the same checks, event and audit entry apply. Conflict when nothing changed since."""
    agent = Agent.objects.select_for_update().get(pk=agent.pk)
    source = agent_version_at(agent=agent, at=at)
    if agent.current_version_id == source.pk:
        raise Conflict(f"The agent has not changed since then: version {source.number} is still current.")
    return agent_version_restore(
        principal=principal,
        agent=agent,
        number=source.number,
        note=note or f"Restored to its state at {at.isoformat(timespec='seconds')} (version {source.number})",
    )


@transaction.atomic
def agent_delete(*, agent: Agent) -> None:
    agent_id, owner_id = agent.pk, agent.owner_id
    # Every member's conversations with it go too, not only those row-level security shows the caller (core.rls).
    with db_as_system():
        agent.delete()
    publish_on_commit(
        AGENT_DELETED,
        {"agent_id": agent_id},
        subject=event_subject("agent", agent_id, owner_id=owner_id),
        topic=f"agent.{agent_id}",
    )


# --- Provider credentials, tools ----------------------------------------------------------------


@transaction.atomic
def provider_create(
    *,
    principal: Principal,
    name: str,
    kind: str,
    base_url: str = "",
    api_key: str = "",
    default_model: str = "",
    enabled: bool = True,
    timeout_seconds: int = 60,
) -> ProviderCredential:
    if kind not in ProviderKind.values and kind not in get_registry().providers:
        raise InvalidInput(f"Unknown provider kind {kind!r}.", field="kind")
    if ProviderCredential.objects.filter(name=name).exists():
        raise Conflict(f"A provider named {name!r} exists already.", field="name")
    if base_url:
        refuse_internal_url(base_url, field="base_url")  # run time checks again; this gives the admin a clear 400
    provider = ProviderCredential.objects.create(
        name=name,
        kind=kind,
        base_url=base_url,
        api_key_encrypted=encrypt_str(api_key),
        default_model=default_model,
        enabled=enabled,
        timeout_seconds=timeout_seconds,
        created_by=principal.user,
    )
    _audit(principal, "provider.create", target=provider, after=_provider_snapshot(provider))
    return provider


@transaction.atomic
def provider_update(
    *, provider: ProviderCredential, data: dict[str, Any], principal: Principal | None = None
) -> ProviderCredential:
    before = _provider_snapshot(provider)
    if data.get("base_url"):
        refuse_internal_url(data["base_url"], field="base_url")
    for key in ("name", "base_url", "default_model", "enabled", "timeout_seconds"):
        if key in data:
            setattr(provider, key, data[key])
    if "api_key" in data:
        provider.api_key_encrypted = encrypt_str(data["api_key"] or "")
    provider.save()  # updated_at changes: workers recompile agents using it
    after = _provider_snapshot(provider)  # a new key shows as api_key_changed, never its value
    if "api_key" in data:
        after["api_key_changed"] = True
    _audit(principal, "provider.update", target=provider, before=before, after=after)
    return provider


@transaction.atomic
def provider_delete(*, provider: ProviderCredential, principal: Principal | None = None) -> None:
    if Agent.objects.filter(provider=provider).exists():
        raise Conflict("Agents still use this provider; move them to another provider first.")
    _audit(principal, "provider.delete", target=provider, before=_provider_snapshot(provider))
    provider.delete()


@transaction.atomic
def custom_tool_create(
    *,
    principal: Principal,
    name: str,
    openapi: dict[str, Any],
    secrets: dict[str, Any] | None,
    description: str = "",
    template: str = "",
) -> CustomTool:
    slug = slugify(name).replace("-", "_")
    if not slug:
        raise InvalidInput("The tool needs a name.", field="name")
    if CustomTool.objects.filter(name=slug).exists():
        raise Conflict(f"A custom tool named {slug!r} exists already.", field="name")
    openapi_operations(openapi)  # validates
    _refuse_internal_tool_servers(openapi, secrets or {})
    tool = CustomTool.objects.create(
        name=slug,
        description=description,
        template=template,
        openapi=openapi,
        secrets_encrypted=encrypt_json(secrets or {}),
        created_by=principal.user,
    )
    _audit(principal, "custom_tool.create", target=tool, after=_custom_tool_snapshot(tool))
    return tool


@transaction.atomic
def custom_tool_delete(*, principal: Principal, tool_id: Any) -> None:
    tool = CustomTool.objects.select_for_update().filter(pk=tool_id).first()
    if tool is None:
        raise NotFound("Not found.")
    _audit(principal, "custom_tool.delete", target=tool, before=_custom_tool_snapshot(tool))
    tool.delete()


def _refuse_internal_tool_servers(
    openapi: dict[str, Any], secrets: dict[str, Any], *, fields: tuple[str, str] = ("openapi", "secrets")
) -> None:
    """Where a custom tool's calls go: its OpenAPI servers, or the secret base URL a template stores there.
    `fields` name the input each came from, for the error."""
    for server in openapi.get("servers") or []:
        url = server.get("url") if isinstance(server, dict) else None
        if isinstance(url, str) and url.startswith(("http://", "https://")):
            refuse_internal_url(url, field=fields[0])
    if isinstance(secrets.get("base_url"), str):
        refuse_internal_url(secrets["base_url"], field=fields[1])


def _custom_tool_snapshot(tool: CustomTool) -> dict[str, Any]:
    """What an audit entry may show of a custom tool: its definition, never its secrets (only whether it has any)."""
    return {
        "name": tool.name,
        "description": tool.description,
        "template": tool.template,
        "openapi": tool.openapi,
        "has_secrets": bool(tool.secrets_encrypted),
    }


def custom_tool_from_template(*, principal: Principal, template: str, name: str, params: dict[str, Any]) -> CustomTool:
    builder = TEMPLATES.get(template)
    if builder is None:
        raise InvalidInput(
            f"Unknown template {template!r}; available: {', '.join(sorted(TEMPLATES))}.", field="template"
        )
    try:
        document, secrets = builder(**params)
    except TypeError as exc:
        raise InvalidInput(f"Wrong parameters for the {template} template: {exc}", field="params") from exc
    _refuse_internal_tool_servers(document, secrets, fields=("params", "params"))
    return custom_tool_create(
        principal=principal,
        name=name,
        openapi=document,
        secrets=secrets,
        description=f"{template} integration",
        template=template,
    )


@transaction.atomic
def approved_host_add(*, principal: Principal, host: str, note: str = "") -> ApprovedHost:
    """Allow the http_request tool to call `host` (the tenant's SSRF allow-list); adding a listed host changes
    nothing."""
    host = (host or "").strip().lower()
    if not host or "/" in host or ":" in host or len(host) > 253:
        raise InvalidInput("Give a bare host name, e.g. api.example.com.", field="host")
    refuse_internal_host(host, field="host")
    obj, created = ApprovedHost.objects.get_or_create(host=host, defaults={"note": note, "created_by": principal.user})
    if created:
        _audit(principal, "approved_host.add", target=obj, after={"host": obj.host, "note": obj.note})
    return obj


@transaction.atomic
def approved_host_delete(*, principal: Principal, host_id: Any) -> None:
    obj = ApprovedHost.objects.select_for_update().filter(pk=host_id).first()
    if obj is None:
        raise NotFound("Not found.")
    _audit(principal, "approved_host.delete", target=obj, before={"host": obj.host, "note": obj.note})
    obj.delete()


# --- Chat ------------------------------------------------------------------------------------------


# A turn's rows in one statement (atomic on its own, one round trip): the conversation if it is new, the question
# and the assistant's placeholder. Through the ORM this was BEGIN, two INSERTs and COMMIT on the first token's path.
_TURN_INSERT = """
WITH conversation AS (
    INSERT INTO agents_conversation (id, agent_id, user_id, title, created_at, updated_at)
    SELECT %(conversation)s, %(agent)s, %(user)s, %(title)s, %(now)s, %(now)s WHERE %(new)s
)
INSERT INTO agents_message (id, created, conversation_id, role, content, citations, tool_calls, usage, latency_ms,
    first_token_ms, agent_version_id, kb_versions, status, error, run_id)
VALUES
    (%(question)s, %(now)s, %(conversation)s, 'user', %(text)s, '[]', '[]', '{}', NULL, NULL, %(version)s, '{}',
     'complete', '{}', NULL),
    (%(reply)s, %(reply_at)s, %(conversation)s, 'assistant', '', '[]', '[]', '{}', NULL, NULL, %(version)s, '{}',
     'streaming', '{}', %(run)s)
"""

# A regenerated answer: only the new alternative's placeholder (the question and the conversation exist).
_ALTERNATIVE_INSERT = """
INSERT INTO agents_message (id, created, conversation_id, role, content, citations, tool_calls, usage, latency_ms,
    first_token_ms, agent_version_id, kb_versions, status, error, run_id, alternative_of_id)
VALUES (%(reply)s, %(reply_at)s, %(conversation)s, 'assistant', '', '[]', '[]', '{}', NULL, NULL, %(version)s, '{}',
    'streaming', '{}', %(run)s, %(alternative_of)s)
"""


def _message_ids_next() -> tuple[int, int]:
    """Ids for a turn's question and answer, taken before the rows are written (the run is queued first)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT nextval('agents_message_id_seq'), nextval('agents_message_id_seq')")
        ids: tuple[int, int] = cursor.fetchone()
        return ids


def _turn_to_regenerate(*, conversation: Conversation, message_id: Any) -> tuple[Message, int]:
    """The question to answer again and the turn's first answer, which the new alternative joins. Only the
    latest turn can be regenerated: an alternative further up would change what the later turns answered."""
    try:
        target = Message.objects.filter(conversation=conversation, pk=int(message_id), role="assistant").first()
    except (TypeError, ValueError):
        target = None
    if target is None:
        raise NotFound("That answer is not in this conversation.")
    question = Message.objects.filter(conversation=conversation, role="user").order_by("-created", "-id").first()
    if question is None or question.created > target.created:
        raise Conflict("Only the latest answer can be regenerated.")
    return question, target.alternative_of_id or target.pk


def chat_start(
    *,
    principal: Principal,
    agent: Agent,
    message: str,
    conversation_id: str | None = None,
    regenerate: int | None = None,
) -> dict[str, Any]:
    """Validate, admit (concurrency limits), queue the run on the "agents" worker queue, and record the user
    message and an assistant placeholder. Returns the run's handles.

    `regenerate` (an assistant message of the conversation's latest turn) answers that turn's question again:
    no new question is recorded, and the answer is stored as another alternative of the turn.

    Outside a transaction (views, consumers) the run is queued before the rows are written, so the worker starts
    while they are; inside one it is queued when that transaction commits."""

    text = (message or "").strip()
    if not text and regenerate is None:
        raise InvalidInput("The message is empty.", field="message")
    if not agent.is_enabled:
        raise AgentDisabled("This agent is disabled.")
    version = agent.current_version
    if version is None:
        raise Conflict("This agent has no configuration yet.")
    limits = effective_limits(version.config.get("limits"))
    if len(text) > MAX_MESSAGE_CHARS or estimate_tokens(text) + int(limits["max_tokens"]) > int(
        limits["context_tokens"]
    ):
        raise ContextTooLong(
            f"The message is too long for this agent's context window ({limits['context_tokens']} tokens).",
            field="message",
        )
    provider_id = version.config.get("provider_id")
    stamp = provider_stamp(None)
    if provider_id:
        provider = (  # selectors.agent_get_for_chat has it loaded already
            agent.provider
            if agent.provider_id == provider_id
            else ProviderCredential.objects.filter(pk=provider_id).first()
        )
        if provider is None or not provider.enabled:
            raise ProviderDisabled("The agent's LLM provider is disabled by an administrator.")
        stamp = provider_stamp(provider.updated_at)
    if conversation_id:
        try:
            conversation = Conversation.objects.filter(
                pk=uuid.UUID(str(conversation_id)), agent=agent, user=principal.user
            ).first()
        except ValueError:
            conversation = None
        if conversation is None:
            raise NotFound("Conversation not found.")
    else:
        conversation = None
    question: Message | None = None
    alternative_of = None
    if regenerate is not None:
        if conversation is None:
            raise InvalidInput("Say which conversation the answer to regenerate is in.", field="conversation_id")
        question, alternative_of = _turn_to_regenerate(conversation=conversation, message_id=regenerate)
        text = question.content  # it passed the length check when it was first asked
    schema = current_schema()
    run_id = str(uuid.uuid4())
    # Refuse before any provider call: monthly tokens/cost left (402/403), then a run slot in the one ledger of
    # concurrent runs (tenant, user, key and this agent: 429; shared pool and its queue full: 503). The worker
    # frees the slot when the run ends (chat_run_release); a crashed run's lease expires.
    with limits_snapshot():  # plan, override and sub-limits are read once for these three checks
        quota_check(principal=principal, quota="llm_tokens_per_month", amount=0)
        quota_check(principal=principal, quota="llm_cost_per_month", amount=0)
        # A full pool puts the run in the bounded queue (position n; the worker waits for the slot); a full queue
        # is Overloaded (503 + Retry-After).
        queued_position = chat_run_admit(
            principal=principal,
            run_id=run_id,
            agent_id=agent.pk,
            agent_limit=int(limits["max_concurrent_runs"]),
            run_seconds=float(limits["run_timeout_seconds"]),
            join_only=True,
        ).position
    try:
        now = timezone.now()
        question_id, reply_id = _message_ids_next()
        conversation_uuid = conversation.pk if conversation is not None else uuid.uuid4()
        run_meta_write(
            schema,
            run_id,
            {
                "agent_id": agent.pk,
                "user_id": principal.user.pk,
                "conversation_id": conversation_uuid,
                "message_id": reply_id,
                "message_created": (now + dt.timedelta(microseconds=1)).isoformat(),
                "agent_version_id": version.pk,
                "status": "queued",
                "api_key_id": getattr(principal.api_key, "pk", ""),
                # when it joined the chat queue (the worker's wait deadline counts from here), and what the worker
                # needs to admit it then
                "queued_at": str(time.time()) if queued_position else "",
                "agent_max_runs": limits["max_concurrent_runs"],
                "run_timeout_seconds": limits["run_timeout_seconds"],
                "provider_stamp": stamp,  # the worker's cached compiled agent is current if its stamp matches
                "question": text,
                # the history is what the conversation held before this question (for a new one: nothing)
                "history_before": (question.created if question is not None else now).isoformat()
                if conversation is not None
                else "",
            },
        )
        if queued_position:  # seq 1 = run.queued, recorded before the worker exists
            emit_sync(schema, run_id, 1, "run.queued", {"position": queued_position})
        if getattr(settings, "AGENTS_ENQUEUE_RUNS", True):  # tests may execute runs in-process instead
            dispatch = functools.partial(agent_run_task.apply_async, args=(run_id,), queue="agents")
            if connection.in_atomic_block:
                transaction.on_commit(dispatch)  # the caller's transaction decides whether the run exists
            else:
                # The run starts before its rows are written: the worker loads the agent and asks the model while
                # this request inserts them (the first token waits for one, not both). Nothing in the run reads
                # the rows until it saves the answer, and that waits for them (runner._persist_once_written). If
                # the insert fails, the run is cancelled; its events are never shown, since this request fails.
                dispatch()
        with connection.cursor() as cursor:
            cursor.execute(
                _TURN_INSERT if alternative_of is None else _ALTERNATIVE_INSERT,
                {
                    "new": conversation is None,
                    "conversation": conversation_uuid,
                    "agent": agent.pk,
                    "user": principal.user.pk,
                    "title": text[:80],
                    "now": now,
                    "question": question_id,
                    "text": text,
                    "version": version.pk,
                    "reply": reply_id,
                    "reply_at": now + dt.timedelta(microseconds=1),
                    "run": run_id,
                    "alternative_of": alternative_of,
                },
            )
    except Exception:
        run_cancel_request(schema, run_id)
        chat_run_release(schema=schema, run_id=run_id)
        raise
    return {
        "run_id": run_id,
        "conversation_id": str(conversation_uuid),
        "message_id": reply_id,
        "agent_version": version.number,
        "queued_position": queued_position,  # 0 = started at once
    }


@transaction.atomic
def secrets_rotate() -> int:
    """Re-encrypt this tenant's stored secrets with the current key (run after adding a new first key)."""

    providers = tools = 0
    for provider in ProviderCredential.objects.select_for_update().exclude(api_key_encrypted=""):
        ProviderCredential.objects.filter(pk=provider.pk).update(
            api_key_encrypted=rotate_token(provider.api_key_encrypted)
        )
        providers += 1
    for tool in CustomTool.objects.select_for_update().exclude(secrets_encrypted=""):
        CustomTool.objects.filter(pk=tool.pk).update(secrets_encrypted=rotate_token(tool.secrets_encrypted))
        tools += 1
    if providers or tools:
        _audit(
            None,
            "secrets.rotate",
            target_type="agents.secrets",
            after={"providers": providers, "custom_tools": tools},
        )
    return providers + tools


def run_cancel(*, meta: dict[str, str], run_id: str) -> dict[str, str]:
    """Stop a run that is queued or streaming (the caller checked access: selectors.run_get_for_principal). The
    worker ends it within AGENTS_CANCEL_POLL_SECONDS: message.end with status "cancelled", the partial answer
    kept on the message (incomplete, error code "cancelled"). A finished run cannot be cancelled (409)."""
    if meta.get("status") != "queued":  # until message.end the run's metadata says "queued"
        raise Conflict("This answer has already finished.", extra={"run_status": meta.get("status")})
    run_cancel_request(current_schema(), run_id)
    return {"run_id": run_id, "status": "cancelling"}
