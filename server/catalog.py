"""The hub's catalog (``data_dir/hub.db``): one row per session, and the data-dir lock.

The catalog answers ``session/list`` and ``session/get`` for sessions that are not open,
without touching their files. Each session file is the truth about itself: at start the
catalog is reconciled with the files on disk (a file without a row is added, a row without
a file is dropped, a row left ``dirty`` by a crash is refreshed from its file).

A file that cannot be adopted is set aside in ``data_dir/quarantine`` (with a ``.reason``
file), logged once and counted, and every other session keeps working: a file that is
not a session file, one holding no events (a create cut short), and a copy whose
``ax_meta.session_id`` is not its file name (``alpha-backup.db`` holding ``alpha``: its
events' ids are ``alpha``'s, which must stay unique across the hub). Half-built files of
a create, fork or import cut short (``.new-*``) are removed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import logging
import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from server.events import AgentState
from server.metrics import Metrics
from server.protocol import SESSION_ID_RE, SessionInfo
from server.sessionfile import (
    BUILDING_PREFIX,
    SessionFileDamaged,
    SessionFileError,
    quarantine,
    quarantined_files,
    read_head,
    read_info,
    remove_files,
)

log = logging.getLogger("axtui.catalog")

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    epoch TEXT NOT NULL,
    title TEXT NOT NULL,
    agent TEXT,
    head_seq INTEGER NOT NULL,
    agent_state TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    metadata TEXT NOT NULL,
    agent_session_id TEXT,
    dirty INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS sessions_recent ON sessions (updated_at DESC, session_id DESC);
"""
COLUMNS = "session_id, epoch, title, agent, head_seq, agent_state, created_at, updated_at, metadata"


class DataDirLocked(RuntimeError):
    """Another hub is running on the same data dir."""


class CatalogUnreadable(RuntimeError):
    """``hub.db`` is not a readable catalog: the hub cannot start on it."""


class Catalog:
    """The catalog database and the lock that keeps a second hub off the data dir."""

    def __init__(self, data_dir: Path, metrics: Metrics | None = None) -> None:
        self.data_dir = data_dir
        self.sessions_dir = data_dir / "sessions"
        self.quarantine_dir = data_dir / "quarantine"
        self.metrics = metrics or Metrics()
        self._db: aiosqlite.Connection | None = None
        self._lock_fd: int | None = None
        self._tx = asyncio.Lock()  # one transaction at a time on the shared connection
        self._reconciling: asyncio.Task[None] | None = None

    def session_path(self, session_id: str) -> Path:
        """The file of a session (the id is validated: no path can be smuggled in)."""
        if not SESSION_ID_RE.fullmatch(session_id):
            raise ValueError(f"invalid session id {session_id!r}")
        return self.sessions_dir / f"{session_id}.db"

    async def open(self) -> None:
        """Take the lock, open ``hub.db``, and start reconciling it with the session files.

        Reconciling reads session files (many, after a crash or a lost ``hub.db``), so it
        runs in a thread in the background; every catalog read waits for it.
        """
        self.sessions_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "logs").mkdir(exist_ok=True)
        self._take_lock()
        path = self.data_dir / "hub.db"
        db: aiosqlite.Connection | None = None
        try:
            await asyncio.to_thread(remove_half_built, self.sessions_dir)
            db = await aiosqlite.connect(path, isolation_level=None)
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=NORMAL")
            await db.executescript(SCHEMA)
            await db.execute(f"SELECT {COLUMNS}, agent_session_id, dirty FROM sessions LIMIT 0")
        except sqlite3.Error as exc:
            # Close its thread too, or the process would never exit (aiosqlite's thread
            # is not a daemon).
            if db is not None:
                with contextlib.suppress(Exception):
                    await db.close()
            self._release_lock()
            raise CatalogUnreadable(
                f"{path} is not a readable catalog ({exc}): move it aside and start again"
                " (the hub rebuilds the catalog from the session files)"
            ) from None
        except BaseException:
            if db is not None:
                with contextlib.suppress(Exception):
                    await db.close()
            self._release_lock()
            raise
        self._db = db
        self._reconciling = asyncio.create_task(self._reconcile(), name="catalog reconcile")

    def _take_lock(self) -> None:
        fd = os.open(self.data_dir / "hub.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = ""
            with contextlib.suppress(OSError):
                holder = (self.data_dir / "hub.lock").read_text().strip()
            raise DataDirLocked(
                f"another axtui hub{f' (pid {holder})' if holder else ''} is already using"
                f" {self.data_dir}; stop it or pass a different --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def ready(self) -> None:
        """Wait until the catalog agrees with the session files on disk."""
        if self._reconciling is not None:
            await asyncio.shield(self._reconciling)

    async def _reconcile(self) -> None:
        """Bring the catalog in line with the files: runs after the hub starts listening.

        It never fails: if it cannot finish (say the disk is full) it says so, is counted
        as a background error, and the catalog serves the rows it has.
        """
        try:
            await self._reconcile_once()
        except Exception as exc:  # it is reconciled again at the next start
            self.metrics.background_failed(log, "reconciling the catalog with the files", exc)

    async def _reconcile_once(self) -> None:
        db = self._require()
        async with db.execute("SELECT session_id, dirty FROM sessions") as cur:
            rows = {sid: bool(dirty) async for sid, dirty in cur}
        scan = await asyncio.to_thread(scan_sessions, self, rows)
        self.metrics.quarantined_files = scan.quarantined_before + len(scan.quarantined)
        for sid in scan.gone:
            if sid not in scan.quarantined:
                log.warning("session %s has no file any more; dropping it from the catalog",
                            sid)
        async with self._tx:
            await db.execute("BEGIN")
            try:
                await db.executemany("DELETE FROM sessions WHERE session_id = ?",
                                     [(sid,) for sid in scan.gone])
                await db.executemany(
                    f"INSERT OR REPLACE INTO sessions ({COLUMNS}, dirty)"
                    " VALUES (?,?,?,?,?,?,?,?,?,0)",
                    [_row(info) for info in scan.found],
                )
                await db.executemany(
                    "UPDATE sessions SET head_seq = ?, updated_at = max(updated_at, ?),"
                    " dirty = 0 WHERE session_id = ?",
                    scan.heads,
                )
            except BaseException:
                with contextlib.suppress(Exception):
                    await db.execute("ROLLBACK")
                raise
            await db.execute("COMMIT")
        if scan.found or scan.heads:
            log.info("catalog reconciled: %d sessions found, %d heads refreshed",
                     len(scan.found), len(scan.heads))

    async def quarantine(self, session_id: str, reason: str) -> None:
        """Set the file of ``session_id`` aside (it cannot be used: ``reason``) and drop
        its row; logged once, counted in ``/metrics``."""
        await asyncio.to_thread(
            set_aside, self, self.session_path(session_id), f"session {session_id}", reason
        )
        self.metrics.quarantined_files += 1
        await self.delete(session_id)

    def _require(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("the catalog is not open")
        return self._db

    async def close(self) -> None:
        """Close the database and release the lock."""
        if self._reconciling is not None:
            with contextlib.suppress(Exception):
                await self._reconciling
        if self._db is not None:
            await self._db.close()
            self._db = None
        self._release_lock()

    async def put(self, info: SessionInfo, *, dirty: bool = False) -> None:
        """Insert or replace a session's row."""
        await self.ready()
        async with self._tx:
            await self._require().execute(
                f"INSERT OR REPLACE INTO sessions ({COLUMNS}, dirty) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (*_row(info), int(dirty)),
            )

    async def update_heads(self, infos: Iterable[SessionInfo], *, dirty: bool) -> None:
        """Record the head, times and agent state of open sessions in one transaction."""
        await self.ready()
        rows = [
            (i.head_seq, i.updated_at, i.agent_state, int(dirty), i.session_id) for i in infos
        ]
        if not rows:
            return
        db = self._require()
        async with self._tx:
            await db.execute("BEGIN")
            try:
                await db.executemany(
                    "UPDATE sessions SET head_seq = ?, updated_at = ?, agent_state = ?,"
                    " dirty = ? WHERE session_id = ?",
                    rows,
                )
            except BaseException:
                await db.execute("ROLLBACK")
                raise
            await db.execute("COMMIT")

    async def get(self, session_id: str) -> SessionInfo | None:
        """A session's row, or ``None``."""
        await self.ready()
        async with self._require().execute(
            f"SELECT {COLUMNS} FROM sessions WHERE session_id = ?", (session_id,)
        ) as cur:
            row = await cur.fetchone()
        return _info(row) if row else None

    async def sessions_in_states(self, states: tuple[str, ...]) -> list[str]:
        """Ids of the sessions whose recorded ``agentState`` is one of ``states``."""
        await self.ready()
        marks = ",".join("?" * len(states))
        async with self._require().execute(
            f"SELECT session_id FROM sessions WHERE agent_state IN ({marks})", states
        ) as cur:
            return [row[0] async for row in cur]

    async def agent_session(self, session_id: str) -> str | None:
        """The agent's own session id for this session (to resume it), if any."""
        await self.ready()
        async with self._require().execute(
            "SELECT agent_session_id FROM sessions WHERE session_id = ?", (session_id,)
        ) as cur:
            row = await cur.fetchone()
        return row[0] if row else None

    async def set_agent_session(self, session_id: str, agent_session_id: str | None) -> None:
        """Remember the agent's own session id."""
        await self.ready()
        async with self._tx:
            await self._require().execute(
                "UPDATE sessions SET agent_session_id = ? WHERE session_id = ?",
                (agent_session_id, session_id),
            )

    async def delete(self, session_id: str) -> None:
        """Remove a session's row."""
        await self.ready()
        async with self._tx:
            await self._require().execute(
                "DELETE FROM sessions WHERE session_id = ?", (session_id,)
            )

    async def list(
        self, limit: int, cursor: str | None, agent: str | None
    ) -> tuple[list[SessionInfo], str | None]:
        """Sessions by most recent ``updatedAt`` first, one page, and the next page's cursor."""
        await self.ready()
        where, args = [], []
        if cursor is not None:
            updated_at, sid = decode_cursor(cursor)
            where.append("(updated_at < ? OR (updated_at = ? AND session_id < ?))")
            args += [updated_at, updated_at, sid]
        if agent is not None:
            where.append("agent = ?")
            args.append(agent)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        async with self._require().execute(
            f"SELECT {COLUMNS} FROM sessions {clause}"
            " ORDER BY updated_at DESC, session_id DESC LIMIT ?",
            (*args, limit + 1),
        ) as cur:
            infos = [_info(r) async for r in cur]
        next_cursor = None
        if len(infos) > limit:
            infos = infos[:limit]
            last = infos[-1]
            next_cursor = encode_cursor(last.updated_at, last.session_id)
        return infos, next_cursor


@dataclass
class Scan:
    """What :func:`scan_sessions` found: ids whose file is gone (or was set aside), sessions
    found on disk without a row, ``(head, ts, id)`` for rows a crash left dirty, the ids
    set aside now and the files set aside before."""

    gone: list[str] = field(default_factory=list)
    found: list[SessionInfo] = field(default_factory=list)
    heads: list[tuple[int, int, str]] = field(default_factory=list)
    quarantined: set[str] = field(default_factory=set)
    quarantined_before: int = 0


def scan_sessions(catalog: Catalog, rows: dict[str, bool]) -> Scan:
    """Compare the catalog's rows with the files (blocking: run it in a thread).

    A file that cannot be adopted is set aside (:func:`set_aside`); a locked one is left
    alone (its session fails until it is free).
    """
    scan = Scan(quarantined_before=quarantined_files(catalog.quarantine_dir))
    on_disk: set[str] = set()
    for p in catalog.sessions_dir.iterdir():
        if p.name.endswith(".db") and SESSION_ID_RE.fullmatch(p.name[:-3]):
            on_disk.add(p.name[:-3])
    for sid in sorted(on_disk - set(rows)):
        path = catalog.session_path(sid)
        try:
            info = read_info(path)
        except SessionFileDamaged as exc:
            scan.quarantined.add(sid)
            set_aside(catalog, path, path.name, str(exc))
            continue
        except SessionFileError as exc:
            log.warning("not adopting %s for now: %s", path.name, exc)
            continue
        if info.session_id != sid:
            scan.quarantined.add(sid)
            set_aside(catalog, path, path.name, (
                f"it holds session {info.session_id!r}, not {sid!r} (a copy of"
                f" sessions/{info.session_id}.db?): a session file's name must be its id."
                " To keep it as a session of its own, export it (axtui export --db FILE)"
                " and import the export (axtui import)"
            ))
        elif info.head_seq == 0:
            scan.quarantined.add(sid)
            set_aside(catalog, path, path.name,
                      "it holds no events, not even session.created (a create, fork or"
                      " import cut short by an older hub)")
        else:
            scan.found.append(info)
    for sid, dirty in rows.items():
        if not dirty or sid not in on_disk:
            continue
        path = catalog.session_path(sid)
        try:
            head, ts = read_head(path)
        except SessionFileDamaged as exc:
            scan.quarantined.add(sid)
            set_aside(catalog, path, f"session {sid}", str(exc))
            continue
        except SessionFileError as exc:  # the row stays dirty: opening it refreshes it
            log.warning("could not refresh session %s from its file: %s", sid, exc)
            continue
        scan.heads.append((head, ts, sid))
    scan.gone = sorted((set(rows) - on_disk) | (scan.quarantined & set(rows)))
    return scan


def remove_half_built(sessions_dir: Path) -> None:
    """Remove the files of creates, forks and imports a previous hub did not finish
    (blocking; only before this hub builds any)."""
    for p in sessions_dir.glob(f"{BUILDING_PREFIX}*.db"):
        log.info("removing %s, left by a create, fork or import cut short", p.name)
        remove_files(p)


def set_aside(catalog: Catalog, path: Path, what: str, reason: str) -> None:
    """Quarantine ``path`` and say so once (blocking)."""
    target = quarantine(path, catalog.quarantine_dir, reason)
    log.warning("%s cannot be used: %s; moved sessions/%s to quarantine/%s (see %s.reason);"
                " every other session works as before", what, reason, path.name,
                target.name, target.name)


def encode_cursor(updated_at: int, session_id: str) -> str:
    """An opaque cursor for the page after ``(updated_at, session_id)``."""
    return base64.urlsafe_b64encode(orjson.dumps([updated_at, session_id])).decode()


def decode_cursor(cursor: str) -> tuple[int, str]:
    """Parse a cursor from :func:`encode_cursor`; raises ``ValueError`` if it is not one."""
    try:
        updated_at, sid = orjson.loads(base64.urlsafe_b64decode(cursor.encode()))
    except Exception as exc:
        raise ValueError("cursor is not one this hub gave out") from exc
    if not isinstance(updated_at, int) or not isinstance(sid, str):
        raise ValueError("cursor is not one this hub gave out")
    return updated_at, sid


def _row(info: SessionInfo) -> tuple[Any, ...]:
    return (
        info.session_id, info.epoch, info.title, info.agent, info.head_seq, info.agent_state,
        info.created_at, info.updated_at, orjson.dumps(info.metadata).decode(),
    )


def _info(row: Any) -> SessionInfo:
    sid, epoch, title, agent, head, state, created, updated, metadata = row
    return SessionInfo(
        session_id=sid, epoch=epoch, title=title, agent=agent, head_seq=head,
        agent_state=AgentState.parse(state), created_at=created, updated_at=updated,
        metadata=orjson.loads(metadata),
    )
