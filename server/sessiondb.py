"""One session's SQLite file: the event log, the hub's bookkeeping, the application's state.

Three aiosqlite connections, each with its own thread, opened lazily:

- the *writer* runs group commits (one transaction a batch) and client writes under the
  ``WRITE`` policy of :mod:`server.sqlguard`;
- the *reader* serves history and subscription catch-up, so a long replay never blocks
  the writer (WAL lets it read while the writer commits);
- the *query* connection runs client ``state/query`` SQL read-only, under the ``READ``
  policy and a time limit.

Each event is stored once as the exact JSON that is sent to clients (``raw``); the
columns beside it are what SQL needs to find events. Copying the file copies the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from server import protocol
from server.clientsql import (
    ClientLimits,
    CommitBudget,
    TransactionLost,
    fetch_capped,
    run_query,
    run_writes,
)
from server.permissions import Permission, permission_row
from server.protocol import Conflict, InternalError, NotFound, ProtocolError
from server.sessionfile import (
    FORMAT_VERSION,
    INSERT_EVENT,
    SCHEMA,
    FileGuard,
    SessionMeta,
    file_error,
    insert_events,
    read_meta,
    remove_files,
    sync_file,
)
from server.sqlguard import Policy, SqlGuard
from server.sqliteio import connect, in_thread
from server.typepattern import TypePattern
from server.writes import CommitResult, EventSource, PendingEvent, StagedBatch

PERMISSION_TYPES = ("permission.request", "permission.response")
INSERT_PERMISSION = "INSERT OR REPLACE INTO ax_permissions VALUES (?, ?, ?, ?, ?)"
PROGRESS_STEPS = 10_000


class SessionDatabase:
    """The SQLite file of one session. Create with :meth:`create` or :meth:`open`."""

    def __init__(self, path: Path, meta: SessionMeta, durability: str) -> None:
        self.path = path
        self.sql_timeout = 5.0  # seconds a client statement may run
        self.limits = ClientLimits()  # the hub's config sets them (Session)
        self.meta = meta
        self.durability = durability
        self.head_seq = 0
        self.last_ts = 0
        self.permissions: dict[str, Permission] = {}
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._query: aiosqlite.Connection | None = None
        self.closed = False
        # Cluster mode: (first seq, events) of each batch, stored elsewhere before the
        # batch commits here (server.redisstore); raising rolls the batch back.
        self.replicate: Callable[[int, list[bytes]], None] | None = None
        self.file_guard = FileGuard(path)  # a commit checks the file is still there
        self._lazy_open = asyncio.Lock()  # one reader and one query connection, never two
        self._write_guard = SqlGuard(Policy.HUB)
        self._query_guard = SqlGuard(Policy.READ)

    # --- opening and closing -------------------------------------------------------------

    @classmethod
    async def create(
        cls, path: Path, meta: SessionMeta, durability: str, created: PendingEvent | None = None,
        *, building: bool = False,
    ) -> SessionDatabase:
        """Make a new session file holding ``meta`` (and ``created`` as seq 1, if given).

        Fails with :class:`Conflict` if the file exists. ``building``: no WAL and no syncs
        until :meth:`seal` (nobody sees the file before: :mod:`server.sessionbuild`)."""
        if path.exists():
            raise Conflict(f"session {meta.session_id} already exists")
        log = cls(path, meta, durability)
        try:
            await log._open_writer(building=building)
            db = log._writer
            assert db is not None
            rows = [
                ("format", FORMAT_VERSION), ("session_id", meta.session_id),
                ("epoch", meta.epoch), ("title", meta.title), ("agent", meta.agent or ""),
                ("metadata", orjson.dumps(meta.metadata).decode()),
                ("created_at", str(meta.created_at)),
            ]
            await db.execute("BEGIN IMMEDIATE")
            await db.executemany("INSERT INTO ax_meta (key, value) VALUES (?, ?)", rows)
            await db.execute("COMMIT")
            if created is not None:
                await log.append_batch([created])
        except BaseException:
            await log.close()
            remove_files(path)
            raise
        return log

    @classmethod
    async def open(cls, path: Path, durability: str) -> SessionDatabase:
        """Open an existing session file, or raise a ``SessionFileError`` (read in threads:
        a locked file never holds up the event loop)."""
        meta = await asyncio.to_thread(read_meta, path)
        log = cls(path, meta, durability)
        try:
            await log._open_writer(create=False)
            db = log._writer
            assert db is not None
            async with db.execute("SELECT seq, ts FROM ax_events ORDER BY seq DESC LIMIT 1") as cur:
                row = await cur.fetchone()
            if row is not None:
                log.head_seq, log.last_ts = int(row[0]), int(row[1])
            async with db.execute(
                "SELECT request_id, request_seq, options, answered_seq, answered_by "
                "FROM ax_permissions"
            ) as cur:
                async for rid, rseq, options, aseq, aby in cur:
                    log.permissions[rid] = Permission(
                        rid, rseq, orjson.loads(options), aseq,
                        orjson.loads(aby) if aby else None,
                    )
        except (sqlite3.Error, ValueError) as exc:
            await log.close()
            raise file_error(path, exc) from exc
        except BaseException:
            await log.close()
            raise
        return log

    async def _open_writer(self, *, create: bool = True, building: bool = False) -> None:
        # mode=rw for an existing file: one deleted meanwhile is an error, not a new file
        db = await connect(
            f"file:{self.path}?mode={'rwc' if create else 'rw'}", uri=True,
            isolation_level=None, cached_statements=0, check_same_thread=False,
        )
        self._writer = db
        if building:  # a crash loses the file anyway: no WAL, no syncs until seal()
            await db.execute("PRAGMA journal_mode=MEMORY")
            await db.execute("PRAGMA synchronous=OFF")
        else:
            await db.execute("PRAGMA journal_mode=WAL")
            sync = "FULL" if self.durability == "full" else "NORMAL"
            await db.execute(f"PRAGMA synchronous={sync}")
        await db.executescript(SCHEMA)
        await asyncio.to_thread(self.file_guard.record)
        await db.set_authorizer(self._write_guard)
        await db.set_progress_handler(self._write_guard.expired, PROGRESS_STEPS)

    def _check_file(self, con: sqlite3.Connection | None = None) -> None:
        """:meth:`FileGuard.check`, in the writer's thread before a commit is acknowledged."""
        self.file_guard.check(self.meta.session_id)

    async def seal(self) -> None:
        """Close a file made ``building`` and sync it, whatever the durability."""
        await self.close()
        await asyncio.to_thread(sync_file, self.path)

    def _check_open(self) -> None:
        if self.closed:
            raise NotFound(f"session {self.meta.session_id} does not exist",
                           {"sessionId": self.meta.session_id})

    async def _read_conn(self) -> aiosqlite.Connection:
        async def setup(db: aiosqlite.Connection) -> None:
            db.text_factory = bytes

        # mode=rw: a reader never creates a file that was deleted meanwhile.
        return await self._open_lazily("_reader", "rw", setup, check_same_thread=False)

    async def _query_conn(self) -> aiosqlite.Connection:
        async def setup(db: aiosqlite.Connection) -> None:
            await db.execute("PRAGMA query_only=1")
            await db.set_authorizer(self._query_guard)
            await db.set_progress_handler(self._query_guard.expired, PROGRESS_STEPS)

        return await self._open_lazily("_query", "ro", setup, cached_statements=0)

    async def _open_lazily(
        self, attribute: str, mode: str,
        setup: Callable[[aiosqlite.Connection], Awaitable[None]], **kwargs: Any,
    ) -> aiosqlite.Connection:
        """The connection kept in ``attribute``, opened once (under a lock), never after
        :meth:`close`."""
        self._check_open()
        db: aiosqlite.Connection | None = getattr(self, attribute)
        if db is not None:
            return db
        async with self._lazy_open:
            db = getattr(self, attribute)
            if db is not None:
                return db
            db = await connect(f"file:{self.path}?mode={mode}", uri=True, isolation_level=None,
                               **kwargs)
            try:
                # By name: a replaced file's successor would be read with the old WAL (and
                # get it at close). SQLite reads nothing before a statement: check first.
                await in_thread(db, self._check_file)
                await setup(db)
                self._check_open()  # closed while connecting
            except BaseException:
                await db.close()
                raise
            setattr(self, attribute, db)
            return db

    async def close(self) -> None:
        """Close every connection (the data is already committed)."""
        self.closed = True
        for name in ("_query", "_reader", "_writer"):
            db = getattr(self, name)
            setattr(self, name, None)
            if db is not None:
                with contextlib.suppress(Exception):
                    await db.close()

    # --- writing ---------------------------------------------------------------------------

    async def append_batch(
        self, batch: Sequence[PendingEvent]
    ) -> tuple[list[CommitResult | ProtocolError | None], list[tuple[int, bytes]]]:
        """Commit ``batch`` in one transaction (group commit).

        Returns one outcome per item (a result, the error for that item alone, or ``None``
        for an item put off to the next batch) and the newly committed events as
        ``(seq, raw)``. Seq is assigned inside the transaction; if the commit fails nothing
        changes, in the file or in memory.

        Client SQL may use ``hub.commit_budget`` seconds of a batch: once it has, the
        batch's later client SQL is put off to the next batch, and so is every later item
        of the same origin (a connection's writes keep their order); other events still
        go. A client write that makes SQLite roll back the whole transaction (interrupted
        at its deadline) fails alone: the batch is staged again without it.

        The transaction is one call into the writer's thread (each awaited aiosqlite call is
        a round trip to it). The events are encoded on the event loop's thread beforehand:
        Python work in the writer's thread would contend with the loop for the GIL. Only
        a batch holding client SQL (``state``) is staged in the writer's thread, since its
        statements run between the inserts; a batch with idempotency keys looks them up
        first, in one more call (this session's writer is the only one writing its file).
        """
        db = self._writer
        assert db is not None, "session is closed"
        if any(item.statements for item in batch):
            staged = await in_thread(db, self._commit_staging, batch)
        else:
            keys = [a.idempotency_key for a in batch if a.idempotency_key is not None]
            known = await in_thread(db, self._known_keys, keys) if keys else {}
            staged = self._stage(None, batch, known)
            if staged.rows:
                await in_thread(db, self._commit_rows, staged)
        if staged.committed:
            self.head_seq = staged.committed[-1][0]
        self.last_ts = staged.ts
        self.permissions.update(staged.perms)
        return staged.outcomes, staged.committed

    def _commit_rows(self, con: sqlite3.Connection, staged: StagedBatch) -> None:
        """Insert staged events (and permission rows) in one transaction (writer's thread)."""
        con.execute("BEGIN IMMEDIATE")
        try:
            if staged.permission_rows:
                con.executemany(INSERT_PERMISSION, staged.permission_rows)
            insert_events(con, staged.rows)
            self._replicate(staged)
            con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):
                con.execute("ROLLBACK")
            raise
        self._check_file()

    def _replicate(self, staged: StagedBatch) -> None:
        """Hand the batch's events to :attr:`replicate` (in the writer's thread, inside the
        transaction): if it raises, the transaction rolls back and nothing is stored."""
        if self.replicate is not None and staged.committed:
            self.replicate(staged.committed[0][0], [raw for _, raw in staged.committed])

    def _commit_staging(
        self, con: sqlite3.Connection, batch: Sequence[PendingEvent]
    ) -> StagedBatch:
        """Stage and commit a batch with client SQL, all in the writer's thread."""
        failed: dict[int, ProtocolError] = {}  # items whose client SQL ended a transaction
        budget = CommitBudget(self.limits.commit_budget)
        while True:
            con.execute("BEGIN IMMEDIATE")
            try:
                keys = [a.idempotency_key for a in batch if a.idempotency_key is not None]
                staged = self._stage(con, batch, self._known_keys(con, keys) if keys else {},
                                     failed, budget)
                self._replicate(staged)
                con.execute("COMMIT")
                break
            except TransactionLost as lost:  # SQLite rolled it all back: again, without it
                failed[lost.index] = lost.error
            except BaseException:
                with contextlib.suppress(Exception):
                    con.execute("ROLLBACK")
                raise
        self._check_file()
        return staged

    def _stage(
        self, con: sqlite3.Connection | None, batch: Sequence[PendingEvent],
        known: dict[str, CommitResult], failed: dict[int, ProtocolError] | None = None,
        budget: CommitBudget | None = None,
    ) -> StagedBatch:
        """Assign seqs and encode the events. With ``con`` (in the writer's thread, inside
        the transaction) rows are inserted as it goes, client SQL in between; without, the
        rows are returned to insert (the batch has no client SQL). Items in ``failed`` get
        that error; client SQL past the ``budget`` is put off (see :meth:`append_batch`).
        Reads the log's state, changes none of it."""
        out = StagedBatch([], [], {}, self.last_ts)
        rows = out.rows
        seq, ts = self.head_seq, self.last_ts
        put_off: set[object] = set()  # origins with an item put off to the next batch
        for index, item in enumerate(batch):
            if failed and index in failed:
                out.outcomes.append(failed[index])
                continue
            if item.origin in put_off or (item.statements and budget and budget.used_up):
                put_off.add(item.origin)
                out.outcomes.append(None)
                continue
            key = item.idempotency_key
            if key is not None and key in known:
                out.outcomes.append(known[key])
                continue
            try:
                perm_row = None
                if item.type in PERMISSION_TYPES:
                    assert item.data is not None
                    perm_row = permission_row(
                        self.permissions, item.type, orjson.loads(item.data), item.source,
                        seq + 1, out.perms,
                    )
                changes = 0
                if item.statements:
                    assert con is not None, "client SQL is staged in the writer's thread"
                    if rows:
                        insert_events(con, rows)
                        rows.clear()
                    started = time.monotonic()
                    try:
                        changes = self._run_client_writes(con, item.statements)
                    except TransactionLost as lost:
                        lost.index = index
                        raise
                    finally:
                        if budget is not None:
                            budget.spend(time.monotonic() - started)
            except ProtocolError as exc:
                out.outcomes.append(exc)
                continue
            if perm_row is not None:
                if con is None:
                    out.permission_rows.append(perm_row)
                else:
                    con.execute(INSERT_PERMISSION, perm_row)
            seq += 1
            ts = max(ts, protocol.now_ms())
            data = item.data
            state = None
            if data is None:  # state/exec: the record is the statements and their effect
                data = b'{"statements":%s,"changes":%d}' % (item.recorded_statements, changes)
            else:
                state = item.recorded_statements
            raw = protocol.encode_event(
                seq=seq, event_id=protocol.new_event_id(), ts=ts, event_type=item.type,
                source=item.source, data=data, idempotency_key=key, turn_id=item.turn_id,
                state=state,
            )
            rows.append((seq, ts, item.type, item.turn_id, key, raw))
            out.committed.append((seq, raw))
            result = CommitResult(seq, ts, False, changes)
            out.outcomes.append(result)
            if key is not None:
                known[key] = CommitResult(seq, ts, True, changes)
        if rows and con is not None:
            insert_events(con, rows)
            rows.clear()
        out.ts = ts
        return out

    @staticmethod
    def _known_keys(con: sqlite3.Connection, keys: list[str]) -> dict[str, CommitResult]:
        known: dict[str, CommitResult] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for key, seq, ts in con.execute(
                "SELECT idempotency_key, seq, ts FROM ax_events"
                f" WHERE idempotency_key IN ({marks})",
                chunk,
            ):
                known[key] = CommitResult(seq, ts, True)
        return known

    def _run_client_writes(
        self, con: sqlite3.Connection, statements: list[tuple[str, Any]], *,
        rebuild: bool = False,
    ) -> int:
        """Run client statements in a savepoint (in the writer's thread); all of them or
        none. Returns rows changed. A fork's ``rebuild`` re-runs statements accepted
        before, so it is not held to today's ``hub.max_value_bytes``."""
        max_value = None if rebuild else self.limits.max_value_bytes
        return run_writes(con, self._write_guard, statements, self.sql_timeout, max_value)

    # --- reading ---------------------------------------------------------------------------

    async def read_range(
        self, after_seq: int, limit: int, max_bytes: int
    ) -> list[tuple[int, bytes]]:
        """Events with seq > ``after_seq`` in order: at most ``limit``, about ``max_bytes``."""
        db = await self._read_conn()
        out: list[tuple[int, bytes]] = []
        size = 0
        async with db.execute(
            "SELECT seq, raw FROM ax_events WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)
        ) as cur:
            async for seq, raw in cur:
                out.append((seq, raw))
                size += len(raw)
                if size >= max_bytes:
                    break
        return out

    async def history(
        self,
        after_seq: int | None,
        before_seq: int | None,
        limit: int,
        types: list[str] | None,
    ) -> list[bytes]:
        """The ``session/history`` window, ascending (see protocol.md)."""
        where: list[str] = []
        args: list[Any] = []
        if after_seq is not None:
            where.append("seq > ?")
            args.append(after_seq)
        if before_seq is not None:
            where.append("seq < ?")
            args.append(before_seq)
        if types:
            where.append("(" + " OR ".join("type GLOB ?" for _ in types) + ")")
            args.extend(TypePattern(t).sqlite_glob for t in types)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        newest = after_seq is None and before_seq is not None
        order = "DESC" if newest else "ASC"
        sql = f"SELECT seq, raw FROM ax_events {clause} ORDER BY seq {order} LIMIT ?"
        db = await self._read_conn()
        # Read in the reader's thread, one row at a time, up to hub.max_result_bytes: the
        # page holds fewer events when they are large (the client pages on).
        rows = await in_thread(db, fetch_capped, sql, (*args, limit),
                               self.limits.max_result_bytes)
        if newest:
            rows.reverse()
        return rows

    async def iter_raw(self, up_to_seq: int, page: int = 5000) -> AsyncIterator[bytes]:
        """Every event's raw JSON from seq 1 to ``up_to_seq``, in order."""
        after = 0
        while after < up_to_seq:
            rows = await self.read_range(after, min(page, up_to_seq - after), max_bytes=1 << 30)
            if not rows:
                return
            for _, raw in rows:
                yield raw
            after = rows[-1][0]

    async def query(
        self, sql: str, params: Any, limit: int
    ) -> tuple[list[str], list[list[Any]], bool]:
        """Run read-only client SQL; returns columns, rows (BLOBs as base64), truncated."""
        columns, rows, truncated = await self.query_encoded(sql, params, limit)
        return columns, orjson.loads(rows), truncated

    async def query_encoded(
        self, sql: str, params: Any, limit: int
    ) -> tuple[list[str], bytes, bool]:
        """Run read-only client SQL, in the query connection's thread; returns columns, the
        rows as a JSON array, truncated (at ``limit`` rows or ``hub.max_result_bytes``)."""
        db = await self._query_conn()
        return await in_thread(db, run_query, self._query_guard, sql, params, limit,
                               self.sql_timeout, self.limits)

    async def copy_from(self, origin: EventSource, at_seq: int, *,
                        keep_ids: bool = False) -> None:
        """Copy ``origin``'s events up to ``at_seq`` into this file (with new ids, unless
        ``keep_ids``) and rebuild the state they built: a fork, an import from recorded
        events, a cluster replica's copy catching up from the shared log (whose source
        starts after this file's head).

        Only statements the hub recorded are re-run: the ``statements`` of
        ``state.changed`` events and the top-level ``state`` of published events. Open
        permission requests are rebuilt too, so they can be answered in the fork.
        """
        db = self._writer
        assert db is not None
        perms: dict[str, Permission] = {}
        head, last_ts = self.head_seq, self.last_ts
        await db.execute("BEGIN IMMEDIATE")
        try:
            rows: list[tuple[Any, ...]] = []
            async for raw in origin.iter_raw(at_seq):
                event = orjson.loads(raw)
                if event["seq"] != self.head_seq + 1:
                    raise InternalError(f"event {event['seq']} does not follow seq"
                                        f" {self.head_seq}")
                if not keep_ids:
                    event["id"] = protocol.new_event_id()
                if event["type"] in PERMISSION_TYPES:
                    await db.execute(INSERT_PERMISSION, permission_row(
                        self.permissions, event["type"], event["data"],
                        orjson.dumps(event["source"]), event["seq"], perms,
                    ))
                stmts = event.get("state") or (
                    event["data"].get("statements") if event["type"] == "state.changed" else None
                )
                if stmts:
                    if rows:
                        await db.executemany(INSERT_EVENT, rows)
                        rows.clear()
                    try:
                        await in_thread(db, self._run_client_writes,
                                        protocol.parse_statements(stmts, "statements"),
                                        rebuild=True)
                    except TransactionLost as lost:
                        raise lost.error from None
                rows.append((
                    event["seq"], event["ts"], event["type"], event.get("turnId"),
                    event.get("idempotencyKey"), raw if keep_ids else orjson.dumps(event),
                ))
                self.head_seq, self.last_ts = event["seq"], event["ts"]
            if rows:
                await db.executemany(INSERT_EVENT, rows)
            await db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):
                await db.execute("ROLLBACK")
            self.head_seq, self.last_ts = head, last_ts
            raise
        self.permissions.update(perms)
