"""Usage, quotas and audit log dashboard pages (issue 7, admins only). Thin views over usage.selectors."""

from __future__ import annotations

import datetime as dt

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from core.dashboard import admin_page
from core.errors import DomainError

from . import selectors

PAGE_SIZE = 50


def _choices_for_scope(request: HttpRequest) -> dict[str, list[tuple[str, str]]]:
    """Who/what the usage can be broken down by: members, agents, API keys of this organisation."""
    from agents.selectors import agent_list
    from iam.selectors import api_key_list, member_list

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
            "sublimits": selectors.sublimit_list(),
            "nav": "admin",
            "tab": "usage",
        },
    )


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
    from iam.selectors import member_list

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
