"""Request ids across web, worker and logs; optional OpenTelemetry tracing (issue 6).

- Every Celery task published while handling a request carries headers["request_id"]; the worker
  (config/celery.py task_prerun) puts it back into core.context.current_request_id, so its log lines
  carry the id of the request that queued the work.
- OTEL_ENABLED=true turns on OpenTelemetry tracing of Django, Celery and httpx when the optional
  opentelemetry packages are installed (exporter configured by the standard OTEL_* variables).
"""

from __future__ import annotations

import logging
from contextvars import ContextVar

from celery.signals import before_task_publish, task_postrun

from .context import current_request_id

# Who is acting in this request (set by core.ratelimit's throttle once DRF has authenticated): ids only.
# The event bus stamps it on events, and the audit log records it (usage.services.audit_record).
current_actor: ContextVar[dict | None] = ContextVar("current_actor", default=None)

logger = logging.getLogger(__name__)
_installed = False


def _add_request_id(headers: dict | None = None, **kwargs) -> None:
    if headers is None:
        return
    request_id = current_request_id.get()
    if request_id and request_id != "-" and "request_id" not in headers:
        headers["request_id"] = request_id


def install() -> None:
    global _installed
    if _installed:
        return
    _installed = True
    before_task_publish.connect(_add_request_id, weak=False)
    from .queues import _after_task

    task_postrun.connect(_after_task, weak=False)  # refill fair queues as tasks finish
    from django.conf import settings

    if getattr(settings, "OTEL_ENABLED", False):
        tracing_install()


def tracing_install() -> bool:
    """Instrument Django, Celery and httpx with OpenTelemetry; False (logged) if the packages are missing."""
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.instrumentation.django import DjangoInstrumentor
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        logger.warning("OTEL_ENABLED is set but the opentelemetry packages are not installed; tracing is off")
        return False
    provider = TracerProvider(resource=Resource.create({"service.name": "agentry"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    DjangoInstrumentor().instrument()
    for module, name in (
        ("opentelemetry.instrumentation.celery", "CeleryInstrumentor"),
        ("opentelemetry.instrumentation.httpx", "HTTPXClientInstrumentor"),
    ):
        try:
            getattr(__import__(module, fromlist=[name]), name)().instrument()
        except ImportError:
            logger.info("%s not installed; skipped", module)
    return True
