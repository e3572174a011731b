"""Plain HTTP requests to /ws that never become websockets leave nothing behind in the hub."""

from __future__ import annotations

import asyncio
import gc

from websockets.asyncio.server import ServerConnection

from server.hub import Hub
from tests.conftest import HubFactory, RawFactory

REQUESTS = 200


async def plain_get(hub: Hub, path: str, headers: dict[str, str]) -> int:
    """One HTTP/1.1 GET over a real socket (no upgrade); the status code."""
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n{lines}"
                 "Connection: close\r\n\r\n".encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    await writer.wait_closed()
    return int(data.split(b" ", 2)[1])


def live_server_connections() -> int:
    """How many of websockets' server-side connection objects are still alive."""
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, ServerConnection))


async def settle(hub: Hub) -> None:
    """Wait until the hub has finished with every connection it accepted."""
    assert hub._server is not None
    async with asyncio.timeout(5):
        while hub._server.handler_tasks:
            await asyncio.sleep(0.01)


async def test_plain_gets_with_a_valid_token_are_not_kept(hub_factory: HubFactory) -> None:
    """GET /ws with a good Authorization header but no upgrade keeps no connection alive."""
    hub = await hub_factory(tokens=True)
    await plain_get(hub, "/ws", {"Authorization": "Bearer viewer-token"})
    await settle(hub)
    before = live_server_connections()
    for _ in range(REQUESTS):
        status = await plain_get(hub, "/ws", {"Authorization": "Bearer viewer-token"})
        assert status == 426  # websockets' "Upgrade Required"
    await settle(hub)
    assert live_server_connections() - before < 5


async def test_plain_gets_in_local_mode_are_not_kept(hub_factory: HubFactory) -> None:
    """In local mode (where any header is accepted) plain GETs to /ws are not kept either."""
    hub = await hub_factory()
    await settle(hub)
    before = live_server_connections()
    for _ in range(REQUESTS):
        await plain_get(hub, "/ws", {"Authorization": "Bearer whatever"})
    await settle(hub)
    assert live_server_connections() - before < 5


async def test_upgraded_connections_with_a_header_still_get_its_principal(
    hub_factory: HubFactory, raw_factory: RawFactory,
) -> None:
    """A websocket opened with a Bearer header is that token's principal."""
    hub = await hub_factory(tokens=True)
    raw = await raw_factory(hub, headers={"Authorization": "Bearer participant-token"},
                            initialize=False)
    result = await raw.call("initialize", {"protocolVersion": 1})
    assert result["principal"] == {"name": "paul", "role": "participant"}
