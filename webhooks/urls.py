"""API routes (mounted under /api/v1/ on tenant hosts)."""

from django.urls import path

from . import apis

urlpatterns = [
    path("webhooks/event-types/", apis.WebhookEventTypesApi.as_view(), name="api-webhook-event-types"),
    path("webhooks/endpoints/", apis.WebhookEndpointListApi.as_view(), name="api-webhook-endpoints"),
    path("webhooks/endpoints/<int:endpoint_id>/", apis.WebhookEndpointDetailApi.as_view(), name="api-webhook-endpoint"),
    path("webhooks/endpoints/<int:endpoint_id>/test/", apis.WebhookEndpointTestApi.as_view(), name="api-webhook-test"),
    path(
        "webhooks/endpoints/<int:endpoint_id>/deliveries/",
        apis.WebhookDeliveryListApi.as_view(),
        name="api-webhook-deliveries",
    ),
    path(
        "webhooks/deliveries/<int:delivery_id>/replay/",
        apis.WebhookDeliveryReplayApi.as_view(),
        name="api-webhook-delivery-replay",
    ),
]
