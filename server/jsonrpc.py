"""One side of a JSON-RPC 2.0 conversation: ids, pending requests and what came in.

The transports (an agent's stdio in :mod:`server.acp`, a websocket in ``axtui.client``)
read and write frames; a :class:`JsonRpcPeer` does the rest the same way for both. It
numbers requests, keeps a future per request until its response arrives (each resolved
exactly once: a late or duplicate response, or one for an id it never sent, is ignored),
fails every pending request at once when the transport drops, and sorts each incoming
frame into a response (settled here), a :class:`Notification` or a :class:`Request` (both
handed back to the transport, which knows what they mean).

The transport passes in how to send a frame and how to turn a JSON-RPC ``error`` object
into an exception, so each side keeps its own error types.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

log = logging.getLogger("axtui.jsonrpc")

Send = Callable[[bytes], Awaitable[None]]
ErrorFactory = Callable[[dict[str, Any]], BaseException]


@dataclass(frozen=True)
class Notification:
    """A message from the other side that wants no answer."""

    method: str
    params: dict[str, Any]


@dataclass(frozen=True)
class Request:
    """A call from the other side: answer it with :meth:`JsonRpcPeer.respond`."""

    id: Any
    method: str
    params: dict[str, Any]


class JsonRpcPeer:
    """The request/response bookkeeping of one connection, whatever carries its frames.

    ``send`` writes one encoded frame (raising the transport's own error if it cannot);
    ``error`` builds the exception a request raises from the ``error`` object of its
    response.
    """

    def __init__(self, send: Send, error: ErrorFactory) -> None:
        self._send = send
        self._error = error
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}

    @property
    def pending(self) -> int:
        """How many requests await their response."""
        return len(self._pending)

    async def request(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Send a request and return its result; an error response raises ``error(...)``.

        If the frame cannot be sent, the transport's error propagates and nothing is left
        pending.
        """
        request_id = next(self._ids)
        frame: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            frame["params"] = params
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = fut
        try:
            await self._send(orjson.dumps(frame))
            return await fut
        finally:  # answered, failed or cancelled: either way no longer pending
            self._pending.pop(request_id, None)

    async def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        """Send a notification."""
        frame: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            frame["params"] = params
        await self._send(orjson.dumps(frame))

    async def respond(self, request_id: Any, result: Any) -> None:
        """Answer a :class:`Request` with its result."""
        await self._send(orjson.dumps({"jsonrpc": "2.0", "id": request_id, "result": result}))

    async def respond_error(self, request_id: Any, code: int, message: str,
                            data: Any = None) -> None:
        """Answer a :class:`Request` with an error."""
        err: dict[str, Any] = {"code": code, "message": message}
        if data is not None:
            err["data"] = data
        await self._send(orjson.dumps({"jsonrpc": "2.0", "id": request_id, "error": err}))

    def receive(self, frame: bytes | str) -> Notification | Request | None:
        """Take one incoming frame.

        A response settles its pending request and gives None, as does a frame that is not
        a JSON object or not JSON-RPC (skipped). A notification or a request is returned
        for the caller to handle.
        """
        try:
            message = orjson.loads(frame)
        except orjson.JSONDecodeError:
            log.debug("skipped a frame that is not JSON")
            return None
        if not isinstance(message, dict):
            log.debug("skipped a frame that is not a JSON object")
            return None
        if "method" not in message:
            self.resolve(message)
            return None
        method = message["method"]
        if not isinstance(method, str):
            log.debug("skipped a message whose method is not a string")
            return None
        raw = message.get("params")
        params: dict[str, Any] = raw if isinstance(raw, dict) else {}
        if "id" in message:
            return Request(message["id"], method, params)
        return Notification(method, params)

    def resolve(self, message: dict[str, Any]) -> bool:
        """Settle the request a response answers; False if none is waiting for it."""
        request_id = message.get("id")
        if not isinstance(request_id, int) or isinstance(request_id, bool):
            return False
        fut = self._pending.pop(request_id, None)
        if fut is None or fut.done():
            return False
        err = message.get("error")
        if err is not None:
            fut.set_exception(self._error(err if isinstance(err, dict)
                                          else {"message": str(err)}))
        else:
            fut.set_result(message.get("result"))
        return True

    def fail_all(self, exc: BaseException) -> None:
        """Fail every pending request with ``exc`` (the connection is gone)."""
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(exc)
