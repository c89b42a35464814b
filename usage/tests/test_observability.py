"""/metrics behind a token with bounded tenant labels; request ids from web to worker."""

from __future__ import annotations

import uuid

import pytest
from django.test import Client
from django_tenants.utils import tenant_context

from core.context import current_request_id
from core.metrics import metric_inc


@pytest.mark.django_db
def test_metrics_need_the_token_and_show_our_metrics_with_bounded_tenant_labels(settings, tenant_a, admin_a):
    from usage.services import usage_record_run

    public = Client(HTTP_HOST="localhost")
    settings.METRICS_TOKEN = ""
    assert public.get("/metrics").status_code == 404  # off unless configured
    settings.METRICS_TOKEN = "s3cret-metrics"
    assert public.get("/metrics").status_code == 401
    assert public.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    settings.METRICS_TENANT_LABELS = ["t_globex"]
    with tenant_context(tenant_a):
        usage_record_run(
            tenant=tenant_a, run_id="m1", user=admin_a, model="gpt-4o", tokens_in=7, tokens_out=3, latency_ms=250
        )
    metric_inc("documents_ingested_total", tenant="t_globex", status="ready")
    response = public.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-metrics")
    assert response.status_code == 200
    text = response.content.decode()
    assert 'agentry_chat_runs_total{status="ok",tenant="other"} 1.0' in text  # acme is not allow-listed
    assert 'agentry_llm_tokens_total{direction="in",tenant="other"} 7.0' in text
    assert 'agentry_documents_ingested_total{status="ready",tenant="t_globex"} 1.0' in text
    assert "agentry_chat_run_latency_seconds_count" in text
    assert 'agentry_celery_queue_length{queue="ingest"}' in text
    assert "django_http_requests_total_by_method_total" in text  # django-prometheus


@pytest.mark.django_db
def test_every_response_carries_a_request_id(client_a, admin_a):
    client_a.force_login(admin_a)
    response = client_a.get("/api/v1/usage/quotas/", HTTP_X_REQUEST_ID="req-abc-123")
    assert response["X-Request-ID"] == "req-abc-123"


def test_request_id_is_put_in_task_headers():
    from core.observability import _add_request_id

    token = current_request_id.set("req-777")
    try:
        headers: dict = {}
        _add_request_id(headers=headers)
        assert headers["request_id"] == "req-777"
    finally:
        current_request_id.reset(token)


@pytest.mark.e2e
@pytest.mark.django_db
def test_request_id_travels_from_web_to_the_worker(celery_worker_process, tenant_a):
    from core.tasks import context_probe_task, context_probe_wait

    reply_key = f"probe:{uuid.uuid4().hex}"
    token = current_request_id.set("req-e2e-42")
    try:
        with tenant_context(tenant_a):
            context_probe_task.delay(reply_key)
    finally:
        current_request_id.reset(token)
    assert context_probe_wait(reply_key) == {"request_id": "req-e2e-42", "schema": "t_acme", "tenant": "acme"}


def test_tracing_switch_degrades_cleanly_without_the_optional_packages(caplog):
    import importlib.util

    from core.observability import tracing_install

    if importlib.util.find_spec("opentelemetry") and importlib.util.find_spec("opentelemetry.sdk"):
        pytest.skip("the OpenTelemetry SDK is installed here")
    assert tracing_install() is False
    assert "tracing is off" in caplog.text
