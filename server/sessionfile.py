"""A session file's layout, and what is done to one without an open :class:`SessionDatabase`:
the schema, the facts the file keeps about its session, inserting events in few
statements, reading the file's description and head, removing it."""

from __future__ import annotations

import contextlib
import functools
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from server.events import AgentState
from server.protocol import SessionInfo

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


def read_meta(path: Path) -> SessionMeta:
    """Read a session file's own description without opening it for writing."""
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
    except (sqlite3.Error, KeyError, ValueError) as exc:
        raise OSError(f"{path} is not an axtui session file: {exc}") from exc


def read_info(path: Path) -> SessionInfo:
    """A session file's description and head, read without opening it for writing."""
    try:
        head, ts = read_head(path)
    except sqlite3.Error as exc:
        raise OSError(f"{path} is not an axtui session file: {exc}") from exc
    return read_meta(path).info(head, ts)


def read_head(path: Path) -> tuple[int, int]:
    """The head seq and its ts in a session file (0, 0 when empty)."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = con.execute("SELECT seq, ts FROM ax_events ORDER BY seq DESC LIMIT 1").fetchone()
    finally:
        con.close()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def remove_files(path: Path) -> None:
    """Delete a session file with its WAL and shared-memory files."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{path}{suffix}").unlink()
