"""Reads for webhooks (tenant schema; admins only, enforced by the views' required_scope)."""

from __future__ import annotations

from django.db.models import QuerySet

from core.errors import NotFound

from .models import WebhookDelivery, WebhookEndpoint


def endpoint_list() -> QuerySet[WebhookEndpoint]:
    return WebhookEndpoint.objects.all()


def endpoint_get(endpoint_id: int) -> WebhookEndpoint:
    endpoint = WebhookEndpoint.objects.filter(pk=endpoint_id).first()
    if endpoint is None:
        raise NotFound("Not found.")
    return endpoint


def delivery_list(*, endpoint: WebhookEndpoint, status: str | None = None) -> QuerySet[WebhookDelivery]:
    qs = endpoint.deliveries.all()
    if status:
        qs = qs.filter(status=status)
    return qs


def delivery_get(delivery_id: int) -> WebhookDelivery:
    delivery = WebhookDelivery.objects.select_related("endpoint").filter(pk=delivery_id).first()
    if delivery is None:
        raise NotFound("Not found.")
    return delivery
