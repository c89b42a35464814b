"""Reads for usage pages (daily series per tenant, user, agent or API key) and the audit log."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import TruncDate

from core.db import reads_from_replica
from core.errors import InvalidInput

from .models import ApiCallDaily, AuditEntry, QuotaSubLimit, UsageRecord

SCOPES = ("tenant", "user", "agent", "api_key")
MAX_DAYS = 366


@reads_from_replica()  # analytics: aggregates over every run of the period
def usage_daily(*, scope: str = "tenant", scope_id: Any = None, days: int = 30) -> dict[str, Any]:
    """{"totals": {...}, "daily": [{"date", "runs", "tokens_in", "tokens_out", "cost", "api_calls"}]}."""
    if scope not in SCOPES:
        raise InvalidInput(f"scope must be one of {', '.join(SCOPES)}.", field="scope")
    if scope != "tenant" and scope_id is None:
        raise InvalidInput("Give the id of the user, agent or API key.", field="id")
    if not 1 <= days <= MAX_DAYS:
        raise InvalidInput(f"days must be 1-{MAX_DAYS}.", field="days")
    today = dt.datetime.now(dt.UTC).date()
    start = today - dt.timedelta(days=days - 1)
    runs_filter = Q(created_at__date__gte=start)
    calls_filter = Q(day__gte=start)
    if scope == "user":
        runs_filter &= Q(user_id=scope_id)
        calls_filter &= Q(user_id=scope_id)
    elif scope == "agent":
        runs_filter &= Q(agent_id=scope_id)
        calls_filter &= Q(pk__in=[])  # API calls are not attributed to agents
    elif scope == "api_key":
        runs_filter &= Q(api_key_id=scope_id)
        calls_filter &= Q(api_key_id=scope_id)
    runs = (
        UsageRecord.objects.filter(runs_filter)
        .annotate(date=TruncDate("created_at"))
        .values("date")
        .annotate(runs=Count("id"), tokens_in=Sum("tokens_in"), tokens_out=Sum("tokens_out"), cost=Sum("cost"))
    )
    calls = ApiCallDaily.objects.filter(calls_filter).values("day").annotate(api_calls=Sum("count"))
    by_day: dict[dt.date, dict[str, Any]] = {
        start + dt.timedelta(days=i): {"runs": 0, "tokens_in": 0, "tokens_out": 0, "cost": Decimal(0), "api_calls": 0}
        for i in range(days)
    }
    for row in runs:
        if row["date"] in by_day:
            by_day[row["date"]].update(
                runs=row["runs"],
                tokens_in=row["tokens_in"] or 0,
                tokens_out=row["tokens_out"] or 0,
                cost=row["cost"] or Decimal(0),
            )
    for calls_row in calls:
        if calls_row["day"] in by_day:
            by_day[calls_row["day"]]["api_calls"] = calls_row["api_calls"] or 0
    daily = [{"date": day.isoformat(), **values, "cost": str(values["cost"])} for day, values in by_day.items()]
    totals = {key: sum(d[key] for d in daily) for key in ("runs", "tokens_in", "tokens_out", "api_calls")}
    totals["cost"] = str(sum((Decimal(d["cost"]) for d in daily), Decimal(0)))
    models = list(
        UsageRecord.objects.filter(runs_filter)
        .values("model")
        .annotate(runs=Count("id"), tokens=Sum("tokens_in") + Sum("tokens_out"), cost=Sum("cost"))
        .order_by("-runs")[:20]
    )
    for model_row in models:
        model_row["cost"] = str(model_row["cost"] or 0)
    return {"scope": scope, "id": scope_id, "days": days, "totals": totals, "daily": daily, "by_model": models}


def sublimit_list() -> QuerySet[QuotaSubLimit]:
    return QuotaSubLimit.objects.all()


def audit_list(
    *,
    action: str | None = None,
    actor_id: Any = None,
    target_type: str | None = None,
    target_id: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    before_id: int | None = None,
) -> QuerySet[AuditEntry]:
    """Audit entries, newest first; `action` matches a prefix ("webhook." finds every webhook change)."""
    qs = AuditEntry.objects.all()
    if action:
        qs = qs.filter(action__startswith=action)
    if actor_id:
        qs = qs.filter(actor_id=actor_id)
    if target_type:
        qs = qs.filter(target_type=target_type)
    if target_id:
        qs = qs.filter(target_id=str(target_id))
    if since:
        qs = qs.filter(created_at__gte=since)
    if until:
        qs = qs.filter(created_at__lt=until)
    if before_id:
        qs = qs.filter(id__lt=before_id)
    return qs
