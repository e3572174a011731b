"""Requests from clients, with no I/O: one frame into a :class:`Request`, and who may run it.

The dispatcher (:mod:`server.dispatch`) calls :func:`parse_request` on every frame and
:func:`check_role` once the connection is initialized; what they raise is sent back as
the JSON-RPC error, and nothing else happens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from server import protocol
from server.auth import Principal
from server.protocol import Forbidden, InvalidRequest, MethodNotFound, ProtocolError


@dataclass(slots=True)  # not frozen: a frozen dataclass is 4x slower to make, on every request
class Request:
    """A JSON-RPC request: its ``id``, ``method`` and raw ``params`` (checked by the handler)."""

    id: int | str
    method: str
    params: Any


class RejectedFrame(Exception):
    """A frame that gets an error response and nothing else: ``error`` under ``request_id``
    (``None`` when the frame has no usable id)."""

    def __init__(self, request_id: int | str | None, error: ProtocolError) -> None:
        super().__init__(error.message)
        self.request_id = request_id
        self.error = error


def parse_request(message: str | bytes) -> Request | None:
    """The request in one websocket frame, or ``None`` for a notification (the hub takes
    none from clients, so it is ignored). Raises :class:`RejectedFrame`."""
    if isinstance(message, bytes):
        raise RejectedFrame(None, InvalidRequest(
            "binary frames are not accepted: send JSON-RPC as text"))
    try:
        msg = protocol.loads(message)
    except ProtocolError as exc:
        raise RejectedFrame(None, exc) from None
    if not isinstance(msg, dict):
        raise RejectedFrame(None, InvalidRequest(
            "a frame must hold one JSON-RPC request object"))
    request_id = msg.get("id")
    method = msg.get("method")
    if isinstance(request_id, bool) or not isinstance(request_id, int | str):
        if "id" not in msg and isinstance(method, str):
            return None
        raise RejectedFrame(None, InvalidRequest("id must be an integer or a string"))
    if msg.get("jsonrpc") != "2.0" or not isinstance(method, str):
        raise RejectedFrame(request_id, InvalidRequest(
            'a request needs "jsonrpc": "2.0" and a string method'))
    return Request(request_id, method, msg.get("params"))


def check_role(principal: Principal, method: str) -> None:
    """Refuse an unknown ``method`` (:class:`MethodNotFound`), or one that needs a higher role
    than the principal's (:class:`Forbidden`), as :data:`protocol.METHOD_ROLES` says."""
    needed = protocol.METHOD_ROLES.get(method)
    if needed is None:
        raise MethodNotFound(f"no method named {method!r}", {"method": method})
    if principal.role < needed:
        raise Forbidden(
            f"{method} needs the {needed.label} role; {principal.name} is"
            f" {principal.role.label}",
            {"role": principal.role.label, "needed": needed.label},
        )
