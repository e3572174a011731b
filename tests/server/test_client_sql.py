"""Client SQL against a real hub: what state/query and state/exec refuse (hub tables,
writes, transactions, ATTACH, PRAGMA, triggers and views over hub tables), SQLite's own
errors, runaway statements, and values SQLite cannot hold."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from server.hub import Hub
from tests.conftest import HubFactory, Raw, RawFactory
from tests.server.raw_helpers import (
    CONTRACT_CODES,
    FORBIDDEN,
    INVALID_PARAMS,
    assert_error,
    collect,
    create,
    event_seqs,
    exec_sql,
    head,
    query,
    request,
    sqlite_has_module,
    tree,
)

RUNAWAY = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c"

# --- state/query -----------------------------------------------------------------------

QUERY_FORBIDDEN = [
    "INSERT INTO t VALUES (1)",
    "UPDATE t SET a = 2",
    "DELETE FROM t",
    "REPLACE INTO t VALUES (3)",
    "CREATE TABLE u(a)",
    "CREATE INDEX i ON t(a)",
    "DROP TABLE t",
    "DROP VIEW events",
    "ALTER TABLE t ADD COLUMN b",
    "ATTACH DATABASE ':memory:' AS m",
    "PRAGMA journal_mode=DELETE",
    "PRAGMA writable_schema=1",
    "PRAGMA user_version=7",
    "PRAGMA query_only=0",
    "SELECT * FROM ax_events",
    "SELECT raw FROM ax_events",
    "SELECT count(*) FROM ax_events",
    "SELECT * FROM ax_meta",
    "SELECT * FROM ax_permissions",
    "SELECT e.seq FROM events e JOIN ax_meta m",
    "SELECT (SELECT value FROM ax_meta WHERE key = 'epoch')",
    "SELECT * FROM (SELECT raw FROM ax_events) AS events",
    "SELECT load_extension('x')",
    "SELECT load_extension('x', 'y')",
    "SELECT * FROM dbstat",
    "BEGIN",
]


@pytest.mark.parametrize("sql", QUERY_FORBIDDEN)
async def test_hostile_query_is_forbidden(raw: Raw, sql: str) -> None:
    """state/query refuses writes, ATTACH, PRAGMA writes, ax_ tables and load_extension (-32003)."""
    await create(raw)
    assert "result" in await exec_sql(raw, "CREATE TABLE t(a)", "INSERT INTO t VALUES (1)")
    assert_error(await query(raw, sql), FORBIDDEN)
    assert await head(raw) == 2
    assert (await raw.call("state/query", {"sessionId": "s", "sql": "SELECT a FROM t"}))["rows"] \
        == [[1]]
    assert await event_seqs(raw) == [1, 2]


@pytest.mark.parametrize("sql", [
    "WITH events AS (SELECT raw FROM ax_events) SELECT * FROM events",
    "WITH events AS (SELECT key, value FROM ax_meta) SELECT * FROM events",
    "WITH events AS (SELECT seq, idempotency_key FROM ax_events) SELECT * FROM events",
])
async def test_cte_named_events_cannot_read_hub_tables(raw: Raw, sql: str) -> None:
    """A CTE named like the events view does not open the ax_ tables to state/query (-32003)."""
    await create(raw)
    assert_error(await query(raw, sql), FORBIDDEN)
    assert (await raw.call("state/query", {"sessionId": "s", "sql": "SELECT 1"}))["rows"] == [[1]]


async def test_sqlite_dbpage_is_not_readable(raw: Raw) -> None:
    """Reading sqlite_dbpage is refused (-32003), or unknown to this SQLite build (-32602)."""
    await create(raw)
    expected = FORBIDDEN if sqlite_has_module("sqlite_dbpage") else INVALID_PARAMS
    assert_error(await query(raw, "SELECT data FROM sqlite_dbpage"), expected)
    assert_error(await query(raw, "SELECT * FROM sqlite_dbpage('main')"), expected)
    assert (await raw.call("state/query", {"sessionId": "s", "sql": "SELECT 1"}))["rows"] == [[1]]


@pytest.mark.parametrize("sql", [
    "SELECT count(*) FROM events",
    "SELECT max(seq) FROM events",
    "SELECT seq FROM events",
    "SELECT 1 FROM events LIMIT 1",
    "SELECT EXISTS (SELECT 1 FROM events WHERE seq = 2)",
])
async def test_events_view_is_readable_with_any_columns(raw: Raw, sql: str) -> None:
    """The events view answers aggregates and rowid-only queries, not only column reads."""
    await create(raw)
    await raw.call("session/publish", {"sessionId": "s", "type": "note"})
    result = await raw.call("state/query", {"sessionId": "s", "sql": sql})
    assert result["rows"] in ([[2]], [[1], [2]], [[1]])


async def test_read_only_introspection_is_allowed(raw: Raw) -> None:
    """Read-only PRAGMAs and the events view work in state/query."""
    await create(raw)
    await exec_sql(raw, "CREATE TABLE t(a INTEGER, b TEXT)")
    info = await raw.call("state/query", {"sessionId": "s", "sql": "PRAGMA table_info(t)"})
    assert [row[1] for row in info["rows"]] == ["a", "b"]
    events = await raw.call("state/query", {"sessionId": "s",
                                            "sql": "SELECT seq, type FROM events ORDER BY seq"})
    assert events["rows"] == [[1, "session.created"], [2, "state.changed"]]


# --- state/exec ------------------------------------------------------------------------

EXEC_FORBIDDEN = [
    "INSERT INTO ax_events (seq, ts, type, raw) VALUES (100, 0, 'x', '{}')",
    "INSERT INTO ax_meta (key, value) VALUES ('k', 'v')",
    "UPDATE ax_meta SET value = 'x' WHERE key = 'epoch'",
    "UPDATE ax_events SET type = 'x'",
    "DELETE FROM ax_events",
    "DELETE FROM ax_permissions",
    "REPLACE INTO ax_permissions VALUES ('r', 1, '[]', NULL, NULL)",
    "DROP TABLE ax_events",
    "ALTER TABLE ax_events ADD COLUMN z",
    "ALTER TABLE ax_meta RENAME TO mine",
    "CREATE TABLE ax_mine(a)",
    "CREATE INDEX i ON ax_events(ts)",
    "DROP INDEX ax_events_idempotency",
    "CREATE TRIGGER tr AFTER INSERT ON ax_events BEGIN SELECT 1; END",
    "DROP VIEW events",
    "CREATE VIEW events AS SELECT 1",
    "CREATE TABLE events(a)",
    "CREATE TRIGGER events AFTER INSERT ON t BEGIN SELECT 1; END",
    "CREATE TRIGGER ax_tr AFTER INSERT ON t BEGIN SELECT 1; END",
    "CREATE TEMP TABLE tt(a)",
    "CREATE TEMP VIEW events AS SELECT 1",
    "INSERT INTO t SELECT raw FROM ax_events",
    "INSERT INTO t SELECT value FROM ax_meta",
    "CREATE TABLE leak AS SELECT * FROM ax_permissions",
    "CREATE TABLE leak AS WITH events AS (SELECT raw FROM ax_events) SELECT * FROM events",
    "BEGIN",
    "BEGIN IMMEDIATE",
    "COMMIT",
    "END",
    "ROLLBACK",
    "SAVEPOINT mine",
    "RELEASE client",
    "ROLLBACK TO client",
    "ATTACH DATABASE ':memory:' AS m",
    "ATTACH DATABASE 'elsewhere.db' AS m",
    "DETACH DATABASE main",
    "PRAGMA journal_mode=DELETE",
    "PRAGMA writable_schema=1",
    "PRAGMA user_version=7",
    "PRAGMA foreign_keys=OFF",
    "PRAGMA table_info(t)",
    "SELECT load_extension('x')",
]


@pytest.mark.parametrize("sql", EXEC_FORBIDDEN)
async def test_hostile_exec_is_forbidden_and_rolled_back(
    hub: Hub, raw: Raw, tmp_path: Path, sql: str
) -> None:
    """Hub tables, events view, transactions, ATTACH, PRAGMA: -32003, the request rolled back."""
    await create(raw)
    assert "result" in await exec_sql(raw, "CREATE TABLE t(a)")
    before = tree(tmp_path)
    assert_error(await exec_sql(raw, "INSERT INTO t VALUES ('first')", sql), FORBIDDEN)
    assert tree(tmp_path) == before
    assert await head(raw) == 2
    assert (await raw.call("state/query", {"sessionId": "s", "sql": "SELECT * FROM t"}))["rows"] \
        == []
    assert await event_seqs(raw) == [1, 2]
    ok = await exec_sql(raw, "INSERT INTO t VALUES ('after')")
    assert ok["result"]["seq"] == 3
    assert await raw.call("ping") == {}


async def test_view_over_hub_table_cannot_be_read(raw: Raw) -> None:
    """A client view over ax_events is refused when created or, if created, when read."""
    await create(raw)
    made = await exec_sql(raw, "CREATE VIEW v AS SELECT * FROM ax_events")
    if "error" in made:
        assert_error(made, FORBIDDEN)
        assert await head(raw) == 1
        return
    headed = await head(raw)
    assert_error(await query(raw, "SELECT * FROM v"), FORBIDDEN)
    assert_error(await query(raw, "SELECT count(*) FROM v"), FORBIDDEN)
    assert_error(await exec_sql(raw, "CREATE TABLE copy AS SELECT * FROM v"), FORBIDDEN)
    assert await head(raw) == headed


async def test_trigger_writing_hub_table_cannot_fire(raw: Raw) -> None:
    """A trigger on a client table writing ax_events is refused when it fires; all rolled back."""
    await create(raw)
    made = await exec_sql(
        raw,
        "CREATE TABLE t(a)",
        "CREATE TABLE u(a)",
        "CREATE TRIGGER sneaky AFTER INSERT ON t BEGIN "
        "INSERT INTO ax_events (seq, ts, type, raw) VALUES (1000, 0, 'x', '{}'); END",
    )
    if "error" in made:
        assert_error(made, FORBIDDEN)
        assert await head(raw) == 1
        return
    headed = await head(raw)
    assert_error(await exec_sql(raw, "INSERT INTO u VALUES (1)", "INSERT INTO t VALUES (1)"),
                 FORBIDDEN)
    publish = await raw.request("session/publish", {
        "sessionId": "s", "type": "note", "state": [{"sql": "INSERT INTO t VALUES (2)"}]})
    assert_error(publish, FORBIDDEN)
    assert await head(raw) == headed
    assert (await raw.call("state/query", {"sessionId": "s", "sql": "SELECT a FROM t"}))["rows"] \
        == []
    assert (await raw.call("state/query", {"sessionId": "s", "sql": "SELECT a FROM u"}))["rows"] \
        == []
    assert await event_seqs(raw) == list(range(1, headed + 1))


async def test_trigger_reading_hub_table_cannot_fire(raw: Raw) -> None:
    """A trigger that copies ax_meta into a client table is refused when it fires."""
    await create(raw)
    made = await exec_sql(
        raw, "CREATE TABLE t(a)", "CREATE TABLE leak(v)",
        "CREATE TRIGGER copy AFTER INSERT ON t BEGIN "
        "INSERT INTO leak SELECT value FROM ax_meta; END",
    )
    if "error" in made:
        assert_error(made, FORBIDDEN)
        return
    assert_error(await exec_sql(raw, "INSERT INTO t VALUES (1)"), FORBIDDEN)
    leak = await raw.call("state/query", {"sessionId": "s", "sql": "SELECT * FROM leak"})
    assert leak["rows"] == []


async def run_sql_via(raw: Raw, via: str, sql: str) -> dict[str, Any]:
    """Send ``sql`` through ``via``: state/query, or after a CREATE TABLE in one state/exec
    or one publish's state; return the whole response message."""
    if via == "query":
        return await query(raw, sql)
    if via == "exec":
        return await exec_sql(raw, "CREATE TABLE t(a)", sql)
    return await raw.request("session/publish", {"sessionId": "s", "type": "note",
                                                 "state": [{"sql": "CREATE TABLE t(a)"},
                                                           {"sql": sql}]})


@pytest.mark.parametrize("via", ["query", "exec", "publish"])
@pytest.mark.parametrize(("sql", "fragment"), [
    pytest.param("SELEC 1", "syntax error", id="syntax"),
    pytest.param("SELECT * FROM nowhere", "no such table", id="no-table"),
    pytest.param("SELECT nosuchcolumn FROM events", "no such column", id="no-column"),
    pytest.param("SELECT 1; SELECT 2", "one statement", id="two-statements"),
    pytest.param("SELECT ?", "binding", id="unbound-parameter"),
])
async def test_sql_sqlite_rejects_is_invalid_params(
    raw: Raw, sql: str, fragment: str, via: str
) -> None:
    """SQL that SQLite rejects gets -32602 with SQLite's message, in query, exec and publish."""
    await create(raw)
    err = assert_error(await run_sql_via(raw, via, sql), INVALID_PARAMS)
    assert fragment in err["message"], err
    assert await head(raw) == 1
    assert_error(await query(raw, "SELECT * FROM t"), INVALID_PARAMS)


async def test_failing_constraint_in_state_stores_nothing(raw: Raw) -> None:
    """A publish whose state violates a constraint gets -32602; event and rows are not stored."""
    await create(raw)
    await exec_sql(raw, "CREATE TABLE t(a UNIQUE)", "INSERT INTO t VALUES (1)")
    msg = await raw.request("session/publish", {
        "sessionId": "s", "type": "note", "idempotencyKey": "k1",
        "state": [{"sql": "INSERT INTO t VALUES (2)"}, {"sql": "INSERT INTO t VALUES (1)"}]})
    err = assert_error(msg, INVALID_PARAMS)
    assert "UNIQUE" in err["message"]
    assert await head(raw) == 2
    rows = await raw.call("state/query", {"sessionId": "s", "sql": "SELECT a FROM t"})
    assert rows["rows"] == [[1]]
    again = await raw.call("session/publish", {"sessionId": "s", "type": "note",
                                               "idempotencyKey": "k1"})
    assert again == {"seq": 3, "ts": again["ts"], "duplicate": False}


async def test_runaway_query_is_stopped(hub_factory: HubFactory, raw_factory: RawFactory) -> None:
    """A query running past hub.query_timeout gets an error; the hub keeps answering."""
    hub = await hub_factory(query_timeout=0.3)
    raw = await raw_factory(target=hub)
    await create(raw)
    msg = await raw.request("state/query", {"sessionId": "s", "sql": RUNAWAY}, timeout=10)
    assert "error" in msg
    assert msg["error"]["code"] in CONTRACT_CODES
    assert msg["error"]["message"]
    assert await raw.call("ping") == {}
    assert (await raw.call("state/query", {"sessionId": "s", "sql": "SELECT 1"}))["rows"] == [[1]]


async def test_runaway_exec_is_stopped_and_rolled_back(
    hub_factory: HubFactory, raw_factory: RawFactory
) -> None:
    """A state/exec running past hub.query_timeout gets an error and stores nothing."""
    hub = await hub_factory(query_timeout=0.3)
    raw = await raw_factory(target=hub)
    await create(raw)
    msg = await raw.request("state/exec", {"sessionId": "s", "statements": [
        {"sql": "CREATE TABLE t(a)"},
        {"sql": "INSERT INTO t WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c)"
                " SELECT x FROM c"},
    ]}, timeout=10)
    assert "error" in msg and msg["error"]["code"] in CONTRACT_CODES
    assert await head(raw) == 1
    assert_error(await query(raw, "SELECT * FROM t"), INVALID_PARAMS)
    assert (await raw.call("session/publish", {"sessionId": "s", "type": "note"}))["seq"] == 2


async def test_runaway_query_is_stopped_while_state_exec_runs(
    hub_factory: HubFactory, raw_factory: RawFactory
) -> None:
    """A runaway query is still stopped at hub.query_timeout when a state/exec runs meanwhile."""
    hub = await hub_factory(query_timeout=0.3)
    reader = await raw_factory(target=hub)
    writer = await raw_factory(target=hub)
    await create(writer)
    pending = asyncio.create_task(
        reader.request("state/query", {"sessionId": "s", "sql": RUNAWAY}, timeout=30)
    )
    for i in range(10):  # some of these overlap the running query
        assert "result" in await exec_sql(writer, f"CREATE TABLE t{i}(a)")
    done, _ = await asyncio.wait({pending}, timeout=3)
    if not done:
        # Free the stuck query thread so that the hub can stop, then report.
        session = hub.sessions.open["s"]
        if session.db._query is not None:
            await session.db._query.interrupt()
        await asyncio.wait({pending}, timeout=5)
        pytest.fail("the runaway query was not stopped within 3 s (query_timeout is 0.3 s)")
    msg = pending.result()
    assert "error" in msg and msg["error"]["code"] in CONTRACT_CODES
    assert (await reader.call("state/query", {"sessionId": "s", "sql": "SELECT 1"}))["rows"] \
        == [[1]]


# --- values SQLite cannot hold -----------------------------------------------------------

@pytest.mark.parametrize(("method", "params"), [
    pytest.param("state/query", {"sql": "SELECT ?", "params": [2**63]}, id="query-list"),
    pytest.param("state/query", {"sql": "SELECT :v", "params": {"v": 2**64 - 1}},
                 id="query-named"),
    pytest.param("state/exec",
                 {"statements": [{"sql": "INSERT INTO t VALUES (?)", "params": [2**63]}]},
                 id="exec"),
    pytest.param("session/publish", {"type": "note", "state": [
        {"sql": "INSERT INTO t VALUES (?)", "params": [2**64 - 1]}]}, id="publish-state"),
])
async def test_sql_parameter_beyond_64_bits_is_invalid_params(
    raw: Raw, method: str, params: dict[str, Any]
) -> None:
    """An SQL parameter SQLite cannot bind (an integer over 2**63-1) gets -32602, stores nothing."""
    await create(raw)
    await exec_sql(raw, "CREATE TABLE t(a)")
    assert_error(await raw.request(method, {"sessionId": "s", **params}), INVALID_PARAMS)
    assert await head(raw) == 2
    assert (await raw.call("state/query", {"sessionId": "s", "sql": "SELECT * FROM t"}))["rows"] \
        == []


@pytest.mark.parametrize("params", [
    pytest.param({"afterSeq": 2**63}, id="afterSeq-2**63"),
    pytest.param({"beforeSeq": 2**64 - 1}, id="beforeSeq-2**64-1"),
])
async def test_history_bound_beyond_64_bits_is_not_an_internal_error(
    raw: Raw, params: dict[str, Any]
) -> None:
    """session/history with a seq bound over 2**63-1 gets a window or -32602, not -32603."""
    await create(raw)
    msg = await raw.request("session/history", {"sessionId": "s", **params})
    if "error" in msg:
        assert_error(msg, INVALID_PARAMS)
    else:
        assert msg["result"]["headSeq"] == 1


async def test_bad_statement_does_not_fail_other_publishes_in_its_batch(raw: Raw) -> None:
    """One request with an unbindable parameter fails alone: publishes committed with it succeed."""
    await create(raw)
    await exec_sql(raw, "CREATE TABLE t(a)")
    ids: list[str] = []
    for i in range(80):
        if i == 40:
            await raw.send(request("bad", "state/exec", {"sessionId": "s", "statements": [
                {"sql": "INSERT INTO t VALUES (?)", "params": [2**63]}]}))
        rid = f"ok{i}"
        ids.append(rid)
        await raw.send(request(rid, "session/publish", {"sessionId": "s", "type": "note"}))
    got = await collect(raw, [*ids, "bad"])
    failed = {rid: got[rid]["error"] for rid in ids if "error" in got[rid]}
    assert failed == {}, f"{len(failed)} valid publishes failed, e.g. {next(iter(failed.values()))}"
    assert "error" in got["bad"]
    assert await head(raw) == 2 + len(ids)
