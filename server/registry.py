"""The session registry: the catalog of every session, the open ones, and creating,
forking, importing, deleting and closing sessions (each open one is a :class:`Session`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import Any

import orjson

from server import protocol
from server.agent_start import remove_agent_files
from server.catalog import Catalog
from server.config import AgentConfig, HubConfig
from server.events import PermissionResponse, TurnFailed, TurnFailure, TurnStarted, loads_event
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
from server.sessionbuild import build_session
from server.sessiondb import CommitResult, PendingEvent, SessionDatabase
from server.sessionfile import (
    RecordedEvents,
    SessionFileDamaged,
    SessionFileError,
    SessionFileLocked,
    SessionMeta,
    recorded_fields,
    remove_files,
)
from server.sessions import Session
from server.sources import HUB_SOURCE, Source
from server.sqliteio import release_freed_memory
from server.tasks import TaskSet

log = logging.getLogger("axtui.sessions")

# A session used this recently is never closed to make room for another (the request that
# opened it is probably still reading it): past hub.max_open_sessions it is -32029.
EVICT_GRACE = 1.0


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
        # Closed sessions whose last head the catalog could not take (a full disk, say):
        # described from memory, written again by the janitor.
        self._unsaved: dict[str, Session] = {}
        self._pinned: Counter[str] = Counter()  # origins being forked: not closed for room
        self._pending_opens = 0  # files being opened or built, counted against the limit
        self._tasks = TaskSet(log, "the session registry")
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
        """Tell ``on_committed`` of events just committed to ``session`` (a callback that
        fails is logged and counted: it must not stop the session's writer)."""
        for callback in self.on_committed:
            try:
                callback(session, events)
            except Exception as exc:
                self.background_failed(f"telling {callback!r} of commits", exc)

    def changed(self, session: Session) -> None:
        """Tell ``on_changed`` that ``session`` changed."""
        for callback in self.on_changed:
            try:
                callback(session.info)
            except Exception as exc:
                self.background_failed(f"telling {callback!r} of a change", exc)

    def background_failed(self, what: str, exc: BaseException) -> None:
        """Log and count a failure of background work, which carries on."""
        self.metrics.background_failed(log, what, exc)

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
        unsaved = self._unsaved.get(session_id)
        info = unsaved.info if unsaved is not None else await self.catalog.get(session_id)
        if info is None:
            raise not_found(session_id)
        await self._make_room()
        self._pending_opens += 1
        try:
            db = await SessionDatabase.open(self.catalog.session_path(session_id),
                                            self.config.durability)
        except SessionFileError as exc:
            raise await self._unusable(session_id, exc) from None
        finally:
            self._pending_opens -= 1
        await self._refuse_if_closing(db)
        db.file_guard.watch(partial(self._file_gone, db))
        self._unsaved.pop(session_id, None)
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
        deleting = set(self._deleting)  # a deletion may end (and its row go) meanwhile
        await self.flush_catalog()
        try:
            infos, next_cursor = await self.catalog.list(limit, cursor, agent)
        except ValueError as exc:
            raise InvalidParams(str(exc), {"param": "cursor"}) from None
        deleting |= self._deleting
        return [s.info if (s := self._described(i.session_id)) else i
                for i in infos if i.session_id not in deleting], next_cursor

    def _described(self, session_id: str) -> Session | None:
        """The session whose info in memory is newer than the catalog's: an open one, one
        being closed, or one closed whose last head the catalog has not taken."""
        session = self.open.get(session_id)
        if session is None and session_id in self._closing:
            session = self._closing[session_id][0]
        return session or self._unsaved.get(session_id)

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
            except Exception as exc:  # the sessions stay stale: the next persist retries
                self.background_failed("writing session states into the catalog", exc)

    async def flush_catalog(self) -> None:
        """Write the heads of open sessions that changed into the catalog."""
        stale = [s for s in self.open.values() if s.catalog_stale]
        for s in stale:
            s.catalog_stale = False
        try:
            await self.catalog.update_heads([s.info for s in stale], dirty=True)
        except BaseException:
            for s in stale:
                s.catalog_stale = True
            raise

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
        meta = SessionMeta(sid, protocol.new_epoch(), title, agent, metadata, protocol.now_ms())
        fut: asyncio.Future[CommitResult] = asyncio.get_running_loop().create_future()
        created = PendingEvent("session.created", source.to_json(), data, fut)
        return await self._write_new(meta, None, None, created)

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
        ``session.forked`` as ``agent``). A request still open at ``at_seq`` is cancelled
        and a turn still running is recorded as interrupted: a fork starts with no turn.
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
        meta = SessionMeta(sid, protocol.new_epoch(),
                           title or f"{om.title.removesuffix(' (fork)')} (fork)".strip(),
                           agent or om.agent, dict(om.metadata), protocol.now_ms())

        async def fill(db: SessionDatabase) -> None:
            await db.copy_from(origin.db, at)
            forked: dict[str, Any] = {"fromSessionId": session_id, "atSeq": at}
            if agent is not None:
                forked["agent"] = agent
            # A fork starts with no turn running: nothing would ever answer a request open
            # at ``at`` or end its turn, so both are closed here, in the same fill.
            hub = HUB_SOURCE.to_json()
            items: list[tuple[str, bytes, dict[str, Any], str | None]] = [
                ("session.forked", source.to_json(), forked, None)]
            items += [("permission.response", hub, PermissionResponse(rid).to_json(), None)
                      for rid, perm in db.permissions.items() if perm.answered_by is None]
            last = [loads_event(r) for r in await origin.db.history(None, at + 1, 1, ["turn.*"])]
            if last and isinstance(started := last[0].data, TurnStarted):
                items.append(("turn.failed", hub, TurnFailed(
                    started.turn_id, TurnFailure.INTERRUPTED,
                    "the session was forked during this turn").to_json(), started.turn_id))
            loop = asyncio.get_running_loop()
            outcomes, _ = await db.append_batch([
                PendingEvent(kind, src, orjson.dumps(data), loop.create_future(), turn_id=tid)
                for kind, src, data, tid in items])
            for outcome in outcomes:
                if isinstance(outcome, ProtocolError):
                    raise outcome

        self._pinned[session_id] += 1  # the origin stays open while it is copied
        try:
            return await self._write_new(meta, fill, lambda message: InternalError(
                f"the fork could not rebuild its state: {message}"))
        finally:
            self._pinned -= Counter((session_id,))

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
        events = [recorded_fields(e) if isinstance(e, dict) else e for e in events]
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
            await db.copy_from(RecordedEvents(events), len(events))

        return await self._write_new(meta, fill, lambda message: InvalidParams(
            f"the recorded events cannot be imported: {message}"))

    async def _write_new(
        self, meta: SessionMeta, fill: Callable[[SessionDatabase], Awaitable[None]] | None,
        failure: Callable[[str], ProtocolError] | None, created: PendingEvent | None = None,
    ) -> SessionInfo:
        """Build the file of the reserved session ``meta.session_id`` whole (``created`` as
        its seq 1, then ``fill``), move it into place and open it
        (:meth:`SessionDatabase.build`); if filling fails nothing is left, and a protocol
        error becomes ``failure``."""
        path = self.catalog.session_path(meta.session_id)

        async def filled(db: SessionDatabase) -> None:
            db.sql_timeout = self.config.query_timeout
            if fill is None:
                return
            try:
                await fill(db)
            except ProtocolError as exc:
                if failure is None:
                    raise
                raise failure(exc.message) from exc

        try:
            await self._make_room()
            self._pending_opens += 1
            try:
                db = await build_session(path, meta, self.config.durability, filled, created)
            finally:
                self._pending_opens -= 1
            return await self._register(db)
        finally:
            self._reserved.discard(meta.session_id)

    async def _register(self, db: SessionDatabase) -> SessionInfo:
        """Make a newly written session file (created or forked) an open session."""
        await self._refuse_if_closing(db)
        self.metrics.events_appended += 1  # session.created or session.forked
        meta = db.meta
        db.sql_timeout = self.config.query_timeout
        db.file_guard.watch(partial(self._file_gone, db))
        info = meta.info(db.head_seq, db.last_ts)
        try:
            await self.catalog.put(info, dirty=True)
        except BaseException:  # not in the catalog: it must not be found at the next start
            await db.close()
            remove_files(db.path)
            raise
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
            await remove_agent_files(self.config.data_dir, session_id)
        finally:
            self._deleting.discard(session_id)
        for callback in self.on_deleted:
            callback(session_id)

    # --- closing ---------------------------------------------------------------------------

    async def _close_idle_loop(self) -> None:
        """Close idle sessions and retry catalog writes that failed; a failure is logged
        and counted, and the loop carries on."""
        idle = self.config.session_idle_close
        while True:
            await asyncio.sleep(max(0.05, min(5.0, idle / 2)))
            closed = 0
            for session in list(self.open.values()):
                if (not session.busy and session.last_used < time.monotonic() - idle
                        and self.open.get(session.id) is session):
                    closed += 1
                    try:
                        await self._close(session)
                    except Exception as exc:
                        self.background_failed("closing an idle session", exc)
            try:
                if self._unsaved:
                    saved = list(self._unsaved.values())
                    await self.catalog.update_heads([s.info for s in saved], dirty=False)
                    for s in saved:
                        if self._unsaved.get(s.id) is s:
                            del self._unsaved[s.id]
                if closed:
                    await asyncio.to_thread(release_freed_memory)  # off the loop: it takes ms
            except Exception as exc:
                self.background_failed("writing closed sessions into the catalog", exc)

    async def _close(self, session: Session) -> None:
        self.open.pop(session.id, None)
        self.metrics.sessions_open = len(self.open)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._closing[session.id] = (session, done)
        try:
            await session.close()
            try:
                await self.catalog.update_heads([session.info], dirty=False)
            except Exception:
                self._unsaved[session.id] = session  # described from memory meanwhile
                raise
        finally:
            del self._closing[session.id]
            done.set_result(None)

    async def _make_room(self) -> None:
        """Close least recently used idle sessions until one more file may open
        (``hub.max_open_sessions``), else -32029. With room it returns without an await, so
        the caller counts its file in ``_pending_opens`` before anyone else looks."""
        limit = self.config.max_open_sessions
        while len(self.open) + len(self._closing) + self._pending_opens >= limit:
            if self._closing:  # their room is coming
                await asyncio.wait([f for _, f in self._closing.values()])
                continue
            recent = time.monotonic() - EVICT_GRACE
            idle = [s for s in self.open.values()
                    if not s.busy and s.last_used < recent and s.id not in self._pinned]
            if not idle:
                self.metrics.overloaded += 1
                raise Overloaded(f"the hub has {limit} sessions open (hub.max_open_sessions)"
                                 " and all are in use; try again in a moment")
            try:
                await self._close(min(idle, key=lambda s: s.last_used))
            except Exception as exc:
                self.background_failed("closing a session to make room", exc)

    async def _unusable(self, session_id: str, exc: SessionFileError) -> ProtocolError:
        """The error for a session whose file cannot be opened. A damaged file is set aside
        and the session forgotten; a locked one is an error until it is free."""
        if not isinstance(exc, SessionFileDamaged):
            later = " now" if isinstance(exc, SessionFileLocked) else ""
            return InternalError(f"session {session_id} cannot be opened{later}: {exc}")
        try:
            await self.catalog.quarantine(session_id, str(exc))
        except Exception as err:
            self.background_failed(f"setting the file of session {session_id} aside", err)
        else:
            for callback in self.on_deleted:
                callback(session_id)
        return InternalError(f"session {session_id} cannot be opened: {exc}; the file was"
                             " set aside in the data dir's quarantine folder")

    def _file_gone(self, db: SessionDatabase, deleted: bool) -> None:
        """A commit found the file of an open session deleted (or replaced): the session is
        closed at once and its pending writes fail; a deleted one is forgotten, a replaced
        one opens the new file at its next use (after the old connections are closed:
        they share the WAL's name)."""
        sid = db.meta.session_id
        session = self.open.get(sid)
        if session is None or session.db is not db:
            return
        log.warning("the file of session %s was %s while it was open: session closed, its"
                    " last writes not acknowledged", sid, "deleted" if deleted else "replaced")
        self.open.pop(sid)
        self.metrics.sessions_open = len(self.open)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._closing[sid] = (session, done)
        if deleted:
            self._deleting.add(sid)
        else:  # subscribers resume against the new file
            for sub in list(session.subscribers):
                sub.stop()
                sub.sink.subscription_failed(sid)
        self._tasks.spawn(self._drop(session, deleted, done), name=f"drop {sid}")

    async def _drop(self, session: Session, deleted: bool, done: asyncio.Future[None]) -> None:
        try:
            await session.close(deleted=True)
            if deleted:
                await self.catalog.delete(session.id)
            else:
                await asyncio.to_thread(session.db.file_guard.remove_own_wal)
        finally:
            del self._closing[session.id]
            self._deleting.discard(session.id)
            done.set_result(None)
        if deleted:
            for callback in self.on_deleted:
                callback(session.id)

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
        await self._tasks.wait()
        results = await asyncio.gather(*(self._close(s) for s in list(self.open.values())),
                                       return_exceptions=True)
        for result in results:  # the rows stay dirty: the next start reads the files
            if isinstance(result, Exception):
                self.background_failed("writing closed sessions into the catalog", result)


def not_found(session_id: str) -> NotFound:
    """The error for an unknown session."""
    return NotFound(f"session {session_id} does not exist", {"sessionId": session_id})

