"""The websocket hub: HTTP endpoints, connections, start and stop.

The hub is handed its parts (see :func:`server.wiring.build_hub`): the catalog and the
session registry it opens and closes, the supervisor it starts recovering and stops, the
authenticator that says who a connection is, the watch broadcaster a closed connection
leaves, and the dispatcher that runs every frame.
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from server import __version__
from server.auth import Authenticator, Principal
from server.catalog import Catalog
from server.config import Config
from server.connection import ClientConnection
from server.dispatch import Dispatcher
from server.local_secret import advertise, ensure_secret, withdraw
from server.metrics import Metrics
from server.probes import METRICS_TYPE, health, metrics_answer
from server.protocol import CloseCode
from server.redact import protect_logs
from server.registry import SessionRegistry
from server.sandbox import announce, serve_agent_socket
from server.supervisor import Supervisor
from server.watch import WatchBroadcaster

if TYPE_CHECKING:
    from server.cluster import Cluster
    from server.httpapi import HttpApi

log = logging.getLogger("axtui.hub")


class Hub:
    """The hub process's core: call :meth:`start`, then :meth:`stop`."""

    def __init__(
        self,
        config: Config,
        *,
        metrics: Metrics,
        catalog: Catalog,
        sessions: SessionRegistry,
        supervisor: Supervisor,
        auth: Authenticator,
        watch: WatchBroadcaster,
        dispatcher: Dispatcher,
        http: HttpApi | None = None,
        cluster: Cluster | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.catalog = catalog
        self.sessions = sessions
        self.supervisor = supervisor
        self.auth = auth
        self.watch = watch
        self.dispatcher = dispatcher
        self.http = http  # the HTTP API (http.md), when hub.http_port is set
        self.cluster = cluster  # cluster mode (cluster.md), when cluster: is configured
        self.connections: set[ClientConnection] = set()
        self._server: Server | None = None
        self._agent_server: Server | None = None  # unix socket: agents without network
        self._advertised: str | None = None  # the URL local clients find the secret for
        self._recovery: asyncio.Task[None] | None = None
        auth.on_revoked.append(self._close_revoked)

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called (requests are refused from then on)."""
        return self.dispatcher.stopping

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
        cluster = self.config.cluster
        protect_logs([*(t.token for t in self.config.tokens),  # websockets logs headers
                      *(h.secret for h in self.config.webhooks.values()),  # at DEBUG
                      *((cluster.secret,) if cluster is not None else ())])
        if self.cluster is not None:
            await self.cluster.check()  # before anything: a replica without Redis exits 2
        await self.catalog.open()
        self.sessions.start()
        hub = self.config.hub
        options: dict[str, Any] = {
            "process_request": self._process_request, "max_size": hub.max_frame_bytes,
            "compression": None, "max_queue": 64, "server_header": f"axtui/{__version__}",
        }
        try:
            if self.auth.local_mode:  # before listening: nobody gets in without it
                self.auth.use_local_secret(ensure_secret(hub.data_dir))
            self._server = await serve(self._handle, hub.host, hub.port, **options)
            if self.http is not None:
                await self.http.start()
        except BaseException:
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()
            await self.sessions.close_all()
            await self.catalog.close()
            raise
        self._agent_server = await serve_agent_socket(self._handle, self.config, **options)
        self.auth.serving_at(self.url)
        if self.auth.local_mode:
            self._advertised = self.url
            advertise(hub.data_dir, self.url)
        await asyncio.to_thread(announce, self.config.agents.values())
        log.info("axtui hub listening on %s (data dir %s, %s mode)", self.url, hub.data_dir,
                 "local" if self.auth.local_mode else "token")
        if self.cluster is not None:  # a session's owner recovers it when it takes it over
            self.cluster.start(self.url)
        else:
            self._recovery = asyncio.create_task(self.supervisor.recover(),
                                                 name="agent recovery")

    async def stop(self) -> None:
        """Shut down: finish requests under way, close clients with 1001, flush, close."""
        self.dispatcher.stopping = True
        if self._server is not None:
            # Stop accepting only: websockets' Server.close() acts on its first call alone.
            self._server.server.close()
        pending = [t for c in self.connections for t in (*c.tasks, *c.publishes)]
        if pending:
            await asyncio.wait(pending, timeout=5)
        await asyncio.gather(*(c.wait_sent() for c in self.connections))
        if self.http is not None:
            await self.http.stop()
        for server in (self._server, self._agent_server):
            if server is not None:
                server.close(close_connections=True)
                await server.wait_closed()
        if self._advertised is not None:
            withdraw(self.config.hub.data_dir, self._advertised)
        if self._recovery is not None:
            await self._recovery
        await self.supervisor.close()
        await self.sessions.close_all()
        if self.cluster is not None:
            await self.cluster.stop()
        await self.catalog.close()
        log.info("axtui hub stopped")

    # --- HTTP ------------------------------------------------------------------------------

    def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == "/healthz":
            return ws.respond(*health(self.metrics))
        if path == "/metrics":
            return self._metrics(ws, request)
        if path != "/ws":
            return ws.respond(HTTPStatus.NOT_FOUND, "not found: the websocket is at /ws\n")
        header = request.headers.get("Authorization")
        if header is not None and self.auth.principal_for_header(header) is None:
            return _unauthorized()
        return None

    def _metrics(self, ws: ServerConnection, request: Request) -> Response:
        status, text = metrics_answer(self.auth, self.metrics, request.headers.get("Authorization"))
        if status is HTTPStatus.UNAUTHORIZED:
            return _unauthorized(text)
        response = ws.respond(status, text)
        if status is HTTPStatus.OK:
            response.headers["Content-Type"] = METRICS_TYPE
        return response

    # --- connections -----------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        # The header is read again here, not kept from _process_request: a request that is
        # never upgraded (a plain GET, a closed socket) never reaches this method, so
        # anything kept per request would be kept for good.
        principal = self._header_principal(ws)
        conn = ClientConnection(ws, self.metrics, self.config.hub.max_lag_bytes, principal)
        self.connections.add(conn)
        self.metrics.connections = len(self.connections)
        timer = asyncio.get_running_loop().call_later(
            self.config.hub.initialize_timeout, self._initialize_timeout, conn
        )
        on_message = self.dispatcher.on_message
        try:
            async for message in ws:
                on_message(conn, message)
        except ConnectionClosed:
            pass
        finally:
            timer.cancel()
            conn.cleanup()
            self.watch.forget(conn)
            self.connections.discard(conn)
            self.metrics.connections = len(self.connections)

    def _header_principal(self, ws: ServerConnection) -> Principal | None:
        """Who the upgrade request's ``Authorization`` header says the client is (``None``:
        no header, or a token revoked since the handshake: ``initialize`` then asks)."""
        header = ws.request.headers.get("Authorization") if ws.request is not None else None
        if header is None:
            return self.auth.default_principal
        return self.auth.principal_for_header(header)

    def _close_revoked(self, principal: Principal) -> None:
        """An agent's token was revoked (its process stopped): close every connection that
        logged in with it, so the token's end is the end of its access."""
        for conn in list(self.connections):
            if conn.principal is principal:
                conn.close(CloseCode.UNAUTHENTICATED, "the agent's token was revoked")

    def _initialize_timeout(self, conn: ClientConnection) -> None:
        if not conn.initialized:
            conn.close(CloseCode.NO_INITIALIZE, "no initialize within the time limit")


def _unauthorized(text: str = "invalid token\n") -> Response:
    body = text.encode()
    headers = Headers([
        ("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))),
        ("WWW-Authenticate", 'Bearer realm="axtui"'),
    ])
    return Response(HTTPStatus.UNAUTHORIZED.value, "Unauthorized", headers, body)
