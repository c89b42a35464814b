"""URLs served on tenant hosts ({slug}.BASE_DOMAIN).

Each app owns two route lists: `<app>/urls.py` (REST API under /api/v1/) and
`<app>/dashboard_urls.py` (server-rendered pages).
"""

from django.urls import include, path

from accounts.apis import MeApi
from agents.views import dashboard_home
from config.health import healthz, readyz

TENANT_APPS_WITH_ROUTES = ["accounts", "iam", "knowledge", "agents", "usage", "webhooks", "backups"]

api_v1 = [
    path("me/", MeApi.as_view(), name="api-me"),
    *[path("", include(f"{app}.urls")) for app in TENANT_APPS_WITH_ROUTES],
]

urlpatterns = [
    path("", dashboard_home, name="dashboard"),
    path("accounts/", include("allauth.urls")),
    path("api/v1/", include(api_v1)),
    *[path("", include(f"{app}.dashboard_urls")) for app in TENANT_APPS_WITH_ROUTES],
    path("healthz", healthz),
    path("readyz", readyz),
]

handler500 = "core.errors.server_error"  # an unreachable database is 503 JSON, not a 500 page
handler404 = "core.errors.page_not_found"  # an unmatched /api/ path is JSON, as every API 404
