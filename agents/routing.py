from django.urls import path

from .consumers import AgentChatConsumer

websocket_urlpatterns = [
    path("ws/agents/<int:agent_id>/chat/", AgentChatConsumer.as_asgi()),
]
