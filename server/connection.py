"""One client connection: who it is, its subscriptions, and its bounded outbox.

Nothing on the publish path ever awaits a client. Frames go into the connection's outbox
(a deque), and a callback at the end of the event loop's turn writes everything queued in
one write, as long as the socket's buffer has room; when it has not, a task waits for the
socket to drain and writes the rest (the only time a connection has a task for sending).
The bytes in the outbox are the connection's lag. When the bytes waiting in
the outbox pass ``hub.max_lag_bytes`` the connection is cut off with 4429: the close frame
is queued after what is already pending, and the client has 10 s to read it all.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import deque

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from server.auth import Principal
from server.caller import Caller
from server.metrics import Metrics
from server.protocol import CloseCode
from server.sessions import PAGE_BYTES, rpc_page

log = logging.getLogger("axtui.connection")

CLOSE_GRACE = 10.0  # seconds a cut-off client gets to read what is pending
WRITE_AHEAD = 64 * 1024  # bytes written into a socket's buffer before waiting for it


_last_framed: tuple[bytes, bytes] = (b"", b"\x81\x00")


def text_frame(payload: bytes) -> bytes:
    """``payload`` as one unmasked, unfragmented websocket text frame (RFC 6455, 5.2), as a
    server sends it without extensions: exactly what websockets' ``send_text`` would write.

    The same ``session/events`` payload goes to every subscriber of a session, one
    connection after another, so the last payload framed is remembered (by identity) and
    each batch is framed once, not once per subscriber.
    """
    global _last_framed
    if _last_framed[0] is payload:
        return _last_framed[1]
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x81, n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", 0x81, 126, n)
    else:
        header = struct.pack("!BBQ", 0x81, 127, n)
    framed = header + payload
    _last_framed = (payload, framed)
    return framed


class ClientConnection(Caller):
    """A websocket client of the hub (a :class:`server.sessions.Sink`)."""

    encode_page = staticmethod(rpc_page)

    def __init__(
        self, ws: ServerConnection, metrics: Metrics, max_lag_bytes: int,
        principal: Principal | None,
    ) -> None:
        super().__init__(principal, log)  # set by a Bearer header, or by initialize
        self.ws = ws
        self.metrics = metrics
        self.max_lag_bytes = max_lag_bytes
        self.initialized = False
        self.auth_failures = 0
        # A replica's connection (cluster mode): a caller for each client behind it.
        self.origins: dict[tuple[str, ...], Caller] = {}
        self.closing = False
        self._frames: deque[bytes] = deque()
        self._pending = 0
        self._flush_soon = False  # a _flush is scheduled
        self._backlog: asyncio.Task[None] | None = None  # waiting for the socket to drain
        self._room = asyncio.Event()
        self._room.set()
        self._empty = asyncio.Event()
        self._empty.set()

    # --- the outbox ------------------------------------------------------------------------

    def send(self, frame: bytes, events: int = 0) -> None:
        """Queue a frame; cut the connection off if it is too far behind."""
        if self.closing:
            return
        self._frames.append(frame)
        self._pending += len(frame)
        self.metrics.deliveries += events
        self._empty.clear()
        if not self._flush_soon:
            # Written once this turn of the event loop is over, with whatever else was
            # queued meanwhile (a publisher's acks for a whole group commit go together).
            self._flush_soon = True
            asyncio.get_running_loop().call_soon(self._flush)
        # One frame alone never counts as lag: an event may be larger than the limit.
        if self._pending > self.max_lag_bytes and len(self._frames) > 1:
            self.metrics.slow_disconnects += 1
            log.info("client %s is %d bytes behind; closing with 4429",
                     self.client_name or self.ws.remote_address, self._pending)
            self.close(CloseCode.TOO_SLOW, "subscriber too slow: reconnect and resume")

    async def drained(self) -> None:
        """Wait until at most half of ``max_lag_bytes`` is pending (catch-up flow control)."""
        while self._pending > self.max_lag_bytes // 2 and not self.closing:
            self._room.clear()
            await self._room.wait()
        if self.closing:
            raise ConnectionError("connection is closing")

    def _flush(self) -> None:
        """Write what is queued, unless the socket is full (then a task waits for it)."""
        self._flush_soon = False
        if self._backlog is not None:
            return  # it writes the rest once the socket has drained
        if self.ws.state is not State.OPEN:
            self._gone()
            return
        try:
            self._write_ahead()
        except Exception:  # the socket failed under us: the connection is going away
            log.exception("writing to client %s failed", self.client_name)
            self._gone()
            return
        if self._frames:
            self._backlog = asyncio.create_task(self._send_backlog(), name="backlog")
        else:
            self._empty.set()

    async def _send_backlog(self) -> None:
        """Wait for the socket to drain between writes until the outbox is empty."""
        ws = self.ws
        try:
            while self._frames:
                # ws.send waits until the socket's buffer is below its low-water mark.
                frame = self._frames.popleft()
                await ws.send(frame, text=True)
                self._pending -= len(frame)
                self._write_ahead()
            self._empty.set()
        except ConnectionClosed:
            self._gone()
        except Exception:
            log.exception("writing to client %s failed", self.client_name)
            self._gone()
        finally:
            self._backlog = None

    def _gone(self) -> None:
        """The socket is closed: what is queued will never be sent."""
        self._frames.clear()
        self._pending = 0
        self._room.set()
        self._empty.set()

    def _write_ahead(self) -> None:
        """Frame what is queued and hand it to the socket in one write, while the socket's
        buffer holds less than WRITE_AHEAD bytes: no await and no system call per frame."""
        ws, frames = self.ws, self._frames
        protocol, transport = ws.protocol, ws.transport
        if protocol.state is not State.OPEN:
            return  # closing: nothing may follow the close frame (the frames stay queued)
        # Whatever websockets queued itself (a pong) goes first; it is normally nothing,
        # since websockets writes as soon as it queues.
        chunks = protocol.data_to_send()
        if not all(chunks):  # b"" asks for a half-close: only while closing, never here
            self._write_protocol_data(chunks)
            chunks = []
        raw = not protocol.extensions  # no compression: a frame is its header and payload
        room = WRITE_AHEAD - transport.get_write_buffer_size()
        while frames and room > 0:
            frame = frames.popleft()
            if raw:
                chunks.append(text_frame(frame))
            else:
                protocol.send_text(frame)
                chunks += protocol.data_to_send()
            self._pending -= len(frame)
            room -= len(frame)
        if self._pending <= self.max_lag_bytes // 2:
            self._room.set()
        if chunks:
            transport.writelines(chunks)

    def _write_protocol_data(self, chunks: list[bytes]) -> None:
        """Write what websockets' protocol queued, as websockets itself does."""
        transport = self.ws.transport
        for chunk in chunks:
            if chunk:
                transport.write(chunk)
            elif transport.can_write_eof():
                transport.write_eof()
            else:
                transport.close()

    def close(self, code: int, reason: str) -> None:
        """Close after the frames already queued; drop the connection if it takes over 10 s."""
        if self.closing:
            return
        self.closing = True
        self._room.set()
        self.tasks.spawn(self._close_after_pending(code, reason), name="close")

    async def _close_after_pending(self, code: int, reason: str) -> None:
        try:
            async with asyncio.timeout(CLOSE_GRACE):
                await self.wait_sent()
                await self.ws.close(code, reason)
        except TimeoutError:
            log.info("client did not read its close frame within %.0f s; dropping it", CLOSE_GRACE)
            self.ws.transport.abort()

    # --- subscriptions ---------------------------------------------------------------------

    def subscription_ended(self, session_id: str, frame: bytes | None) -> None:
        """A subscription ended from the hub's side (see :class:`server.sessions.Sink`)."""
        self.subscriptions.pop(session_id, None)
        if frame is not None:
            self.send(frame)

    def subscription_failed(self, session_id: str) -> None:
        """Close with 1011 so that the client reconnects and resumes from its last seq."""
        self.subscriptions.pop(session_id, None)
        self.close(CloseCode.INTERNAL_ERROR, f"subscription to {session_id} failed; resume")

    @property
    def page_bytes(self) -> int:
        """Catch-up pages stay well under the lag limit, so catching up never trips it."""
        return max(1024, min(PAGE_BYTES, self.max_lag_bytes // 4))

    def cleanup(self) -> None:
        """The connection is gone: stop everything that belongs to it."""
        self.closing = True
        for sub in self.subscriptions.values():
            sub.stop()
        self.subscriptions.clear()
        if self._backlog is not None:
            self._backlog.cancel()
        self._gone()
        self.tasks.cancel_all()

    async def wait_sent(self) -> None:
        """Wait until every queued frame is written (or the connection is gone)."""
        await self._empty.wait()
