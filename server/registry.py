"""The session registry: the catalog of every session, the open ones, and creating,
forking, importing, deleting and closing sessions (each open one is a :class:`Session`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING

from server.catalog import Catalog
from server.clustererrors import Fenced, OwnedElsewhere
from server.config import AgentConfig, HubConfig
from server.creation import SessionCreation
from server.metrics import Metrics
from server.protocol import (
    InternalError,
    InvalidParams,
    NotFound,
    Overloaded,
    ProtocolError,
    SessionInfo,
)
from server.sessiondb import SessionDatabase
from server.sessionfile import (
    SessionFileDamaged,
    SessionFileError,
    SessionFileLocked,
    remove_files,
)
from server.sessions import Feed, Session
from server.sqliteio import release_freed_memory
from server.tasks import TaskSet

if TYPE_CHECKING:
    from server.clustersessions import ClusterSessions

log = logging.getLogger("axtui.sessions")

# A session used this recently is never closed to make room for another (the request that
# opened it is probably still reading it): past hub.max_open_sessions it is -32029.
EVICT_GRACE = 1.0


class SessionRegistry(SessionCreation):
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
        self._opening: dict[str, asyncio.Task[Session]] = {}
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
        self.cluster: ClusterSessions | None = None  # cluster mode (set by the wiring)
        self.on_stepped_down: list[Callable[[str], None]] = []  # lost a session's lease
        self.on_taken_over: list[Callable[[Session], None]] = []  # opened as its owner
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
        """Tell ``on_changed`` (and the cluster) that ``session`` changed."""
        if self.cluster is not None:
            self.cluster.changed(session.info)
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
        if pending is None:
            # Its own task: a requester that goes away (its connection closed, which
            # cancels its tasks) must not cancel the opening the others wait for too.
            pending = self._opening[session_id] = asyncio.create_task(
                self._open(session_id), name=f"open {session_id}")
            pending.add_done_callback(partial(self._opened_or_not, session_id))
        return await asyncio.shield(pending)

    def _opened_or_not(self, session_id: str, task: asyncio.Task[Session]) -> None:
        if self._opening.get(session_id) is task:
            del self._opening[session_id]
        if not task.cancelled():
            task.exception()  # mark retrieved: every waiter gets it through its shield

    async def _open(self, session_id: str) -> Session:
        closing = self._closing.get(session_id)
        if closing is not None:  # one writer per file: let the old one finish first
            await asyncio.shield(closing[1])
        if self.cluster is not None:
            await self._make_room()
            self._pending_opens += 1
            try:
                found, db = await self.cluster.open(session_id,
                                                    self.catalog.session_path(session_id))
            finally:
                self._pending_opens -= 1
            session = await self._opened(found, db)
            for callback in self.on_taken_over:
                callback(session)
            return session
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
        return await self._opened(info, db)

    async def _opened(self, info: SessionInfo, db: SessionDatabase) -> Session:
        """Serve the session whose file was just opened."""
        session_id = info.session_id
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

    async def feed(self, session_id: str) -> Feed:
        """What a subscription to ``session_id`` follows: the open session, or in cluster
        mode, for a session another replica owns, its log in Redis."""
        if self.cluster is None:
            return await self.get(session_id)
        try:
            return await self.get(session_id)
        except OwnedElsewhere:
            return await self.cluster.remote(session_id)

    async def info(self, session_id: str) -> SessionInfo:
        """A session's description without opening it."""
        if session_id in self._deleting:
            raise not_found(session_id)
        session = self._described(session_id)
        if session is not None:
            return session.info
        info = await (self.catalog.get(session_id) if self.cluster is None
                      else self.cluster.describe(session_id))
        if info is None:
            raise not_found(session_id)
        return info

    async def list(
        self, limit: int, cursor: str | None, agent: str | None
    ) -> tuple[list[SessionInfo], str | None]:
        """A page of sessions, most recently updated first."""
        if self.cluster is not None:
            return await self.cluster.list(limit, cursor, agent)
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

    async def _register(self, db: SessionDatabase) -> SessionInfo:
        """Make a newly written session file (created or forked) an open session."""
        await self._refuse_if_closing(db)
        self.metrics.events_appended += 1  # session.created or session.forked
        meta = db.meta
        db.sql_timeout = self.config.query_timeout
        db.file_guard.watch(partial(self._file_gone, db))
        info = meta.info(db.head_seq, db.last_ts)
        if self.cluster is not None:
            info.owner = self.cluster.ownership.node_id
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

    def write_refused(self, session: Session, error: Exception) -> None:
        """A batch of ``session`` was not stored: if the cluster fenced it off (another
        replica owns the session now), this replica steps down from it."""
        if isinstance(error, Fenced) and self.open.get(session.id) is session:
            log.warning("session %s is owned by another replica now (a write was fenced"
                        " off): stepping down", session.id)
            self.step_down(session.id)

    def step_down(self, session_id: str) -> None:
        """Stop serving a session this replica no longer owns: close it (its pending writes
        fail, so their clients retry and reach the new owner), its subscribers resume
        elsewhere, ``on_stepped_down`` stops its agent."""
        session = self.open.pop(session_id, None)
        if self.cluster is not None:
            self.cluster.ownership.drop(session_id)
        if session is None:
            return
        self.metrics.sessions_open = len(self.open)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._closing[session_id] = (session, done)
        for sub in list(session.subscribers):
            sub.stop()
            sub.sink.subscription_failed(session_id)
        for callback in self.on_stepped_down:
            callback(session_id)
        self._tasks.spawn(self._stepped_down(session, done), name=f"step down {session_id}")

    async def _stepped_down(self, session: Session, done: asyncio.Future[None]) -> None:
        """Close a session another replica owns now: its queued writes fail with -32029
        (their clients retry, and reach the new owner)."""
        try:
            await session.close(refuse=Fenced(session.id))
        finally:
            del self._closing[session.id]
            done.set_result(None)

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
            if self.cluster is not None:
                await self.cluster.closed(session.id, session.db.path, session.info.head_seq)
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
            await asyncio.wait(opening)
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

