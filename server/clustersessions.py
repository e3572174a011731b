"""The session registry's part in cluster mode: sessions are the cluster's, not a file's.

The registry (:mod:`server.registry`) asks this object, when ``cluster:`` is configured,

- to open a session it does not have open (:meth:`ClusterSessions.open`): the lease is
  claimed (or :class:`~server.ownership.OwnedElsewhere` raised), the local file made to
  agree with the log (caught up, or rebuilt when missing or of another incarnation), and
  every later batch replicated before it commits;
- to claim a new id cluster-wide before a session file is built (:meth:`claim_new`), and
  to copy a newly built file into the log before the session is served (:meth:`publish`);
- for descriptions and the session list, which come from Redis, so every replica sees
  every session; changes of open sessions are written there shortly after they happen
  and published on the watch channel.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from server.auth import CLUSTER_PRINCIPAL
from server.caller import Caller
from server.catalog import decode_cursor, encode_cursor
from server.clustererrors import OwnedElsewhere, StoreUnavailable
from server.clustersync import catch_up, push, rebuild, restore, snapshot
from server.metrics import Metrics
from server.ownership import Ownership
from server.protocol import InternalError, InvalidParams, NotFound, SessionInfo
from server.redisstore import Lease, RedisStore
from server.remotesession import RemoteSession
from server.sessiondb import SessionDatabase
from server.sessionfile import SessionFileError, SessionMeta, remove_files
from server.sessions import PAGE_BYTES, Session

if TYPE_CHECKING:
    from server.forward import Forwarder

log = logging.getLogger("axtui.cluster")

FLUSH_EVERY = 0.1  # seconds between writes of changed descriptions into Redis


async def _unwired(session_id: str) -> Session:
    raise RuntimeError("the cluster's registry side is not wired")


class ClusterSessions:
    """What the registry asks of the cluster."""

    def __init__(self, store: RedisStore, ownership: Ownership, metrics: Metrics,
                 durability: str) -> None:
        self.store = store
        self.ownership = ownership
        self.metrics = metrics
        self.durability = durability
        self._dirty: dict[str, SessionInfo] = {}
        self._remote: dict[str, RemoteSession] = {}  # followed for subscribers here
        self._flusher: asyncio.Task[None] | None = None
        # Set by the wiring: open a session as its owner (the registry's get), and reach
        # the others.
        self.claim: Callable[[str], Awaitable[Session]] = _unwired
        self.forwarder: Forwarder | None = None

    # --- opening -------------------------------------------------------------------------

    async def describe(self, session_id: str) -> SessionInfo | None:
        """The cluster's description of a session (``None``: no such session)."""
        return await self.store.describe(session_id)

    async def open(self, session_id: str, path: Path) -> tuple[SessionInfo, SessionDatabase]:
        """Own ``session_id`` and open its file at ``path``, caught up with the log.

        Raises OwnedElsewhere (another replica owns it), StoreUnavailable, or NotFound
        when the cluster has no such session (then nothing is held).
        """
        lease = await self.ownership.claim(session_id)
        try:
            info = await self.store.describe(session_id)
            if info is None:
                self.ownership.drop(session_id)
                await self.store.release(lease)
                raise NotFound(f"session {session_id} does not exist",
                               {"sessionId": session_id})
            db = await self._local_copy(path, info)
            db.replicate = partial(self._replicate, lease)
            info.owner = self.ownership.node_id
        except BaseException:
            await self.ownership.release(session_id)
            raise
        return info, db

    async def _local_copy(self, path: Path, info: SessionInfo) -> SessionDatabase:
        """The file at ``path`` holding the log up to its head: the one here if it is of
        this incarnation and not older than what the stream still holds, else one made
        from the snapshot (if the stream was trimmed) or from the log."""
        sid = info.session_id
        meta = SessionMeta(sid, info.epoch, info.title, info.agent, info.metadata,
                           info.created_at)
        first = await self.store.first_seq(sid)
        first = info.head_seq + 1 if first is None else first  # before it: the snapshot only
        db = await self._usable_copy(path, info, first)
        if db is not None:
            if await catch_up(db, self.store, info.head_seq):
                self.metrics.cluster_takeovers += 1
            return db
        self.metrics.cluster_takeovers += 1
        if first <= 1:
            return await rebuild(path, meta, self.store, info.head_seq, self.durability)
        snap = await self.store.snapshot(sid)
        if snap is None or snap[0] < first - 1:
            raise InternalError(f"session {sid} cannot be rebuilt: its log was trimmed past"
                                " its snapshot")
        return await restore(path, meta, self.store, snap[1], info.head_seq, self.durability)

    async def _usable_copy(self, path: Path, info: SessionInfo,
                           first: int) -> SessionDatabase | None:
        """The file here, if it can be caught up from the stream (else it is removed)."""
        if not path.exists():
            return None
        db: SessionDatabase | None = None
        try:
            db = await SessionDatabase.open(path, self.durability)
        except SessionFileError as exc:
            log.warning("the copy of session %s here cannot be used (%s): making it again"
                        " from the cluster's log", info.session_id, exc)
        if db is not None and (db.meta.epoch != info.epoch or db.head_seq > info.head_seq
                               or db.head_seq < first - 1):
            log.info("the copy of session %s here is of another incarnation or too old:"
                     " making it again from the cluster's log", info.session_id)
            await db.close()
            db = None
        if db is None:
            remove_files(path)
        return db

    def _replicate(self, lease: Lease, first_seq: int, events: list[bytes]) -> None:
        """A batch's events into the log (the writer thread's call, before it commits)."""
        try:
            self.store.append(lease, first_seq, events, None)
        except StoreUnavailable:
            self.metrics.cluster_store_errors += 1
            raise

    async def remote(self, session_id: str) -> RemoteSession:
        """The session another replica owns, followed from its log for subscribers here."""
        feed = self._remote.get(session_id)
        if feed is not None:
            return feed
        info = await self.store.describe(session_id)
        if info is None:
            raise NotFound(f"session {session_id} does not exist", {"sessionId": session_id})
        feed = self._remote.get(session_id)  # another subscriber made it meanwhile
        if feed is None:
            feed = self._remote[session_id] = RemoteSession(
                info, self.store, self.claim, self.old_events, self._followed)
        return feed

    async def old_events(self, session_id: str, after_seq: int,
                         limit: int) -> list[tuple[int, bytes]]:
        """Events after ``after_seq`` that the stream no longer holds (trimmed after a
        snapshot): from the owner's file, this replica's if it can take the session over."""
        try:
            session = await self.claim(session_id)
            return await session.db.read_range(after_seq, limit, PAGE_BYTES)
        except OwnedElsewhere as moved:
            assert self.forwarder is not None
            caller = Caller(CLUSTER_PRINCIPAL, log, "cluster", self.ownership.node_id)
            answer = await self.forwarder.forward(
                moved.node, session_id, caller, "session/history",
                {"sessionId": session_id, "afterSeq": after_seq, "limit": limit})
            return [(event["seq"], orjson.dumps(event)) for event in answer.value["events"]]

    def _followed(self, feed: RemoteSession) -> None:
        if self._remote.get(feed.id) is feed:
            del self._remote[feed.id]

    def stop_following(self) -> None:
        """Stop every follower (the hub stops)."""
        for feed in list(self._remote.values()):
            feed.stop()

    # --- new sessions ----------------------------------------------------------------------

    async def claim_new(self, meta: SessionMeta) -> Lease:
        """Claim a new session id in the whole cluster (Conflict if it is taken)."""
        return await self.store.create(meta.info(0, meta.created_at))

    async def publish(self, db: SessionDatabase, lease: Lease) -> None:
        """Copy a file just built here into the log and the session list (before it is
        answered: then every replica lists it), then replicate each later batch."""
        await push(db, self.store, lease)
        await self.store.update(db.meta.info(db.head_seq, db.last_ts))
        self.ownership.hold(lease)
        db.replicate = partial(self._replicate, lease)

    async def abandon(self, lease: Lease) -> None:
        """Undo :meth:`claim_new` for a session whose file could not be built."""
        try:
            await self.store.delete(lease)
        except Exception as exc:
            self.metrics.background_failed(log, "removing a session that failed to build", exc)

    async def closed(self, session_id: str, path: Path, head_seq: int) -> None:
        """An owned session was closed here: its description into Redis, a snapshot if
        ``cluster.snapshot_after`` events came since the last one (the stream is then
        trimmed to ``cluster.keep_events``), and its lease back."""
        config = self.store.config
        lease = self.ownership.leases.get(session_id)
        try:
            await self.flush()
            if (lease is not None and config.snapshot_after
                    and head_seq - await self.store.snapshot_seq(session_id)
                    >= config.snapshot_after):
                blob = await asyncio.to_thread(snapshot, path)
                await self.store.save_snapshot(lease, head_seq, blob, config.keep_events)
                log.info("session %s: a snapshot up to seq %d (%d bytes); its log keeps the"
                         " last %d events", session_id, head_seq, len(blob), config.keep_events)
        except Exception as exc:
            self.metrics.background_failed(log, "snapshotting a closed session", exc)
        finally:
            await self.ownership.release(session_id)

    async def delete(self, session_id: str) -> None:
        """Remove an owned session from the cluster."""
        lease = self.ownership.leases.get(session_id)
        if lease is not None:
            await self.store.delete(lease)
            self.ownership.drop(session_id)

    # --- descriptions ----------------------------------------------------------------------

    async def list(self, limit: int, cursor: str | None,
                   agent: str | None) -> tuple[list[SessionInfo], str | None]:
        """A page of the cluster's sessions, most recently updated first."""
        try:
            before = None if cursor is None else decode_cursor(cursor)
        except ValueError as exc:
            raise InvalidParams(str(exc), {"param": "cursor"}) from None
        await self.flush()
        found: list[SessionInfo] = []
        while len(found) <= limit:  # one past the page: whether there is a next one
            ids = await self.store.listed(before, limit + 1)
            if not ids:
                break
            infos = await self.store.describe_many(ids)
            found += [i for i in infos if agent is None or i.agent == agent]
            last = infos[-1] if infos else None
            if last is None or len(ids) < limit + 1:
                break
            before = (last.updated_at, last.session_id)
        page = found[:limit]
        more = len(found) > limit
        return page, (encode_cursor(page[-1].updated_at, page[-1].session_id)
                      if more and page else None)

    def changed(self, info: SessionInfo) -> None:
        """Write ``info`` into Redis shortly, and tell the other replicas' watchers."""
        self._dirty[info.session_id] = info
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_soon(), name="cluster catalog")

    async def _flush_soon(self) -> None:
        await asyncio.sleep(FLUSH_EVERY)
        try:
            await self.flush()
        except Exception as exc:
            self.metrics.background_failed(log, "writing session descriptions into Redis", exc)

    async def flush(self) -> None:
        """Write the changed descriptions into Redis now."""
        while self._dirty:
            dirty, self._dirty = self._dirty, {}
            for info in dirty.values():
                if info.session_id not in self.ownership.leases:
                    continue  # stepped down or deleted meanwhile: not ours to describe
                try:
                    await self.store.update(info)
                    await self.store.publish_change(info.session_id)
                except StoreUnavailable:
                    self._dirty.setdefault(info.session_id, info)
                    raise
