"""Server-Sent Events: a subscription's events written to an HTTP response (http.md §5).

An :class:`SseStream` is a :class:`server.sessions.Sink` like a websocket connection: the
session hands it framed pages without awaiting, they wait in its bounded outbox, and one
task writes them to the response, awaiting the socket. The bytes waiting are its lag; past
``hub.max_lag_bytes`` the stream is cut off (the reader resumes with ``Last-Event-ID``), so
a slow reader never slows the session or other readers. While nothing is sent, a
``: keepalive`` comment goes out every :data:`KEEPALIVE` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable

import orjson

from server.metrics import Metrics
from server.sessions import PAGE_BYTES, Page, PageEncoder
from server.typepattern import TypeFilter

log = logging.getLogger("axtui.sse")

KEEPALIVE = 15.0  # seconds of silence before a keepalive comment
RETRY = b"retry: 1000\n\n"  # what EventSource waits before reconnecting, in ms
KEEPALIVE_LINE = b": keepalive\n\n"


def _message(seq: int, raw: bytes) -> bytes:
    if b"\n" in raw:  # never in stored JSON (orjson writes none); one data: line a line
        raw = raw.replace(b"\n", b"\ndata: ")
    return b"id: %d\ndata: %b\n\n" % (seq, raw)


def sse_page(session_id: str, page: Page) -> bytes:
    """A page of events as SSE messages: ``id:`` the seq, one ``data:`` line the event."""
    return b"".join([_message(seq, raw) for seq, raw in page])


def filtered_page(types: TypeFilter) -> PageEncoder:
    """Like :func:`sse_page`, but only the events whose type ``types`` matches."""
    def encode(session_id: str, page: Page) -> bytes:
        return b"".join([_message(seq, raw) for seq, raw in page
                         if types.matches(orjson.loads(raw).get("type", ""))])
    return encode


Write = Callable[[bytes], Awaitable[None]]


class SseStream:
    """One SSE reader's outbox (a :class:`server.sessions.Sink`)."""

    def __init__(self, metrics: Metrics, max_lag_bytes: int,
                 encode_page: PageEncoder = sse_page) -> None:
        self.metrics = metrics
        self.max_lag_bytes = max_lag_bytes
        self.encode_page = encode_page
        self.closing = False
        self.reason = ""  # why the hub ended the stream, for the log
        # Called when the stream is dropped: aborts the connection, so a writer blocked on a
        # reader that reads nothing is freed and the reader is really disconnected.
        self.on_drop: Callable[[], None] | None = None
        self._frames: deque[bytes] = deque()
        self._pending = 0
        self._ready = asyncio.Event()  # frames queued, or closing
        self._room = asyncio.Event()
        self._room.set()

    @property
    def page_bytes(self) -> int:
        """Catch-up pages stay well under the lag limit, so catching up never trips it."""
        return max(1024, min(PAGE_BYTES, self.max_lag_bytes // 4))

    def send(self, frame: bytes, events: int = 0) -> None:
        """Queue a frame; cut the stream off if it is too far behind."""
        if self.closing:
            return
        self._frames.append(frame)
        self._pending += len(frame)
        self.metrics.deliveries += events
        self._ready.set()
        if self._pending > self.max_lag_bytes and len(self._frames) > 1:
            self.metrics.slow_disconnects += 1
            self.close("too far behind: resume with Last-Event-ID", drop=True)

    async def drained(self) -> None:
        """Wait until at most half of ``max_lag_bytes`` is pending (catch-up flow control)."""
        while self._pending > self.max_lag_bytes // 2 and not self.closing:
            self._room.clear()
            await self._room.wait()
        if self.closing:
            raise ConnectionError("stream is closing")

    def subscription_ended(self, session_id: str, frame: bytes | None) -> None:
        """The session was deleted (or closed by the hub): the stream ends after what is
        queued."""
        self.close(f"session {session_id} ended")

    def subscription_failed(self, session_id: str) -> None:
        """The hub could not keep the stream gap-free: end it, so the reader resumes."""
        self.close(f"subscription to {session_id} failed: resume", drop=True)

    def close(self, reason: str, *, drop: bool = False) -> None:
        """End the stream once what is queued is written (``drop``: at once)."""
        if self.closing:
            return
        self.closing = True
        self.reason = reason
        if drop:
            self._frames.clear()
            self._pending = 0
            if self.on_drop is not None:
                self.on_drop()
        self._ready.set()
        self._room.set()

    async def run(self, write: Write) -> None:
        """Write queued frames (or keepalives) with ``write`` until the stream is closed or
        the reader goes away (``write`` raises)."""
        while True:
            if not self._frames:
                if self.closing:
                    return
                self._ready.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(KEEPALIVE):
                        await self._ready.wait()
                if not self._frames:
                    if not self.closing:
                        await write(KEEPALIVE_LINE)
                    continue
            chunk = b"".join(self._frames)
            self._frames.clear()
            await write(chunk)
            self._pending = max(0, self._pending - len(chunk))
            if self._pending <= self.max_lag_bytes // 2:
                self._room.set()
