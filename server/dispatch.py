"""From a frame to its response: the handshake, the checks, and running the handler.

Every frame goes through :meth:`Dispatcher.on_message`, in the order it arrived: it is
parsed (:func:`server.requests.parse_request`), ``initialize`` is answered here, and any
other request is checked (initialized, role, an agent's scope, the hub stopping, the
connection's requests under way) before its handler is called. A handler returns a
coroutine, run in a task, or a future, answered from its done-callback (see
:mod:`server.methods`); both end in the same response or error frames.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from functools import partial
from pathlib import Path
from typing import Any

from server import __version__, protocol
from server.auth import Authenticator, check_agent_scope
from server.connection import ClientConnection
from server.methods import METHODS, AfterReply, Encoder, HubContext
from server.metrics import Metrics
from server.protocol import (
    CloseCode,
    InternalError,
    InvalidParams,
    InvalidRequest,
    NotAuthenticated,
    Overloaded,
    Params,
    ProtocolError,
)
from server.redact import hide_paths
from server.requests import RejectedFrame, Request, check_role, parse_request

log = logging.getLogger("axtui.hub")

MAX_AUTH_FAILURES = 3


class Dispatcher:
    """Runs the requests of every connection against one :class:`HubContext`."""

    def __init__(
        self, context: HubContext, auth: Authenticator, metrics: Metrics, max_inflight: int,
        data_dir: Path | None = None,
    ) -> None:
        self.context = context
        self.data_dir = data_dir  # its paths are hidden from every error a client gets
        self.auth = auth
        self.metrics = metrics
        self.max_inflight = max_inflight  # requests under way on one connection
        self.stopping = False  # set when the hub stops: new requests are refused

    def on_message(self, conn: ClientConnection, message: str | bytes) -> None:
        """Parse one frame and dispatch it; never raises."""
        if conn.closing:
            return
        self.metrics.requests += 1
        try:
            request = parse_request(message)
        except RejectedFrame as rejected:
            self._error(conn, rejected.request_id, rejected.error)
            return
        if request is None:
            return
        try:
            self._dispatch(conn, request)
        except Exception as exc:
            self._failed(conn, request.id, request.method, exc)

    def _dispatch(self, conn: ClientConnection, request: Request) -> None:
        name = request.method
        if name == "initialize":
            self._initialize(conn, request.id, Params(request.params))
            return
        if not conn.initialized:
            self._not_authenticated(conn, request.id)
            return
        principal = conn.principal
        assert principal is not None
        check_role(principal, name)
        if principal.session is not None:
            check_agent_scope(principal, name, request.params)
        if self.stopping:
            raise Overloaded("the hub is shutting down; reconnect in a moment")
        if len(conn.tasks) + len(conn.publishes) >= self.max_inflight:
            self.metrics.overloaded += 1
            raise Overloaded("too many requests under way on this connection")
        method = METHODS[name]
        outcome = method.handler(self.context, conn, Params(request.params))
        if isinstance(outcome, asyncio.Future):
            conn.publishes.add(outcome)
            outcome.add_done_callback(
                partial(self._answer, conn, request.id, name, method.encode)
            )
        else:
            conn.tasks.spawn(self._run(conn, request.id, name, method.encode, outcome), name=name)

    async def _run(
        self, conn: ClientConnection, request_id: Any, name: str, encode: Encoder,
        outcome: Awaitable[Any],
    ) -> None:
        try:
            result = await outcome
        except Exception as exc:
            self._failed(conn, request_id, name, exc)
            return
        self._reply(conn, request_id, encode, result)

    def _answer(
        self, conn: ClientConnection, request_id: Any, name: str, encode: Encoder,
        future: asyncio.Future[Any],
    ) -> None:
        """Answer a request whose handler returned ``future``, now done."""
        conn.publishes.discard(future)
        if future.cancelled():
            return
        exc = future.exception()
        if exc is None:
            self._reply(conn, request_id, encode, future.result())
        else:
            self._failed(conn, request_id, name, exc)

    def _reply(self, conn: ClientConnection, request_id: Any, encode: Encoder, result: Any) -> None:
        if isinstance(result, AfterReply):
            conn.send(encode(request_id, result.result))
            result.then()
        else:
            conn.send(encode(request_id, result))

    def _failed(
        self, conn: ClientConnection, request_id: Any, name: str, exc: BaseException
    ) -> None:
        """Answer with ``exc``; an unexpected one is logged and becomes an internal error,
        bad params are logged in one line (the client's mistake: no traceback)."""
        if not isinstance(exc, ProtocolError):
            log.error("%s failed", name, exc_info=exc)
            exc = InternalError(f"{name} failed: {exc}")
        elif isinstance(exc, InvalidParams):
            log.info("%s refused: %.300s", name, exc.message)
        self._error(conn, request_id, exc)

    def _error(self, conn: ClientConnection, request_id: Any, exc: ProtocolError) -> None:
        self.metrics.errors += 1
        if self.data_dir is not None:  # the log has the paths; a client gets the session
            exc.message = hide_paths(exc.message, self.data_dir)
            if isinstance(exc.data, dict):
                exc.data = {k: hide_paths(v, self.data_dir) if isinstance(v, str) else v
                            for k, v in exc.data.items()}
        conn.send(protocol.error_frame(request_id, exc))

    # --- the handshake ---------------------------------------------------------------------

    def _not_authenticated(self, conn: ClientConnection, request_id: Any) -> None:
        conn.auth_failures += 1
        self._error(conn, request_id,
                    NotAuthenticated("send initialize first: no other method before it"))
        if conn.auth_failures >= MAX_AUTH_FAILURES:
            conn.close(CloseCode.UNAUTHENTICATED, "not authenticated")

    def _initialize(self, conn: ClientConnection, request_id: Any, p: Params) -> None:
        """The handshake: protocol version, client info, token (see Authentication)."""
        if conn.initialized:
            raise InvalidRequest("this connection is already initialized")
        version = p.get("protocolVersion")
        # Exactly the integer: True == 1 and 1.0 == 1 in Python, but neither is a version.
        if type(version) is not int or version != protocol.PROTOCOL_VERSION:
            raise InvalidParams(
                f"protocolVersion {version!r} is not supported",
                {"supported": protocol.SUPPORTED_VERSIONS},
            )
        info = p.mapping("clientInfo", {})
        name, kind = (_client_label(info, field) for field in ("name", "kind"))
        principal = conn.principal
        if principal is None:
            token = p.string("token", None)
            principal = self.auth.principal_for_token(token) if token else None
            if principal is None:
                self._error(conn, request_id, NotAuthenticated(
                    "a valid token is needed: pass it in the Authorization header or as"
                    " params.token"
                ))
                conn.close(CloseCode.UNAUTHENTICATED, "bad token")
                return
        conn.principal = principal
        conn.client_name = name
        conn.client_kind = kind or "unknown"
        conn.initialized = True
        conn.send(protocol.response_frame(request_id, {
            "protocolVersion": protocol.PROTOCOL_VERSION,
            "hubInfo": {"name": "axtui", "version": __version__},
            "principal": principal.to_json(),
        }))


def _client_label(info: dict[str, Any], field: str) -> str:
    """``clientInfo.<field>``, checked as a label; ``""`` when absent, null or empty."""
    value = info.get(field)
    if value is None or value == "":
        return ""
    return protocol.check_display_name(value, f"clientInfo.{field}")
