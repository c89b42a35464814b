"""Which organisation a request or WebSocket is for: the Host header names it (django-tenants' rule).

django-tenants ships no Channels middleware (django-tenants #931); its HTTP middleware never runs for websockets,
so without TenantWebsocketMiddleware every consumer would silently query the public schema.
"""

from __future__ import annotations

from channels.db import database_sync_to_async
from django.http import HttpRequest, JsonResponse
from django.shortcuts import render
from django_tenants.middleware.main import TenantMainMiddleware
from django_tenants.utils import remove_www

from core.asgi import host_from_scope
from core.context import current_tenant
from core.errors import ErrorCode, error_body
from core.rls import NOBODY, db_principal_scope
from core.tenancy import public_site_url

from .selectors import tenant_for_host, tenant_for_host_cached

PROBE_PATHS = ("/healthz", "/readyz", "/metrics")  # orchestrators probe and scrape pods by IP

_tenant_for_host = database_sync_to_async(tenant_for_host)


class TenantMiddleware(TenantMainMiddleware):
    """django-tenants' host -> schema resolution, with a clear answer for unknown hosts."""

    @staticmethod
    def hostname_from_request(request: HttpRequest) -> str:
        # Host names are case-insensitive and domains are stored in lower case; the WebSocket path
        # (core.asgi.host_from_scope) lowers them too, so both resolve `ACME.example.com` alike.
        return remove_www(request.get_host().split(":")[0].lower())

    def get_tenant(self, domain_model, hostname: str):
        tenant = tenant_for_host(hostname)
        if tenant is None:
            raise domain_model.DoesNotExist(hostname)
        return tenant

    def process_request(self, request: HttpRequest):
        response = super().process_request(request)
        tenant = getattr(request, "tenant", None)
        current_tenant.set(tenant.schema_name if tenant is not None else "-")
        return response

    def no_tenant_found(self, request: HttpRequest, hostname: str):
        if request.path in PROBE_PATHS:
            # Orchestrator probes hit pods by IP: answer them on the public URL conf.
            self.setup_url_routing(request, force_public=True)
            return None
        message = (
            f"No organisation is served at '{hostname}'. Check the address, or sign up at {public_site_url()}/signup/."
        )
        self.setup_url_routing(request, force_public=True)  # links on the error page point at the public site
        if request.path.startswith("/api/") or "application/json" in request.headers.get("Accept", ""):
            return JsonResponse(error_body(ErrorCode.UNKNOWN_TENANT, message), status=404)
        return render(request, "errors/unknown_tenant.html", {"hostname": hostname, "message": message}, status=404)


class TenantWebsocketMiddleware:
    """Stores `scope["tenant"]`; closes the handshake (403) for hosts that name no tenant."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        host = host_from_scope(scope)
        # A cached host needs no thread hop: handshakes would otherwise queue on the one thread-sensitive thread.
        tenant = tenant_for_host_cached(host) or await _tenant_for_host(host)
        if tenant is None or tenant.schema_name == "public":
            # Refuse before accepting: the client sees the handshake fail.
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 4404})
            return
        current_tenant.set(tenant.schema_name)
        # The socket's queries see nothing private until its consumer authenticates a principal (core.rls).
        with db_principal_scope(NOBODY):
            return await self.app(dict(scope, tenant=tenant), receive, send)
