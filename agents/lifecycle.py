"""Conversations over their lifetime: retention, a member's export, and what a departing member leaves behind.

Retention drops whole month partitions of the message table (agents.partitions) once the month lies entirely
before the organisation's retention, then the conversations left without any message. A member's export and
account deletion are asked of this app by accounts through the signals it defines (accounts sits below agents).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any, TypedDict

from django.conf import settings
from django.db import connection
from django.db.models import Exists, OuterRef
from django.utils import timezone

from core.rls import db_as_system
from iam.policy import Principal, resource_queryset_for
from tenants.models import DepartedMemberMessages, Tenant

from .models import Agent, Conversation, Message
from .partitions import message_partition_drop, message_partitions_expired

if TYPE_CHECKING:
    from django.contrib.auth.models import _User as User

logger = logging.getLogger(__name__)


class RetentionResult(TypedDict):
    cutoff: str | None
    dropped: list[str]
    postponed: list[str]
    default_rows_deleted: int
    conversations_deleted: int


def message_retention_days(tenant: Tenant) -> int | None:
    """The organisation's retention in days, else the operator's default; None: conversations are kept forever."""
    if tenant.message_retention_days is not None:
        return tenant.message_retention_days
    days: int | None = settings.MESSAGE_RETENTION_DAYS
    return days


def message_retention_apply(*, tenant: Tenant, now: dt.datetime | None = None) -> RetentionResult:
    """Drop the messages of `tenant` older than its retention, in its schema (the caller has switched to it).

    Whole months go by partition (agents.partitions.message_partition_drop: writes to current months never wait
    for more than the configured lock timeout); stray old rows in the DEFAULT partition are deleted row by row;
    then conversations last touched before the cutoff that no longer have any message are deleted."""
    days = message_retention_days(tenant)
    result: RetentionResult = {
        "cutoff": None,
        "dropped": [],
        "postponed": [],
        "default_rows_deleted": 0,
        "conversations_deleted": 0,
    }
    if days is None:
        return result
    cutoff = (now or timezone.now()) - dt.timedelta(days=days)
    result["cutoff"] = cutoff.isoformat()
    for name in message_partitions_expired(cutoff=cutoff):
        dropped = message_partition_drop(name, lock_timeout_ms=settings.MESSAGE_RETENTION_LOCK_TIMEOUT_MS)
        result["dropped" if dropped else "postponed"].append(name)
    with connection.cursor() as cursor:
        # Qualified with the organisation's schema, as the partition drops are: never a name resolved elsewhere.
        cursor.execute(
            "SELECT quote_ident(current_schema()) || '.agents_message_default', "
            "to_regclass(quote_ident(current_schema()) || '.agents_message_default') IS NOT NULL"
        )
        default_partition, exists = cursor.fetchone()
        if exists:  # an operator may have removed it to let months be detached concurrently
            cursor.execute(f"DELETE FROM {default_partition} WHERE created < %s", [cutoff])  # noqa: S608 - quoted
            result["default_rows_deleted"] = cursor.rowcount
    emptied = Conversation.objects.filter(updated_at__lt=cutoff).exclude(
        Exists(Message.objects.filter(conversation=OuterRef("pk")))
    )
    result["conversations_deleted"], _ = emptied.delete()
    if result["dropped"] or result["postponed"] or result["conversations_deleted"]:
        logger.info("message retention (%s days): %s", days, result)
    return result


def user_conversations_export(*, principal: Principal) -> list[dict[str, Any]]:
    """The principal's own conversations in its organisation, with every message, for the personal data export.
    They are the person's data even with an agent they may no longer see: that agent's name is then left out."""
    conversations = list(Conversation.objects.filter(user_id=principal.user.pk).order_by("created_at"))
    agent_ids = {conversation.agent_id for conversation in conversations}
    visible_names = dict(
        resource_queryset_for(principal, Agent.objects.filter(pk__in=agent_ids)).values_list("pk", "name")
    )
    exported = []
    for conversation in conversations:
        exported.append(
            {
                "id": str(conversation.id),
                "agent": {"id": conversation.agent_id, "name": visible_names.get(conversation.agent_id)},
                "title": conversation.title,
                "created_at": conversation.created_at.isoformat(),
                "updated_at": conversation.updated_at.isoformat(),
                "messages": [message_export(message) for message in conversation.messages.order_by("created", "id")],
            }
        )
    return exported


def message_export(message: Message) -> dict[str, Any]:
    return {
        "id": message.id,
        "created": message.created.isoformat(),
        "role": message.role,
        "content": message.content,
        "citations": message.citations,
        "tool_calls": message.tool_calls,
        "usage": message.usage,
        "status": message.status,
        "alternative_of": message.alternative_of_id,
    }


def departed_member_conversations_handle(*, tenant: Tenant, user: User) -> dict[str, int]:
    """Apply `tenant`'s policy to the conversations of a member deleting their account (in its schema): delete them
    with their messages, or keep them unlinked from the person (the title, which the person may have typed, goes).
    Runs as the system: the policy is the organisation's decision, not a read of the member's own rights."""
    with db_as_system():
        conversations = Conversation.objects.filter(user_id=user.pk)
        if tenant.departed_member_messages == DepartedMemberMessages.ANONYMISE:
            return {"anonymised": conversations.update(user=None, title="")}
        ids = list(conversations.values_list("pk", flat=True))
        # The message table has no Django-visible cascade (its key includes the partition column).
        Message.objects.filter(conversation_id__in=ids).delete()
        deleted, _ = Conversation.objects.filter(pk__in=ids).delete()
        return {"deleted": deleted}


def conversations_export_receiver(sender: object, *, principal: Principal, **kwargs: Any) -> dict[str, Any]:
    return {"conversations": user_conversations_export(principal=principal)}


def member_departing_receiver(sender: object, *, tenant: Tenant, user: User, **kwargs: Any) -> dict[str, int]:
    return departed_member_conversations_handle(tenant=tenant, user=user)
