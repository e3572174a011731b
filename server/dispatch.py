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
from server.auth import Authenticator, Principal, check_agent_scope
from server.caller import Caller
from server.clustererrors import OwnedElsewhere, PeerUnreachable
from server.connection import ClientConnection
from server.forward import ClusterRoute, Forwarded
from server.methods import METHODS, AfterReply, Encoder, HubContext
from server.metrics import Metrics
from server.protocol import (
    CloseCode,
    Forbidden,
    InternalError,
    InvalidParams,
    InvalidRequest,
    NotAuthenticated,
    Overloaded,
    Params,
    ProtocolError,
    Role,
)
from server.redact import hide_paths
from server.requests import RejectedFrame, Request, check_role, parse_request

log = logging.getLogger("axtui.hub")

FORWARD = "cluster/forward"  # a request forwarded by another replica (server.forward)
# The methods that act on one session, run by its owner in cluster mode.
ROUTED = frozenset({
    "session/delete", "session/publish", "session/history", "session/cancel",
    "session/suspend", "session/fork", "state/query", "state/exec",
})
MAX_ORIGINS = 4096  # callers kept per peer connection for the clients behind it

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
        self.cluster: ClusterRoute | None = None  # cluster mode: see server.forward

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
        if name == FORWARD and conn.initialized and self.cluster is not None:
            self._forwarded(conn, request)
            return
        if not conn.initialized:
            self._not_authenticated(conn, request.id)
            return
        outcome = self.start(conn, name, request.params)  # checks the method exists first
        method = METHODS[name]
        if isinstance(outcome, asyncio.Future):
            conn.publishes.add(outcome)
            outcome.add_done_callback(
                partial(self._answer, conn, request.id, name, method.encode)
            )
        else:
            conn.tasks.spawn(self._run(conn, request.id, name, method.encode, outcome), name=name)

    def check(self, caller: Caller, name: str, params: Any) -> None:
        """Refuse ``caller``'s request of method ``name`` if its role or (for an agent) its
        scope does not allow it, the hub is stopping, or too many of its requests are under
        way. Both transports check every request here."""
        principal = caller.principal
        assert principal is not None
        check_role(principal, name)
        if principal.session is not None:
            check_agent_scope(principal, name, params)
        if self.stopping:
            raise Overloaded("the hub is shutting down; reconnect in a moment")
        if len(caller.tasks) + len(caller.publishes) >= self.max_inflight:
            self.metrics.overloaded += 1
            raise Overloaded("too many requests under way on this connection")

    def start(self, caller: Caller, name: str, params: Any) -> Awaitable[Any]:
        """:meth:`check` the request and start its handler: a coroutine or a future of the
        result (see :mod:`server.methods`)."""
        self.check(caller, name, params)
        cluster = self.cluster
        if cluster is None or name not in ROUTED:
            return METHODS[name].handler(self.context, caller, Params(params))
        sid = params.get("sessionId") if isinstance(params, dict) else None
        if not isinstance(sid, str) or self.context.sessions.get_open(sid) is not None:
            # Open here means owned here (a replica steps down as it loses a lease).
            return METHODS[name].handler(self.context, caller, Params(params))
        node = cluster.ownership.remote_owner(sid)
        if node is not None and not caller.forwarded:
            return self._forward_cached(node, sid, caller, name, params)
        return self._or_forward(caller, name, params)

    async def _forward_cached(self, node: str, sid: str, caller: Caller, name: str,
                              params: Any) -> Any:
        """Forward to the owner known from a moment ago; if it cannot be reached (it handed
        the session over, or died), find out afresh: this replica may own it now."""
        assert self.cluster is not None
        try:
            return await self.cluster.forwarder.forward(node, sid, caller, name, params)
        except PeerUnreachable:
            return await self._or_forward(caller, name, params)

    async def _or_forward(self, caller: Caller, name: str, params: Any) -> Any:
        """Run the method here, or where its session is owned (cluster mode)."""
        assert self.cluster is not None
        outcome = METHODS[name].handler(self.context, caller, Params(params))
        try:
            # A commit's future is shared with the session's writer: never cancel it.
            return await (asyncio.shield(outcome) if isinstance(outcome, asyncio.Future)
                          else outcome)
        except OwnedElsewhere as moved:
            if caller.forwarded:  # at most one hop: the owner changed meanwhile
                raise Overloaded(f"session {moved.session_id} moved to another replica;"
                                 " try again", {"sessionId": moved.session_id}) from None
            return await self.cluster.forwarder.forward(moved.node, moved.session_id, caller,
                                                        name, params)

    def error_for(self, name: str, exc: BaseException) -> ProtocolError:
        """What a client is told of ``exc``, raised by method ``name``: an unexpected one is
        logged and becomes an internal error, bad params are logged in one line (the
        client's mistake: no traceback); the data dir's paths are hidden (the log has them,
        the client gets the session)."""
        self.metrics.errors += 1
        if not isinstance(exc, ProtocolError):
            log.error("%s failed", name, exc_info=exc)
            exc = InternalError(f"{name} failed: {exc}")
        elif isinstance(exc, InvalidParams):
            log.info("%s refused: %.300s", name, exc.message)
        if self.data_dir is not None:
            exc.message = hide_paths(exc.message, self.data_dir)
            if isinstance(exc.data, dict):
                exc.data = {k: hide_paths(v, self.data_dir) if isinstance(v, str) else v
                            for k, v in exc.data.items()}
        return exc

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
        if isinstance(result, Forwarded):  # the owner's answer, already in its JSON shape
            conn.send(protocol.response_frame(request_id, result.value))
        elif isinstance(result, AfterReply):
            conn.send(encode(request_id, result.result))
            result.then()
        else:
            conn.send(encode(request_id, result))

    def _failed(
        self, conn: ClientConnection, request_id: Any, name: str, exc: BaseException
    ) -> None:
        """Answer with ``exc`` (see :meth:`error_for`)."""
        conn.send(protocol.error_frame(request_id, self.error_for(name, exc)))

    def _error(self, conn: ClientConnection, request_id: Any, exc: ProtocolError) -> None:
        conn.send(protocol.error_frame(request_id, self.error_for("", exc)))

    # --- cluster mode: a request another replica forwarded ------------------------------

    def _forwarded(self, conn: ClientConnection, request: Request) -> None:
        """Run a request another replica forwarded (``cluster/forward``) as the client that
        sent it there, and answer the result in its JSON shape."""
        if conn.principal is None or conn.principal.kind != "cluster":
            raise Forbidden(f"{FORWARD} is for the replicas of a cluster")
        p = Params(request.params)
        name = p.string("method")
        if name not in ROUTED:
            raise InvalidParams(f"{name} is not forwarded", {"param": "method"})
        who, client = p.mapping("principal"), p.mapping("client")
        key = (str(who.get("name")), str(who.get("role")), str(who.get("kind")),
               str(client.get("kind")), str(client.get("name")))
        origin = conn.origins.get(key)
        if origin is None:
            if len(conn.origins) >= MAX_ORIGINS:
                conn.origins.clear()
            try:
                role = Role.parse(key[1])
            except ValueError:
                raise InvalidParams("principal.role is not a role",
                                    {"param": "principal"}) from None
            origin = conn.origins[key] = Caller(Principal(key[0], role, key[2]), log,
                                                key[3], key[4])
            origin.forwarded = True
        outcome = self.start(origin, name, p.get("params"))
        shape = METHODS[name].shape
        conn.tasks.spawn(self._run(conn, request.id, name,
                                   lambda rid, result: protocol.response_frame(rid, shape(result)),
                                   outcome), name=f"forwarded {name}")

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
