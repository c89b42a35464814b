"""Usage, quotas and audit log dashboard pages (admins only). Thin views over usage.selectors."""

from __future__ import annotations

import datetime as dt

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from agents.selectors import agent_list
from core.errors import DomainError
from core.quotas import QUOTAS, SUB_LIMIT_QUOTAS, quota_usage, tenant_limits
from iam.dashboard import admin_page
from iam.selectors import api_key_list, member_list

from . import selectors, services

PAGE_SIZE = 50

# What the page calls each quota (core.quotas names them for code and the API).
QUOTA_LABELS = {
    "active_agents": "Active agents",
    "kb_storage_bytes": "Knowledge storage",
    "documents_per_month": "Documents added this month",
    "api_calls_per_month": "API requests this month",
    "llm_tokens_per_month": "Model tokens this month",
    "llm_cost_per_month": "Model cost this month (USD)",
    "concurrent_runs": "Chats running at once",
}


def quota_label(name: str) -> str:
    return QUOTA_LABELS.get(name, name.replace("_", " ").capitalize())


def _choices_for_scope(request: HttpRequest) -> dict[str, list[tuple[str, str]]]:
    """Who/what the usage can be broken down by: members, agents, API keys of this organisation."""
    return {
        "user": [(str(m.user_id), m.user.email) for m in member_list(request.tenant)],
        "agent": [(str(a.pk), a.name) for a in agent_list(principal=request.principal)],
        "api_key": [(str(k.pk), f"{k.name} ({k.prefix}…)") for k in api_key_list(principal=request.principal)],
    }


@admin_page
def usage_page(request: HttpRequest) -> HttpResponse:
    scope = request.GET.get("scope", "tenant")
    scope_id = request.GET.get("id") or None
    try:
        days = int(request.GET.get("days", 30))
    except ValueError:
        days = 30
    error = None
    # API calls are counted in Redis and moved to the database every minute; the plan limits below read the live
    # counters, so the headline totals must include the calls not moved yet or the two disagree.
    services.usage_flush_api_calls()
    try:
        usage = selectors.usage_daily(scope=scope, scope_id=scope_id, days=days)
    except DomainError as exc:
        error = exc.message
        usage = selectors.usage_daily(days=30)
    return render(
        request,
        "manage/usage.html",
        {
            "usage": usage,
            "scope": scope,
            "scope_id": scope_id or "",
            "days": days,
            "error": error,
            "choices": _choices_for_scope(request),
            "sublimits": [
                {"row": row, "label": quota_label(row.quota)}
                for row in selectors.sublimit_list().select_related("user")
            ],
            "quotas": _quota_rows(request.tenant),
            "sublimit_quotas": _sublimit_quotas(),
            "nav": "admin",
            "tab": "usage",
        },
    )


def _quota_rows(tenant) -> list[dict]:
    """The organisation's plan limits next to what it uses now (core.quotas reads both)."""
    limits = tenant_limits(tenant)
    rows = []
    for name, spec in QUOTAS.items():
        try:
            used = quota_usage(tenant=tenant, quota=name)
        except Exception:  # noqa: BLE001 - a usage source that is down must not take the page with it
            used = None
        limit = limits.get(name)
        percent = int(100 * float(used) / float(limit)) if used is not None and limit else None
        row = {"name": name, "label": quota_label(name), "unit": spec.unit, "used": used, "limit": limit}
        rows.append({**row, "percent": percent})
    return rows


def _sublimit_quotas() -> list[tuple[str, str]]:
    return [(name, quota_label(name)) for name in SUB_LIMIT_QUOTAS]


@require_POST
@admin_page
def sublimit_view(request: HttpRequest) -> HttpResponse:
    """Set (or, with delete, remove) a per-member or per-key limit inside the plan."""
    target = request.POST.get("target", "")  # "user:<id>" or "api_key:<id>"
    kind, _, raw_id = target.partition(":")
    try:
        if request.POST.get("delete"):
            row = selectors.sublimit_list().filter(pk=int(request.POST["delete"])).first()
            if row is not None:
                services.sublimit_delete(principal=request.principal, sublimit=row)
                messages.success(request, "Limit removed.")
        else:
            ids = {"user_id": int(raw_id)} if kind == "user" else {"api_key_id": int(raw_id)}
            services.sublimit_set(
                principal=request.principal, quota=request.POST.get("quota", ""), limit=request.POST.get("limit"), **ids
            )
            messages.success(request, "Limit saved.")
    except (ValueError, KeyError):
        messages.error(request, "Choose a member or key and a number.")
    except DomainError as exc:
        messages.error(request, exc.message)
    return redirect("dash-usage")


def _parse_date(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        return dt.datetime.combine(dt.date.fromisoformat(value), dt.time.min, tzinfo=dt.UTC)
    except ValueError:
        return None


@admin_page
def audit_page(request: HttpRequest) -> HttpResponse:
    filters = {
        "action": request.GET.get("action", "").strip() or None,
        "actor_id": request.GET.get("actor") or None,
        "target_type": request.GET.get("target_type", "").strip() or None,
        "since": _parse_date(request.GET.get("since")),
        "until": _parse_date(request.GET.get("until")),
    }
    before = request.GET.get("before")
    entries = list(
        selectors.audit_list(**filters, before_id=int(before) if before and before.isdigit() else None)[: PAGE_SIZE + 1]
    )
    more = len(entries) > PAGE_SIZE
    entries = entries[:PAGE_SIZE]

    query = request.GET.copy()
    query.pop("before", None)
    return render(
        request,
        "manage/audit.html",
        {
            "entries": entries,
            "next_before": entries[-1].pk if more and entries else None,
            "query": query.urlencode(),
            "get": request.GET,
            "members": member_list(request.tenant),
            "nav": "admin",
            "tab": "audit",
        },
    )
