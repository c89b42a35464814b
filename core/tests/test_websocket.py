import asyncio

import pytest
from channels.testing import WebsocketCommunicator

from config.asgi import application


async def _ping(host: bytes):
    communicator = WebsocketCommunicator(
        application, "/ws/ping/", headers=[(b"host", host), (b"origin", b"http://" + host)]
    )
    connected, code = await communicator.connect(timeout=5)
    message = await communicator.receive_json_from(timeout=5) if connected else None
    if connected:
        await communicator.send_json_to({"type": "ping"})
        echo = await communicator.receive_json_from(timeout=5)
        assert echo == {"type": "pong", "tenant": message["tenant"]}
    await communicator.disconnect()
    return connected, code, message


# asyncio.run (not async_to_sync) so the consumer's database_sync_to_async work runs on its own thread
# and connection, seeing the committed session tenants, never closing the test's transaction.
@pytest.mark.django_db
def test_websocket_resolves_tenant_from_host(tenant_a, tenant_b):
    connected, _, message = asyncio.run(_ping(b"acme.localhost:8000"))
    assert connected
    assert message["tenant"] == "acme"
    assert message["schema"] == "t_acme"
    assert message["member"] is False  # anonymous

    connected, _, message = asyncio.run(_ping(b"globex.localhost"))
    assert message["tenant"] == "globex"


@pytest.mark.django_db
def test_websocket_refuses_unknown_and_public_hosts():
    connected, code, _ = asyncio.run(_ping(b"nosuchorg.localhost"))
    assert not connected
    assert code == 4404
    connected, code, _ = asyncio.run(_ping(b"localhost"))
    assert not connected
