"""A subscriber that cannot keep up is cut off with 4429 and slows nobody else."""

from __future__ import annotations

import asyncio
import socket

import orjson
from websockets.client import ClientProtocol
from websockets.protocol import State
from websockets.uri import parse_uri

from server.local_secret import read_secret
from tests.conftest import HubFactory, Raw, RawFactory


async def test_stalled_subscriber_cut_off_others_keep_up(
    hub_factory: HubFactory, raw_factory: RawFactory
) -> None:
    """A client that never reads gets 4429; ten readers receive everything meanwhile."""
    hub = await hub_factory(max_lag_bytes=256 * 1024)
    publisher = await raw_factory(hub)
    await publisher.call("session/create", {"sessionId": "fan"})
    readers = [await raw_factory(hub) for _ in range(10)]
    for r in readers:
        await r.call("session/subscribe", {"sessionId": "fan", "afterSeq": 1})

    stalled = await StalledClient.open(hub.port, hub.url)
    stalled.send({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                  "params": {"protocolVersion": 1,
                             "token": read_secret(hub.config.hub.data_dir)}})
    stalled.send({"jsonrpc": "2.0", "id": 2, "method": "session/subscribe",
                  "params": {"sessionId": "fan"}})

    async def read_until_done(reader: Raw) -> list[int]:
        seen: list[int] = []
        while True:
            for event in await reader.events("fan", 1, timeout=30):
                if event["type"] == "load.done":
                    return seen
                seen.append(event["data"]["i"])

    reading = [asyncio.create_task(read_until_done(r)) for r in readers]
    # Publish until the hub gives up on the stalled client (the kernel's socket buffers
    # absorb a few MB first); the readers consume all the while.
    blob = "x" * 8000
    count = 0
    async with asyncio.timeout(60):
        while hub.metrics.slow_disconnects == 0:
            await publisher.call("session/publish", {"sessionId": "fan", "type": "load.tick",
                                                     "data": {"i": count, "blob": blob}})
            count += 1
    await publisher.call("session/publish", {"sessionId": "fan", "type": "load.done"})
    # The readers get everything while the stalled client still has not read a byte.
    for seen in await asyncio.gather(*reading):
        assert seen == list(range(count))
    assert hub.metrics.slow_disconnects == 1
    assert await stalled.read_close_code() == 4429


class StalledClient:
    """A websocket client (websockets' sans-I/O protocol) that stops reading at once."""

    def __init__(self, sock: socket.socket, protocol: ClientProtocol) -> None:
        self.sock = sock
        self.protocol = protocol

    @classmethod
    async def open(cls, port: int, url: str) -> StalledClient:
        """Connect with a small receive buffer and complete the opening handshake."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, ("127.0.0.1", port))
        protocol = ClientProtocol(parse_uri(url), max_size=None)
        protocol.send_request(protocol.connect())
        client = cls(sock, protocol)
        await client._flush()
        async with asyncio.timeout(5):
            while protocol.handshake_exc is None and not protocol.events_received():
                protocol.receive_data(await loop.sock_recv(sock, 65536))
        assert protocol.state is State.OPEN
        return client

    async def _flush(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                await asyncio.get_running_loop().sock_sendall(self.sock, data)

    def send(self, message: dict[str, object]) -> None:
        """Queue a text frame; it goes out with the next flush."""
        self.protocol.send_text(orjson.dumps(message))
        for data in self.protocol.data_to_send():
            self.sock.send(data)

    async def read_close_code(self) -> int | None:
        """Read everything now, until the close frame; return its code."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(15):
            while self.protocol.close_rcvd is None:
                data = await loop.sock_recv(self.sock, 1 << 20)
                if not data:
                    break
                self.protocol.receive_data(data)
                self.protocol.events_received()
        self.sock.close()
        return self.protocol.close_rcvd.code if self.protocol.close_rcvd else None


async def test_cut_off_subscriber_resumes_without_loss(
    hub_factory: HubFactory, raw_factory: RawFactory
) -> None:
    """After a 4429 the client reconnects from its last seq and gets the rest, in order."""
    from axtui.client import HubClient

    hub = await hub_factory(max_lag_bytes=64 * 1024)
    publisher = await raw_factory(hub)
    await publisher.call("session/create", {"sessionId": "resume"})
    blob = "y" * 8000
    async with HubClient(hub.url, max_batches=1) as client:
        sub = client.subscribe("resume")
        first = await sub.__anext__()  # then stop reading until the hub cuts the client off
        head = 1
        async with asyncio.timeout(60):
            while hub.metrics.slow_disconnects == 0:
                result = await publisher.call("session/publish", {
                    "sessionId": "resume", "type": "load.tick", "data": {"blob": blob}})
                head = result["seq"]
        seqs = [first["seq"]]
        async with asyncio.timeout(30):
            async for event in sub:
                seqs.append(event["seq"])
                if event["seq"] == head:
                    break
    assert seqs == list(range(1, head + 1))
