"""Both WebSockets (/ws/agents/{id}/chat/ and /ws/events/) accept a browser only from a page of their own host:
another organisation's Origin is refused at the handshake, while clients that send no Origin (scripts, SDKs)
authenticate with a token as before."""

from __future__ import annotations

import asyncio

from channels.testing import WebsocketCommunicator
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.tokens import TENANT_CLAIM
from config.asgi import application


def _token(live) -> str:
    refresh = RefreshToken.for_user(live.admin_a)
    refresh[TENANT_CLAIM] = live.tenant_a.schema_name
    return str(refresh.access_token)


def _connect(path: str, token: str, origin: bytes | None) -> bool:
    headers = [(b"host", b"acme.localhost:8000")]
    if origin is not None:
        headers.append((b"origin", origin))

    async def attempt() -> bool:
        communicator = WebsocketCommunicator(application, f"{path}?token={token}", headers=headers)
        connected, _ = await communicator.connect(timeout=10)
        if connected:
            await communicator.disconnect()
        return connected

    return asyncio.run(attempt())


def test_websockets_refuse_another_organisations_origin_and_accept_their_own(live):
    token = _token(live)
    for path in (f"/ws/agents/{live.agent().pk}/chat/", "/ws/events/"):
        assert _connect(path, token, b"http://acme.localhost:8000"), path
        assert not _connect(path, token, b"http://globex.localhost:8000"), path
        assert not _connect(path, token, b"http://localhost:8000"), path  # the public site opens no socket
        assert not _connect(path, token, b"null"), path


def test_websockets_without_an_origin_header_work_with_credentials(live):
    token = _token(live)
    for path in (f"/ws/agents/{live.agent().pk}/chat/", "/ws/events/"):
        assert _connect(path, token, None), path
