"""Who did it: the audit log's API for every app. The kernel records; the usage app stores (AuditEntry).

Apps record each configuration change inside the change's transaction:

    audit_record(action="agent.update", target=agent, before={...}, after={...})

The actor is never an argument: it is the authenticated principal of the current request, socket, task or
command (`current_actor`), set where that principal is established and nowhere else:
- API views: iam.policy.IsTenantMember; dashboard pages: iam.policy's dashboard guard (actor_set);
- WebSockets: the consumers, right after iam.authentication.principal_from_scope (actor_set);
- Celery: the task's headers carry the actor of whoever queued it (core.observability);
- management commands: AuditedCommand (and manage.py for any other command) act as "cli:<command>" with the
  OS user, never as "system".
core.middleware.RequestIdMiddleware scopes it to one request. Only work nobody started (a periodic task, a
webhook's automatic disabling) is recorded without an actor ("system").

usage registers the sink that stores entries (audit_sink_register in UsageConfig.ready()).
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from django.core.management.base import BaseCommand
from django.db import models

from .context import current_request_id
from .observability import Actor, current_actor

__all__ = [
    "Actor",
    "AuditRecord",
    "AuditedCommand",
    "actor_current",
    "actor_for_command",
    "actor_for_principal",
    "actor_for_user",
    "actor_scope",
    "actor_set",
    "audit_record",
    "audit_sink_register",
]

# Commands that serve requests: each request, socket and task there establishes its own actor.
SERVING_COMMANDS = frozenset({"runserver", "runworker", "daphne"})


class _PrincipalLike(Protocol):
    # Read-only members, so that a frozen dataclass (iam.policy.Principal) matches.
    @property
    def user(self) -> Any: ...
    @property
    def api_key(self) -> Any: ...


@dataclass(frozen=True)
class AuditRecord:
    """One change as the sink receives it (JSON-able before/after, the actor already resolved)."""

    action: str
    actor: Actor | None
    target_type: str
    target_id: str
    target_repr: str
    before: Any
    after: Any
    request_id: str


AuditSink = Callable[[AuditRecord], Any]
_sinks: list[AuditSink] = []


def audit_sink_register(sink: AuditSink) -> None:
    """sink(record) stores one entry in the current tenant's schema (usage registers it in UsageConfig.ready())."""
    if sink not in _sinks:
        _sinks.append(sink)


# --- The actor ------------------------------------------------------------------------------------


def actor_for_user(user: Any, *, api_key_id: int | None = None, ip: str | None = None) -> Actor:
    return Actor(user_id=user.pk, email=user.email or "", api_key_id=api_key_id, ip=ip or None)


def actor_for_principal(principal: _PrincipalLike, *, ip: str | None = None) -> Actor:
    """A member acting, directly or through one of their API keys (iam.policy.Principal)."""
    api_key = principal.api_key
    return actor_for_user(principal.user, api_key_id=api_key.pk if api_key is not None else None, ip=ip)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER (some containers)
        return f"uid:{os.getuid()}"


def actor_for_command(command: str) -> Actor:
    """A management command run from the command line: "cli:<command>" and the OS user who ran it."""
    return Actor(name=f"cli:{command}", os_user=_os_user())


def actor_current() -> Actor | None:
    return current_actor.get()


def actor_set(actor: Actor | None) -> None:
    """Where a principal is established (authentication, a socket's handshake): act as it until the enclosing
    scope (the request, the socket, the task) ends."""
    current_actor.set(actor)


@contextmanager
def actor_scope(actor: Actor | None = None) -> Iterator[Actor | None]:
    """Act as `actor` (None: nobody yet) inside the block, and as before after it."""
    token = current_actor.set(actor)
    try:
        yield actor
    finally:
        current_actor.reset(token)


class AuditedCommand(BaseCommand):
    """Base of the project's management commands: what they change is audited as "cli:<command>" run by the OS
    user, also when called with call_command."""

    def execute(self, *args: Any, **options: Any) -> Any:
        command = self.__class__.__module__.rsplit(".", 1)[-1]
        with actor_scope(actor_for_command(command)):
            return super().execute(*args, **options)


# --- Recording ------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    return str(value)


def audit_record(
    *,
    action: str,
    target: models.Model | None = None,
    target_type: str = "",
    target_id: Any = "",
    before: Any = None,
    after: Any = None,
    principal: _PrincipalLike | None = None,
) -> Any:
    """Append one entry to the current tenant's audit log; call it inside the change's transaction.

    The actor is the current one (see the module docstring). `principal` counts only where nobody is acting:
    a service called directly from Python (a shell, a test) names who it acts for."""
    if not _sinks:
        raise RuntimeError("no audit sink registered (the usage app stores audit entries)")
    actor = current_actor.get()
    if actor is None and principal is not None:
        actor = actor_for_principal(principal)
    if target is not None:
        target_type = target_type or target._meta.label_lower
        target_id = target_id or target.pk
    request_id = current_request_id.get()
    record = AuditRecord(
        action=action,
        actor=actor,
        target_type=str(target_type),
        target_id=str(target_id or ""),
        target_repr=str(target) if target is not None else "",
        before=_jsonable(before),
        after=_jsonable(after),
        request_id=request_id if request_id != "-" else "",
    )
    result = None
    for sink in _sinks:
        result = sink(record)
    return result
