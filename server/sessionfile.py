"""A session file's layout, and what is done to one without an open :class:`SessionDatabase`:
the schema, the facts the file keeps about its session, inserting events in few
statements, reading the file's description and head, setting a bad file aside
(quarantine), removing it.

Reading a file fails with a :class:`SessionFileError`: :class:`SessionFileDamaged` when
the file is not a session file at all (it is quarantined, never retried),
:class:`SessionFileLocked` when another program holds a lock on it (an error for that
session only, retried at its next use), the base class for anything else (a missing file,
an I/O error).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from server.events import AgentState
from server.protocol import InternalError, SessionInfo

FORMAT_VERSION = "1"

SCHEMA = """
CREATE TABLE IF NOT EXISTS ax_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ax_events (
    seq INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,
    type TEXT NOT NULL,
    turn_id TEXT,
    idempotency_key TEXT,
    raw TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS ax_events_idempotency
    ON ax_events (idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE TABLE IF NOT EXISTS ax_permissions (
    request_id TEXT PRIMARY KEY,
    request_seq INTEGER NOT NULL,
    options TEXT NOT NULL,
    answered_seq INTEGER,
    answered_by TEXT
);
CREATE VIEW IF NOT EXISTS events AS
    SELECT seq, ts, type,
           json_extract(raw, '$.source') AS source,
           json_extract(raw, '$.data') AS data,
           turn_id
    FROM ax_events;
"""

INSERT_EVENT = (
    "INSERT INTO ax_events (seq, ts, type, turn_id, idempotency_key, raw) "
    "VALUES (?, ?, ?, ?, ?, CAST(? AS TEXT))"
)
INSERT_EVENT_ROWS = INSERT_EVENT.partition(" VALUES ")[0] + " VALUES "
MAX_ROWS_PER_INSERT = 128  # 768 parameters: under the 999 of older SQLite builds


@dataclass(slots=True)
class SessionMeta:
    """The facts about a session kept inside its own file (so a copied file is complete)."""

    session_id: str
    epoch: str
    title: str
    agent: str | None
    metadata: dict[str, Any]
    created_at: int

    def info(self, head_seq: int, last_ts: int) -> SessionInfo:
        """The session as the protocol describes it, for a file whose head is ``head_seq``
        (at ``last_ts``): the one conversion from a file's facts to a ``Session`` object.
        Its agent is not running (a file alone cannot say otherwise)."""
        return SessionInfo(
            session_id=self.session_id, epoch=self.epoch, title=self.title, agent=self.agent,
            head_seq=head_seq,
            agent_state=AgentState.SUSPENDED if self.agent else AgentState.NONE,
            created_at=self.created_at, updated_at=last_ts or self.created_at,
            metadata=self.metadata,
        )


def insert_events(con: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Insert ``ax_events`` rows with few statements (in the writer's thread).

    sqlite3 lets go of the GIL around each step of a statement, and ``executemany`` steps
    once per row: on a busy hub each time the writer takes the GIL back it waits for the
    event loop's thread (up to the switch interval, 5 ms), so a group commit of 64 rows
    took tens of milliseconds. One multi-row INSERT per power-of-two chunk (at most eight
    statement texts, all kept in sqlite3's statement cache) steps a few times a batch.
    """
    i, n = 0, len(rows)
    while i < n:
        k = min(MAX_ROWS_PER_INSERT, 1 << ((n - i).bit_length() - 1))
        con.execute(_insert_rows_sql(k), [v for row in rows[i : i + k] for v in row])
        i += k


@functools.cache
def _insert_rows_sql(k: int) -> str:
    return INSERT_EVENT_ROWS + ",".join(["(?, ?, ?, ?, ?, CAST(? AS TEXT))"] * k)


class SessionFileError(OSError):
    """A session file cannot be read (missing, unreadable, or an I/O error)."""


class SessionFileDamaged(SessionFileError):
    """The file is not a usable session file: it is set aside, not retried."""


class SessionFileLocked(SessionFileError):
    """Another program holds a lock on the file: the session is unusable until it lets go."""


def file_error(path: Path, exc: Exception) -> SessionFileError:
    """The :class:`SessionFileError` for what reading or opening ``path`` raised."""
    text = str(exc)
    if isinstance(exc, sqlite3.OperationalError):
        if "locked" in text or "busy" in text:
            return SessionFileLocked(
                f"{path.name} is locked by another program ({text}); let it go and try again"
            )
        if "unable to open" in text or "disk I/O" in text or "readonly" in text:
            return SessionFileError(f"{path.name} cannot be read: {text}")
    if isinstance(exc, OSError) and not isinstance(exc, SessionFileError):
        return SessionFileError(f"{path.name} cannot be read: {exc}")
    return SessionFileDamaged(f"{path.name} is not an axtui session file: {text or exc!r}")


def read_meta(path: Path) -> SessionMeta:
    """Read a session file's own description without opening it for writing (blocking:
    run it in a thread; a locked file waits up to SQLite's 5 s busy timeout)."""
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            values = dict(con.execute("SELECT key, value FROM ax_meta").fetchall())
        finally:
            con.close()
        return SessionMeta(
            session_id=values["session_id"], epoch=values["epoch"], title=values["title"],
            agent=values["agent"] or None, metadata=orjson.loads(values["metadata"]),
            created_at=int(values["created_at"]),
        )
    except (sqlite3.Error, KeyError, ValueError, TypeError) as exc:
        raise file_error(path, exc) from exc


def read_info(path: Path) -> SessionInfo:
    """A session file's description and head, read without opening it for writing."""
    meta = read_meta(path)
    head, ts = read_head(path)
    return meta.info(head, ts)


def read_head(path: Path) -> tuple[int, int]:
    """The head seq and its ts in a session file (0, 0 when empty; blocking)."""
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            row = con.execute(
                "SELECT seq, ts FROM ax_events ORDER BY seq DESC LIMIT 1"
            ).fetchone()
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise file_error(path, exc) from exc
    return (int(row[0]), int(row[1])) if row else (0, 0)


SIDE_FILES = ("-wal", "-shm", "-journal")
BUILDING_PREFIX = ".new-"  # never a session id: ids start with a letter or a digit


def building_path(path: Path) -> Path:
    """A fresh temporary name next to ``path``, where a new session file is built before
    it is moved into place (a name no session id can have)."""
    return path.with_name(f"{BUILDING_PREFIX}{path.stem}-{secrets.token_hex(4)}.db")


def remove_files(path: Path) -> None:
    """Delete a session file with its WAL and shared-memory files.

    The database goes first: a crash midway leaves an orphan WAL, which
    :func:`remove_stale_side_files` clears before a file of that name is made again, and
    never a database without the WAL holding its last commits.
    """
    for suffix in ("", *SIDE_FILES):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{path}{suffix}").unlink()


def remove_stale_side_files(path: Path) -> None:
    """Delete the WAL, shared-memory and journal files left of a ``path`` that is gone:
    SQLite would replay an old WAL into a new database of the same name."""
    for suffix in SIDE_FILES:
        with contextlib.suppress(FileNotFoundError):
            Path(f"{path}{suffix}").unlink()


def file_identity(path: Path) -> tuple[int, int] | None:
    """``(st_dev, st_ino)`` of ``path``, or ``None`` if there is no such file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


class SessionFileGone(InternalError):
    """The session's file was deleted or replaced while the session was open: what was
    committed since went to a file nobody will open again, so it is never acknowledged."""


class FileGuard:
    """Whether a session file is still the one that was opened (blocking calls: a stat).

    SQLite goes on committing into a file deleted or replaced under it, and keeps the WAL
    under the file's name: a new file there would be read with the old WAL.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.wal_path = Path(f"{path}-wal")
        self._file: tuple[int, int] | None = None
        self._wal: tuple[int, int] | None = None
        self._on_gone: tuple[asyncio.AbstractEventLoop, Callable[[bool], None]] | None = None

    def watch(self, on_gone: Callable[[bool], None]) -> None:
        """Call ``on_gone(deleted)`` on this event loop when :meth:`check` finds the file
        deleted (``True``) or replaced (``False``), before its error reaches the caller."""
        self._on_gone = (asyncio.get_running_loop(), on_gone)

    def check(self, session_id: str) -> None:
        """Raise :class:`SessionFileGone` if the file is no longer the one opened (from
        any thread: a commit checks it before it is acknowledged)."""
        what = self.changed()
        if what is None:
            return
        if self._on_gone is not None:
            loop, on_gone = self._on_gone
            loop.call_soon_threadsafe(on_gone, what == "deleted")
        raise SessionFileGone(
            f"the file of session {session_id} was {what} while the session was open;"
            " nothing more is stored in it and the session is closed",
            {"sessionId": session_id},
        )

    def record(self) -> None:
        """Remember the file (and its WAL, if there is one yet) as opened now."""
        self._file, self._wal = file_identity(self.path), file_identity(self.wal_path)

    def changed(self) -> str | None:
        """``None`` while the file is the one opened; else ``"deleted"`` or ``"replaced by
        another file"``."""
        now = file_identity(self.path)
        if now == self._file:
            if self._wal is None:  # SQLite makes the WAL at the first commit
                self._wal = file_identity(self.wal_path)
            return None
        return "deleted" if now is None else "replaced by another file"

    def remove_own_wal(self) -> None:
        """Once the database is closed, delete the WAL and shared memory it left at the
        path if they are still its own (its file was replaced: SQLite keeps them then)."""
        wal = file_identity(self.wal_path)
        if wal is not None and wal == self._wal:
            remove_stale_side_files(self.path)


def move_into_place(building: Path, path: Path, *, sync: bool) -> None:
    """Link the whole new file ``building`` as ``path`` and drop its temporary name;
    ``FileExistsError`` if ``path`` exists (blocking). A WAL left of an older file of that
    name goes first: SQLite would replay it into the new file."""
    if not path.exists():
        remove_stale_side_files(path)
    os.link(building, path)
    building.unlink()
    if sync:
        sync_file(path.parent)


def sync_file(path: Path) -> None:
    """fsync a file or a directory (a directory: so that a link in it survives a power
    loss)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def quarantine(path: Path, quarantine_dir: Path, reason: str) -> Path:
    """Move the session file ``path`` (with its WAL and shared-memory files) into
    ``quarantine_dir``, beside a ``.reason`` file saying why; returns its new path.

    Nothing is deleted: the operator can look at the file, export it, or put it back.
    The side files move first, so that a crash midway never leaves the WAL behind.
    """
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    target = quarantine_dir / path.name
    n = 0
    while any(Path(f"{target}{s}").exists() for s in ("", *SIDE_FILES, ".reason")):
        n += 1
        target = quarantine_dir / f"{path.stem}.{n}.db"
    for suffix in (*SIDE_FILES, ""):
        with contextlib.suppress(FileNotFoundError):
            os.rename(f"{path}{suffix}", f"{target}{suffix}")
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    Path(f"{target}.reason").write_text(
        f"{stamp}: sessions/{path.name} was set aside: {reason}\n"
    )
    return target


def quarantined_files(quarantine_dir: Path) -> int:
    """How many session files are set aside in ``quarantine_dir``."""
    try:
        return sum(1 for p in quarantine_dir.iterdir() if p.name.endswith(".db"))
    except FileNotFoundError:
        return 0


RECORDED_FIELDS = ("seq", "id", "ts", "type", "source", "data", "idempotencyKey", "turnId")


def recorded_fields(event: dict[str, Any]) -> dict[str, Any]:
    """An imported event with the fields of an event only, in the order the hub writes them."""
    fields = {name: event.get(name) for name in RECORDED_FIELDS}
    if event.get("state") is not None:
        fields["state"] = event["state"]
    return fields


class RecordedEvents:
    """Recorded events (an export's) as the :class:`~server.writes.EventSource` an import
    builds a new session file from."""

    def __init__(self, events: Sequence[dict[str, Any]]) -> None:
        self.events = events

    async def iter_raw(self, up_to_seq: int) -> AsyncIterator[bytes]:
        """The events with seq up to ``up_to_seq``, encoded."""
        for event in self.events[:up_to_seq]:
            yield orjson.dumps(event)
