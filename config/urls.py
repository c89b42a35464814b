"""URLs served on tenant hosts ({slug}.BASE_DOMAIN)."""

from django.urls import include, path

from accounts.apis import MeApi
from agents.views import dashboard_home
from core.health import healthz, readyz

api_v1 = [
    path("me/", MeApi.as_view(), name="api-me"),
]

urlpatterns = [
    path("", dashboard_home, name="dashboard"),
    path("accounts/", include("allauth.urls")),
    path("api/v1/", include(api_v1)),
    path("healthz", healthz),
    path("readyz", readyz),
]
