from django.urls import path

from agents.routing import websocket_urlpatterns as agents_ws
from iam.routing import websocket_urlpatterns as iam_ws
from webhooks.consumers import EventsConsumer

websocket_urlpatterns = [*iam_ws, *agents_ws]
websocket_urlpatterns += [path("ws/events/", EventsConsumer.as_asgi())]
