"""The hub's catalog (``data_dir/hub.db``): one row per session, and the data-dir lock.

The catalog answers ``session/list`` and ``session/get`` for sessions that are not open,
without touching their files. Each session file is the truth about itself: at start the
catalog is reconciled with the files on disk (a file without a row is added, a row without
a file is dropped, a row left ``dirty`` by a crash is refreshed from its file).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from server.events import AgentState
from server.protocol import SESSION_ID_RE, SessionInfo
from server.sessionfile import read_head, read_info

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


class Catalog:
    """The catalog database and the lock that keeps a second hub off the data dir."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.sessions_dir = data_dir / "sessions"
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
        db = await aiosqlite.connect(self.data_dir / "hub.db", isolation_level=None)
        self._db = db
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=NORMAL")
        await db.executescript(SCHEMA)
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

    async def ready(self) -> None:
        """Wait until the catalog agrees with the session files on disk."""
        if self._reconciling is not None:
            await asyncio.shield(self._reconciling)

    async def _reconcile(self) -> None:
        """Bring the catalog in line with the files: runs after the hub starts listening."""
        db = self._require()
        async with db.execute("SELECT session_id, dirty FROM sessions") as cur:
            rows = {sid: bool(dirty) async for sid, dirty in cur}
        gone, found, heads = await asyncio.to_thread(scan_sessions, self, rows)
        for sid in gone:
            log.warning("session %s has no file any more; dropping it from the catalog", sid)
        async with self._tx:
            await db.execute("BEGIN")
            await db.executemany("DELETE FROM sessions WHERE session_id = ?",
                                 [(sid,) for sid in gone])
            await db.executemany(
                f"INSERT INTO sessions ({COLUMNS}, dirty) VALUES (?,?,?,?,?,?,?,?,?,0)",
                [_row(info) for info in found],
            )
            await db.executemany(
                "UPDATE sessions SET head_seq = ?, updated_at = max(updated_at, ?), dirty = 0"
                " WHERE session_id = ?",
                heads,
            )
            await db.execute("COMMIT")
        if found or heads:
            log.info("catalog reconciled: %d sessions found, %d heads refreshed",
                     len(found), len(heads))

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
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

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


def scan_sessions(
    catalog: Catalog, rows: dict[str, bool]
) -> tuple[list[str], list[SessionInfo], list[tuple[int, int, str]]]:
    """Compare the catalog's rows with the files (blocking: run it in a thread).

    Returns the ids whose file is gone, the sessions found on disk without a row, and
    ``(head, ts, id)`` for rows a crash left dirty.
    """
    on_disk = {p.name[:-3] for p in catalog.sessions_dir.iterdir()
               if p.name.endswith(".db") and SESSION_ID_RE.fullmatch(p.name[:-3])}
    gone = sorted(set(rows) - on_disk)
    found: list[SessionInfo] = []
    for sid in sorted(on_disk - set(rows)):
        path = catalog.session_path(sid)
        try:
            found.append(read_info(path))
        except OSError as exc:
            log.warning("ignoring %s: %s", path, exc)
    heads = []
    for sid, dirty in rows.items():
        if dirty and sid in on_disk:
            head, ts = read_head(catalog.session_path(sid))
            heads.append((head, ts, sid))
    return gone, found, heads


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
