"""Writes for outgoing webhooks: endpoints (admins only), deliveries, attempts, replay, auto-disable."""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any
from urllib.parse import urlsplit

from django.db import transaction

from core.audit import audit_record
from core.crypto import encrypt_str, rotate_token
from core.errors import Conflict, InvalidInput
from core.events import EVENT_TYPES, event_subject
from core.ssrf import check_url
from iam.policy import Principal, principal_require_scope

from .delivery import endpoint_types_changed
from .models import WebhookDelivery, WebhookEndpoint
from .tasks import deliveries_enqueue

logger = logging.getLogger(__name__)
MAX_ENDPOINTS_PER_TENANT = 50


def _require_admin(principal: Principal) -> None:
    principal_require_scope(principal, "admin")  # an admin, and for API keys the admin scope


def _validate_event_types(event_types: Any) -> list[str]:
    if not isinstance(event_types, list) or not event_types:
        raise InvalidInput('Pick at least one event type (or "*" for all).', field="event_types")
    unknown = [t for t in event_types if t != "*" and t not in EVENT_TYPES]
    if unknown:
        raise InvalidInput(f"Unknown event types: {', '.join(map(str, unknown))}.", field="event_types")
    return sorted(set(event_types))


def _validate_url(url: str) -> str:
    url = (url or "").strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(url) > 2000:
        raise InvalidInput("Enter an http(s) URL.", field="url")
    if parts.username or parts.password:
        raise InvalidInput("Put credentials in the receiver's signature check, not in the URL.", field="url")
    check_url(url)  # SSRF: refuses loopback, private, link-local and metadata addresses
    return url


def _snapshot(endpoint: WebhookEndpoint) -> dict[str, Any]:
    return {
        "url": endpoint.url,
        "description": endpoint.description,
        "event_types": endpoint.event_types,
        "is_active": endpoint.is_active,
    }


def endpoint_create(
    *, principal: Principal, url: str, event_types: list[str], description: str = ""
) -> WebhookEndpoint:
    _require_admin(principal)
    url = _validate_url(url)
    event_types = _validate_event_types(event_types)
    if WebhookEndpoint.objects.count() >= MAX_ENDPOINTS_PER_TENANT:
        raise Conflict(f"At most {MAX_ENDPOINTS_PER_TENANT} webhook endpoints per organisation.")
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.create(
            url=url,
            description=description[:200],
            event_types=event_types,
            secret_encrypted=encrypt_str("whsec_" + secrets.token_urlsafe(32)),
            created_by=principal.user,
        )
        audit_record(principal=principal, action="webhook.create", target=endpoint, after=_snapshot(endpoint))
        endpoint_types_changed()
    return endpoint


def endpoint_update(*, principal: Principal, endpoint: WebhookEndpoint, **changes: Any) -> WebhookEndpoint:
    """Change url / event_types / description / is_active. Re-enabling clears the failure streak."""
    _require_admin(principal)
    before = _snapshot(endpoint)
    if "url" in changes:
        endpoint.url = _validate_url(changes["url"])
    if "event_types" in changes:
        endpoint.event_types = _validate_event_types(changes["event_types"])
    if "description" in changes:
        endpoint.description = str(changes["description"])[:200]
    if "is_active" in changes:
        active = bool(changes["is_active"])
        if active and not endpoint.is_active:
            endpoint.consecutive_failures = 0
            endpoint.first_failure_at = None
            endpoint.disabled_reason = ""
            endpoint.disabled_at = None
        endpoint.is_active = active
    with transaction.atomic():
        endpoint.save()
        audit_record(
            principal=principal, action="webhook.update", target=endpoint, before=before, after=_snapshot(endpoint)
        )
        endpoint_types_changed()
    return endpoint


def endpoint_delete(*, principal: Principal, endpoint: WebhookEndpoint) -> None:
    _require_admin(principal)
    with transaction.atomic():
        audit_record(principal=principal, action="webhook.delete", target=endpoint, before=_snapshot(endpoint))
        endpoint.delete()
        endpoint_types_changed()


def endpoint_secrets_rotate() -> int:
    """Re-encrypt this tenant's signing secrets with the current key (rotate_secrets, after adding a new first key)."""
    with transaction.atomic():
        count = 0
        for endpoint in WebhookEndpoint.objects.select_for_update().only("pk", "secret_encrypted"):
            rotated = rotate_token(endpoint.secret_encrypted)
            WebhookEndpoint.objects.filter(pk=endpoint.pk).update(secret_encrypted=rotated)
            count += 1
        if count:
            audit_record(action="secrets.rotate", target_type="webhooks.secrets", after={"webhook_endpoints": count})
    return count


# --- Deliveries -----------------------------------------------------------------------------------


def delivery_replay(*, principal: Principal, delivery: WebhookDelivery) -> WebhookDelivery:
    """Send the same event again as a new delivery (same event id, so receivers can deduplicate)."""
    _require_admin(principal)
    if not delivery.endpoint.is_active:
        raise Conflict("The endpoint is disabled; enable it before replaying.")
    with transaction.atomic():
        replay = WebhookDelivery.objects.create(
            endpoint=delivery.endpoint,
            event_id=delivery.event_id,
            event_type=delivery.event_type,
            payload=delivery.payload,
            replay_of=delivery.replay_of or delivery,
        )
        audit_record(principal=principal, action="webhook.replay", target=delivery, after={"replay_id": replay.pk})
        deliveries_enqueue([replay.pk])
    return replay


def endpoint_send_test(*, principal: Principal, endpoint: WebhookEndpoint) -> WebhookDelivery:
    _require_admin(principal)
    event: dict[str, Any] = {
        "id": secrets.token_hex(16),
        "type": "webhook.test",
        "subject": event_subject("webhook_endpoint", endpoint.pk),
        "topic": None,
        "ts": time.time(),
        "data": {"endpoint_id": endpoint.pk},
    }
    with transaction.atomic():
        delivery = WebhookDelivery.objects.create(
            endpoint=endpoint, event_id=event["id"], event_type=event["type"], payload=event
        )
        deliveries_enqueue([delivery.pk])
    return delivery
