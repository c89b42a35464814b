from django.urls import path

from agents.routing import websocket_urlpatterns as agents_ws
from core.event_consumers import EventsConsumer  # issue 6: live tenant events
from core.routing import websocket_urlpatterns as core_ws

websocket_urlpatterns = [*core_ws, *agents_ws]
websocket_urlpatterns += [path("ws/events/", EventsConsumer.as_asgi())]  # issue 6
