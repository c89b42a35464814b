"""Request ids across web, worker and logs; optional OpenTelemetry tracing.

- Every Celery task published while handling a request carries headers["request_id"]; the worker
  (config/celery.py task_prerun) puts it back into core.context.current_request_id, so its log lines
  carry the id of the request that queued the work.
- OTEL_ENABLED=true turns on OpenTelemetry tracing of Django, Celery and httpx when the optional
  opentelemetry packages are installed (exporter configured by the standard OTEL_* variables).
- Who is acting (core.audit.Actor in `current_actor`) travels the same way: a task published while a principal
  acts carries headers["actor"], and the worker acts as that principal while the task runs.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from typing import Any

from celery.signals import before_task_publish, task_postrun, task_prerun
from django.conf import settings

from .context import current_request_id
from .rls import current_db_principal


@dataclass(frozen=True)
class Actor:
    """Who is acting: a member (user_id, email; api_key_id when through an API key), or a management command
    (name "cli:<command>", os_user). Captured once, where the principal is established (see core.audit)."""

    user_id: int | None = None
    email: str = ""
    api_key_id: int | None = None
    name: str = ""
    os_user: str = ""
    ip: str | None = None

    def stamp(self) -> dict[str, Any]:
        """What events carry of the actor: ids only (no email or address leaves through the event bus)."""
        if self.user_id is None:
            return {"name": self.name}
        return {"user_id": self.user_id, "api_key_id": self.api_key_id}

    def as_header(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_header(cls, data: Any) -> Actor | None:
        if not isinstance(data, dict):
            return None
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        return cls(**known) if known else None


# The authenticated principal of the current request, socket, task or command. Set by core.audit only (actor_set,
# actor_scope), where the principal is established; the event bus stamps it on events, the audit log records it.
current_actor: ContextVar[Actor | None] = ContextVar("current_actor", default=None)


def actor_stamp() -> dict[str, Any] | None:
    """The current actor as events carry it (None when nobody is acting)."""
    actor = current_actor.get()
    return actor.stamp() if actor is not None else None


logger = logging.getLogger(__name__)
_installed = False


def _add_request_id(headers: dict[str, Any] | None = None, **kwargs: Any) -> None:  # before_task_publish
    if headers is None:
        return
    request_id = current_request_id.get()
    if request_id and request_id != "-" and "request_id" not in headers:
        headers["request_id"] = request_id
    actor = current_actor.get()
    if actor is not None and "actor" not in headers:  # a publisher that set headers["actor"] (even None) decided
        headers["actor"] = actor.as_header()


def _actor_in(sender: Any = None, **kwargs: Any) -> None:
    """Worker side: the task acts for whoever queued it. Eager tasks run inside their caller and keep its actor."""
    request = getattr(sender, "request", None)
    if request is None or getattr(request, "is_eager", False):
        return
    headers = getattr(request, "headers", None) or {}
    # Celery puts custom headers on the request itself too (protocol 2); either place counts.
    raw = headers.get("actor") if isinstance(headers, dict) else None
    current_actor.set(Actor.from_header(raw if raw is not None else getattr(request, "actor", None)))
    # Tasks act for the organisation on the database (core.rls): they check access with iam.policy themselves.
    current_db_principal.set(None)


def _actor_out(sender: Any = None, **kwargs: Any) -> None:
    request = getattr(sender, "request", None)
    if request is not None and not getattr(request, "is_eager", False):
        current_actor.set(None)  # a worker thread's next task starts as nobody


def install() -> None:
    global _installed
    if _installed:
        return
    _installed = True
    before_task_publish.connect(_add_request_id, weak=False)
    task_prerun.connect(_actor_in, weak=False)
    task_postrun.connect(_actor_out, weak=False)
    if getattr(settings, "OTEL_ENABLED", False):
        tracing_install()


def tracing_install() -> bool:
    """Instrument Django, Celery and httpx with OpenTelemetry; False (logged) if the packages are missing."""
    try:  # optional packages, imported only when tracing is switched on
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
