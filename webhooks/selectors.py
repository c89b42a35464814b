"""Reads for webhooks (tenant schema; admins only, enforced by the views' required_scope), and the cached set
of event types the tenant's endpoints want."""

from __future__ import annotations

from django.db.models import QuerySet
from django_tenants.utils import schema_context

from core.errors import NotFound
from core.redis_clients import redis_client, reply_text
from core.tenancy import tenant_key

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


# The event types any active endpoint of a tenant wants, cached in a Redis set (rebuilt when missing and after
# every endpoint change), so publishing costs tenants without webhooks one SMEMBERS.


def _types_key(schema: str) -> str:
    return tenant_key("webhooks", "types", schema=schema)


def subscribed_types_refresh(schema: str) -> set[str]:
    """Recompute the wanted event types of a tenant (after any endpoint change)."""
    with schema_context(schema):
        types: set[str] = set()
        for event_types in WebhookEndpoint.objects.filter(is_active=True).values_list("event_types", flat=True):
            types.update(event_types or [])
    pipe = redis_client().pipeline()
    pipe.delete(_types_key(schema))
    pipe.sadd(_types_key(schema), "__built__", *types)
    pipe.execute()
    return types


def subscribed_types(schema: str) -> set[str]:
    members = {reply_text(m) for m in redis_client().smembers(_types_key(schema))}
    if "__built__" not in members:
        return subscribed_types_refresh(schema)
    members.discard("__built__")
    return members
