"""Thin DRF views for webhook endpoints and deliveries. Tenant admins only (required_scope "admin")."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from core.events import EVENT_TYPES
from iam.policy import principal_from_request

from . import selectors, services


class EndpointSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    url = serializers.CharField(max_length=2000)
    description = serializers.CharField(max_length=200, required=False, allow_blank=True)
    event_types = serializers.ListField(child=serializers.CharField(max_length=80))
    is_active = serializers.BooleanField(required=False)
    secret = serializers.CharField(read_only=True)
    disabled_reason = serializers.CharField(read_only=True)
    consecutive_failures = serializers.IntegerField(read_only=True)
    created_at = serializers.DateTimeField(read_only=True)


class DeliverySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    endpoint_id = serializers.IntegerField()
    event_id = serializers.CharField()
    event_type = serializers.CharField()
    status = serializers.CharField()
    attempts = serializers.IntegerField()
    response_code = serializers.IntegerField(allow_null=True)
    error = serializers.CharField()
    duration_ms = serializers.IntegerField(allow_null=True)
    next_attempt_at = serializers.DateTimeField(allow_null=True)
    delivered_at = serializers.DateTimeField(allow_null=True)
    replay_of_id = serializers.IntegerField(allow_null=True)
    created_at = serializers.DateTimeField()


class EventTypeSerializer(serializers.Serializer):
    type = serializers.CharField()
    description = serializers.CharField()


class WebhookEventTypesApi(APIView):
    required_scope = "admin"

    @extend_schema(responses=EventTypeSerializer(many=True))
    def get(self, request):
        types = [{"type": name, "description": text} for name, text in sorted(EVENT_TYPES.items())]
        return Response(EventTypeSerializer(types, many=True).data)


class WebhookEndpointListApi(APIView):
    required_scope = "admin"

    @extend_schema(responses=EndpointSerializer(many=True))
    def get(self, request):
        return Response(EndpointSerializer(selectors.endpoint_list(), many=True).data)

    @extend_schema(request=EndpointSerializer, responses={201: EndpointSerializer})
    def post(self, request):
        data = EndpointSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = {k: v for k, v in data.validated_data.items() if k != "is_active"}
        endpoint = services.endpoint_create(principal=principal_from_request(request), **values)
        return Response(EndpointSerializer(endpoint).data, status=status.HTTP_201_CREATED)


class WebhookEndpointDetailApi(APIView):
    required_scope = "admin"

    @extend_schema(responses=EndpointSerializer)
    def get(self, request, endpoint_id: int):
        return Response(EndpointSerializer(selectors.endpoint_get(endpoint_id)).data)

    @extend_schema(request=EndpointSerializer, responses=EndpointSerializer)
    def patch(self, request, endpoint_id: int):
        endpoint = selectors.endpoint_get(endpoint_id)
        data = EndpointSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        endpoint = services.endpoint_update(
            principal=principal_from_request(request), endpoint=endpoint, **data.validated_data
        )
        return Response(EndpointSerializer(endpoint).data)

    @extend_schema(responses={204: None})
    def delete(self, request, endpoint_id: int):
        services.endpoint_delete(
            principal=principal_from_request(request), endpoint=selectors.endpoint_get(endpoint_id)
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookEndpointTestApi(APIView):
    required_scope = "admin"

    @extend_schema(request=None, responses={202: DeliverySerializer})
    def post(self, request, endpoint_id: int):
        delivery = services.endpoint_send_test(
            principal=principal_from_request(request), endpoint=selectors.endpoint_get(endpoint_id)
        )
        return Response(DeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)


class WebhookDeliveryListApi(APIView):
    required_scope = "admin"

    @extend_schema(
        parameters=[OpenApiParameter("status", str, description="Only deliveries in this status.")],
        responses=DeliverySerializer(many=True),
    )
    def get(self, request, endpoint_id: int):
        endpoint = selectors.endpoint_get(endpoint_id)
        deliveries = selectors.delivery_list(endpoint=endpoint, status=request.query_params.get("status"))[:200]
        return Response(DeliverySerializer(deliveries, many=True).data)


class WebhookDeliveryReplayApi(APIView):
    required_scope = "admin"

    @extend_schema(request=None, responses={202: DeliverySerializer})
    def post(self, request, delivery_id: int):
        replay = services.delivery_replay(
            principal=principal_from_request(request), delivery=selectors.delivery_get(delivery_id)
        )
        return Response(DeliverySerializer(replay).data, status=status.HTTP_202_ACCEPTED)
