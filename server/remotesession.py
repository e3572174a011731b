"""Subscriptions to a session another replica owns, served from the shared log (cluster.md
§2.7).

A replica does not forward a subscription: it reads the session's stream in Redis itself.
A :class:`RemoteSession` stands in for the session while it has subscribers here: one task
follows the stream (``XREAD BLOCK`` from the last entry seen: every event arrives once,
after the owner stored it) and hands each batch to the live subscribers as a local session
does, and a subscription catching up reads the stream's backlog (``XRANGE``). So the
:class:`server.sessions.Subscription` that serves it, its ordering argument and its
framing are those of a local session. While no replica owns the session, the follower
takes it over (a session with a subscriber gets an owner within two leases).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from server import protocol
from server.protocol import SessionInfo
from server.redisstore import RedisStore, log_key
from server.sessions import BACKLOG_EVENTS, TAIL_EVENTS, Subscription, fan_out, pages

log = logging.getLogger("axtui.cluster")

OldEvents = Callable[[str, int, int], Awaitable[list[tuple[int, bytes]]]]

BLOCK_MS = 1000  # how long one XREAD waits for new entries
RETRY = 0.5  # seconds before following again after Redis failed


class RemoteSession:
    """A session owned by another replica, as its subscribers here see it."""

    def __init__(self, info: SessionInfo, store: RedisStore,
                 claim: Callable[[str], Awaitable[Any]], old_events: OldEvents,
                 on_done: Callable[[RemoteSession], None]) -> None:
        self.info = info
        self.store = store
        self.subscribers: set[Subscription] = set()
        self.db = self  # what a subscription reads its backlog from (read_range)
        self._claim = claim  # take the session over (no owner): the registry's get
        self._old_events = old_events  # what the stream no longer holds (trimmed)
        self._on_done = on_done
        self._tail: deque[tuple[int, bytes]] = deque(maxlen=TAIL_EVENTS)
        self._follower = asyncio.create_task(self._follow(), name=f"follow {info.session_id}")

    @property
    def id(self) -> str:
        """The session id."""
        return self.info.session_id

    async def read_range(self, after_seq: int, limit: int,
                         max_bytes: int) -> list[tuple[int, bytes]]:
        """Events after ``after_seq`` from the stream (a subscription's catch-up), or from
        the owner's file for those trimmed from it."""
        events = await self.store.read(self.id, after_seq, limit)
        if (events[0][0] if events else self.info.head_seq + 1) > after_seq + 1:
            events = await self._old_events(self.id, after_seq, limit)
        return next(pages(events, max_bytes), [])

    def tail_from(self, seq: int, max_bytes: int) -> list[tuple[int, bytes]] | None:
        """A page of recent events from ``seq`` out of memory, or ``None``."""
        tail = self._tail
        if not tail or not tail[0][0] <= seq <= tail[-1][0]:
            return None
        start = seq - tail[0][0]
        return next(pages(list(tail)[start:start + BACKLOG_EVENTS], max_bytes))

    async def _follow(self) -> None:
        """Follow the stream while anyone subscribes; end the subscriptions if the session
        is deleted."""
        key = log_key(self.id)
        idle = 0  # reads in a row with nobody subscribed (the first one may not be yet)
        try:
            while idle < 2:
                try:
                    got: Any = await self.store.follow.xread(
                        {key: f"{self.info.head_seq}-0"}, count=BACKLOG_EVENTS, block=BLOCK_MS)
                except Exception as exc:  # Redis away, or redis-py's own errors: again
                    log.warning("following session %s: %s", self.id, exc)
                    await asyncio.sleep(RETRY)
                    continue
                if got:
                    self._deliver([(int(i.split(b"-")[0]), f[b"e"]) for i, f in got[0][1]])
                elif not await self._still_there():
                    return
                idle = 0 if self.subscribers else idle + 1
        finally:
            self._on_done(self)

    def _deliver(self, events: list[tuple[int, bytes]]) -> None:
        """A batch read from the stream: head, tail, live subscribers (no await)."""
        events = [e for e in events if e[0] > self.info.head_seq]
        if not events:
            return
        self.info.head_seq = events[-1][0]
        self.info.updated_at = max(self.info.updated_at, orjson.loads(events[-1][1])["ts"])
        self._tail.extend(events)
        fan_out(self.id, self.subscribers, events)

    async def _still_there(self) -> bool:
        """Between reads: does the session still exist, and has it an owner? (Without one,
        this replica takes it over, so its agent runs again.)"""
        try:
            info = await self.store.describe(self.id)
            if info is None or info.epoch != self.info.epoch:
                frame = protocol.notification_frame("session/deleted", {"sessionId": self.id})
                for sub in list(self.subscribers):
                    sub.stop()
                    sub.sink.subscription_ended(self.id, frame)
                return False
            if info.owner is None:
                await self._claim(self.id)
        except Exception as exc:
            log.info("checking session %s: %s", self.id, exc)
        return True

    def stop(self) -> None:
        """Stop following (the hub stops)."""
        self._follower.cancel()
