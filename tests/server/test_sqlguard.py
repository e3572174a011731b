"""The SQL guard on a real SQLite file, without a hub."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from server.sessionfile import SCHEMA
from server.sqlguard import EVENTS_VIEW_READS, Policy, SqlGuard


@pytest.fixture
def db(tmp_path: Path) -> sqlite3.Connection:
    """A session schema with one event and one client table."""
    con = sqlite3.connect(tmp_path / "s.db", isolation_level=None, cached_statements=0)
    con.executescript(SCHEMA)
    con.execute("INSERT INTO ax_events VALUES (1, 5, 'note', NULL, 'k', "
                "'{\"source\": {\"name\": \"a\"}, \"data\": {\"x\": 1}}')")
    con.execute("CREATE TABLE t (a)")
    return con


def run(con: sqlite3.Connection, policy: Policy, sql: str) -> list[tuple[object, ...]]:
    """Run ``sql`` under ``policy`` as the hub does for a client statement."""
    guard = SqlGuard(policy)
    con.set_authorizer(guard)
    guard.begin_statement()
    try:
        return con.execute(sql).fetchall()
    finally:
        con.set_authorizer(None)


def test_view_reads_match_the_schema(db: sqlite3.Connection) -> None:
    """EVENTS_VIEW_READS is exactly what SQLite reads for one use of the events view."""
    reads: list[str] = []

    def record(action: int, table: str | None, column: str | None, _db: str | None,
               inner: str | None) -> int:
        if action == sqlite3.SQLITE_READ and inner == "events":
            reads.append(column or "")
        return sqlite3.SQLITE_OK

    db.set_authorizer(record)
    db.execute("SELECT * FROM events").fetchall()
    assert tuple(reads) == EVENTS_VIEW_READS


@pytest.mark.parametrize("sql", [
    "SELECT * FROM events",
    "SELECT count(*) FROM events",
    "SELECT max(seq) FROM events WHERE seq > 0",
    "SELECT a.seq FROM events a JOIN events b ON a.seq = b.seq",
    "SELECT (SELECT count(*) FROM events), json_extract(data, '$.x') FROM events",
    "WITH recent AS (SELECT * FROM events) SELECT seq FROM recent",
    "WITH events AS (SELECT a FROM t) SELECT * FROM events",
])
def test_events_view_readable(db: sqlite3.Connection, sql: str) -> None:
    """Every way of reading the events view is allowed."""
    run(db, Policy.READ, sql)


@pytest.mark.parametrize("sql", [
    "SELECT * FROM ax_events",
    "SELECT count(*) FROM ax_events",
    "WITH events AS (SELECT raw FROM ax_events) SELECT * FROM events",
    "WITH events AS (SELECT idempotency_key FROM ax_events) SELECT * FROM events",
    "WITH events AS (SELECT key, value FROM ax_meta) SELECT * FROM events",
    "SELECT * FROM events, ax_meta",
    "SELECT * FROM sqlite_dbpage",
])
def test_hub_tables_unreadable(db: sqlite3.Connection, sql: str) -> None:
    """The hub's tables cannot be read directly, by CTEs named events, or via joins."""
    with pytest.raises(sqlite3.DatabaseError):
        run(db, Policy.READ, sql)


@pytest.mark.parametrize(("policy", "sql"), [
    (Policy.WRITE, "INSERT INTO ax_events (seq, ts, type, raw) VALUES (9, 1, 'x', '{}')"),
    (Policy.WRITE, "DROP VIEW events"),
    (Policy.WRITE, "CREATE TRIGGER events AFTER INSERT ON t BEGIN SELECT 1; END"),
    (Policy.WRITE, "CREATE INDEX i ON ax_events (type)"),
    (Policy.WRITE, "CREATE TEMP TABLE x (a)"),
    (Policy.WRITE, "BEGIN"),
    (Policy.WRITE, "PRAGMA user_version = 3"),
    (Policy.READ, "INSERT INTO t VALUES (1)"),
    (Policy.READ, "PRAGMA journal_mode = DELETE"),
    (Policy.READ, "SELECT load_extension('x')"),
])
def test_forbidden_statements(db: sqlite3.Connection, policy: Policy, sql: str) -> None:
    """Writes to the hub's objects, transaction control and unsafe pragmas are refused."""
    guard = SqlGuard(policy)
    db.set_authorizer(guard)
    with pytest.raises(sqlite3.DatabaseError):
        db.execute(sql)
    assert guard.denial


def test_client_tables_writable(db: sqlite3.Connection) -> None:
    """Under WRITE the application's own tables, views and triggers are fine."""
    for sql in ("CREATE TABLE tickets (id INTEGER PRIMARY KEY, status TEXT)",
                "CREATE INDEX tickets_status ON tickets (status)",
                "CREATE VIEW open_tickets AS SELECT * FROM tickets WHERE status = 'open'",
                "INSERT INTO tickets VALUES (1, 'open')",
                "UPDATE tickets SET status = 'closed'",
                "DROP VIEW open_tickets"):
        run(db, Policy.WRITE, sql)


def test_read_pragmas_allowed(db: sqlite3.Connection) -> None:
    """Introspection pragmas work in state/query."""
    assert run(db, Policy.READ, "PRAGMA table_info(t)")[0][1] == "a"
