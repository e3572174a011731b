"""Requests for a session another replica owns, carried out by that owner (cluster.md §2.2).

A replica that finds a session owned elsewhere (:class:`server.ownership.OwnedElsewhere`)
sends the request to the owner over the websocket protocol, on one connection per peer
authenticated with ``cluster.secret``, as ``cluster/forward`` with the caller's principal
and client, so the events keep the source of whoever asked. The owner runs it through its
own dispatcher (roles are checked there again) and answers the method's result; the
replica answers its client with it. A forwarded request is never forwarded again: if the
session moved once more meanwhile, the client is told to try again (-32029).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from functools import partial
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from server import protocol
from server.caller import Caller
from server.clustererrors import PeerUnreachable
from server.jsonrpc import JsonRpcPeer
from server.metrics import Metrics
from server.ownership import Ownership

log = logging.getLogger("axtui.cluster")

CONNECT_TIMEOUT = 3.0  # seconds to reach a peer


@dataclass(frozen=True, slots=True)
class ClusterRoute:
    """What the dispatcher needs to route requests in cluster mode."""

    ownership: Ownership
    forwarder: Forwarder


class Forwarded:
    """A method's result as the owner answered it (JSON), to be sent on as it is."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class Peer:
    """One connection to another replica."""

    def __init__(self, node: str, ws: ClientConnection) -> None:
        self.node = node
        self.ws = ws
        self.rpc = JsonRpcPeer(self._send, protocol.error_from_json)
        self._reader = asyncio.create_task(self._read(), name=f"peer {node}")

    async def _send(self, frame: bytes) -> None:
        await self.ws.send(frame, text=True)

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                self.rpc.receive(frame)
        except ConnectionClosed:
            pass
        finally:
            self.rpc.fail_all(ConnectionError(f"replica {self.node} went away"))

    @property
    def alive(self) -> bool:
        """Whether the connection is open."""
        return not self._reader.done()

    async def close(self) -> None:
        """Close the connection."""
        await self.ws.close()
        await asyncio.gather(self._reader, return_exceptions=True)


class Forwarder:
    """The connections to the other replicas, opened as requests need them."""

    def __init__(self, ownership: Ownership, secret: str, metrics: Metrics,
                 timeout: float) -> None:
        self.ownership = ownership
        self.secret = secret
        self.metrics = metrics
        self.timeout = timeout  # seconds a forwarded request may take (an owner paused
        # past its lease must not hold the client longer than a take-over takes)
        self._peers: dict[str, Peer] = {}
        self._connecting: dict[str, asyncio.Task[Peer]] = {}

    async def forward(self, node: str, session_id: str, caller: Caller, method: str,
                      params: Any) -> Forwarded:
        """Have replica ``node`` carry out ``caller``'s request; its answer, or the error it
        answered. A replica that cannot be reached is -32029 (try again)."""
        assert caller.principal is not None
        principal = caller.principal
        try:
            peer = await self._peer(node)
            self.metrics.cluster_forwarded += 1
            result = await asyncio.wait_for(peer.rpc.request("cluster/forward", {
                "method": method, "params": params,
                "principal": {"name": principal.name, "role": principal.role.label,
                              "kind": principal.kind},
                "client": {"kind": caller.client_kind, "name": caller.client_name},
            }), self.timeout)
        except (OSError, ConnectionError, TimeoutError, ConnectionClosed,
                InvalidHandshake) as exc:  # a peer dying as it is reached
            self.ownership.forget_owner(session_id)
            raise PeerUnreachable(f"session {session_id} is served by replica {node}, which"
                                  f" cannot be reached ({exc}); try again",
                                  {"sessionId": session_id}) from None
        return Forwarded(result)

    async def _peer(self, node: str) -> Peer:
        peer = self._peers.get(node)
        if peer is not None and peer.alive:
            return peer
        pending = self._connecting.get(node)
        if pending is None:
            # Its own task: a request cancelled meanwhile must not cancel the others'.
            pending = self._connecting[node] = asyncio.create_task(self._connect(node),
                                                                   name=f"connect {node}")
            pending.add_done_callback(partial(self._connected, node))
        return await asyncio.shield(pending)

    def _connected(self, node: str, task: asyncio.Task[Peer]) -> None:
        if self._connecting.get(node) is task:
            del self._connecting[node]
        if not task.cancelled() and task.exception() is None:
            self._peers[node] = task.result()

    async def _connect(self, node: str) -> Peer:
        url = await self.ownership.store.address(node)
        if url is None:
            raise ConnectionError(f"replica {node} has no address (it is not running)")
        ws = await connect(url, open_timeout=CONNECT_TIMEOUT, max_size=None, compression=None,
                           additional_headers={"Authorization": f"Bearer {self.secret}"})
        peer = Peer(node, ws)
        try:
            await asyncio.wait_for(peer.rpc.request("initialize", {
                "protocolVersion": protocol.PROTOCOL_VERSION,
                "clientInfo": {"name": self.ownership.node_id, "kind": "cluster"},
            }), CONNECT_TIMEOUT)
        except BaseException:
            await peer.close()
            raise
        return peer

    async def close(self) -> None:
        """Close every peer connection."""
        peers, self._peers = list(self._peers.values()), {}
        await asyncio.gather(*(p.close() for p in peers), return_exceptions=True)

