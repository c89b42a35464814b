"""The session's user of a WebSocket, resolved when first used instead of on every handshake.

channels' AuthMiddleware looks the user up in a thread hop on the process's one thread-sensitive thread before the
consumer runs, for every handshake: sockets that authenticate with a key or a token paid it too, and a thousand
handshakes queued behind each other there. Here `scope["user"]` is a lazy object, as Django's `request.user` is:
the consumers read it inside their database threads (iam.authentication.principal_from_scope, the ping consumer,
core.ratelimit), where the same lookup (django.contrib.auth.get_user: session, backend, session hash) runs once.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from channels.middleware import BaseMiddleware
from django.contrib.auth import get_user
from django.utils.functional import SimpleLazyObject


class LazySessionUserMiddleware(BaseMiddleware):
    """In place of channels.auth.AuthMiddleware, under channels' CookieMiddleware and SessionMiddleware."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        scope = dict(scope)
        session = scope["session"]
        scope["user"] = SimpleLazyObject(lambda: get_user(SimpleNamespace(session=session)))  # type: ignore[arg-type]
        return await super().__call__(scope, receive, send)
