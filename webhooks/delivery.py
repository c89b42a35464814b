"""Webhook deliveries: one row per endpoint and event, attempts with backoff, disabling endpoints that keep failing.

Queuing is webhooks.tasks' business: these functions return delivery ids and record attempts.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django_tenants.utils import get_tenant_model

from core.audit import audit_record
from core.events import WEBHOOK_DISABLED, event_subject, publish_on_commit
from core.metrics import metric_inc
from core.ssrf import UnsafeURL, check_url, pin_url, tls_context
from core.tenancy import current_schema
from iam.selectors import admin_emails

from .models import DeliveryStatus, WebhookDelivery, WebhookEndpoint
from .selectors import subscribed_types_refresh
from .signing import SIGNATURE_HEADER, sign

logger = logging.getLogger(__name__)


def endpoint_types_changed() -> None:
    """The event types this tenant's endpoints want changed: every process re-reads them once committed."""
    schema = current_schema()
    transaction.on_commit(lambda: subscribed_types_refresh(schema))


def deliveries_create_for_event(event: dict[str, Any]) -> list[int]:
    """One delivery per active endpoint that wants this event (idempotent per endpoint and event); their ids."""
    created: list[int] = []
    with transaction.atomic():
        for endpoint in WebhookEndpoint.objects.filter(is_active=True):
            if not endpoint.wants(event.get("type", "")):
                continue
            delivery, was_created = WebhookDelivery.objects.get_or_create(
                endpoint=endpoint,
                event_id=str(event.get("id") or event.get("stream_id")),
                replay_of=None,
                defaults={"event_type": event.get("type", ""), "payload": event},
            )
            if was_created:
                created.append(delivery.pk)
    return created


@dataclass
class AttemptOutcome:
    status: str
    retry_in: float | None = None  # seconds until the next attempt, when retrying


def backoff_seconds(attempt: int) -> float:
    """Exponential backoff with jitter: base * 2^(attempt-1), capped, +/-20%."""
    base = settings.WEBHOOK_BACKOFF_BASE_SECONDS
    delay: float = min(settings.WEBHOOK_BACKOFF_MAX_SECONDS, base * (2 ** max(0, attempt - 1)))
    return delay * random.uniform(0.8, 1.2)


def delivery_body(delivery: WebhookDelivery) -> bytes:
    event = delivery.payload
    body = {
        "id": delivery.event_id,
        "type": delivery.event_type,
        "created": event.get("ts"),
        "subject": event.get("subject"),
        "topic": event.get("topic"),
        "data": event.get("data", {}),
    }
    return json.dumps(body, separators=(",", ":"), sort_keys=True, default=str).encode()


def _post_pinned(url: str, body: bytes, headers: dict[str, str], timeout: float) -> httpx.Response:
    """POST to the address check_url approved (no second DNS lookup: no rebinding), no redirects."""
    target = pin_url(url, check_url(url)[0])
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False, verify=tls_context()) as client:
        request = client.build_request(
            "POST",
            target.url,
            content=body,
            headers={**headers, "Host": target.host_header},
            extensions={"sni_hostname": target.server_name},
        )
        return client.send(request)


def delivery_attempt(delivery_id: int) -> AttemptOutcome:
    """Make one attempt. Records the outcome; decides retry or final failure; may disable the endpoint."""
    with transaction.atomic():
        delivery = WebhookDelivery.objects.select_for_update().select_related("endpoint").filter(pk=delivery_id).first()
        if delivery is None or delivery.status in (DeliveryStatus.DELIVERED, DeliveryStatus.FAILED):
            return AttemptOutcome(delivery.status if delivery else "missing")
        endpoint = delivery.endpoint
        if not endpoint.is_active:
            delivery.status = DeliveryStatus.FAILED
            delivery.error = "Endpoint disabled; replay the delivery after enabling it."
            delivery.save(update_fields=["status", "error", "updated_at"])
            return AttemptOutcome(delivery.status)
        body = delivery_body(delivery)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Agentry-Webhooks/1.0",
            "Agentry-Event": delivery.event_type,
            "Agentry-Event-Id": delivery.event_id,
            "Agentry-Delivery": str(delivery.pk),
            SIGNATURE_HEADER: sign(endpoint.secret, body),
        }
        started = time.monotonic()
        code, response_text, error, permanent = None, "", "", False
        try:
            response = _post_pinned(endpoint.url, body, headers, settings.WEBHOOK_TIMEOUT_SECONDS)
            code, response_text = response.status_code, response.text[:1024]
        except UnsafeURL as exc:
            error, permanent = f"Refused by the SSRF guard: {exc.message}", True
        except httpx.TimeoutException:
            error = f"Timed out after {settings.WEBHOOK_TIMEOUT_SECONDS:g}s."
        except httpx.HTTPError as exc:
            error = f"Connection failed: {exc.__class__.__name__}."
        delivery.attempts += 1
        delivery.duration_ms = int((time.monotonic() - started) * 1000)
        delivery.response_code = code
        delivery.response_body = response_text
        now = timezone.now()
        ok = code is not None and 200 <= code < 300
        retry_in = None
        if ok:
            delivery.status = DeliveryStatus.DELIVERED
            delivery.delivered_at = now
            delivery.error = ""
            delivery.next_attempt_at = None
            endpoint.consecutive_failures = 0
            endpoint.first_failure_at = None
        else:
            delivery.error = error or f"Receiver answered HTTP {code}."
            endpoint.consecutive_failures += 1
            endpoint.first_failure_at = endpoint.first_failure_at or now
            if permanent or delivery.attempts >= settings.WEBHOOK_MAX_ATTEMPTS:
                delivery.status = DeliveryStatus.FAILED
                delivery.next_attempt_at = None
            else:
                retry_in = backoff_seconds(delivery.attempts)
                delivery.status = DeliveryStatus.RETRYING
                delivery.next_attempt_at = now + timedelta(seconds=retry_in)
        delivery.save()
        endpoint.save(update_fields=["consecutive_failures", "first_failure_at", "updated_at"])
        if not ok and _sustained_failure(endpoint, now):
            _endpoint_disable(endpoint, reason=delivery.error)
        _metric(delivery.status)
    return AttemptOutcome(delivery.status, retry_in)


def _sustained_failure(endpoint: WebhookEndpoint, now: datetime) -> bool:
    return (
        endpoint.is_active
        and endpoint.consecutive_failures >= settings.WEBHOOK_DISABLE_AFTER_FAILURES
        and endpoint.first_failure_at is not None
        and (now - endpoint.first_failure_at).total_seconds() >= settings.WEBHOOK_DISABLE_AFTER_SECONDS
    )


def _endpoint_disable(endpoint: WebhookEndpoint, *, reason: str) -> None:
    """Turn off a failing endpoint and tell the admins (event on the bus + email)."""
    endpoint.is_active = False
    endpoint.disabled_at = timezone.now()
    endpoint.disabled_reason = (
        f"Disabled after {endpoint.consecutive_failures} failed attempts in a row. Last error: {reason}"
    )[:300]
    endpoint.save(update_fields=["is_active", "disabled_at", "disabled_reason", "updated_at"])
    audit_record(
        action="webhook.auto_disable",
        target=endpoint,
        before={"is_active": True},
        after={"is_active": False, "reason": endpoint.disabled_reason},
    )
    endpoint_types_changed()
    publish_on_commit(
        WEBHOOK_DISABLED,
        {"endpoint_id": endpoint.pk, "url": endpoint.url, "reason": endpoint.disabled_reason},
        subject=event_subject("webhook_endpoint", endpoint.pk),  # admins only, like the webhooks API
        topic="webhooks",
    )
    admins = admin_emails(get_tenant_model().objects.get(schema_name=current_schema()))
    if admins:
        subject = f"Webhook disabled: {endpoint.url}"
        message = (
            f"Your webhook endpoint {endpoint.url} failed {endpoint.consecutive_failures} times in a row and was "
            f"disabled.\n\n{endpoint.disabled_reason}\n\nFix the receiver, enable the endpoint again and replay "
            "the failed deliveries from the dashboard."
        )
        transaction.on_commit(lambda: send_mail(subject, message, None, admins, fail_silently=True))


def _metric(status: str) -> None:
    try:
        metric_inc("webhook_deliveries_total", tenant=current_schema(), status=status)
    except Exception:  # noqa: BLE001
        logger.debug("metric not recorded", exc_info=True)


def deliveries_due(*, grace_seconds: float = 300) -> list[int]:
    """Deliveries whose scheduled attempt never ran (lost task, worker restart): to queue again."""
    cutoff = timezone.now() - timedelta(seconds=grace_seconds)
    return list(
        WebhookDelivery.objects.filter(status__in=[DeliveryStatus.PENDING, DeliveryStatus.RETRYING])
        .filter(Q(next_attempt_at__lt=cutoff) | Q(next_attempt_at__isnull=True, updated_at__lt=cutoff))
        .values_list("pk", flat=True)[:1000]
    )
