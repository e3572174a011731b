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
from server.metrics import Metrics
from server.protocol import CloseCode
from server.redact import protect_logs
from server.registry import SessionRegistry
from server.supervisor import Supervisor
from server.watch import WatchBroadcaster

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
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.catalog = catalog
        self.sessions = sessions
        self.supervisor = supervisor
        self.auth = auth
        self.watch = watch
        self.dispatcher = dispatcher
        self.connections: set[ClientConnection] = set()
        self._server: Server | None = None
        self._header_principals: dict[ServerConnection, Principal] = {}
        self._recovery: asyncio.Task[None] | None = None

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
        self.auth.serving_at(self.url)
        log.info("axtui hub listening on %s (data dir %s, %s mode)", self.url, hub.data_dir,
                 "local" if self.auth.local_mode else "token")
        self._recovery = asyncio.create_task(self.supervisor.recover(), name="agent recovery")

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
        if self._server is not None:
            self._server.close(close_connections=True)
            await self._server.wait_closed()
        if self._recovery is not None:
            await self._recovery
        await self.supervisor.close()
        await self.sessions.close_all()
        await self.catalog.close()
        log.info("axtui hub stopped")

    # --- HTTP ------------------------------------------------------------------------------

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
            principal = self.auth.principal_for_header(header)
            if principal is None:
                return _unauthorized()
            self._header_principals[ws] = principal
        return None

    # --- connections -----------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        principal = self._header_principals.pop(ws, None) or self.auth.default_principal
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

    def _initialize_timeout(self, conn: ClientConnection) -> None:
        if not conn.initialized:
            conn.close(CloseCode.NO_INITIALIZE, "no initialize within the time limit")


def _unauthorized() -> Response:
    body = b"invalid token\n"
    headers = Headers([
        ("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))),
        ("WWW-Authenticate", 'Bearer realm="axtui"'),
    ])
    return Response(HTTPStatus.UNAUTHORIZED.value, "Unauthorized", headers, body)
