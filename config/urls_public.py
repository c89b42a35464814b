"""URLs served on the base domain: landing, sign-up, tenant creation API, platform admin."""

from django.contrib import admin
from django.urls import include, path

from config.health import healthz, readyz
from core.metrics import metrics_view
from tenants.apis import TenantCreateApi
from tenants.views import landing, org_open, org_picker, signup, signup_done

api_v1 = [
    path("tenants/", TenantCreateApi.as_view(), name="api-tenant-create"),
]

urlpatterns = [
    path("", landing, name="landing"),
    path("signup/", signup, name="signup"),
    path("signup/<slug:slug>/done/", signup_done, name="signup_done"),
    path("organisations/", org_picker, name="org_picker"),
    path("organisations/<slug:slug>/open/", org_open, name="org_open"),
    path("accounts/", include("allauth.urls")),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("healthz", healthz),
    path("metrics", metrics_view),  # token-protected Prometheus metrics
    path("readyz", readyz),
]

handler500 = "core.errors.server_error"  # an unreachable database is 503 JSON, not a 500 page
handler404 = "core.errors.page_not_found"  # an unmatched /api/ path is JSON, as every API 404
