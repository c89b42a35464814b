from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from core.tenancy import in_tenant

from .policy import membership_for


class PingConsumer(AsyncJsonWebsocketConsumer):
    """`/ws/ping/`: answers with the tenant the connection resolved to (and whether you are a member)."""

    async def connect(self):
        await self.accept()
        tenant = self.scope["tenant"]
        member = await self._is_member(tenant)
        await self.send_json({"type": "pong", "tenant": tenant.slug, "schema": tenant.schema_name, "member": member})

    async def receive_json(self, content, **kwargs):
        if content.get("type") == "ping":
            await self.send_json({"type": "pong", "tenant": self.scope["tenant"].slug})

    @database_sync_to_async
    def _is_member(self, tenant) -> bool:
        # database_sync_to_async runs on another thread whose connection starts on `public` (#518).
        with in_tenant(tenant):
            return membership_for(self.scope.get("user"), tenant) is not None
