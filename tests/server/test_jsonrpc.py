"""The JSON-RPC peer with no transport: frames in a list, responses fed back by hand."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from server.jsonrpc import JsonRpcPeer, Notification, Request


class PeerError(Exception):
    """The error a request raises from an error response, as a transport would build it."""

    def __init__(self, err: dict[str, Any]) -> None:
        super().__init__(err.get("message"))
        self.err = err


class Wire:
    """A transport that records the frames sent, or fails to send."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.broken: Exception | None = None

    async def send(self, frame: bytes) -> None:
        """Record one frame (or raise ``broken``)."""
        if self.broken is not None:
            raise self.broken
        self.frames.append(orjson.loads(frame))


@pytest.fixture
def wire() -> Wire:
    """A fresh wire."""
    return Wire()


@pytest.fixture
def peer(wire: Wire) -> JsonRpcPeer:
    """A peer on the wire."""
    return JsonRpcPeer(wire.send, PeerError)


async def started(peer: JsonRpcPeer, method: str = "m",
                  params: dict[str, Any] | None = None) -> asyncio.Task[Any]:
    """A request under way (its frame sent, its response not yet in)."""
    task = asyncio.create_task(peer.request(method, params))
    await asyncio.sleep(0)
    return task


def response(request_id: object, **fields: Any) -> bytes:
    """A response frame."""
    return orjson.dumps({"jsonrpc": "2.0", "id": request_id, **fields})


async def test_request_frame_and_result(peer: JsonRpcPeer, wire: Wire) -> None:
    """A request is sent with a fresh id and returns the result of its response."""
    first = await started(peer, "a", {"x": 1})
    second = await started(peer, "b")
    assert wire.frames == [{"jsonrpc": "2.0", "id": 1, "method": "a", "params": {"x": 1}},
                           {"jsonrpc": "2.0", "id": 2, "method": "b"}]
    assert peer.receive(response(2, result="two")) is None
    assert peer.receive(response(1, result={"one": 1})) is None
    assert await first == {"one": 1} and await second == "two"
    assert peer.pending == 0


async def test_error_response_raises_the_transports_error(peer: JsonRpcPeer) -> None:
    """An error response raises what the error factory builds from its error object."""
    task = await started(peer)
    peer.receive(response(1, error={"code": -32004, "message": "no such session"}))
    with pytest.raises(PeerError, match="no such session") as info:
        await task
    assert info.value.err["code"] == -32004


async def test_resolved_exactly_once(peer: JsonRpcPeer) -> None:
    """A duplicate or late response is ignored: the first one wins."""
    task = await started(peer)
    assert peer.resolve({"id": 1, "result": "first"})
    assert not peer.resolve({"id": 1, "result": "second"})
    assert not peer.resolve({"id": 1, "error": {"code": 1, "message": "late"}})
    assert await task == "first"


async def test_unknown_ids_are_ignored(peer: JsonRpcPeer) -> None:
    """A response for an id never sent (or not an integer) settles nothing."""
    task = await started(peer)
    for request_id in (99, "1", None, True, [1]):
        assert peer.receive(response(request_id, result="x")) is None
    assert not task.done() and peer.pending == 1
    peer.receive(response(1, result="ok"))
    assert await task == "ok"


async def test_fail_all_fails_every_pending(peer: JsonRpcPeer) -> None:
    """fail_all fails every request under way with the exception given, and only those."""
    tasks = [await started(peer) for _ in range(3)]
    lost = ConnectionError("gone")
    peer.fail_all(lost)
    for task in tasks:
        with pytest.raises(ConnectionError, match="gone"):
            await task
    assert peer.pending == 0
    later = await started(peer)
    peer.receive(response(4, result="after"))
    assert await later == "after"


async def test_response_after_fail_all_is_ignored(peer: JsonRpcPeer) -> None:
    """A response arriving after its request was failed changes nothing."""
    task = await started(peer)
    peer.fail_all(ConnectionError("gone"))
    assert not peer.resolve({"id": 1, "result": "too late"})
    with pytest.raises(ConnectionError):
        await task


async def test_send_failure_leaves_nothing_pending(peer: JsonRpcPeer, wire: Wire) -> None:
    """When the frame cannot be sent the transport's error propagates; nothing is pending."""
    wire.broken = BrokenPipeError("closed")
    with pytest.raises(BrokenPipeError):
        await peer.request("m")
    assert peer.pending == 0


async def test_cancelled_request_is_forgotten(peer: JsonRpcPeer) -> None:
    """Cancelling a request drops it; its response, when it comes, is ignored."""
    task = await started(peer)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert peer.pending == 0
    assert not peer.resolve({"id": 1, "result": "unwanted"})


def test_notifications_and_requests_come_back(peer: JsonRpcPeer) -> None:
    """A notification and a request from the other side are returned, params a dict."""
    note = peer.receive(b'{"jsonrpc": "2.0", "method": "session/update", "params": {"n": 1}}')
    assert note == Notification("session/update", {"n": 1})
    request = peer.receive(b'{"jsonrpc": "2.0", "id": "r1", "method": "ask", "params": [1]}')
    assert request == Request("r1", "ask", {})


def test_junk_frames_are_skipped(peer: JsonRpcPeer) -> None:
    """Frames that are not JSON, not objects, or whose method is not a string give None."""
    for frame in (b"starting up", b"[1, 2]", b"42", b'{"method": 7}', ""):
        assert peer.receive(frame) is None


async def test_notify_and_responses_to_requests(peer: JsonRpcPeer, wire: Wire) -> None:
    """notify, respond and respond_error send the frames JSON-RPC expects."""
    await peer.notify("cancel", {"sessionId": "s"})
    await peer.respond("r1", {"ok": True})
    await peer.respond_error(7, -32601, "no such method")
    await peer.respond_error(8, -32000, "failed", {"why": "x"})
    assert wire.frames == [
        {"jsonrpc": "2.0", "method": "cancel", "params": {"sessionId": "s"}},
        {"jsonrpc": "2.0", "id": "r1", "result": {"ok": True}},
        {"jsonrpc": "2.0", "id": 7, "error": {"code": -32601, "message": "no such method"}},
        {"jsonrpc": "2.0", "id": 8, "error": {"code": -32000, "message": "failed",
                                              "data": {"why": "x"}}},
    ]
