"""Creating, forking, importing and deleting sessions: the part of the session registry
(:class:`server.registry.SessionRegistry`) that makes and removes session files."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import orjson

from server import protocol
from server.agent_start import remove_agent_files
from server.catalog import Catalog
from server.config import AgentConfig, HubConfig
from server.metrics import Metrics
from server.protocol import (
    Conflict,
    InternalError,
    InvalidParams,
    NotFound,
    ProtocolError,
    SessionInfo,
)
from server.sessionbuild import build_session, checked_recorded, fill_fork
from server.sessiondb import SessionDatabase
from server.sessionfile import RecordedEvents, SessionMeta, remove_files
from server.sessions import Session
from server.sources import Source
from server.writes import CommitResult, PendingEvent

if TYPE_CHECKING:
    from server.clustersessions import ClusterSessions


class SessionCreation:
    """Making and removing sessions; the registry holds the state named here."""

    config: HubConfig
    catalog: Catalog
    agents: Mapping[str, AgentConfig]
    metrics: Metrics
    cluster: ClusterSessions | None
    open: dict[str, Session]
    on_deleted: list[Callable[[str], None]]
    _reserved: set[str]
    _deleting: set[str]
    _pinned: Counter[str]
    _pending_opens: int

    # Of the registry:
    get: Callable[[str], Awaitable[Session]]
    _make_room: Callable[[], Awaitable[None]]
    _register: Callable[[SessionDatabase], Awaitable[SessionInfo]]

    # --- creating, forking, deleting -------------------------------------------------------

    def _reserve(self, session_id: str | None) -> str:
        sid = session_id or protocol.new_session_id()
        # In cluster mode a file here may be a stale copy: the cluster says (claim_new).
        if (sid in self._reserved or sid in self.open or sid in self._deleting
                or (self.cluster is None and self.catalog.session_path(sid).exists())):
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

        forked: dict[str, Any] = {"fromSessionId": session_id, "atSeq": at}
        if agent is not None:
            forked["agent"] = agent
        fill = partial(fill_fork, origin=origin.db, at_seq=at, source=source, forked=forked)

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
        events = checked_recorded(events)
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

        lease = None
        if self.cluster is not None:
            lease = await self.cluster.claim_new(meta)
            remove_files(path)  # a copy of an earlier session of this id, deleted since
        try:
            await self._make_room()
            self._pending_opens += 1
            try:
                db = await build_session(path, meta, self.config.durability, filled, created)
            finally:
                self._pending_opens -= 1
            if self.cluster is not None and lease is not None:
                try:
                    await self.cluster.publish(db, lease)
                except BaseException:
                    await db.close()
                    remove_files(db.path)
                    raise
            return await self._register(db)
        except BaseException:
            if self.cluster is not None and lease is not None:
                await self.cluster.abandon(lease)
            raise
        finally:
            self._reserved.discard(meta.session_id)

    async def delete(self, session_id: str) -> None:
        """Delete a session: subscribers are told, pending publishes fail, files go."""
        session = await self.get(session_id)
        self._deleting.add(session_id)
        try:
            self.open.pop(session_id, None)
            self.metrics.sessions_open = len(self.open)
            await session.close(deleted=True)
            if self.cluster is not None:
                await self.cluster.delete(session_id)
            await self.catalog.delete(session_id)
            remove_files(self.catalog.session_path(session_id))
            await remove_agent_files(self.config.data_dir, session_id)
        finally:
            self._deleting.discard(session_id)
        for callback in self.on_deleted:
            callback(session_id)
