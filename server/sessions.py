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
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from server import protocol
from server.catalog import Catalog
from server.config import AgentConfig, HubConfig
from server.metrics import Metrics
from server.protocol import (
    Conflict,
    InternalError,
    InvalidParams,
    NotFound,
    Overloaded,
    ProtocolError,
    SessionInfo,
)
from server.store import (
    Append,
    AppendResult,
    EventLog,
    SessionMeta,
    release_freed_memory,
    remove_files,
)

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


class Sink(Protocol):
    """Where a subscription's frames go: a client connection's bounded outbox."""

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


class Observer(Protocol):
    """Told about changes to sessions (``sessions/watch``, and later the supervisor)."""

    def session_changed(self, info: SessionInfo) -> None:
        """A session's head, agent state, title or metadata changed."""

    def session_deleted(self, session_id: str) -> None:
        """A session was deleted."""

    def events_committed(self, session: Session, events: list[tuple[int, bytes]]) -> None:
        """Events were committed to ``session`` (called before anything else can run)."""


@dataclass(frozen=True, slots=True)
class Source:
    """Who an event comes from (the ``source`` object); ``principal`` is set when a client
    published on behalf of someone (``name``), and is then the token's own name."""

    kind: str
    name: str
    client: str | None = None
    principal: str | None = None

    def to_json(self) -> bytes:
        """The encoded ``source`` object."""
        obj: dict[str, Any] = {"kind": self.kind, "name": self.name}
        if self.client is not None:
            obj["client"] = self.client
        if self.principal is not None:
            obj["principal"] = self.principal
        return orjson.dumps(obj)


HUB_SOURCE = Source("hub", "hub")


class Subscription:
    """One connection's subscription to one session: catch-up first, then live."""

    def __init__(self, session: Session, sink: Sink, after_seq: int) -> None:
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
                    page = await session.log.read_range(self.next_seq - 1, BACKLOG_EVENTS, size)
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

    def _send(self, page: list[tuple[int, bytes]]) -> None:
        if page[0][0] != self.next_seq or page[-1][0] != self.next_seq + len(page) - 1:
            raise InternalError(f"catch-up page is not contiguous from seq {self.next_seq}")
        self.sink.send(protocol.events_frame(self.session.id, [r for _, r in page]), len(page))
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
            self.sink.send(frame, last - first + 1)
            self.next_seq = last + 1


class Session:
    """An open session: its log, its single writer task, its subscribers."""

    def __init__(self, info: SessionInfo, log_: EventLog, registry: SessionRegistry) -> None:
        self.info = info
        self.log = log_
        self.registry = registry
        self.subscribers: set[Subscription] = set()
        self.last_used = time.monotonic()
        self.catalog_stale = False
        self.closed = False
        self.agent_active = False  # an agent process or turn keeps the session open
        self._queue: deque[Append] = deque()
        self._wake = asyncio.Event()
        self._tail: deque[tuple[int, bytes]] = deque()
        self._tail_bytes = 0
        self._writer = asyncio.create_task(self._write_loop(), name=f"writer {info.session_id}")

    @property
    def id(self) -> str:
        """The session id."""
        return self.info.session_id

    @property
    def busy(self) -> bool:
        """Whether anything keeps the session open (subscribers or pending writes)."""
        return bool(self.subscribers or self._queue or self.agent_active)

    def submit(self, item: Append) -> asyncio.Future[AppendResult]:
        """Queue an event for the next group commit; await the returned future."""
        if self.closed:
            raise NotFound(f"session {self.id} does not exist", {"sessionId": self.id})
        if len(self._queue) >= self.registry.config.max_queue:
            self.registry.metrics.overloaded += 1
            raise Overloaded(f"session {self.id} has too many events waiting; try again later")
        self._queue.append(item)
        self._wake.set()
        self.last_used = time.monotonic()
        return item.future

    async def _write_loop(self) -> None:
        metrics = self.registry.metrics
        while not (self.closed and not self._queue):
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [self._queue.popleft() for _ in range(min(MAX_BATCH, len(self._queue)))]
            try:
                outcomes, committed = await self.log.append_batch(batch)
            except Exception as exc:
                log.exception("commit failed in session %s", self.id)
                err = InternalError(f"the event could not be stored: {exc}")
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(err)
                continue
            now = time.perf_counter()
            for item, outcome in zip(batch, outcomes, strict=True):
                if isinstance(outcome, AppendResult):
                    metrics.observe_commit(now - item.queued_at)
                if item.future.done():
                    continue
                if isinstance(outcome, ProtocolError):
                    item.future.set_exception(outcome)
                else:
                    item.future.set_result(outcome)
            if committed:
                self._committed(committed)

    def _committed(self, committed: list[tuple[int, bytes]]) -> None:
        """Publish a committed batch: head, tail cache, live subscribers, observers."""
        self.info.head_seq = committed[-1][0]
        self.info.updated_at = self.log.last_ts
        self.catalog_stale = True
        self.last_used = time.monotonic()
        for item in committed:
            self._tail.append(item)
            self._tail_bytes += len(item[1])
        while len(self._tail) > TAIL_EVENTS or self._tail_bytes > TAIL_BYTES:
            self._tail_bytes -= len(self._tail.popleft()[1])
        metrics = self.registry.metrics
        metrics.events_appended += len(committed)
        frames: list[tuple[bytes, int, int]] | None = None
        for sub in list(self.subscribers):
            if sub.live:
                if frames is None:  # encoded once for every subscriber
                    frames = [
                        (protocol.events_frame(self.id, [raw for _, raw in page]),
                         page[0][0], page[-1][0])
                        for page in pages(committed, PAGE_BYTES)
                    ]
                sub.push(frames)
        for obs in self.registry.observers:
            obs.events_committed(self, committed)
        self.registry.changed(self)

    def tail_from(self, seq: int, max_bytes: int) -> list[tuple[int, bytes]] | None:
        """Up to a catch-up page of events from ``seq`` out of memory, or ``None``."""
        if not self._tail or not self._tail[0][0] <= seq <= self._tail[-1][0]:
            return None
        start = seq - self._tail[0][0]
        return next(pages(itertools.islice(self._tail, start, start + BACKLOG_EVENTS),
                          max_bytes))

    def enqueue(
        self, event_type: str, data: dict[str, Any], source: Source, *,
        turn_id: str | None = None,
    ) -> asyncio.Future[AppendResult]:
        """Queue an event on the hub's (or an agent's) behalf without waiting for it.

        Events queued one after another are committed in that order.
        """
        future: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
        return self.submit(Append(event_type, source.to_json(), orjson.dumps(data), future,
                                  turn_id=turn_id))

    async def append(
        self, event_type: str, data: dict[str, Any], source: Source, *,
        turn_id: str | None = None,
    ) -> AppendResult:
        """Append one event on the hub's (or an agent's) behalf and wait for the commit."""
        return await self.enqueue(event_type, data, source, turn_id=turn_id)

    def set_agent_state(self, state: str) -> None:
        """Record the agent's state (``agentState``) and tell watchers."""
        if self.info.agent_state != state:
            self.info.agent_state = state
            self.catalog_stale = True
            self.registry.changed(self)
            self.registry.persist_soon()

    async def close(self, *, deleted: bool = False) -> None:
        """Stop the writer (committing what is queued, unless deleted) and close the file."""
        if self.closed:
            return
        self.closed = True
        if deleted:
            err = NotFound(f"session {self.id} was deleted", {"sessionId": self.id})
            while self._queue:
                fut = self._queue.popleft().future
                if not fut.done():
                    fut.set_exception(err)
        self._wake.set()
        with contextlib.suppress(Exception):
            await self._writer
        frame = protocol.notification_frame("session/deleted", {"sessionId": self.id})
        for sub in list(self.subscribers):
            sub.stop()
            sub.sink.subscription_ended(self.id, frame if deleted else None)
        await self.log.close()


class SessionRegistry:
    """All sessions: the catalog, the open ones, creating, forking, deleting, closing."""

    def __init__(
        self,
        config: HubConfig,
        catalog: Catalog,
        agents: Mapping[str, AgentConfig],
        metrics: Metrics,
    ) -> None:
        self.config = config
        self.catalog = catalog
        self.agents = agents
        self.metrics = metrics
        self.observers: list[Observer] = []
        self.open: dict[str, Session] = {}
        self._opening: dict[str, asyncio.Future[Session]] = {}
        self._reserved: set[str] = set()  # ids being created right now
        self._deleting: set[str] = set()  # ids being deleted right now: never reopened
        self._janitor: asyncio.Task[None] | None = None
        self._persisting: asyncio.Task[None] | None = None
        self.closing = False  # set by close_all: no session opens after it
        self._persist_again = False

    def start(self) -> None:
        """Start closing idle sessions in the background."""
        self._janitor = asyncio.create_task(self._close_idle_loop(), name="session janitor")

    def changed(self, session: Session) -> None:
        """Tell the observers that ``session`` changed."""
        for obs in self.observers:
            obs.session_changed(session.info)

    # --- lookup ----------------------------------------------------------------------------

    def get_open(self, session_id: str) -> Session | None:
        """The session if it is open (and not being deleted), with no await; else ``None``
        (then :meth:`get` opens it, or raises :class:`NotFound`)."""
        session = self.open.get(session_id)
        if session is None or session_id in self._deleting:
            return None
        session.last_used = time.monotonic()
        return session

    async def get(self, session_id: str) -> Session:
        """The open session, opening its file if needed; :class:`NotFound` if none."""
        if session_id in self._deleting:
            raise not_found(session_id)
        session = self.open.get(session_id)
        if session is not None:
            session.last_used = time.monotonic()
            return session
        pending = self._opening.get(session_id)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[Session] = asyncio.get_running_loop().create_future()
        self._opening[session_id] = fut
        try:
            session = await self._open(session_id)
            fut.set_result(session)
            return session
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved: the caller gets it directly
            raise
        finally:
            del self._opening[session_id]

    async def _open(self, session_id: str) -> Session:
        info = await self.catalog.get(session_id)
        if info is None:
            raise not_found(session_id)
        event_log = await EventLog.open(self.catalog.session_path(session_id),
                                        self.config.durability)
        await self._refuse_if_closing(event_log)
        event_log.sql_timeout = self.config.query_timeout
        info.head_seq = event_log.head_seq
        info.updated_at = max(info.updated_at, event_log.last_ts)
        await self.catalog.update_heads([info], dirty=True)
        session = Session(info, event_log, self)
        self.open[session_id] = session
        self.metrics.sessions_open = len(self.open)
        return session

    async def info(self, session_id: str) -> SessionInfo:
        """A session's description without opening it."""
        if session_id in self._deleting:
            raise not_found(session_id)
        session = self.open.get(session_id)
        if session is not None:
            return session.info
        info = await self.catalog.get(session_id)
        if info is None:
            raise not_found(session_id)
        return info

    async def list(
        self, limit: int, cursor: str | None, agent: str | None
    ) -> tuple[list[SessionInfo], str | None]:
        """A page of sessions, most recently updated first."""
        await self.flush_catalog()
        try:
            infos, next_cursor = await self.catalog.list(limit, cursor, agent)
        except ValueError as exc:
            raise InvalidParams(str(exc), {"param": "cursor"}) from None
        return [self.open[i.session_id].info if i.session_id in self.open else i
                for i in infos], next_cursor

    def persist_soon(self) -> None:
        """Write changed sessions into the catalog shortly (agent states must survive a crash)."""
        self._persist_again = True
        if self._persisting is None or self._persisting.done():
            self._persisting = asyncio.create_task(self._persist())

    async def _persist(self) -> None:
        while self._persist_again:
            self._persist_again = False
            try:
                await self.flush_catalog()
            except Exception:
                log.exception("could not write session states into the catalog")

    async def flush_catalog(self) -> None:
        """Write the heads of open sessions that changed into the catalog."""
        stale = [s for s in self.open.values() if s.catalog_stale]
        for s in stale:
            s.catalog_stale = False
        await self.catalog.update_heads([s.info for s in stale], dirty=True)

    # --- creating, forking, deleting -------------------------------------------------------

    def _reserve(self, session_id: str | None) -> str:
        sid = session_id or protocol.new_session_id()
        if (sid in self._reserved or sid in self.open or sid in self._deleting
                or self.catalog.session_path(sid).exists()):
            raise Conflict(f"session {sid} already exists", {"sessionId": sid})
        self._reserved.add(sid)
        return sid

    async def create(
        self,
        source: Source,
        session_id: str | None = None,
        agent: str | None = None,
        title: str = "",
        metadata: dict[str, Any] | None = None,
    ) -> SessionInfo:
        """Create a session; ``session.created`` is its seq 1."""
        if agent is not None and agent not in self.agents:
            raise NotFound(f"no agent named {agent!r} is configured", {"agent": agent})
        metadata = metadata or {}
        data = orjson.dumps({"title": title, "agent": agent, "metadata": metadata})
        if len(data) > self.config.max_event_bytes:
            raise protocol.TooLarge("title and metadata are too large")
        sid = self._reserve(session_id)
        try:
            meta = SessionMeta(sid, protocol.new_epoch(), title, agent, metadata, protocol.now_ms())
            fut: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
            created = Append("session.created", source.to_json(), data, fut)
            event_log = await EventLog.create(
                self.catalog.session_path(sid), meta, self.config.durability, created
            )
            return await self._register(event_log)
        finally:
            self._reserved.discard(sid)

    async def fork(
        self,
        source: Source,
        session_id: str,
        at_seq: int | None,
        new_session_id: str | None,
        title: str | None,
        agent: str | None = None,
    ) -> SessionInfo:
        """Fork a session at ``at_seq``: copy events, rebuild state, record ``session.forked``.

        ``agent`` gives the fork another agent than the origin's (recorded in
        ``session.forked`` as ``agent``).
        """
        if agent is not None and agent not in self.agents:
            raise NotFound(f"no agent named {agent!r} is configured", {"agent": agent})
        origin = await self.get(session_id)
        head = origin.info.head_seq
        at = head if at_seq is None else at_seq
        if not 1 <= at <= head:
            raise InvalidParams(f"atSeq must be between 1 and {head}", {"param": "atSeq"})
        sid = self._reserve(new_session_id)
        path = self.catalog.session_path(sid)
        try:
            om = origin.log.meta
            meta = SessionMeta(sid, protocol.new_epoch(), title or f"{om.title} (fork)".strip(),
                               agent or om.agent, dict(om.metadata), protocol.now_ms())
            event_log = await EventLog.create(path, meta, self.config.durability)
            try:
                event_log.sql_timeout = self.config.query_timeout
                await origin.log.copy_into(event_log, at)
                fut: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
                forked: dict[str, Any] = {"fromSessionId": session_id, "atSeq": at}
                if agent is not None:
                    forked["agent"] = agent
                data = orjson.dumps(forked)
                outcomes, _ = await event_log.append_batch(
                    [Append("session.forked", source.to_json(), data, fut)]
                )
                if isinstance(outcomes[0], ProtocolError):
                    raise outcomes[0]
            except BaseException as exc:
                await event_log.close()
                remove_files(path)
                if isinstance(exc, ProtocolError):
                    raise InternalError(
                        f"the fork could not rebuild its state: {exc.message}"
                    ) from exc
                raise
            return await self._register(event_log)
        finally:
            self._reserved.discard(sid)

    async def import_events(
        self,
        session_id: str | None,
        title: str,
        agent: str | None,
        metadata: dict[str, Any],
        events: Sequence[dict[str, Any]],
    ) -> SessionInfo:
        """A new session (new epoch) holding recorded ``events`` and the state they built.

        ``events`` are checked (:func:`protocol.check_recorded_event`) and keep their seq,
        ts, type, source, data, turnId, idempotency key and state; they get new ids. The
        state is rebuilt as a fork rebuilds it. On any error nothing is stored.
        """
        if agent is not None and agent not in self.agents:
            raise NotFound(f"no agent named {agent!r} is configured", {"agent": agent})
        if not events:
            raise InvalidParams("events must hold at least session.created", {"param": "events"})
        keys: set[str] = set()
        events = [_recorded_fields(e) if isinstance(e, dict) else e for e in events]
        for index, event in enumerate(events):
            try:
                protocol.check_recorded_event(event, index + 1)
            except InvalidParams as exc:
                raise InvalidParams(f"events[{index}]: {exc.message}",
                                    {"param": "events", "index": index}) from None
            key = event.get("idempotencyKey")
            if key is not None:
                if key in keys:
                    raise InvalidParams(f"events[{index}]: idempotencyKey {key!r} is used twice",
                                        {"param": "events", "index": index})
                keys.add(key)
        sid = self._reserve(session_id)
        path = self.catalog.session_path(sid)
        try:
            meta = SessionMeta(sid, protocol.new_epoch(), title, agent, metadata,
                               protocol.now_ms())
            event_log = await EventLog.create(path, meta, self.config.durability)
            try:
                event_log.sql_timeout = self.config.query_timeout
                # The same copy a fork makes, fed from the recorded events.
                recorded: Any = _Recorded(events)
                await EventLog.copy_into(recorded, event_log, len(events))
            except BaseException as exc:
                await event_log.close()
                remove_files(path)
                if isinstance(exc, ProtocolError):
                    raise InvalidParams(
                        f"the recorded events cannot be imported: {exc.message}"
                    ) from exc
                raise
            return await self._register(event_log)
        finally:
            self._reserved.discard(sid)

    async def _register(self, event_log: EventLog) -> SessionInfo:
        """Make a newly written session file (created or forked) an open session."""
        await self._refuse_if_closing(event_log)
        self.metrics.events_appended += 1  # session.created or session.forked
        meta = event_log.meta
        event_log.sql_timeout = self.config.query_timeout
        info = SessionInfo(
            session_id=meta.session_id, epoch=meta.epoch, title=meta.title, agent=meta.agent,
            head_seq=event_log.head_seq, agent_state="suspended" if meta.agent else "none",
            created_at=meta.created_at, updated_at=event_log.last_ts or meta.created_at,
            metadata=meta.metadata,
        )
        await self.catalog.put(info, dirty=True)
        session = Session(info, event_log, self)
        self.open[info.session_id] = session
        self.metrics.sessions_open = len(self.open)
        self.changed(session)
        return info

    async def delete(self, session_id: str) -> None:
        """Delete a session: subscribers are told, pending publishes fail, files go."""
        session = await self.get(session_id)
        self._deleting.add(session_id)
        try:
            self.open.pop(session_id, None)
            self.metrics.sessions_open = len(self.open)
            await session.close(deleted=True)
            await self.catalog.delete(session_id)
            remove_files(self.catalog.session_path(session_id))
        finally:
            self._deleting.discard(session_id)
        for obs in self.observers:
            obs.session_deleted(session_id)

    # --- closing ---------------------------------------------------------------------------

    async def _close_idle_loop(self) -> None:
        idle = self.config.session_idle_close
        while True:
            await asyncio.sleep(max(0.05, min(5.0, idle / 2)))
            cutoff = time.monotonic() - idle
            closed = 0
            for session in list(self.open.values()):
                if not session.busy and session.last_used < cutoff:
                    await self._close(session)
                    closed += 1
            if closed:
                await asyncio.to_thread(release_freed_memory)  # off the loop: it takes ms

    async def _close(self, session: Session) -> None:
        self.open.pop(session.id, None)
        self.metrics.sessions_open = len(self.open)
        await session.close()
        await self.catalog.update_heads([session.info], dirty=False)

    async def _refuse_if_closing(self, event_log: EventLog) -> None:
        if self.closing:
            await event_log.close()
            raise Overloaded("the hub is shutting down; reconnect in a moment")

    async def close_all(self) -> None:
        """Commit what is queued and close every session (hub shutdown)."""
        self.closing = True
        if self._janitor is not None:
            self._janitor.cancel()
        opening = list(self._opening.values())
        if opening:
            await asyncio.wait([asyncio.ensure_future(f) for f in opening])
        if self._persisting is not None:
            await self._persisting
        await asyncio.gather(*(self._close(s) for s in list(self.open.values())))


RECORDED_FIELDS = ("seq", "id", "ts", "type", "source", "data", "idempotencyKey", "turnId")


def _recorded_fields(event: dict[str, Any]) -> dict[str, Any]:
    """An imported event with the fields of an event only, in the order the hub writes them."""
    fields = {name: event.get(name) for name in RECORDED_FIELDS}
    if event.get("state") is not None:
        fields["state"] = event["state"]
    return fields


class _Recorded:
    """Recorded events offered the way :meth:`EventLog.copy_into` reads its origin."""

    def __init__(self, events: Sequence[dict[str, Any]]) -> None:
        self.events = events

    async def iter_raw(self, up_to_seq: int) -> AsyncIterator[bytes]:
        """The events with seq up to ``up_to_seq``, encoded."""
        for event in self.events[:up_to_seq]:
            yield orjson.dumps(event)


def not_found(session_id: str) -> NotFound:
    """The error for an unknown session."""
    return NotFound(f"session {session_id} does not exist", {"sessionId": session_id})

