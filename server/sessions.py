"""Open sessions: the single writer per session, fan-out, and gap-free subscriptions.

Ordering argument (why no event is lost or sent twice): the writer commits a batch, then,
without awaiting anything, sets ``head_seq`` and hands the batch to every *live*
subscription. A subscription that is catching up is not live: it reads committed events
(from the in-memory tail or from the file) until its ``next_seq`` passes ``head_seq``, and
then, again without awaiting anything between the check and the switch, becomes live.
Every event at or below ``head_seq`` is committed and will be read; every event above it
will be handed over live. Each hand-over checks that the first seq is ``next_seq``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

import orjson

from server import protocol
from server.clientsql import ClientLimits
from server.config import HubConfig
from server.events import AgentState
from server.metrics import Metrics
from server.protocol import (
    InternalError,
    NotFound,
    Overloaded,
    ProtocolError,
    SessionInfo,
)
from server.sessiondb import SessionDatabase
from server.sources import HUB_SOURCE, Source
from server.writes import CommitResult, PendingEvent

log = logging.getLogger("axtui.sessions")

MAX_BATCH = 1024  # events in one group commit
BACKLOG_EVENTS = 1000  # events in one catch-up notification
TAIL_EVENTS = 4096  # recent events kept in memory for subscribers that resume near the head
TAIL_BYTES = 4 * 1024 * 1024


PAGE_BYTES = 256 * 1024  # about this much in one session/events notification


def pages(
    events: Iterable[tuple[int, bytes]], max_bytes: int
) -> Iterator[list[tuple[int, bytes]]]:
    """Split ``(seq, raw)`` events into pages of at most ``BACKLOG_EVENTS`` events and about
    ``max_bytes`` (a page always holds at least one event)."""
    page: list[tuple[int, bytes]] = []
    size = 0
    for item in events:
        page.append(item)
        size += len(item[1])
        if size >= max_bytes or len(page) >= BACKLOG_EVENTS:
            yield page
            page, size = [], 0
    if page:
        yield page


Page = list[tuple[int, bytes]]  # committed (seq, encoded event) pairs, in seq order
# How a sink frames a page of events; a batch is framed once per encoder, not per sink.
PageEncoder = Callable[[str, Page], bytes]


def rpc_page(session_id: str, page: Page) -> bytes:
    """A page as one ``session/events`` notification (the websocket's framing)."""
    return protocol.events_frame(session_id, [raw for _, raw in page])


class Sink(Protocol):
    """Where a subscription's frames go: a client's bounded outbox (a websocket connection,
    an SSE stream). A frame that is ``b""`` (everything in it filtered out) is not sent."""

    @property
    def encode_page(self) -> PageEncoder:
        """How this sink frames a page of events."""

    def send(self, frame: bytes, events: int = 0) -> None:
        """Queue a frame (never blocks; a sink that is too far behind cuts itself off)."""

    async def drained(self) -> None:
        """Wait until the sink has room for a catch-up page."""

    def subscription_ended(self, session_id: str, frame: bytes | None) -> None:
        """The subscription is over (session deleted); send ``frame`` if any."""

    def subscription_failed(self, session_id: str) -> None:
        """The hub could not keep a subscription gap-free: the client must resume."""

    @property
    def page_bytes(self) -> int:
        """About how many bytes one notification should hold for this sink."""


class SessionHost(Protocol):
    """What an open session needs from whoever holds it (the registry)."""

    @property
    def config(self) -> HubConfig:
        """The hub's settings (a session takes its client SQL limits from them)."""

    @property
    def max_queue(self) -> int:
        """How many events may wait for a commit in one session (``hub.max_queue``)."""

    @property
    def metrics(self) -> Metrics:
        """The hub's counters."""

    def committed(self, session: Session, events: list[tuple[int, bytes]]) -> None:
        """``events`` were committed to ``session`` (called before anything else can run)."""

    def changed(self, session: Session) -> None:
        """The session's head, agent state, title or metadata changed."""

    def write_refused(self, session: Session, error: Exception) -> None:
        """A batch of ``session`` could not be stored (its writes failed with ``error``)."""

    def persist_soon(self) -> None:
        """Write changed sessions into the catalog shortly."""


class EventReader(Protocol):
    """Where a subscription reads the backlog from (a session database)."""

    async def read_range(self, after_seq: int, limit: int,
                         max_bytes: int) -> list[tuple[int, bytes]]:
        """Events after ``after_seq`` in order: at most ``limit``, about ``max_bytes``."""


class Feed(Protocol):
    """What a subscription follows: an open :class:`Session`, or in cluster mode a session
    owned by another replica (:class:`server.remotesession.RemoteSession`)."""

    info: SessionInfo
    subscribers: set[Subscription]

    @property
    def id(self) -> str:
        """The session id."""

    @property
    def db(self) -> EventReader:
        """Where the backlog is read from."""

    def tail_from(self, seq: int, max_bytes: int) -> list[tuple[int, bytes]] | None:
        """Recent events from ``seq`` out of memory, or ``None``."""


def fan_out(session_id: str, subscribers: Iterable[Subscription],
            committed: list[tuple[int, bytes]]) -> None:
    """Hand a committed batch to the live subscribers, framed once per kind of sink."""
    batch: list[Page] | None = None
    framed: dict[PageEncoder, list[tuple[bytes, int, int]]] = {}
    for sub in list(subscribers):
        if sub.live:
            encode = sub.sink.encode_page
            frames = framed.get(encode)
            if frames is None:  # encoded once for every subscriber that frames alike
                if batch is None:
                    batch = list(pages(committed, PAGE_BYTES))
                frames = framed[encode] = [
                    (encode(session_id, page), page[0][0], page[-1][0]) for page in batch
                ]
            sub.push(frames)


class Subscription:
    """One connection's subscription to one session: catch-up first, then live."""

    def __init__(self, session: Feed, sink: Sink, after_seq: int) -> None:
        self.session = session
        self.sink = sink
        self.next_seq = after_seq + 1
        self.live = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin sending: the backlog, then live events."""
        self.session.subscribers.add(self)
        self._task = asyncio.create_task(self._catch_up(), name=f"catch-up {self.session.id}")

    def stop(self) -> None:
        """End the subscription (the client unsubscribed or went away)."""
        self.session.subscribers.discard(self)
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def _catch_up(self) -> None:
        session = self.session
        try:
            while self.next_seq <= session.info.head_seq:
                size = self.sink.page_bytes
                page = session.tail_from(self.next_seq, size)
                if page is None:
                    page = await session.db.read_range(self.next_seq - 1, BACKLOG_EVENTS, size)
                    # What lies past the head (stored, not yet handed over: a commit
                    # finishing, a stream read ahead of its follower) comes live.
                    page = [event for event in page if event[0] <= session.info.head_seq]
                if not page:
                    raise InternalError(f"events from seq {self.next_seq} are missing")
                self._send(page)
                await self.sink.drained()
            self.live = True  # no await since the loop's last check: see the module docstring
        except ConnectionError:
            session.subscribers.discard(self)  # the client is going away: nothing to tell it
        except Exception:
            log.exception("subscription to %s failed during catch-up", session.id)
            session.subscribers.discard(self)
            self.sink.subscription_failed(session.id)

    def _send(self, page: Page) -> None:
        if page[0][0] != self.next_seq or page[-1][0] != self.next_seq + len(page) - 1:
            raise InternalError(f"catch-up page is not contiguous from seq {self.next_seq}")
        frame = self.sink.encode_page(self.session.id, page)
        if frame:
            self.sink.send(frame, len(page))
        self.next_seq = page[-1][0] + 1

    def push(self, frames: list[tuple[bytes, int, int]]) -> None:
        """Hand over a committed batch as ``(frame, first, last)`` pages (only while live)."""
        for frame, first, last in frames:
            if first != self.next_seq:
                log.error("gap for a subscriber of %s: expected %d, got %d",
                          self.session.id, self.next_seq, first)
                self.stop()
                self.sink.subscription_failed(self.session.id)
                return
            if frame:
                self.sink.send(frame, last - first + 1)
            self.next_seq = last + 1


_HUB_SOURCE_JSON = HUB_SOURCE.to_json()


def is_activity(item: PendingEvent) -> bool:
    """Whether an event counts as the session's activity (``updatedAt``): what a person or
    an agent did, and the turns they caused. The hub's bookkeeping (``agent.status``, a
    request it closed) is not, or every shutdown would reorder the session list."""
    return item.source != _HUB_SOURCE_JSON or item.type.startswith("turn.")


class Session:
    """An open session: its log, its single writer task, its subscribers."""

    def __init__(self, info: SessionInfo, db: SessionDatabase, host: SessionHost) -> None:
        self.info = info
        self.db = db
        self.host = host
        config = host.config
        db.limits = ClientLimits(config.max_value_bytes, config.max_result_bytes,
                                 config.commit_budget)
        self.subscribers: set[Subscription] = set()
        self.last_used = time.monotonic()
        self.catalog_stale = False
        self.closed = False
        self._refusal: ProtocolError | None = None  # why writes fail once closed
        self.agent_active = False  # an agent process or turn keeps the session open
        self._queue: deque[PendingEvent] = deque()
        self._wake = asyncio.Event()
        self._tail: deque[tuple[int, bytes]] = deque()
        self._tail_bytes = 0
        self._room: asyncio.Future[None] | None = None  # see agent_room
        self._writer = asyncio.create_task(self._write_loop(), name=f"writer {info.session_id}")

    @property
    def id(self) -> str:
        """The session id."""
        return self.info.session_id

    @property
    def busy(self) -> bool:
        """Whether anything keeps the session open (subscribers or pending writes)."""
        return bool(self.subscribers or self._queue or self.agent_active)

    def submit(self, item: PendingEvent, *, bounded: bool = True) -> asyncio.Future[CommitResult]:
        """Queue an event for the next group commit; await the returned future.

        A ``bounded`` event is refused with Overloaded past ``hub.max_queue``; an agent's
        output is not (``bounded=False``): the agent is slowed down instead (see
        :meth:`agent_room`), so nothing it sends is lost.
        """
        if self.closed:
            raise self._refusal or NotFound(f"session {self.id} does not exist",
                                            {"sessionId": self.id})
        if bounded and len(self._queue) >= self.host.max_queue:
            self.host.metrics.overloaded += 1
            raise Overloaded(f"session {self.id} has too many events waiting; try again later")
        self._queue.append(item)
        self._wake.set()
        self.last_used = time.monotonic()
        return item.future

    def agent_room(self) -> asyncio.Future[None] | None:
        """Backpressure for the agent's output: ``None`` while fewer than half of
        ``hub.max_queue`` events wait for a commit, else a future that is resolved once
        under a quarter (the agent's output is not read until then)."""
        if len(self._queue) < max(1, self.host.max_queue // 2) or self.closed:
            return None
        if self._room is None or self._room.done():
            self._room = asyncio.get_running_loop().create_future()
        return self._room

    def _release_room(self) -> None:
        if (self._room is not None and not self._room.done()
                and (len(self._queue) <= self.host.max_queue // 4 or self.closed)):
            self._room.set_result(None)

    async def _write_loop(self) -> None:
        metrics = self.host.metrics
        while not (self.closed and not self._queue):
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [self._queue.popleft() for _ in range(min(MAX_BATCH, len(self._queue)))]
            self._release_room()
            try:
                outcomes, committed = await self.db.append_batch(batch)
            except Exception as exc:
                err: ProtocolError
                if isinstance(exc, ProtocolError):  # the cluster's store refused it: retry
                    log.warning("commit refused in session %s: %s", self.id, exc.message)
                    err = exc
                else:
                    log.exception("commit failed in session %s", self.id)
                    err = InternalError(f"the event could not be stored: {exc}")
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(err)
                self.host.write_refused(self, exc)
                continue
            now = time.perf_counter()
            activity = 0
            # Put off by hub.commit_budget: first in the next batch, in their order.
            self._queue.extendleft(reversed(
                [item for item, outcome in zip(batch, outcomes, strict=True) if outcome is None]
            ))
            for item, outcome in zip(batch, outcomes, strict=True):
                if isinstance(outcome, CommitResult):
                    metrics.observe_commit(now - item.queued_at)
                    if not outcome.duplicate and is_activity(item):
                        activity = outcome.ts
                if item.future.done() or outcome is None:
                    continue
                if isinstance(outcome, ProtocolError):
                    item.future.set_exception(outcome)
                else:
                    item.future.set_result(outcome)
            if committed:
                self._committed(committed, activity)

    def _committed(self, committed: list[tuple[int, bytes]], activity: int) -> None:
        """Publish a committed batch: head, last activity (``activity``, the ts of the
        batch's last event that :func:`is_activity`, or 0), tail cache, live subscribers,
        the host."""
        self.info.head_seq = committed[-1][0]
        if activity:
            self.info.updated_at = activity
        self.catalog_stale = True
        self.last_used = time.monotonic()
        for item in committed:
            self._tail.append(item)
            self._tail_bytes += len(item[1])
        while len(self._tail) > TAIL_EVENTS or self._tail_bytes > TAIL_BYTES:
            self._tail_bytes -= len(self._tail.popleft()[1])
        self.host.metrics.events_appended += len(committed)
        if self.subscribers:
            fan_out(self.id, self.subscribers, committed)
        self.host.committed(self, committed)
        self.host.changed(self)

    def tail_from(self, seq: int, max_bytes: int) -> list[tuple[int, bytes]] | None:
        """Up to a catch-up page of events from ``seq`` out of memory, or ``None``."""
        if not self._tail or not self._tail[0][0] <= seq <= self._tail[-1][0]:
            return None
        start = seq - self._tail[0][0]
        return next(pages(itertools.islice(self._tail, start, start + BACKLOG_EVENTS),
                          max_bytes))

    def enqueue(
        self, event_type: str, data: dict[str, Any], source: Source, *,
        turn_id: str | None = None, bounded: bool = True,
    ) -> asyncio.Future[CommitResult]:
        """Queue an event on the hub's (or an agent's) behalf without waiting for it.

        Events queued one after another are committed in that order. ``bounded``: see
        :meth:`submit`.
        """
        future: asyncio.Future[CommitResult] = asyncio.get_running_loop().create_future()
        return self.submit(PendingEvent(event_type, source.to_json(), orjson.dumps(data), future,
                                        turn_id=turn_id), bounded=bounded)

    async def append(
        self, event_type: str, data: dict[str, Any], source: Source, *,
        turn_id: str | None = None,
    ) -> CommitResult:
        """Append one event on the hub's (or an agent's) behalf and wait for the commit."""
        return await self.enqueue(event_type, data, source, turn_id=turn_id)

    def set_agent_state(self, state: AgentState) -> None:
        """Record the agent's state (``agentState``) and tell watchers."""
        if self.info.agent_state != state:
            self.info.agent_state = state
            self.catalog_stale = True
            self.host.changed(self)
            self.host.persist_soon()

    async def close(self, *, deleted: bool = False,
                    refuse: ProtocolError | None = None) -> None:
        """Stop the writer (committing what is queued, unless deleted or ``refuse``: then
        what is queued fails with that) and close the file."""
        if self.closed:
            return
        self.closed = True
        self._release_room()
        if deleted:
            refuse = NotFound(f"session {self.id} was deleted", {"sessionId": self.id})
        self._refusal = refuse
        if refuse is not None:
            while self._queue:
                fut = self._queue.popleft().future
                if not fut.done():
                    fut.set_exception(refuse)
        self._wake.set()
        with contextlib.suppress(Exception):
            await self._writer
        frame = protocol.notification_frame("session/deleted", {"sessionId": self.id})
        for sub in list(self.subscribers):
            sub.stop()
            sub.sink.subscription_ended(self.id, frame if deleted else None)
        await self.db.close()
