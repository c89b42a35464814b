from core.routing import websocket_urlpatterns as core_ws

websocket_urlpatterns = [*core_ws]
