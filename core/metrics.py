"""Our Prometheus metrics, kept in Redis so web, worker and beat processes add to one set.

    from core.metrics import metric_inc, metric_set, metric_observe
    metric_inc("documents_ingested_total", tenant=connection.schema_name)
    metric_inc("ingest_pages_total", amount=12, tenant=connection.schema_name)

Every name is exported as agentry_<name>. The `tenant` label is bounded: only schemas listed in
settings.METRICS_TENANT_LABELS keep their name, everything else is "other" (sane cardinality).
`/metrics` (metrics_view) serves django-prometheus' process metrics plus these, behind
"Authorization: Bearer $METRICS_TOKEN" (no token configured: 404).
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Iterator
from typing import Any

import redis
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily

from .redis_clients import probe_client, redis_client

logger = logging.getLogger(__name__)
PREFIX = "agentry_"
CELERY_QUEUES = ("default", "ingest", "agents", "webhooks")
HELP = {
    "chat_runs_total": "Chat runs recorded, by status.",
    "llm_tokens_total": "LLM tokens metered, by direction (in/out).",
    "chat_run_latency_seconds": "Chat run latency.",
    "quota_refusals_total": "Requests refused by a quota, by quota and scope (tenant, user, api_key, agent, pool).",
    "in_flight_refusals_total": "Requests shed because the web process ran as many of their group as it may.",
    "rate_limited_total": "Requests refused by a rate limit, by endpoint group and scope (user, api_key, ip, tenant).",
    "webhook_deliveries_total": "Webhook delivery attempts, by resulting status.",
    "documents_ingested_total": "Documents processed by ingestion, by status.",
    "ingest_pages_total": "Pages processed by ingestion.",
    "search_failures_total": "Knowledge searches that failed (refused with search_unavailable), by stage.",
    "rerank_seconds": "Time a reranker took to score a search's candidates, by reranker.",
    "rerank_failures_total": "Searches answered in fused order because their reranker failed, by reranker.",
    "chat_queue_length": "Chat runs waiting for a pool slot.",
    "chat_runs_active": "Chat runs holding a pool slot.",
    "fair_queue_backlog": "Tasks held back by the per-tenant fair dispatcher, by queue.",
}


def _tenant_label(value: Any) -> str:
    allowed = set(getattr(settings, "METRICS_TENANT_LABELS", []))
    return str(value) if value in allowed else "other"


def _field(labels: dict[str, Any]) -> str:
    if "tenant" in labels:
        labels = {**labels, "tenant": _tenant_label(labels["tenant"])}
    return json.dumps({k: str(v) for k, v in sorted(labels.items())}, separators=(",", ":"))


def _r() -> redis.Redis:
    return redis_client()


def metric_inc(name: str, amount: float = 1, **labels: Any) -> None:
    """Add to a counter (never raises into the caller's work)."""
    try:
        _r().hincrbyfloat(f"metrics:c:{name}", _field(labels), amount)
    except Exception:  # noqa: BLE001
        logger.debug("metric %s not recorded", name, exc_info=True)


def metric_set(name: str, value: float, **labels: Any) -> None:
    try:
        _r().hset(f"metrics:g:{name}", _field(labels), value)
    except Exception:  # noqa: BLE001
        logger.debug("metric %s not recorded", name, exc_info=True)


def metric_observe(name: str, value: float, **labels: Any) -> None:
    """A summary: count and sum (rate(sum)/rate(count) gives the mean over any window)."""
    try:
        pipe = _r().pipeline()
        pipe.hincrbyfloat(f"metrics:s:{name}:count", _field(labels), 1)
        pipe.hincrbyfloat(f"metrics:s:{name}:sum", _field(labels), value)
        pipe.execute()
    except Exception:  # noqa: BLE001
        logger.debug("metric %s not recorded", name, exc_info=True)


def _queue_lengths() -> dict[str, int]:
    """Celery backlog per queue (Redis broker lists) plus the fair dispatcher's held-back tasks."""

    out: dict[str, int] = {}
    try:
        broker = probe_client(settings.CELERY_BROKER_URL)
        for queue in CELERY_QUEUES:
            out[queue] = int(broker.llen(queue))
    except Exception:  # noqa: BLE001
        logger.debug("queue lengths unavailable", exc_info=True)
    return out


class RedisMetricsCollector:
    """Reads our metrics from Redis at scrape time."""

    def collect(self) -> Iterator[Metric]:
        r = _r()
        try:
            names = {k.decode() for k in r.scan_iter("metrics:*", count=500)}
        except Exception:  # noqa: BLE001 - a scrape without Redis still shows process metrics
            logger.debug("metrics unavailable", exc_info=True)
            return
        for key in sorted(names):
            kind, _, rest = key[len("metrics:") :].partition(":")
            if kind == "s":
                continue
            values = r.hgetall(key)
            if not values:
                continue
            labels = sorted({label for field in values for label in json.loads(field)})
            family_cls = CounterMetricFamily if kind == "c" else GaugeMetricFamily
            name = PREFIX + (rest[:-6] if kind == "c" and rest.endswith("_total") else rest)
            family = family_cls(name, HELP.get(rest, rest), labels=labels)
            for field, value in values.items():
                data = json.loads(field)
                family.add_metric([data.get(label, "") for label in labels], float(value))
            yield family
        for key in sorted(k for k in names if k.startswith("metrics:s:") and k.endswith(":count")):
            rest = key[len("metrics:s:") : -len(":count")]
            counts, sums = r.hgetall(key), r.hgetall(f"metrics:s:{rest}:sum")
            labels = sorted({label for field in counts for label in json.loads(field)})
            summary = SummaryMetricFamily(PREFIX + rest, HELP.get(rest, rest), labels=labels)
            for field, count in counts.items():
                data = json.loads(field)
                # Counts only ever go up by 1, so HINCRBYFLOAT's "3" is a whole number.
                summary.add_metric(
                    [data.get(label, "") for label in labels], int(float(count)), float(sums.get(field, 0) or 0)
                )
            yield summary
        queue_family = GaugeMetricFamily(
            PREFIX + "celery_queue_length", "Tasks waiting per Celery queue.", labels=["queue"]
        )
        for queue, length in _queue_lengths().items():
            queue_family.add_metric([queue], length)
        yield queue_family


_collector_registered = False


def _ensure_collector() -> None:
    global _collector_registered
    if not _collector_registered:
        REGISTRY.register(RedisMetricsCollector())
        _collector_registered = True


def metrics_view(request: HttpRequest) -> HttpResponse:
    """GET /metrics with "Authorization: Bearer <METRICS_TOKEN>"."""
    token = getattr(settings, "METRICS_TOKEN", "")
    if not token:
        return HttpResponse("metrics are disabled (set METRICS_TOKEN)\n", status=404, content_type="text/plain")
    given = request.headers.get("Authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        response = HttpResponse("unauthorized\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    _ensure_collector()
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
