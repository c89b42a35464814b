"""Liveness and readiness probes."""

from django.db import connection
from django.http import HttpRequest, JsonResponse

from config.celery import app
from config.warmup import web_warm_up
from core.redis_clients import probe_client


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _check_database() -> dict:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            row = cursor.fetchone()
        return {"ok": row is not None, "pgvector": row[0] if row else None}
    except Exception as exc:  # noqa: BLE001 - a probe reports, it does not raise
        return {"ok": False, "error": str(exc)[:200]}


def _check_redis() -> dict:
    try:
        probe_client().ping()
        return {"ok": True}
    except Exception as exc:  # noqa: BLE001
        return {"ok": False, "error": str(exc)[:200]}


def _check_workers() -> dict:
    try:
        replies = app.control.ping(timeout=1.0) or []
        return {"ok": bool(replies), "workers": sorted(name for reply in replies for name in reply)}
    except Exception as exc:  # noqa: BLE001
        return {"ok": False, "error": str(exc)[:200]}


def readyz(request: HttpRequest) -> JsonResponse:
    checks = {"database": _check_database(), "redis": _check_redis(), "celery": _check_workers()}
    warm_up = web_warm_up.status()
    if warm_up is not None:  # a web process is ready once its query embedder is loaded (config.warmup)
        checks["warm_up"] = warm_up
    ready = all(c["ok"] for c in checks.values())
    return JsonResponse({"status": "ready" if ready else "unavailable", "checks": checks}, status=200 if ready else 503)
