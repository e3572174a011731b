"""One session's SQLite file (:class:`server.sessiondb.SessionDatabase`) on a temp dir,
with no hub and no websocket: group commit, idempotency, client SQL, permissions, history
windows, read-only queries, fork copies and reopening."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from server.protocol import Conflict, Forbidden, InvalidParams, ProtocolError
from server.sessiondb import SessionDatabase
from server.sessionfile import SessionMeta
from server.writes import CommitResult, PendingEvent

ADA = orjson.dumps({"kind": "client", "name": "ada", "client": "tui"})
BOB = orjson.dumps({"kind": "client", "name": "bob", "client": "slack"})
AGENT = orjson.dumps({"kind": "agent", "name": "demo"})
BIG = 1 << 30  # a max_bytes that never cuts a read short


def meta(session_id: str = "s") -> SessionMeta:
    """The description of a test session."""
    return SessionMeta(session_id=session_id, epoch="0123456789abcdef", title="a test",
                       agent=None, metadata={"k": "v"}, created_at=1_700_000_000_000)


def event(event_type: str, data: dict[str, Any] | None = None, *, source: bytes = ADA,
          key: str | None = None, turn_id: str | None = None,
          state: list[dict[str, Any]] | None = None) -> PendingEvent:
    """A published event as the hub builds it (``state``: statements run with it)."""
    future: asyncio.Future[CommitResult] = asyncio.get_running_loop().create_future()
    return PendingEvent(
        event_type, source, orjson.dumps(data or {}), future, idempotency_key=key,
        turn_id=turn_id,
        statements=[(s["sql"], s.get("params", [])) for s in state] if state else None,
        recorded_statements=orjson.dumps(state) if state else None,
    )


def state_exec(*sqls: str, source: bytes = ADA) -> PendingEvent:
    """A ``state/exec`` of ``sqls``, as the hub builds it (recorded as state.changed)."""
    statements = [{"sql": sql} for sql in sqls]
    future: asyncio.Future[CommitResult] = asyncio.get_running_loop().create_future()
    return PendingEvent("state.changed", source, None, future,
                        statements=[(sql, []) for sql in sqls],
                        recorded_statements=orjson.dumps(statements))


def permission_request(request_id: str) -> PendingEvent:
    """An agent's permission request offering allow and deny."""
    return event("permission.request", {
        "requestId": request_id, "toolCall": {"toolCallId": "t1", "title": "Write", "kind": "edit"},
        "options": [{"optionId": "allow", "name": "Allow", "kind": "allow_once"},
                    {"optionId": "deny", "name": "Deny", "kind": "reject_once"}],
    }, source=AGENT, turn_id="turn-1")


def answer(request_id: str, option: str = "allow", source: bytes = ADA) -> PendingEvent:
    """A participant's permission.response."""
    return event("permission.response", {"requestId": request_id, "optionId": option},
                 source=source)


def seqs(outcomes: list[CommitResult | ProtocolError]) -> list[int | str]:
    """Each outcome's seq, or the name of its error."""
    return [o.seq if isinstance(o, CommitResult) else type(o).__name__ for o in outcomes]


async def all_events(db: SessionDatabase) -> list[dict[str, Any]]:
    """Every event in the file, decoded."""
    return [orjson.loads(raw) for _, raw in await db.read_range(0, 10_000, BIG)]


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SessionDatabase]:
    """A new session file holding session.created at seq 1."""
    created = event("session.created", {"title": "a test"}, source=AGENT)
    database = await SessionDatabase.create(tmp_path / "s.db", meta(), "full", created)
    yield database
    await database.close()


# --- group commit ------------------------------------------------------------------------

async def test_create_records_the_created_event_at_seq_1(db: SessionDatabase) -> None:
    """A file made with a created event holds it at seq 1; head_seq and last_ts follow it."""
    [first] = await all_events(db)
    assert (first["seq"], first["type"]) == (1, "session.created")
    assert (db.head_seq, db.last_ts) == (1, first["ts"])


async def test_create_refuses_an_existing_file(db: SessionDatabase, tmp_path: Path) -> None:
    """Creating a session file where one exists is a Conflict, and leaves the file alone."""
    with pytest.raises(Conflict):
        await SessionDatabase.create(tmp_path / "s.db", meta(), "full")
    assert [e["seq"] for e in await all_events(db)] == [1]


async def test_group_commit_assigns_dense_seqs(db: SessionDatabase) -> None:
    """Seqs follow on densely within one batch and from one batch to the next."""
    outcomes, committed = await db.append_batch([event("note", {"i": i}) for i in range(3)])
    assert seqs(outcomes) == [2, 3, 4]
    assert [seq for seq, _ in committed] == [2, 3, 4]
    outcomes, committed = await db.append_batch([event("note"), event("note")])
    assert seqs(outcomes) == [5, 6]
    assert all(isinstance(o, CommitResult) and not o.duplicate for o in outcomes)
    assert db.head_seq == 6
    events = await all_events(db)
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5, 6]
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)
    assert db.last_ts == events[-1]["ts"]
    assert len({e["id"] for e in events}) == 6


async def test_committed_events_are_what_reads_return(db: SessionDatabase) -> None:
    """The (seq, raw) a commit returns is byte for byte what read_range and history read."""
    _, first = await db.append_batch([event("note", {"i": 1}, key="k1", turn_id="t")])
    _, second = await db.append_batch([event("user.message", {"text": "hé"}), event("note")])
    committed = first + second
    assert await db.read_range(1, 100, BIG) == committed
    assert await db.history(1, None, 100, None) == [raw for _, raw in committed]
    stored = orjson.loads(committed[0][1])
    assert {k: stored[k] for k in ("seq", "type", "source", "data", "idempotencyKey",
                                   "turnId")} == {
        "seq": 2, "type": "note", "source": orjson.loads(ADA), "data": {"i": 1},
        "idempotencyKey": "k1", "turnId": "t"}


async def test_outcome_ts_is_the_stored_ts(db: SessionDatabase) -> None:
    """Each CommitResult carries the seq and ts stored with its event."""
    outcomes, committed = await db.append_batch([event("note"), event("note")])
    for outcome, (seq, raw) in zip(outcomes, committed, strict=True):
        assert isinstance(outcome, CommitResult)
        assert (outcome.seq, outcome.ts) == (seq, orjson.loads(raw)["ts"])


async def test_read_range_stops_at_limit_and_bytes(db: SessionDatabase) -> None:
    """read_range returns at most ``limit`` events, and stops once ``max_bytes`` is reached."""
    await db.append_batch([event("note", {"pad": "p" * 100}) for _ in range(5)])
    assert [seq for seq, _ in await db.read_range(2, 2, BIG)] == [3, 4]
    assert [seq for seq, _ in await db.read_range(1, 100, 1)] == [2]


# --- idempotency -------------------------------------------------------------------------

async def test_idempotency_key_repeated_in_one_batch(db: SessionDatabase) -> None:
    """A key seen earlier in the same batch gets the first event's result, marked duplicate."""
    outcomes, committed = await db.append_batch(
        [event("note", {"n": 1}, key="k"), event("note", {"n": 2}, key="k"), event("note")]
    )
    first, again, other = outcomes
    assert isinstance(first, CommitResult) and isinstance(again, CommitResult)
    assert (first.seq, first.duplicate) == (2, False)
    assert again == CommitResult(2, first.ts, True)
    assert seqs([other]) == [3]
    assert [seq for seq, _ in committed] == [2, 3]
    assert [e["data"] for e in await all_events(db)][1:] == [{"n": 1}, {}]


async def test_idempotency_key_repeated_in_a_later_batch(db: SessionDatabase) -> None:
    """A key from an earlier batch gets that event's result as a duplicate; nothing is stored."""
    [first], _ = await db.append_batch([event("note", {"n": 1}, key="k")])
    outcomes, committed = await db.append_batch([event("note", {"n": 2}, key="k")])
    assert isinstance(first, CommitResult)
    assert outcomes == [CommitResult(first.seq, first.ts, True)]
    assert committed == []
    assert db.head_seq == 2
    assert [e["data"] for e in await all_events(db)][1:] == [{"n": 1}]


async def test_idempotency_key_repeated_in_a_later_batch_with_client_sql(
    db: SessionDatabase,
) -> None:
    """A batch with client SQL finds earlier keys too, and does not run the duplicate's SQL."""
    await db.append_batch([state_exec("CREATE TABLE t(a)")])
    state = [{"sql": "INSERT INTO t VALUES (1)"}]
    [first], _ = await db.append_batch([event("note", key="k", state=state)])
    outcomes, committed = await db.append_batch([event("note", key="k", state=state)])
    assert isinstance(first, CommitResult)
    assert outcomes == [CommitResult(first.seq, first.ts, True)]
    assert committed == []
    assert (await db.query("SELECT count(*) FROM t", [], 10))[1] == [[1]]


# --- client SQL --------------------------------------------------------------------------

async def test_state_exec_records_statements_and_changes(db: SessionDatabase) -> None:
    """A state/exec item runs its statements and records them with the rows changed."""
    outcomes, committed = await db.append_batch([
        state_exec("CREATE TABLE t(a)", "INSERT INTO t VALUES (1)", "INSERT INTO t VALUES (2)"),
    ])
    [result] = outcomes
    assert isinstance(result, CommitResult) and result.changes == 2
    data = orjson.loads(committed[0][1])["data"]
    assert data == {"statements": [{"sql": "CREATE TABLE t(a)"},
                                   {"sql": "INSERT INTO t VALUES (1)"},
                                   {"sql": "INSERT INTO t VALUES (2)"}], "changes": 2}
    assert (await db.query("SELECT a FROM t ORDER BY a", [], 10))[1] == [[1], [2]]


async def test_bad_client_sql_fails_alone_in_its_batch(db: SessionDatabase) -> None:
    """An item whose SQL fails gets its error and leaves no trace; the others commit densely."""
    await db.append_batch([state_exec("CREATE TABLE t(a UNIQUE)")])
    outcomes, committed = await db.append_batch([
        event("note", {"n": 1}),
        event("note", state=[{"sql": "INSERT INTO t VALUES (1)"},
                             {"sql": "INSERT INTO nowhere VALUES (1)"}]),
        state_exec("INSERT INTO t VALUES (2)", "INSERT INTO t VALUES (2)"),
        state_exec("INSERT INTO ax_events (seq, ts, type, raw) VALUES (99, 0, 'x', '{}')"),
        event("note", {"n": 2}, state=[{"sql": "INSERT INTO t VALUES (3)"}]),
    ])
    assert seqs(outcomes) == [3, "InvalidParams", "InvalidParams", "Forbidden", 4]
    assert isinstance(outcomes[1], InvalidParams) and "nowhere" in outcomes[1].message
    assert isinstance(outcomes[2], InvalidParams) and "UNIQUE" in outcomes[2].message
    assert isinstance(outcomes[3], Forbidden)
    assert [seq for seq, _ in committed] == [3, 4]
    assert db.head_seq == 4
    assert [e["seq"] for e in await all_events(db)] == [1, 2, 3, 4]
    assert (await db.query("SELECT a FROM t", [], 10))[1] == [[3]]


async def test_published_state_is_recorded_with_the_event(db: SessionDatabase) -> None:
    """A publish with state stores the statements as the event's top-level state."""
    await db.append_batch([state_exec("CREATE TABLE t(a)")])
    state = [{"sql": "INSERT INTO t VALUES (?)", "params": [7]}]
    _, committed = await db.append_batch([event("note", {"x": 1}, state=state)])
    stored = orjson.loads(committed[0][1])
    assert (stored["data"], stored["state"]) == ({"x": 1}, state)
    assert (await db.query("SELECT a FROM t", [], 10))[1] == [[7]]


# --- permissions -------------------------------------------------------------------------

async def test_first_permission_answer_wins(db: SessionDatabase) -> None:
    """The first answer is stored; a second one is a Conflict naming who answered."""
    [opened], _ = await db.append_batch([permission_request("r")])
    assert isinstance(opened, CommitResult)
    assert db.permissions["r"].answered_by is None
    assert db.permissions["r"].option_ids == ["allow", "deny"]
    [won], _ = await db.append_batch([answer("r", source=ADA)])
    assert seqs([won]) == [3]
    assert db.permissions["r"].answered_by == orjson.loads(ADA)
    assert db.permissions["r"].answered_seq == 3
    [lost], committed = await db.append_batch([answer("r", "deny", source=BOB)])
    assert isinstance(lost, Conflict)
    assert "answered by ada via tui" in lost.message
    assert lost.data == {"requestId": "r", "answeredBy": orjson.loads(ADA), "answeredSeq": 3}
    assert committed == []
    assert db.head_seq == 3


async def test_two_answers_in_one_batch(db: SessionDatabase) -> None:
    """Of two answers committed in one batch, the first wins and the second is a Conflict."""
    await db.append_batch([permission_request("r")])
    outcomes, committed = await db.append_batch([answer("r", source=BOB), answer("r")])
    assert seqs(outcomes) == [3, "Conflict"]
    assert len(committed) == 1
    assert db.permissions["r"].answered_by == orjson.loads(BOB)


async def test_request_and_answer_in_one_batch(db: SessionDatabase) -> None:
    """A request can be answered by an item later in the same batch."""
    outcomes, _ = await db.append_batch([permission_request("r"), answer("r")])
    assert seqs(outcomes) == [2, 3]
    assert db.permissions["r"].answered_seq == 3


async def test_answer_to_unknown_request_is_conflict(db: SessionDatabase) -> None:
    """An answer to a request never made is a Conflict and stores nothing."""
    [outcome], committed = await db.append_batch([answer("never-asked")])
    assert isinstance(outcome, Conflict)
    assert "never-asked" in outcome.message
    assert outcome.data == {"requestId": "never-asked"}
    assert committed == [] and db.head_seq == 1
    assert "never-asked" not in db.permissions


async def test_answer_must_name_an_offered_option(db: SessionDatabase) -> None:
    """An optionId the request did not offer is InvalidParams; cancelled is accepted."""
    await db.append_batch([permission_request("r")])
    cancelled = event("permission.response", {"requestId": "r", "outcome": "cancelled"})
    outcomes, _ = await db.append_batch([answer("r", "maybe"), cancelled])
    assert seqs(outcomes) == ["InvalidParams", 3]
    assert db.permissions["r"].answered_seq == 3


# --- history -----------------------------------------------------------------------------

@pytest.fixture
async def typed(db: SessionDatabase) -> SessionDatabase:
    """``db`` with events 2..7 of assorted types."""
    await db.append_batch([event(t) for t in (
        "user.message", "note", "user.joined", "ci.step", "x?y", "xzy")])
    return db


def types_of(raws: list[bytes]) -> list[tuple[int, str]]:
    """(seq, type) of each raw event."""
    return [(e["seq"], e["type"]) for e in map(orjson.loads, raws)]


@pytest.mark.parametrize(("types", "expected"), [
    pytest.param(["*"], [1, 2, 3, 4, 5, 6, 7], id="star"),
    pytest.param(["user.*"], [2, 4], id="prefix"),
    pytest.param(["*.step"], [5], id="suffix"),
    pytest.param(["note", "ci.*"], [3, 5], id="two-patterns"),
    pytest.param(["user"], [], id="exact-only"),
    pytest.param(["x?y"], [6], id="question-mark-is-literal"),
    pytest.param(["x[z]y"], [], id="bracket-is-literal"),
    pytest.param([], [1, 2, 3, 4, 5, 6, 7], id="empty-list-is-all"),
])
async def test_history_type_patterns(
    typed: SessionDatabase, types: list[str], expected: list[int]
) -> None:
    """Only ``*`` is special in a type pattern; several patterns match any of them."""
    assert [seq for seq, _ in types_of(await typed.history(None, None, 100, types))] == expected


@pytest.mark.parametrize(("after", "before", "limit", "expected"), [
    pytest.param(None, None, 100, [1, 2, 3, 4, 5, 6, 7], id="all"),
    pytest.param(None, None, 3, [1, 2, 3], id="oldest-first"),
    pytest.param(3, None, 100, [4, 5, 6, 7], id="after"),
    pytest.param(3, None, 2, [4, 5], id="after-with-limit"),
    pytest.param(None, 5, 100, [1, 2, 3, 4], id="before"),
    pytest.param(None, 6, 2, [4, 5], id="newest-before"),
    pytest.param(2, 6, 100, [3, 4, 5], id="between"),
    pytest.param(2, 6, 2, [3, 4], id="between-with-limit"),
    pytest.param(7, None, 100, [], id="after-head"),
    pytest.param(None, 1, 100, [], id="before-first"),
])
async def test_history_windows(
    typed: SessionDatabase, after: int | None, before: int | None, limit: int,
    expected: list[int],
) -> None:
    """afterSeq/beforeSeq bound the window (ascending); beforeSeq alone takes the newest."""
    got = types_of(await typed.history(after, before, limit, None))
    assert [seq for seq, _ in got] == expected


async def test_history_types_within_a_window(typed: SessionDatabase) -> None:
    """Type patterns and a seq window combine."""
    got = types_of(await typed.history(2, None, 100, ["user.*", "x*"]))
    assert got == [(4, "user.joined"), (6, "x?y"), (7, "xzy")]


# --- query -------------------------------------------------------------------------------

async def test_query_returns_columns_rows_and_truncation(db: SessionDatabase) -> None:
    """query gives column names, rows (BLOBs as base64) and whether the limit cut it."""
    await db.append_batch([state_exec(
        "CREATE TABLE t(a INTEGER, b BLOB)", "INSERT INTO t VALUES (1, x'00ff')",
        "INSERT INTO t VALUES (2, NULL)")])
    columns, rows, truncated = await db.query("SELECT a, b FROM t ORDER BY a", [], 10)
    assert (columns, rows, truncated) == (["a", "b"], [[1, "AP8="], [2, None]], False)
    assert await db.query("SELECT a FROM t ORDER BY a", [], 1) == (["a"], [[1]], True)
    assert (await db.query("SELECT a FROM t WHERE a = :a", {"a": 2}, 10))[1] == [[2]]


@pytest.mark.parametrize("sql", [
    pytest.param("INSERT INTO t VALUES (1)", id="insert"),
    pytest.param("DELETE FROM t", id="delete"),
    pytest.param("CREATE TABLE u(a)", id="create"),
    pytest.param("DROP TABLE t", id="drop"),
    pytest.param("SELECT * FROM ax_events", id="hub-table"),
    pytest.param("PRAGMA query_only=0", id="pragma-write"),
])
async def test_query_is_read_only(db: SessionDatabase, sql: str) -> None:
    """A write (or a read of the hub's tables) through query is Forbidden and changes nothing."""
    await db.append_batch([state_exec("CREATE TABLE t(a)", "INSERT INTO t VALUES (5)")])
    with pytest.raises(Forbidden):
        await db.query(sql, [], 10)
    assert (await db.query("SELECT a FROM t", [], 10))[1] == [[5]]
    assert db.head_seq == 2


async def test_query_sees_the_events_view(db: SessionDatabase) -> None:
    """The events view shows every event's seq, type, source and data to client SQL."""
    await db.append_batch([event("note", {"x": 1})])
    _, rows, _ = await db.query(
        "SELECT seq, type, json_extract(source, '$.name'), json_extract(data, '$.x') "
        "FROM events ORDER BY seq", [], 10)
    assert rows == [[1, "session.created", "demo", None], [2, "note", "ada", 1]]


# --- fork copies -------------------------------------------------------------------------

@pytest.fixture
async def origin(db: SessionDatabase) -> SessionDatabase:
    """``db`` with state built by state/exec and by published state, an answered and an
    open permission request: events 1..7."""
    await db.append_batch([state_exec("CREATE TABLE t(a)", "INSERT INTO t VALUES (1)")])
    await db.append_batch([event("note", state=[{"sql": "INSERT INTO t VALUES (2)"}])])
    await db.append_batch([permission_request("answered"), answer("answered", source=BOB)])
    await db.append_batch([permission_request("open")])
    await db.append_batch([state_exec("INSERT INTO t VALUES (3)")])
    assert db.head_seq == 7
    return db


async def fork_of(origin: SessionDatabase, path: Path, at_seq: int) -> SessionDatabase:
    """A new session file at ``path`` holding ``origin``'s events 1..``at_seq``."""
    target = await SessionDatabase.create(path, meta("f"), "full")
    await target.copy_from(origin, at_seq)
    return target


async def test_fork_copies_events_with_new_ids(origin: SessionDatabase, tmp_path: Path) -> None:
    """A fork holds events 1..N with their seq, ts, type, source and data, under new ids."""
    target = await fork_of(origin, tmp_path / "f.db", 7)
    try:
        mine, theirs = await all_events(target), await all_events(origin)
        assert [e["seq"] for e in mine] == list(range(1, 8))
        assert {e["id"] for e in mine}.isdisjoint(e["id"] for e in theirs)

        def without_id(e: dict[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in e.items() if k != "id"}

        assert list(map(without_id, mine)) == list(map(without_id, theirs))
        assert (target.head_seq, target.last_ts) == (7, origin.last_ts)
    finally:
        await target.close()


async def test_fork_rebuilds_state_and_open_permissions(
    origin: SessionDatabase, tmp_path: Path
) -> None:
    """A fork re-runs the recorded statements and keeps open requests answerable."""
    target = await fork_of(origin, tmp_path / "f.db", 7)
    try:
        assert (await target.query("SELECT a FROM t ORDER BY a", [], 10))[1] == [[1], [2], [3]]
        assert target.permissions["answered"].answered_by == orjson.loads(BOB)
        assert target.permissions["open"].answered_by is None
        [late], _ = await target.append_batch([answer("answered")])
        assert isinstance(late, Conflict)
        [ok], _ = await target.append_batch([answer("open")])
        assert seqs([ok]) == [8]
        assert origin.permissions["open"].answered_by is None  # the origin is untouched
    finally:
        await target.close()


async def test_fork_at_an_earlier_seq_copies_only_that_far(
    origin: SessionDatabase, tmp_path: Path
) -> None:
    """A fork at seq N has the events, state and permissions of 1..N only."""
    target = await fork_of(origin, tmp_path / "f.db", 4)
    try:
        assert [e["seq"] for e in await all_events(target)] == [1, 2, 3, 4]
        assert target.head_seq == 4
        assert (await target.query("SELECT a FROM t ORDER BY a", [], 10))[1] == [[1], [2]]
        assert target.permissions["answered"].answered_by is None
        assert "open" not in target.permissions
        outcomes, _ = await target.append_batch([event("note")])
        assert seqs(outcomes) == [5]
    finally:
        await target.close()


# --- reopening ---------------------------------------------------------------------------

async def test_reopened_file_has_the_same_head_and_permissions(
    origin: SessionDatabase, tmp_path: Path
) -> None:
    """Opening a closed file again gives the same meta, head_seq, last_ts, permissions."""
    await origin.close()
    again = await SessionDatabase.open(tmp_path / "s.db", "full")
    try:
        assert again.meta == meta()
        assert (again.head_seq, again.last_ts) == (origin.head_seq, origin.last_ts)
        assert again.permissions == origin.permissions
        [late], _ = await again.append_batch([answer("answered")])
        assert isinstance(late, Conflict)
        outcomes, _ = await again.append_batch([answer("open"), event("note", key="k")])
        assert seqs(outcomes) == [8, 9]
        assert (await again.query("SELECT count(*) FROM t", [], 10))[1] == [[3]]
    finally:
        await again.close()


async def test_idempotency_keys_survive_reopening(db: SessionDatabase, tmp_path: Path) -> None:
    """A key committed before the file was closed is still a duplicate after reopening."""
    [first], _ = await db.append_batch([event("note", key="k")])
    await db.close()
    again = await SessionDatabase.open(tmp_path / "s.db", "full")
    try:
        outcomes, committed = await again.append_batch([event("note", key="k")])
        assert isinstance(first, CommitResult)
        assert outcomes == [CommitResult(first.seq, first.ts, True)] and committed == []
    finally:
        await again.close()
