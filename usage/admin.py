"""Django admin for platform staff: plans and per-tenant quota overrides (public schema).

Registered here (not in tenants/) because the usage app owns quotas. Changing a tenant's override
is also written to that tenant's audit log.
"""

from __future__ import annotations

from django.contrib import admin

from core.audit import actor_for_user, actor_scope, audit_record
from core.tenancy import in_tenant
from tenants.models import Plan, TenantQuota

QUOTA_FIELDS = (
    "max_active_agents",
    "max_kb_storage_bytes",
    "max_documents_per_month",
    "max_api_calls_per_month",
    "max_llm_tokens_per_month",
    "max_llm_cost_per_month",
    "max_concurrent_runs",
)


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "is_default", *QUOTA_FIELDS)
    search_fields = ("slug", "name")


@admin.register(TenantQuota)
class TenantQuotaAdmin(admin.ModelAdmin):
    list_display = ("tenant", "plan", *QUOTA_FIELDS)
    list_select_related = ("tenant", "plan")
    search_fields = ("tenant__slug", "tenant__name")
    autocomplete_fields = ("plan",)

    def save_model(self, request, obj, form, change):
        before = None
        if change:
            old = TenantQuota.objects.get(pk=obj.pk)
            before = {f: str(getattr(old, f)) for f in (*QUOTA_FIELDS, "plan_id", "rate_limits")}
        super().save_model(request, obj, form, change)
        # The Django admin authenticates its staff itself: they are the actor of what they change here.
        actor = actor_for_user(request.user, ip=request.META.get("REMOTE_ADDR"))
        with in_tenant(obj.tenant), actor_scope(actor):
            audit_record(
                action="quota.override.set",
                target=obj,
                before=before,
                after={f: str(getattr(obj, f)) for f in (*QUOTA_FIELDS, "plan_id", "rate_limits")},
            )
