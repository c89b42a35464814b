"""Channels middleware: resolve the tenant from the Host header, exactly like HTTP.

django-tenants ships none (django-tenants #931); its HTTP middleware never runs for websockets, so
without this every consumer would silently query the public schema.
"""

from __future__ import annotations

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django_tenants.utils import remove_www

from tenants.selectors import tenant_for_host

from .context import current_tenant

_tenant_for_host = database_sync_to_async(tenant_for_host)


def host_from_scope(scope) -> str:
    for name, value in scope.get("headers", []):
        if name == b"host":
            return remove_www(value.decode("latin1").split(":")[0].lower())
    return ""


class TenantWebsocketMiddleware:
    """Stores `scope["tenant"]`; closes the handshake (403) for hosts that name no tenant."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        tenant = await _tenant_for_host(host_from_scope(scope))
        if tenant is None or tenant.schema_name == "public":
            # Refuse before accepting: the client sees the handshake fail.
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 4404})
            return
        current_tenant.set(tenant.schema_name)
        return await self.app(dict(scope, tenant=tenant), receive, send)


class OneHopASGIHandler(ASGIHandler):
    """Django's ASGI handler with the middleware chain built synchronously and entered with one thread hop.

    Our middleware is synchronous (and MiddlewareMixin runs process_request/process_response through
    sync_to_async when the chain is async). Django's async chain therefore crosses threads several times per
    request: into the sync chain, back to the event loop for the view resolver, into a thread again for each
    process_view and for the view. Built for sync, a request takes one hop in and one out; async views still work
    (Django runs them with async_to_sync), and streaming responses are still sent by the event loop.
    """

    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)
        if is_async:
            self._middleware_chain = sync_to_async(self._middleware_chain, thread_sensitive=True)
