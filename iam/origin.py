"""The WebSocket Origin check: a browser may open a socket only from a page of the host it connects to.

Channels' AllowedHostsOriginValidator accepts any Origin matching ALLOWED_HOSTS, and ALLOWED_HOSTS holds every
`*.BASE_DOMAIN`: a page on another organisation's host could open a socket here carrying the visitor's session
cookie (cross-site WebSocket hijacking). Our pages open sockets only to their own host (`location.host` in
static/js/chat.js and live.js) and the public site opens none, so the one Origin accepted is the socket's own Host
(hostnames compared; ports are not, as proxies may drop them and cookies ignore them). No Origin header means a
non-browser client (browsers always send one on a WebSocket handshake): it goes on and must authenticate with a
token or API key like any API client.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin1")
    return None


def websocket_origin_allowed(scope: dict[str, Any]) -> bool:
    """True when the handshake has no Origin, or an Origin whose host is the Host the socket was opened on."""
    origin = _header(scope, b"origin")
    if origin is None:
        return True
    host = _header(scope, b"host")
    if not host:
        return False
    try:
        origin_host = urlsplit(origin).hostname  # None for "null" (sandboxed pages, file://)
        socket_host = urlsplit(f"//{host}").hostname
    except ValueError:  # malformed header
        return False
    return origin_host is not None and origin_host == socket_host


class SameHostOriginValidator:
    """ASGI middleware for the websocket router: refuse the handshake unless websocket_origin_allowed."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] == "websocket" and not websocket_origin_allowed(scope):
            return await WebsocketDenier()(scope, receive, send)
        return await self.application(scope, receive, send)
