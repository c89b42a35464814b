"""Reads for agents. Objects are fetched through iam.policy (visibility per principal, API-key agent lists)."""

from __future__ import annotations

import copy
import uuid
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.utils import timezone

from core.epochs import EpochCache, epoch_get
from core.errors import InvalidInput, NotFound
from core.tenancy import current_schema, tenant_key
from iam.policy import (
    Principal,
    principal_acts_for,
    principal_can,
    resource_check_for_principal,
    resource_get_for_principal,
    resource_queryset_for,
)

from .models import Agent, AgentVersion, Conversation, Message, MessageStatus
from .runtime.stream import run_meta_read


def agent_list(*, principal: Principal) -> QuerySet[Agent]:
    return resource_queryset_for(principal, Agent.objects.select_related("current_version")).order_by("name")


def agent_get_for_principal(principal: Principal, agent_id: Any, *, action: str = "view") -> Agent:
    agent = resource_get_for_principal(principal, Agent.objects.select_related("current_version"), agent_id, action)
    return agent


# The agent a chat starts with, per process under the tenant's agents epoch (core.epochs; bumped by agents.signals
# on any change to an agent, its versions or a provider): on a chat's first-token path the three-table lookup
# cost ~2.5 ms. The row is loaded without the visibility filter and checked for each principal.
_chat_agents: EpochCache[Agent] = EpochCache("AGENT_CACHE_SECONDS")


def agents_epoch(schema: str) -> str:
    return tenant_key("agents", schema=schema)


def agent_get_for_chat(principal: Principal, agent_id: Any) -> Agent:
    """The agent to chat with, its current version and its provider (chat_start reads all three)."""
    schema = current_schema()
    epoch = epoch_get(agents_epoch(schema))  # read before the row (core.epochs)
    agent = _chat_agents.get((schema, str(agent_id)), epoch)
    if agent is None:
        try:
            agent = Agent.objects.select_related("current_version", "provider").filter(pk=agent_id).first()
        except (TypeError, ValueError):  # a malformed id is just "not found"
            agent = None
        if agent is None:
            raise NotFound("Not found.")
        _chat_agents.put((schema, str(agent_id)), epoch, agent)
    resource_check_for_principal(principal, agent, "use")
    return copy.copy(agent)  # requests never share a mutable row


def agent_versions(*, agent: Agent) -> QuerySet[AgentVersion]:
    return AgentVersion.objects.filter(agent=agent).select_related("author").order_by("-number")


def agent_version_get(*, agent: Agent, number: int) -> AgentVersion:
    version = AgentVersion.objects.filter(agent=agent, number=number).first()
    if version is None:
        raise NotFound(f"Version {number} does not exist.")
    return version


def agent_version_at(*, agent: Agent, at: datetime) -> AgentVersion:
    """The version that was current at `at`: the latest one created at or before it. InvalidInput when `at` is in
    the future or before the agent's first version (there is no state to go back to)."""
    if at > timezone.now():
        raise InvalidInput("That time is in the future; choose a time in the past.", field="at")
    version = AgentVersion.objects.filter(agent=agent, created_at__lte=at).order_by("-created_at", "-number").first()
    if version is None:
        raise InvalidInput("That time is before the agent's first version.", field="at")
    return version


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
    """Field-level differences between two configuration snapshots (nested dicts one level deep)."""
    changes: list[dict[str, Any]] = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key), new.get(key)
        if before == after:
            continue
        if isinstance(before, dict) and isinstance(after, dict):
            for sub in sorted(set(before) | set(after)):
                if before.get(sub) != after.get(sub):
                    changes.append({"field": f"{key}.{sub}", "from": before.get(sub), "to": after.get(sub)})
        else:
            changes.append({"field": key, "from": before, "to": after})
    return changes


def conversation_list(*, principal: Principal, agent: Agent | None = None) -> QuerySet[Conversation]:
    qs = Conversation.objects.filter(user=principal.user).select_related("agent")
    visible = resource_queryset_for(principal, Agent.objects.all()).values("pk")
    qs = qs.filter(agent_id__in=visible)
    if agent is not None:
        qs = qs.filter(agent=agent)
    return qs.order_by("-updated_at")


def conversation_get_for_principal(principal: Principal, conversation_id: Any) -> Conversation:
    try:
        conversation = (
            Conversation.objects.select_related("agent").filter(pk=conversation_id, user=principal.user).first()
        )
    except (ValueError, TypeError, ValidationError):  # not a UUID: no such conversation
        conversation = None
    if conversation is None or not principal_can(principal, "view", conversation.agent):
        raise NotFound("Not found.")
    return conversation


def cited_chunk_ids(*, user: Any, agents: QuerySet[Agent], knowledge_base_id: int, document_id: Any) -> set[int]:
    """Chunks of one document cited to `user` in its conversations with `agents` (iam.policy's citation source)."""
    try:
        wanted = {"knowledge_base_id": int(knowledge_base_id), "document_id": int(document_id)}
    except (TypeError, ValueError):
        return set()
    rows = Message.objects.filter(
        conversation__user_id=user.pk,
        conversation__agent__in=agents,
        role="assistant",
        citations__contains=[wanted],
    ).values_list("citations", flat=True)
    return {
        int(c["chunk_id"])
        for citations in rows
        for c in citations
        if c.get("chunk_id") is not None
        and c.get("knowledge_base_id") == wanted["knowledge_base_id"]
        and c.get("document_id") == wanted["document_id"]
    }


def conversation_messages(
    *, conversation: Conversation, limit: int = 200, after_id: int | None = None
) -> list[Message]:
    """The newest `limit` messages, oldest first; with `after_id`, only those newer than that message."""
    messages = Message.objects.filter(conversation=conversation)
    if after_id is not None:
        messages = messages.filter(id__gt=after_id)
    rows = list(messages.order_by("-created", "-id")[:limit])
    rows.reverse()
    return rows


def runs_streaming_since(*, since: datetime) -> QuerySet[Message, Any]:
    """Run ids of the answers still streaming that started after `since` (the month partitions before it are not
    read). Streaming past its worker's life means the worker died: the agents sweep closes those."""
    return (
        Message.objects.filter(status=MessageStatus.STREAMING, created__gte=since, run_id__isnull=False)
        .values_list("run_id", flat=True)
        .order_by()
    )


def run_get_for_principal(principal: Principal, run_id: str) -> dict[str, str]:
    """A run's metadata if the principal started it (or administers the tenant) and may still use the agent."""

    try:
        uuid.UUID(str(run_id))
    except ValueError:
        raise NotFound("Not found.") from None
    meta = run_meta_read(current_schema(), str(run_id))
    if meta is None or "agent_id" not in meta:  # expired, or lost with a Redis that kept nothing (a bare status)
        raise NotFound("Not found.")
    if not principal_acts_for(principal, meta.get("user_id")):
        raise NotFound("Not found.")
    agent_get_for_principal(principal, meta["agent_id"], action="use")
    return meta
