"""The session registry: the catalog of every session, the open ones, and creating,
forking, importing, deleting and closing sessions (each open one is a :class:`Session`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

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
from server.sessiondb import CommitResult, PendingEvent, SessionDatabase
from server.sessionfile import SessionMeta, remove_files
from server.sessions import Session
from server.sources import Source
from server.sqliteio import release_freed_memory

log = logging.getLogger("axtui.sessions")


class SessionRegistry:
    """All sessions: the catalog, the open ones, creating, forking, deleting, closing.

    It is the :class:`server.sessions.SessionHost` of every open session, and tells what
    happens to sessions through three lists of callbacks, filled by the wiring
    (:func:`server.wiring.build_hub`): ``on_committed`` (a session, its newly committed
    ``(seq, raw)`` events; called before anything else can run), ``on_changed`` (a
    session's description, after its head, agent state, title or metadata changed) and
    ``on_deleted`` (a deleted session's id).
    """

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
        self.on_committed: list[Callable[[Session, list[tuple[int, bytes]]], None]] = []
        self.on_changed: list[Callable[[SessionInfo], None]] = []
        self.on_deleted: list[Callable[[str], None]] = []
        self.open: dict[str, Session] = {}
        self._opening: dict[str, asyncio.Future[Session]] = {}
        # Sessions being closed, with a future done once the catalog has their last head:
        # until then they are described from memory and not opened again.
        self._closing: dict[str, tuple[Session, asyncio.Future[None]]] = {}
        self._reserved: set[str] = set()  # ids being created right now
        self._deleting: set[str] = set()  # ids being deleted right now: never reopened
        self._janitor: asyncio.Task[None] | None = None
        self._persisting: asyncio.Task[None] | None = None
        self.closing = False  # set by close_all: no session opens after it
        self._persist_again = False

    def start(self) -> None:
        """Start closing idle sessions in the background."""
        self._janitor = asyncio.create_task(self._close_idle_loop(), name="session janitor")

    @property
    def max_queue(self) -> int:
        """How many events may wait for a commit in one session (``hub.max_queue``)."""
        return self.config.max_queue

    def committed(self, session: Session, events: list[tuple[int, bytes]]) -> None:
        """Tell ``on_committed`` of events just committed to ``session``."""
        for callback in self.on_committed:
            callback(session, events)

    def changed(self, session: Session) -> None:
        """Tell ``on_changed`` that ``session`` changed."""
        for callback in self.on_changed:
            callback(session.info)

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
        closing = self._closing.get(session_id)
        if closing is not None:  # one writer per file: let the old one finish first
            await asyncio.shield(closing[1])
        info = await self.catalog.get(session_id)
        if info is None:
            raise not_found(session_id)
        db = await SessionDatabase.open(self.catalog.session_path(session_id),
                                        self.config.durability)
        await self._refuse_if_closing(db)
        db.sql_timeout = self.config.query_timeout
        info.head_seq = db.head_seq
        info.updated_at = max(info.updated_at, db.last_ts)
        await self.catalog.update_heads([info], dirty=True)
        session = Session(info, db, self)
        self.open[session_id] = session
        self.metrics.sessions_open = len(self.open)
        return session

    async def info(self, session_id: str) -> SessionInfo:
        """A session's description without opening it."""
        if session_id in self._deleting:
            raise not_found(session_id)
        session = self._described(session_id)
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
        return [s.info if (s := self._described(i.session_id)) else i
                for i in infos], next_cursor

    def _described(self, session_id: str) -> Session | None:
        """The session whose info in memory is newer than the catalog's: an open one, or
        one being closed."""
        session = self.open.get(session_id)
        if session is None and session_id in self._closing:
            session = self._closing[session_id][0]
        return session

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
            fut: asyncio.Future[CommitResult] = asyncio.get_running_loop().create_future()
            created = PendingEvent("session.created", source.to_json(), data, fut)
            db = await SessionDatabase.create(
                self.catalog.session_path(sid), meta, self.config.durability, created
            )
            return await self._register(db)
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
        om = origin.db.meta
        meta = SessionMeta(sid, protocol.new_epoch(), title or f"{om.title} (fork)".strip(),
                           agent or om.agent, dict(om.metadata), protocol.now_ms())

        async def fill(db: SessionDatabase) -> None:
            await db.copy_from(origin.db, at)
            fut: asyncio.Future[CommitResult] = asyncio.get_running_loop().create_future()
            forked: dict[str, Any] = {"fromSessionId": session_id, "atSeq": at}
            if agent is not None:
                forked["agent"] = agent
            outcomes, _ = await db.append_batch(
                [PendingEvent("session.forked", source.to_json(), orjson.dumps(forked), fut)]
            )
            if isinstance(outcomes[0], ProtocolError):
                raise outcomes[0]

        return await self._write_new(meta, fill, lambda message: InternalError(
            f"the fork could not rebuild its state: {message}"))

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
        meta = SessionMeta(sid, protocol.new_epoch(), title, agent, metadata, protocol.now_ms())

        async def fill(db: SessionDatabase) -> None:
            # The same copy a fork makes, fed from the recorded events.
            await db.copy_from(_Recorded(events), len(events))

        return await self._write_new(meta, fill, lambda message: InvalidParams(
            f"the recorded events cannot be imported: {message}"))

    async def _write_new(
        self, meta: SessionMeta, fill: Callable[[SessionDatabase], Awaitable[None]],
        failure: Callable[[str], ProtocolError],
    ) -> SessionInfo:
        """Create the file of the reserved session ``meta.session_id``, ``fill`` it, and open
        it; if filling fails the file is removed and a protocol error becomes ``failure``."""
        path = self.catalog.session_path(meta.session_id)
        try:
            db = await SessionDatabase.create(path, meta, self.config.durability)
            try:
                db.sql_timeout = self.config.query_timeout
                await fill(db)
            except BaseException as exc:
                await db.close()
                remove_files(path)
                if isinstance(exc, ProtocolError):
                    raise failure(exc.message) from exc
                raise
            return await self._register(db)
        finally:
            self._reserved.discard(meta.session_id)

    async def _register(self, db: SessionDatabase) -> SessionInfo:
        """Make a newly written session file (created or forked) an open session."""
        await self._refuse_if_closing(db)
        self.metrics.events_appended += 1  # session.created or session.forked
        meta = db.meta
        db.sql_timeout = self.config.query_timeout
        info = meta.info(db.head_seq, db.last_ts)
        await self.catalog.put(info, dirty=True)
        session = Session(info, db, self)
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
        for callback in self.on_deleted:
            callback(session_id)

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
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._closing[session.id] = (session, done)
        try:
            await session.close()
            await self.catalog.update_heads([session.info], dirty=False)
        finally:
            del self._closing[session.id]
            done.set_result(None)

    async def _refuse_if_closing(self, db: SessionDatabase) -> None:
        if self.closing:
            await db.close()
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
    """Recorded events as an :class:`~server.sessiondb.EventSource`."""

    def __init__(self, events: Sequence[dict[str, Any]]) -> None:
        self.events = events

    async def iter_raw(self, up_to_seq: int) -> AsyncIterator[bytes]:
        """The events with seq up to ``up_to_seq``, encoded."""
        for event in self.events[:up_to_seq]:
            yield orjson.dumps(event)


def not_found(session_id: str) -> NotFound:
    """The error for an unknown session."""
    return NotFound(f"session {session_id} does not exist", {"sessionId": session_id})

