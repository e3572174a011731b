"""What a viewer's or participant's SQL cannot get around: the size of one value
(``hub.max_value_bytes``), of a whole answer and of a history page
(``hub.max_result_bytes``), SQLite's statistics tables and the hub's names."""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson
import pytest

from server.hub import Hub
from tests.conftest import HubFactory, Raw, RawFactory
from tests.server.raw_helpers import (
    FORBIDDEN,
    TOO_LARGE,
    assert_error,
    create,
    exec_sql,
    head,
    query,
    rows,
)

KIB = 1024


# --- one value -------------------------------------------------------------------------------

@pytest.mark.parametrize("sql", [
    "SELECT zeroblob(100000000)",
    "SELECT length(zeroblob(100000000))",
    "SELECT randomblob(3000000)",
    "SELECT hex(zeroblob(600000))",
])
async def test_query_cannot_make_a_value_over_max_value_bytes(raw: Raw, sql: str) -> None:
    """A state/query making a value over hub.max_value_bytes (1 MiB) gets -32013 naming
    the limit; SQLite refuses before it allocates, so the hub never holds it."""
    await create(raw)
    err = assert_error(await query(raw, sql), TOO_LARGE)
    assert "hub.max_value_bytes" in err["message"]
    assert err["data"]["limit"] == 1024 * KIB
    assert await rows(raw, "SELECT length(zeroblob(1000))") == [[1000]]


async def test_exec_cannot_make_a_value_over_max_value_bytes(raw: Raw) -> None:
    """A state/exec storing a value over hub.max_value_bytes gets -32013 and stores nothing."""
    await create(raw)
    await exec_sql(raw, "CREATE TABLE t(a)")
    assert_error(await exec_sql(raw, "INSERT INTO t VALUES (zeroblob(50000000))"), TOO_LARGE)
    assert await head(raw) == 2
    assert await rows(raw, "SELECT count(*) FROM t") == [[0]]


# --- a whole answer --------------------------------------------------------------------------

async def small_limits_hub(hub_factory: HubFactory, raw_factory: RawFactory) -> tuple[Hub, Raw]:
    """A hub answering at most 256 KiB per query answer or history page."""
    hub = await hub_factory(max_result_bytes=256 * KIB, max_value_bytes=128 * KIB)
    return hub, await raw_factory(target=hub)


async def test_query_answer_stops_at_max_result_bytes(
    hub_factory: HubFactory, raw_factory: RawFactory
) -> None:
    """Rows that together pass hub.max_result_bytes are cut there: truncated is true and
    the answer stays under the limit."""
    _, raw = await small_limits_hub(hub_factory, raw_factory)
    await create(raw)
    await exec_sql(raw, "CREATE TABLE t(a)", "INSERT INTO t WITH RECURSIVE c(x) AS"
                   " (SELECT 1 UNION ALL SELECT x+1 FROM c LIMIT 40)"
                   " SELECT printf('%.*c', 30000, 'x') FROM c")
    msg = await query(raw, "SELECT a FROM t", limit=1000)
    result = msg["result"]
    assert result["truncated"] is True
    assert 0 < len(result["rows"]) < 40
    assert len(orjson.dumps(result["rows"])) <= 256 * KIB
    small = await query(raw, "SELECT substr(a, 1, 10) FROM t", limit=1000)
    assert small["result"]["truncated"] is False and len(small["result"]["rows"]) == 40


async def test_a_single_row_over_max_result_bytes_is_too_large(
    hub_factory: HubFactory, raw_factory: RawFactory
) -> None:
    """A first row alone over hub.max_result_bytes gets -32013 with its size and the limit."""
    _, raw = await small_limits_hub(hub_factory, raw_factory)
    await create(raw)
    sql = "SELECT " + ", ".join(f"zeroblob(100000) AS c{i}" for i in range(4))
    err = assert_error(await query(raw, sql), TOO_LARGE)
    assert err["data"]["limit"] == 256 * KIB and err["data"]["size"] > 256 * KIB


@pytest.mark.parametrize("window", [{"afterSeq": 0}, {"beforeSeq": 100}])
async def test_history_page_stops_at_max_result_bytes(
    hub_factory: HubFactory, raw_factory: RawFactory, window: dict[str, Any]
) -> None:
    """A history page holds fewer events when they would pass hub.max_result_bytes, from
    the window's right end (oldest after afterSeq, newest before beforeSeq); paging on
    gets every event once."""
    _, raw = await small_limits_hub(hub_factory, raw_factory)
    await create(raw)
    for i in range(30):
        await raw.call("session/publish", {"sessionId": "s", "type": "note",
                                           "data": {"i": i, "pad": "x" * 30_000}})
    page = (await raw.call("session/history", {"sessionId": "s", "limit": 5000, **window}))
    events = page["events"]
    assert 0 < len(events) < 31
    assert sum(len(orjson.dumps(e)) for e in events) <= 256 * KIB
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs)
    assert seqs[0 if "afterSeq" in window else -1] == (1 if "afterSeq" in window else 31)
    seen = list(seqs)
    while True:
        step = ({"afterSeq": seen[-1]} if "afterSeq" in window
                else {"beforeSeq": min(seen)})
        more = (await raw.call("session/history", {"sessionId": "s", "limit": 5000, **step}))
        if not more["events"]:
            break
        seen.extend(e["seq"] for e in more["events"])
    assert sorted(seen) == list(range(1, 32))


# --- the statistics tables and the hub's names ---------------------------------------------

@pytest.mark.parametrize("sql", [
    "ANALYZE",
    "ANALYZE t",
    "ANALYZE main",
    "ALTER TABLE t RENAME TO ax_x",
    "ALTER TABLE t RENAME TO AX_EVENTS2",
    'ALTER TABLE t RENAME TO "ax_x"',
    "ALTER TABLE t RENAME TO [ax_x]",
    "ALTER TABLE t RENAME TO `ax_x`",
    "ALTER TABLE t RENAME TO 'ax_x'",
    "ALTER TABLE main.t RENAME /* to */ TO ax_x",
    "ALTER TABLE t RENAME\nTO\nax_x",
])
async def test_analyze_and_renames_into_the_hubs_names_are_refused(raw: Raw, sql: str) -> None:
    """ANALYZE and ALTER TABLE ... RENAME TO ax_* get -32003 and change nothing."""
    await create(raw)
    await exec_sql(raw, "CREATE TABLE t(a)", "CREATE INDEX t_a ON t(a)")
    assert_error(await exec_sql(raw, sql), FORBIDDEN)
    assert await head(raw) == 2
    names = await rows(raw, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
    assert ["t"] in names and not any(n[0].lower().startswith(("ax_x", "sqlite_stat"))
                                       for n in names if n[0] not in ("ax_events", "ax_meta",
                                                                      "ax_permissions"))


async def test_renaming_a_column_to_ax_is_allowed(raw: Raw) -> None:
    """Only table names are the hub's: a column may be renamed to ax_something."""
    await create(raw)
    await exec_sql(raw, "CREATE TABLE t(a)")
    assert "result" in await exec_sql(raw, "ALTER TABLE t RENAME COLUMN a TO ax_b")
    assert "result" in await exec_sql(raw, "ALTER TABLE t RENAME TO mine")
    assert "result" in await exec_sql(raw, "INSERT INTO mine (ax_b) VALUES (1)")
    assert await rows(raw, "SELECT ax_b FROM mine") == [[1]]


async def test_statistics_tables_cannot_be_read_or_written(hub: Hub, raw: Raw) -> None:
    """With a sqlite_stat1 in the file (made before this check), clients can neither read
    nor write nor drop it (-32003); the hub's own statements still work."""
    await create(raw)
    await exec_sql(raw, "CREATE TABLE t(a)", "CREATE INDEX t_a ON t(a)")
    path = hub.sessions.open["s"].db.path
    with sqlite3.connect(path) as con:  # as an older hub allowed: ANALYZE by a client
        con.execute("ANALYZE")
    for sql in ["SELECT * FROM sqlite_stat1", "SELECT count(*) FROM sqlite_stat1"]:
        assert_error(await query(raw, sql), FORBIDDEN)
    for sql in [
        "INSERT INTO sqlite_stat1 VALUES ('ax_events', 'ax_events_idempotency', '1000000 1')",
        "UPDATE sqlite_stat1 SET stat = '1 1'",
        "DELETE FROM sqlite_stat1",
        "DROP TABLE sqlite_stat1",
        "CREATE TABLE copy AS SELECT * FROM sqlite_stat1",
    ]:
        assert_error(await exec_sql(raw, sql), FORBIDDEN)
    assert (await raw.call("session/publish", {"sessionId": "s", "type": "note"}))["seq"] == 3
    assert await rows(raw, "SELECT count(*) FROM events") == [[3]]
