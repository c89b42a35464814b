"""API routes (mounted under /api/v1/ on tenant hosts)."""

from django.urls import path

from . import apis

urlpatterns = [
    path("usage/quotas/", apis.QuotaOverviewApi.as_view(), name="api-usage-quotas"),
    path("usage/summary/", apis.UsageSummaryApi.as_view(), name="api-usage-summary"),
    path("usage/limits/", apis.SubLimitListApi.as_view(), name="api-usage-limits"),
    path("usage/limits/<int:sublimit_id>/", apis.SubLimitDetailApi.as_view(), name="api-usage-limit"),
    path("audit/", apis.AuditListApi.as_view(), name="api-audit"),
]
