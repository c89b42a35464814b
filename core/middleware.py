import uuid

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django_tenants.middleware.main import TenantMainMiddleware

from .context import current_request_id, current_tenant
from .urls import public_site_url

PROBE_PATHS = ("/healthz", "/readyz", "/metrics")  # /metrics: scraped by pod IP (issue 6)


class RequestIdMiddleware:
    """Gives every request an id (honours a sane incoming X-Request-ID) and echoes it back."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if 0 < len(incoming) <= 64 and incoming.isascii() else uuid.uuid4().hex
        request.request_id = request_id
        token = current_request_id.set(request_id)
        try:
            response = self.get_response(request)
        finally:
            current_request_id.reset(token)
        response["X-Request-ID"] = request_id
        return response


class TenantMiddleware(TenantMainMiddleware):
    """django-tenants' host -> schema resolution, with a clear answer for unknown hosts."""

    def get_tenant(self, domain_model, hostname: str):
        from tenants.selectors import tenant_for_host

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
            return JsonResponse({"detail": message, "code": "unknown_tenant"}, status=404)
        return render(request, "errors/unknown_tenant.html", {"hostname": hostname, "message": message}, status=404)
