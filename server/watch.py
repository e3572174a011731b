"""``sessions/watch``: ``session/updated`` notifications to the connections that asked."""

from __future__ import annotations

import asyncio
from typing import Protocol

from server import protocol
from server.protocol import SessionInfo

WATCH_INTERVAL = 0.1  # session/updated: at most about 10 a second per session


class Outbox(Protocol):
    """Where a watcher's notifications go (a client connection; never blocks)."""

    def send(self, frame: bytes, events: int = 0) -> None:
        """Queue a frame."""


class WatchBroadcaster:
    """Tells watchers of changed sessions (coalesced) and of deleted ones (at once).

    The registry calls :meth:`session_changed` and :meth:`session_deleted`; a connection
    is added by ``sessions/watch`` and removed when it goes away.
    """

    def __init__(self, interval: float = WATCH_INTERVAL) -> None:
        self.interval = interval
        self.watchers: set[Outbox] = set()
        self._pending: dict[str, SessionInfo] = {}
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, outbox: Outbox) -> None:
        """Send ``session/updated`` notifications to ``outbox`` from now on."""
        self.watchers.add(outbox)

    def forget(self, outbox: Outbox) -> None:
        """Stop sending to ``outbox`` (its connection is gone)."""
        self.watchers.discard(outbox)

    def session_changed(self, info: SessionInfo) -> None:
        """Coalesce ``session/updated`` notifications to about 10 a second per session."""
        self._pending[info.session_id] = info
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.interval, self._flush)

    def _flush(self) -> None:
        self._timer = None
        pending, self._pending = self._pending, {}
        if not self.watchers:
            return
        frames = [
            protocol.notification_frame("session/updated", {"session": info.to_json()})
            for info in pending.values()
        ]
        for outbox in list(self.watchers):
            for frame in frames:
                outbox.send(frame)

    def session_deleted(self, session_id: str) -> None:
        """Tell watchers at once that a session is gone."""
        self._pending.pop(session_id, None)
        frame = protocol.notification_frame(
            "session/updated", {"sessionId": session_id, "deleted": True}
        )
        for outbox in list(self.watchers):
            outbox.send(frame)
