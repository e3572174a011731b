"""Client SQL in a group commit harms no one else's event: conflict clauses that would roll
back the whole transaction are refused, a write cut off by ``hub.query_timeout`` fails
alone, and ``hub.commit_budget`` keeps slow client SQL from holding other publishes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.conftest import HubFactory, Raw, RawFactory
from tests.server.raw_helpers import (
    FORBIDDEN,
    INVALID_PARAMS,
    assert_error,
    collect,
    create,
    exec_sql,
    head,
    request,
    rows,
)

RUNAWAY_INSERT = ("INSERT INTO t WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c)"
                  " SELECT x FROM c")


async def with_bystanders(raw: Raw, bad: dict[str, Any], count: int = 40) -> dict[str, Any]:
    """Pipeline ``count`` publishes, the ``bad`` state/exec params, ``count`` more publishes
    (so they share group commits); check every publish committed; the bad one's response."""
    ids: list[str] = []
    for i in range(2 * count):
        if i == count:
            await raw.send(request("bad", "state/exec", {"sessionId": "s", **bad}))
        rid = f"ok{i}"
        ids.append(rid)
        await raw.send(request(rid, "session/publish", {"sessionId": "s", "type": "note"}))
    got = await collect(raw, [*ids, "bad"], timeout=30)
    failed = {rid: got[rid]["error"] for rid in ids if "error" in got[rid]}
    assert failed == {}, f"{len(failed)} bystanders failed, e.g. {next(iter(failed.values()))}"
    return got["bad"]


# --- conflict clauses that roll back the transaction ---------------------------------------

ROLLBACK_CLAUSES = [
    "INSERT OR ROLLBACK INTO u VALUES (1)",
    "insert or rollback into u values (1)",
    "INSERT /* ok */ OR/**/ROLLBACK INTO u VALUES (1)",
    "INSERT OR\n-- a comment\nROLLBACK INTO u VALUES (1)",
    "UPDATE OR ROLLBACK u SET a = 1",
    "CREATE TABLE v(a UNIQUE ON CONFLICT ROLLBACK)",
    "CREATE TABLE v(a PRIMARY KEY ON CONFLICT ROLLBACK)",
    "CREATE TABLE v(a NOT NULL ON CONFLICT ROLLBACK)",
    "CREATE TABLE v(a, b, UNIQUE (a, b) ON CONFLICT ROLLBACK)",
    "CREATE TRIGGER tr AFTER INSERT ON u BEGIN SELECT RAISE(ROLLBACK, 'no'); END",
    "CREATE TRIGGER tr AFTER INSERT ON u BEGIN INSERT OR ROLLBACK INTO u VALUES (1); END",
]


@pytest.mark.parametrize("sql", ROLLBACK_CLAUSES)
async def test_rollback_conflict_clause_is_refused(raw: Raw, sql: str) -> None:
    """A ROLLBACK conflict clause (or RAISE(ROLLBACK)) gets -32003 and stores nothing."""
    await create(raw)
    assert "result" in await exec_sql(raw, "CREATE TABLE u(a UNIQUE)", "INSERT INTO u VALUES (1)")
    err = assert_error(await exec_sql(raw, "INSERT INTO u VALUES (2)", sql), FORBIDDEN)
    assert "ROLLBACK" in err["message"]
    assert await head(raw) == 2
    assert await rows(raw, "SELECT a FROM u") == [[1]]


@pytest.mark.parametrize("sql", [
    "INSERT INTO u VALUES ('OR ROLLBACK')",
    "INSERT INTO u VALUES ('it''s OR ROLLBACK')",
    'CREATE TABLE "rollback"(a)',
    "CREATE TABLE [or rollback](a)",
    "INSERT OR ABORT INTO u VALUES (5) -- OR ROLLBACK",
    "INSERT /* OR ROLLBACK */ OR FAIL INTO u VALUES (6)",
    "INSERT INTO u VALUES (:rollback)",
])
async def test_rollback_inside_strings_names_and_comments_is_allowed(raw: Raw, sql: str) -> None:
    """ROLLBACK in a string, a quoted name, a comment or a parameter name is not refused."""
    await create(raw)
    assert "result" in await exec_sql(raw, "CREATE TABLE u(a UNIQUE)")
    msg = await raw.request("state/exec", {"sessionId": "s", "statements": [
        {"sql": sql, "params": {"rollback": 7} if ":rollback" in sql else []}]})
    assert "result" in msg, msg


async def test_rollback_clause_does_not_fail_bystanders(raw: Raw) -> None:
    """INSERT OR ROLLBACK pipelined among publishes fails alone; the publishes commit."""
    await create(raw)
    await exec_sql(raw, "CREATE TABLE u(a UNIQUE)", "INSERT INTO u VALUES (1)")
    bad = await with_bystanders(raw, {"statements": [
        {"sql": "INSERT OR ROLLBACK INTO u VALUES (1)"}]})
    assert_error(bad, FORBIDDEN)
    assert await head(raw) == 2 + 80


async def test_rollback_trigger_made_before_the_check_fails_alone(
    hub_factory: HubFactory, raw_factory: RawFactory
) -> None:
    """A RAISE(ROLLBACK) trigger already in the file (made before the check existed) fails
    only the write that fires it, with -32602; the publishes in its batch commit."""
    hub = await hub_factory()
    raw = await raw_factory(target=hub)
    await create(raw)
    await exec_sql(raw, "CREATE TABLE u(a)")
    session = hub.sessions.open["s"]
    writer = session.db._writer
    assert writer is not None
    await writer.execute(  # as the hub: no guard (a file from an older hub)
        "CREATE TRIGGER old AFTER INSERT ON u BEGIN SELECT RAISE(ROLLBACK, 'refused'); END")
    bad = await with_bystanders(raw, {"statements": [{"sql": "INSERT INTO u VALUES (1)"}]})
    err = assert_error(bad, INVALID_PARAMS)
    assert "refused" in err["message"]
    assert await head(raw) == 2 + 80
    assert await rows(raw, "SELECT count(*) FROM u") == [[0]]


# --- a write cut off by the time limit -----------------------------------------------------

async def test_timed_out_write_fails_alone(
    hub_factory: HubFactory, raw_factory: RawFactory
) -> None:
    """A state/exec stopped by hub.query_timeout gets -32602 and stores nothing; the
    publishes committed in the same batch succeed."""
    hub = await hub_factory(query_timeout=0.3)
    raw = await raw_factory(target=hub)
    await create(raw)
    await exec_sql(raw, "CREATE TABLE t(a)")
    bad = await with_bystanders(raw, {"statements": [{"sql": RUNAWAY_INSERT}]})
    err = assert_error(bad, INVALID_PARAMS)
    assert "longer than" in err["message"]
    assert await head(raw) == 2 + 80
    assert await rows(raw, "SELECT count(*) FROM t") == [[0]]
    assert await rows(raw, "SELECT count(*) FROM events WHERE type = 'note'") == [[80]]


# --- the commit budget -----------------------------------------------------------------------

async def acked_at(raw: Raw, ids: list[str], times: dict[str, float]) -> dict[str, Any]:
    """Collect the responses to ``ids``, noting when each arrived in ``times``."""
    got: dict[str, Any] = {}
    async with asyncio.timeout(60):
        while len(got) < len(ids):
            msg = await raw.recv(60)
            if msg.get("id") in ids:
                times[msg["id"]] = time.monotonic()
                got[msg["id"]] = msg
    return got


async def slow_execs_then_a_publish(
    raw_factory: RawFactory, hub: Any, sql: str, count: int = 6
) -> tuple[dict[str, float], dict[str, Any]]:
    """``count`` pipelined state/exec of ``sql`` from one client, then a publish from
    another; when each response arrived, and the responses."""
    slow = await raw_factory(target=hub)
    other = await raw_factory(target=hub)
    await create(slow)
    await exec_sql(slow, "CREATE TABLE t(a)")
    ids = [f"slow{i}" for i in range(count)]
    for rid in ids:
        await slow.send(request(rid, "state/exec", {"sessionId": "s",
                                                    "statements": [{"sql": sql}]}))
    await asyncio.sleep(0.05)  # the slow ones are queued first (order matters, not the time)
    await other.send(request("quick", "session/publish", {"sessionId": "s", "type": "note"}))
    times: dict[str, float] = {}
    slow_got, other_got = await asyncio.gather(acked_at(slow, ids, times),
                                               acked_at(other, ["quick"], times))
    return times, {**slow_got, **other_got}


async def test_slow_client_sql_does_not_hold_another_publish(
    hub_factory: HubFactory, raw_factory: RawFactory
) -> None:
    """Six pipelined state/exec that each run about 0.4 s: another client's publish is
    committed after at most two of them (hub.commit_budget), not after all six."""
    hub = await hub_factory(query_timeout=30, commit_budget=0.1)
    probe = await raw_factory(target=hub)
    await create(probe, "probe")
    count = 200_000
    started = time.monotonic()
    await probe.call("state/query", {"sessionId": "probe", "sql": (
        f"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c LIMIT {count})"
        " SELECT count(*) FROM c")})
    count = max(count, int(count * 0.4 / max(time.monotonic() - started, 1e-3)))
    sql = (f"INSERT INTO t SELECT count(*) FROM (WITH RECURSIVE c(x) AS"
           f" (SELECT 1 UNION ALL SELECT x+1 FROM c LIMIT {count}) SELECT x FROM c)")
    times, got = await slow_execs_then_a_publish(raw_factory, hub, sql)
    assert all("result" in msg for msg in got.values()), got
    slow = sorted(times[f"slow{i}"] for i in range(6))
    assert times["quick"] < slow[3], "the publish waited for the slow state/exec requests"
    seqs = [got[f"slow{i}"]["result"]["seq"] for i in range(6)]
    assert seqs == sorted(seqs)  # the slow client's own order is kept


async def test_timed_out_client_sql_does_not_hold_another_publish(
    hub_factory: HubFactory, raw_factory: RawFactory
) -> None:
    """Six pipelined state/exec that each run into hub.query_timeout: another client's
    publish is committed after at most two of them, and each of the six fails alone."""
    hub = await hub_factory(query_timeout=0.4, commit_budget=0.1)
    times, got = await slow_execs_then_a_publish(raw_factory, hub, RUNAWAY_INSERT)
    assert "result" in got["quick"], got["quick"]
    for i in range(6):
        assert_error(got[f"slow{i}"], INVALID_PARAMS)
    slow = sorted(times[f"slow{i}"] for i in range(6))
    assert times["quick"] < slow[3], "the publish waited for the slow state/exec requests"
