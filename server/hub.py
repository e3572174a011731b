"""The websocket hub: HTTP endpoints, authentication, dispatch, watchers, start and stop."""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
from collections.abc import Callable
from functools import partial
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from server import __version__, protocol
from server.catalog import Catalog
from server.config import Config
from server.connection import ClientConnection, Principal
from server.methods import METHODS, AfterReply, build_publish, submit_publish
from server.metrics import Metrics
from server.protocol import (
    CloseCode,
    InternalError,
    InvalidParams,
    InvalidRequest,
    MethodNotFound,
    NotAuthenticated,
    Overloaded,
    Params,
    ProtocolError,
    Role,
    SessionInfo,
)
from server.redact import protect_logs
from server.registry import SessionRegistry
from server.sessions import Session
from server.sessiondb import CommitResult
from server.supervisor import Supervisor

log = logging.getLogger("axtui.hub")

LOCAL_PRINCIPAL = Principal("local", Role.ADMIN)
MAX_AUTH_FAILURES = 3
WATCH_INTERVAL = 0.1  # session/updated: at most about 10 a second per session


class Hub:
    """The hub process's core: call :meth:`start`, then :meth:`stop`."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.metrics = Metrics()
        self.catalog = Catalog(config.hub.data_dir)
        self.sessions = SessionRegistry(config.hub, self.catalog, config.agents, self.metrics)
        self.sessions.observers.append(self)
        self.supervisor = Supervisor(self.sessions, config.hub.data_dir, config.agents,
                                     self.agent_credentials)
        self.connections: set[ClientConnection] = set()
        self.stopping = False
        self._server: Server | None = None
        self._header_principals: dict[ServerConnection, Principal] = {}
        self._agent_tokens: dict[str, Principal] = {}
        self._watch_pending: dict[str, SessionInfo] = {}
        self._watch_timer: asyncio.TimerHandle | None = None
        self._recovery: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The port the hub listens on (useful with port 0)."""
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        """The websocket URL of the hub."""
        host = self.config.hub.host
        host = f"[{host}]" if ":" in host else host
        return f"ws://{host}:{self.port}/ws"

    async def start(self) -> None:
        """Open the catalog (taking the data-dir lock) and start listening."""
        protect_logs(t.token for t in self.config.tokens)  # websockets logs headers at DEBUG
        await self.catalog.open()
        self.sessions.start()
        hub = self.config.hub
        try:
            self._server = await serve(
                self._handle, hub.host, hub.port,
                process_request=self._process_request,
                max_size=hub.max_frame_bytes,
                compression=None,
                max_queue=64,
                server_header=f"axtui/{__version__}",
            )
        except BaseException:
            await self.sessions.close_all()
            await self.catalog.close()
            raise
        log.info("axtui hub listening on %s (data dir %s, %s mode)", self.url, hub.data_dir,
                 "local" if self.config.local_mode else "token")
        self._recovery = asyncio.create_task(self.supervisor.recover(), name="agent recovery")

    async def stop(self) -> None:
        """Shut down: finish requests under way, close clients with 1001, flush, close."""
        self.stopping = True
        if self._server is not None:
            # Stop accepting only: websockets' Server.close() acts on its first call alone.
            self._server.server.close()
        pending = [t for c in self.connections for t in (*c.tasks, *c.publishes)]
        if pending:
            await asyncio.wait(pending, timeout=5)
        await asyncio.gather(*(c.wait_sent() for c in self.connections))
        if self._server is not None:
            self._server.close(close_connections=True)
            await self._server.wait_closed()
        if self._recovery is not None:
            await self._recovery
        await self.supervisor.close()
        await self.sessions.close_all()
        await self.catalog.close()
        log.info("axtui hub stopped")

    # --- HTTP and authentication -----------------------------------------------------------

    def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == "/healthz":
            return ws.respond(HTTPStatus.OK, "ok\n")
        if path == "/metrics":
            response = ws.respond(HTTPStatus.OK, self.metrics.render())
            response.headers["Content-Type"] = "text/plain; version=0.0.4; charset=utf-8"
            return response
        if path != "/ws":
            return ws.respond(HTTPStatus.NOT_FOUND, "not found: the websocket is at /ws\n")
        header = request.headers.get("Authorization")
        if header is not None:
            principal = self._principal_for_header(header)
            if principal is None:
                return _unauthorized()
            self._header_principals[ws] = principal
        return None

    def _principal_for_header(self, header: str) -> Principal | None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            return None if not self.config.local_mode else LOCAL_PRINCIPAL
        principal = self.principal_for_token(token.strip())
        if principal is None and self.config.local_mode:
            return LOCAL_PRINCIPAL  # local mode: any other header is ignored
        return principal

    def agent_credentials(
        self, session_id: str, agent_id: str
    ) -> tuple[str, str, Callable[[], None]]:
        """A token for one agent process, confined to its session: (url, token, revoke)."""
        token = secrets.token_urlsafe(32)
        self._agent_tokens[token] = Principal(agent_id, Role.PARTICIPANT, "agent", session_id)

        def revoke() -> None:
            self._agent_tokens.pop(token, None)

        return self.url, token, revoke

    def principal_for_token(self, token: str) -> Principal | None:
        """The principal a token stands for (compared in constant time), or ``None``."""
        agent = self._agent_tokens.get(token)
        if agent is not None:
            return agent
        found = None
        for entry in self.config.tokens:
            if hmac.compare_digest(entry.token.encode(), token.encode()):
                found = Principal(entry.name, entry.role)
        return found

    # --- connections -----------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        principal = self._header_principals.pop(ws, None)
        if self.config.local_mode and principal is None:
            principal = LOCAL_PRINCIPAL
        conn = ClientConnection(ws, self.metrics, self.config.hub.max_lag_bytes, principal)
        self.connections.add(conn)
        self.metrics.connections = len(self.connections)
        timer = asyncio.get_running_loop().call_later(
            self.config.hub.initialize_timeout, self._initialize_timeout, conn
        )
        try:
            async for message in ws:
                self._on_message(conn, message)
        except ConnectionClosed:
            pass
        finally:
            timer.cancel()
            conn.cleanup()
            self.connections.discard(conn)
            self.metrics.connections = len(self.connections)

    def _initialize_timeout(self, conn: ClientConnection) -> None:
        if not conn.initialized:
            conn.close(CloseCode.NO_INITIALIZE, "no initialize within the time limit")

    def _on_message(self, conn: ClientConnection, message: str | bytes) -> None:
        """Parse one frame and dispatch it; never raises."""
        if conn.closing:
            return
        self.metrics.requests += 1
        request_id: Any = None
        try:
            if isinstance(message, bytes):
                raise InvalidRequest("binary frames are not accepted: send JSON-RPC as text")
            msg = protocol.loads(message)
            if not isinstance(msg, dict):
                raise InvalidRequest("a frame must hold one JSON-RPC request object")
            request_id = msg.get("id")
            if isinstance(request_id, bool) or not isinstance(request_id, int | str):
                if "id" not in msg and isinstance(msg.get("method"), str):
                    return  # a notification: the hub takes none from clients, so it is ignored
                request_id = None
                raise InvalidRequest("id must be an integer or a string")
            method = msg.get("method")
            if msg.get("jsonrpc") != "2.0" or not isinstance(method, str):
                raise InvalidRequest('a request needs "jsonrpc": "2.0" and a string method')
            if method == "initialize":
                self._initialize(conn, request_id, Params(msg.get("params")))
                return
            if not conn.initialized:
                self._not_authenticated(conn, request_id)
                return
            handler = METHODS.get(method)
            if handler is None:
                raise MethodNotFound(f"no method named {method!r}", {"method": method})
            needed = protocol.METHOD_ROLES[method]
            assert conn.principal is not None
            if conn.principal.role < needed:
                raise protocol.Forbidden(
                    f"{method} needs the {needed.label} role; {conn.principal.name} is"
                    f" {conn.principal.role.label}",
                    {"role": conn.principal.role.label, "needed": needed.label},
                )
            if conn.principal.session is not None:
                check_agent_scope(conn.principal, method, msg.get("params"))
            if self.stopping:
                raise Overloaded("the hub is shutting down; reconnect in a moment")
            if len(conn.tasks) + len(conn.publishes) >= self.config.hub.max_inflight:
                self.metrics.overloaded += 1
                raise Overloaded("too many requests under way on this connection")
            params = Params(msg.get("params"))
            if method == "session/publish":
                handler = self._publish(conn, request_id, params)
                if handler is None:
                    return
        except ProtocolError as exc:
            self.metrics.errors += 1
            conn.send(protocol.error_frame(request_id, exc))
            return
        task = asyncio.create_task(self._run(conn, request_id, method, handler, params))
        conn.tasks.add(task)
        task.add_done_callback(conn.tasks.discard)

    def _publish(self, conn: ClientConnection, request_id: Any, params: Params) -> Any:
        """``session/publish`` with no task or coroutine when its session is open: build the
        event, submit it, and answer from the commit's future (see :meth:`_published`).
        Returns ``None`` when done, else a handler that opens the session first."""
        try:
            sid, item = build_publish(self, conn, params)
            session = self.sessions.get_open(sid)
            if session is None:
                return lambda hub, conn, p: submit_publish(hub, sid, item)
            future = session.submit(item)
        except ProtocolError:
            raise
        except Exception as exc:  # as _run answers a handler's unexpected failure
            log.exception("session/publish failed")
            raise InternalError(f"session/publish failed: {exc}") from exc
        conn.publishes.add(future)
        future.add_done_callback(partial(self._published, conn, request_id))
        return None

    def _published(
        self, conn: ClientConnection, request_id: Any, future: asyncio.Future[CommitResult]
    ) -> None:
        """Answer a publish submitted by :meth:`_publish` (the same frames as :meth:`_run`)."""
        conn.publishes.discard(future)
        if future.cancelled():
            return
        exc = future.exception()
        if exc is None:
            result = future.result()
            conn.send(protocol.publish_response_frame(
                request_id, result.seq, result.ts, result.duplicate
            ))
            return
        self.metrics.errors += 1
        if not isinstance(exc, ProtocolError):
            log.error("session/publish failed", exc_info=exc)
            exc = InternalError(f"session/publish failed: {exc}")
        conn.send(protocol.error_frame(request_id, exc))

    async def _run(
        self, conn: ClientConnection, request_id: Any, method: str, handler: Any, params: Params
    ) -> None:
        try:
            result = await handler(self, conn, params)
        except ProtocolError as exc:
            self.metrics.errors += 1
            conn.send(protocol.error_frame(request_id, exc))
            return
        except Exception as exc:
            self.metrics.errors += 1
            log.exception("%s failed", method)
            conn.send(protocol.error_frame(request_id, InternalError(f"{method} failed: {exc}")))
            return
        if isinstance(result, AfterReply):
            conn.send(protocol.response_frame(request_id, result.result))
            result.then()
        else:
            conn.send(protocol.response_frame(request_id, result))

    def _not_authenticated(self, conn: ClientConnection, request_id: Any) -> None:
        conn.auth_failures += 1
        self.metrics.errors += 1
        conn.send(protocol.error_frame(
            request_id, NotAuthenticated("send initialize first: no other method before it")
        ))
        if conn.auth_failures >= MAX_AUTH_FAILURES:
            conn.close(CloseCode.UNAUTHENTICATED, "not authenticated")

    def _initialize(self, conn: ClientConnection, request_id: Any, p: Params) -> None:
        """The handshake: protocol version, client info, token (see Authentication)."""
        if conn.initialized:
            raise InvalidRequest("this connection is already initialized")
        version = p.get("protocolVersion")
        if version != protocol.PROTOCOL_VERSION or isinstance(version, bool):
            raise InvalidParams(
                f"protocolVersion {version!r} is not supported",
                {"supported": protocol.SUPPORTED_VERSIONS},
            )
        info = p.mapping("clientInfo", {})
        name, kind = info.get("name"), info.get("kind")
        principal = conn.principal
        if principal is None:
            token = p.string("token", None)
            principal = self.principal_for_token(token) if token else None
            if principal is None:
                self.metrics.errors += 1
                conn.send(protocol.error_frame(request_id, NotAuthenticated(
                    "a valid token is needed: pass it in the Authorization header or as"
                    " params.token"
                )))
                conn.close(CloseCode.UNAUTHENTICATED, "bad token")
                return
        conn.principal = principal
        conn.client_name = name if isinstance(name, str) else ""
        conn.client_kind = kind if isinstance(kind, str) and kind else "unknown"
        conn.initialized = True
        conn.send(protocol.response_frame(request_id, {
            "protocolVersion": protocol.PROTOCOL_VERSION,
            "hubInfo": {"name": "axtui", "version": __version__},
            "principal": principal.to_json(),
        }))

    # --- sessions/watch (the registry's observer) -------------------------------------------

    def session_changed(self, info: SessionInfo) -> None:
        """Coalesce ``session/updated`` notifications to about 10 a second per session."""
        self._watch_pending[info.session_id] = info
        if self._watch_timer is None:
            self._watch_timer = asyncio.get_running_loop().call_later(
                WATCH_INTERVAL, self._flush_watch
            )

    def _flush_watch(self) -> None:
        self._watch_timer = None
        pending, self._watch_pending = self._watch_pending, {}
        watchers = [c for c in self.connections if c.watching]
        if not watchers:
            return
        frames = [
            protocol.notification_frame("session/updated", {"session": info.to_json()})
            for info in pending.values()
        ]
        for conn in watchers:
            for frame in frames:
                conn.send(frame)

    def events_committed(self, session: Session, events: list[tuple[int, bytes]]) -> None:
        """Watchers learn of new events through session_changed."""

    def session_deleted(self, session_id: str) -> None:
        """Tell watchers at once that a session is gone."""
        self._watch_pending.pop(session_id, None)
        frame = protocol.notification_frame(
            "session/updated", {"sessionId": session_id, "deleted": True}
        )
        for conn in self.connections:
            if conn.watching:
                conn.send(frame)


AGENT_METHODS = frozenset({
    "ping", "session/get", "session/history", "state/query", "state/exec",
})


def check_agent_scope(principal: Principal, method: str, params: Any) -> None:
    """An agent's token reaches only its own session, and only the state methods."""
    sid = params.get("sessionId") if isinstance(params, dict) else None
    if method not in AGENT_METHODS or (method != "ping" and sid != principal.session):
        raise protocol.Forbidden(
            f"an agent's token may only use {', '.join(sorted(AGENT_METHODS))}"
            f" on its own session ({principal.session})",
            {"session": principal.session},
        )


def _unauthorized() -> Response:
    body = b"invalid token\n"
    headers = Headers([
        ("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))),
        ("WWW-Authenticate", 'Bearer realm="axtui"'),
    ])
    return Response(HTTPStatus.UNAUTHORIZED.value, "Unauthorized", headers, body)
