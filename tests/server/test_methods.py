"""Every method's normal path against a real hub."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from server.hub import Hub
from tests.conftest import Raw, RawFactory


async def create(raw: Raw, **params: Any) -> dict[str, Any]:
    session: dict[str, Any] = (await raw.call("session/create", params))["session"]
    return session


async def test_initialize_reports_version_hub_and_principal(raw_factory: RawFactory) -> None:
    """initialize answers with protocolVersion 1, hubInfo and the principal."""
    raw = await raw_factory(initialize=False)
    result = await raw.initialize()
    assert result["protocolVersion"] == 1
    assert result["hubInfo"]["name"] == "axtui"
    assert result["principal"] == {"name": "local", "role": "admin"}


async def test_ping(raw: Raw) -> None:
    """ping answers an empty object."""
    assert await raw.call("ping") == {}


async def test_agents_list_shows_bundled_agents(raw: Raw) -> None:
    """With no agents configured, the bundled agents are listed with their protocol."""
    agents = {a["id"]: a for a in (await raw.call("agents/list"))["agents"]}
    assert {"echo", "demo", "llm"} <= set(agents)
    assert all(a["protocol"] == "acp" and a["description"] for a in agents.values())


async def test_create_records_session_created_at_seq_1(raw: Raw) -> None:
    """session/create returns the session and records session.created as seq 1."""
    session = await create(raw, sessionId="triage-42", title="CSV export timeout",
                           agent="demo", metadata={"ticket": 42})
    assert session["sessionId"] == "triage-42"
    assert session["headSeq"] == 1
    assert session["agentState"] == "suspended"
    assert len(session["epoch"]) >= 8
    history = await raw.call("session/history", {"sessionId": "triage-42"})
    [event] = history["events"]
    assert event["seq"] == 1 and event["type"] == "session.created"
    assert event["data"] == {"title": "CSV export timeout", "agent": "demo",
                             "metadata": {"ticket": 42}}
    assert event["source"] == {"kind": "client", "name": "local", "client": "test"}


async def test_create_without_id_or_agent(raw: Raw) -> None:
    """The hub makes a valid id when none is given; no agent means agentState none."""
    session = await create(raw)
    assert session["sessionId"].startswith("s-")
    assert session["agent"] is None and session["agentState"] == "none"


async def test_get_returns_current_head(raw: Raw) -> None:
    """session/get reflects published events in headSeq and updatedAt."""
    session = await create(raw, sessionId="g")
    await raw.call("session/publish", {"sessionId": "g", "type": "user.message",
                                       "data": {"text": "hi"}})
    got = (await raw.call("session/get", {"sessionId": "g"}))["session"]
    assert got["headSeq"] == 2
    assert got["updatedAt"] >= session["updatedAt"]
    assert got["epoch"] == session["epoch"]


async def test_list_pages_newest_first_and_filters_by_agent(raw: Raw) -> None:
    """session/list orders by updatedAt, pages with cursors, and filters by agent."""
    for i in range(7):
        await create(raw, sessionId=f"l{i}", agent="echo" if i % 2 else None)
    await raw.call("session/publish", {"sessionId": "l0", "type": "note", "data": {}})
    seen: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 3}
    while True:
        page = await raw.call("session/list", params)
        assert len(page["sessions"]) <= 3
        seen += page["sessions"]
        if "nextCursor" not in page:
            break
        params["cursor"] = page["nextCursor"]
    assert sorted(s["sessionId"] for s in seen) == [f"l{i}" for i in range(7)]
    # Most recent activity first; a tie (same millisecond) goes by sessionId, descending.
    keys = [(s["updatedAt"], s["sessionId"]) for s in seen]
    assert keys == sorted(keys, reverse=True)
    assert next(s for s in seen if s["sessionId"] == "l0")["updatedAt"] == keys[0][0]
    echo = await raw.call("session/list", {"agent": "echo"})
    assert sorted(s["sessionId"] for s in echo["sessions"]) == ["l1", "l3", "l5"]


async def test_delete_removes_session_and_file(raw: Raw, hub: Hub) -> None:
    """session/delete removes the session, its file, and tells subscribers."""
    await create(raw, sessionId="doomed")
    await raw.call("session/subscribe", {"sessionId": "doomed"})
    await raw.events("doomed", 1)
    assert await raw.call("session/delete", {"sessionId": "doomed"}) == {}
    assert not (hub.config.hub.data_dir / "sessions" / "doomed.db").exists()
    err = await raw.error("session/get", {"sessionId": "doomed"})
    assert err["code"] == -32004
    notes = [n for n in raw.notifications if n.get("method") == "session/deleted"]
    assert notes == [{"jsonrpc": "2.0", "method": "session/deleted",
                      "params": {"sessionId": "doomed"}}]


async def test_subscribe_backlog_then_live(raw: Raw, raw_factory: RawFactory) -> None:
    """subscribe answers first, sends the backlog, then live events in order."""
    await create(raw, sessionId="sub")
    for i in range(3):
        await raw.call("session/publish", {"sessionId": "sub", "type": "ci.step", "data": {"i": i}})
    watcher = await raw_factory()
    request_id = 99
    await watcher.send({"jsonrpc": "2.0", "id": request_id, "method": "session/subscribe",
                        "params": {"sessionId": "sub", "afterSeq": 1}})
    first = await watcher.recv()
    assert first["id"] == request_id  # the response comes before any event
    assert first["result"]["headSeq"] == 4
    backlog = await watcher.events("sub", 3)
    assert [e["seq"] for e in backlog] == [2, 3, 4]
    await raw.call("session/publish", {"sessionId": "sub", "type": "ci.step", "data": {"i": 3}})
    live = await watcher.events("sub", 1)
    assert live[0]["seq"] == 5 and live[0]["data"] == {"i": 3}


async def test_unsubscribe_stops_events(raw: Raw, raw_factory: RawFactory) -> None:
    """After session/unsubscribe no more events arrive for that session."""
    await create(raw, sessionId="u")
    await create(raw, sessionId="marker")
    other = await raw_factory()
    await other.call("session/subscribe", {"sessionId": "u"})
    await other.events("u", 1)
    await other.call("session/unsubscribe", {"sessionId": "u"})
    await other.call("session/subscribe", {"sessionId": "marker", "afterSeq": 1})
    await raw.call("session/publish", {"sessionId": "u", "type": "note"})
    await raw.call("session/publish", {"sessionId": "marker", "type": "note"})
    # Events are delivered in commit order per connection; the marker proves "u" was skipped.
    await other.events("marker", 1)
    assert not [n for n in other.notifications if n.get("method") == "session/events"]


async def test_publish_returns_seq_ts_and_records_source(raw: Raw) -> None:
    """publish answers seq and ts after commit; the event carries the client as source."""
    await create(raw, sessionId="p")
    result = await raw.call("session/publish", {
        "sessionId": "p", "type": "ci.build_failed", "data": {"job": 7},
        "idempotencyKey": "ci:7",
    })
    assert result["seq"] == 2 and result["duplicate"] is False and result["ts"] > 0
    [event] = (await raw.call("session/history", {"sessionId": "p", "afterSeq": 1}))["events"]
    assert event["type"] == "ci.build_failed" and event["data"] == {"job": 7}
    assert event["idempotencyKey"] == "ci:7" and event["turnId"] is None
    assert event["ts"] == result["ts"]


async def test_publish_with_state_is_atomic_and_recorded(raw: Raw) -> None:
    """publish with state runs the statements with the event, recorded at top level."""
    await create(raw, sessionId="ps")
    await raw.call("state/exec", {"sessionId": "ps", "statements": [
        {"sql": "CREATE TABLE tickets (id INTEGER PRIMARY KEY, status TEXT)"}]})
    state = [{"sql": "INSERT INTO tickets VALUES (?, ?)", "params": [1, "open"]}]
    result = await raw.call("session/publish", {
        "sessionId": "ps", "type": "ticket.opened", "data": {"state": "just data"}, "state": state,
    })
    [event] = (await raw.call("session/history", {"sessionId": "ps", "afterSeq": 2}))["events"]
    assert event["seq"] == result["seq"]
    assert event["state"] == state and event["data"] == {"state": "just data"}
    rows = await raw.call("state/query", {"sessionId": "ps", "sql": "SELECT * FROM tickets"})
    assert rows["rows"] == [[1, "open"]]
    bad = [{"sql": "INSERT INTO tickets VALUES (?, ?)", "params": [2, "x"]},
           {"sql": "INSERT INTO nowhere VALUES (1)"}]
    err = await raw.error("session/publish", {"sessionId": "ps", "type": "ticket.opened",
                                              "state": bad})
    assert err["code"] == -32602 and "nowhere" in err["message"]
    rows = await raw.call("state/query", {"sessionId": "ps", "sql": "SELECT count(*) FROM tickets"})
    assert rows["rows"] == [[1]]
    got = (await raw.call("session/get", {"sessionId": "ps"}))["session"]
    assert got["headSeq"] == result["seq"]


async def test_history_windows_and_type_patterns(raw: Raw) -> None:
    """history: after/before windows, newest-before form, limit, and type globs."""
    await create(raw, sessionId="h")
    for i in range(10):
        await raw.call("session/publish", {"sessionId": "h", "type": "ci.step" if i % 2 else "note",
                                           "data": {"i": i}})
    def seqs(r: dict[str, Any]) -> list[int]:
        return [e["seq"] for e in r["events"]]
    assert seqs(await raw.call("session/history", {"sessionId": "h", "afterSeq": 3, "limit": 2})) \
        == [4, 5]
    assert seqs(await raw.call("session/history", {"sessionId": "h", "beforeSeq": 6, "limit": 2})) \
        == [4, 5]
    assert seqs(await raw.call("session/history",
                               {"sessionId": "h", "afterSeq": 2, "beforeSeq": 6})) == [3, 4, 5]
    result = await raw.call("session/history", {"sessionId": "h", "types": ["ci.*"]})
    assert seqs(result) == [3, 5, 7, 9, 11] and result["headSeq"] == 11
    both = await raw.call("session/history", {"sessionId": "h", "types": ["session.*", "no*"]})
    assert seqs(both) == [1, 2, 4, 6, 8, 10]


async def test_cancel_and_suspend_without_agent_process(raw: Raw) -> None:
    """cancel and suspend succeed on a session with no agent process running."""
    await create(raw, sessionId="c", agent="echo")
    assert await raw.call("session/cancel", {"sessionId": "c"}) == {}
    assert await raw.call("session/suspend", {"sessionId": "c"}) == {}


async def test_fork_copies_events_and_rebuilds_state(raw: Raw) -> None:
    """fork copies events up to atSeq (new ids), rebuilds state, records session.forked."""
    await create(raw, sessionId="orig", title="Original", agent="echo")
    await raw.call("state/exec", {"sessionId": "orig", "statements": [
        {"sql": "CREATE TABLE t (x INTEGER)"}, {"sql": "INSERT INTO t VALUES (1)"}]})
    await raw.call("session/publish", {"sessionId": "orig", "type": "note",
                                       "state": [{"sql": "INSERT INTO t VALUES (2)"}]})
    await raw.call("session/publish", {"sessionId": "orig", "type": "note",
                                       "state": [{"sql": "INSERT INTO t VALUES (3)"}]})
    fork = (await raw.call("session/fork", {"sessionId": "orig", "atSeq": 3,
                                            "newSessionId": "copy"}))["session"]
    assert fork["sessionId"] == "copy" and fork["title"] == "Original (fork)"
    assert fork["headSeq"] == 4 and fork["agent"] == "echo"
    orig = (await raw.call("session/get", {"sessionId": "orig"}))["session"]
    assert fork["epoch"] != orig["epoch"]
    a = (await raw.call("session/history", {"sessionId": "orig", "beforeSeq": 4}))["events"]
    b = (await raw.call("session/history", {"sessionId": "copy"}))["events"]
    assert [e["seq"] for e in b] == [1, 2, 3, 4]
    for x, y in zip(a, b[:3], strict=True):
        assert x["id"] != y["id"]
        assert {**x, "id": None} == {**y, "id": None}
    assert b[3]["type"] == "session.forked"
    assert b[3]["data"] == {"fromSessionId": "orig", "atSeq": 3}
    rows = await raw.call("state/query", {"sessionId": "copy", "sql": "SELECT x FROM t ORDER BY x"})
    assert rows["rows"] == [[1], [2]]
    default = (await raw.call("session/fork", {"sessionId": "orig", "title": "T"}))["session"]
    assert default["headSeq"] == orig["headSeq"] + 1 and default["title"] == "T"


async def test_watch_sends_updates_and_deletions(raw: Raw, raw_factory: RawFactory) -> None:
    """sessions/watch delivers session/updated on changes, coalesced, and on delete."""
    watcher = await raw_factory()
    assert await watcher.call("sessions/watch") == {}
    await create(raw, sessionId="w")
    for _ in range(20):
        await raw.call("session/publish", {"sessionId": "w", "type": "note"})
    async with asyncio.timeout(5):
        while True:
            msg = await watcher.recv()
            if msg.get("method") == "session/updated" and msg["params"]["session"]["headSeq"] == 21:
                break
            watcher.notifications.append(msg)
    updates = [n for n in watcher.notifications if n.get("method") == "session/updated"]
    assert len(updates) < 20  # coalesced, not one per event
    await raw.call("session/delete", {"sessionId": "w"})
    msg = await watcher.recv()
    assert msg["params"] == {"sessionId": "w", "deleted": True}


async def test_state_query_columns_rows_blobs_and_limit(raw: Raw) -> None:
    """state/query returns columns, rows in order, BLOBs as base64, and truncation."""
    await create(raw, sessionId="q")
    await raw.call("state/exec", {"sessionId": "q", "statements": [
        {"sql": "CREATE TABLE t (id INTEGER, name TEXT, b BLOB, f REAL)"},
        {"sql": "INSERT INTO t VALUES (:id, :name, X'00ff', 1.5)",
         "params": {"id": 1, "name": "a"}},
        {"sql": "INSERT INTO t VALUES (2, 'b', NULL, NULL)"},
        {"sql": "INSERT INTO t VALUES (3, 'c', NULL, NULL)"},
    ]})
    result = await raw.call("state/query", {"sessionId": "q", "sql": "SELECT * FROM t ORDER BY id",
                                            "limit": 2})
    assert result["columns"] == ["id", "name", "b", "f"]
    assert result["rows"] == [[1, "a", base64.b64encode(b"\x00\xff").decode(), 1.5],
                              [2, "b", None, None]]
    assert result["truncated"] is True
    named = await raw.call("state/query", {"sessionId": "q", "params": {"i": 3},
                                           "sql": "SELECT name FROM t WHERE id=:i"})
    assert named == {"columns": ["name"], "rows": [["c"]], "truncated": False}


async def test_events_view_is_queryable(raw: Raw) -> None:
    """The events view exposes the log to SQL (seq, ts, type, source, data, turn_id)."""
    await create(raw, sessionId="ev")
    await raw.call("session/publish", {"sessionId": "ev", "type": "user.message",
                                       "data": {"text": "hello"}})
    result = await raw.call("state/query", {"sessionId": "ev", "sql":
        "SELECT seq, type, json_extract(data, '$.text'), json_extract(source, '$.name'), turn_id"
        " FROM events ORDER BY seq"})
    assert result["columns"][:2] == ["seq", "type"]
    assert result["rows"] == [[1, "session.created", None, "local", None],
                              [2, "user.message", "hello", "local", None]]


async def test_state_exec_records_state_changed(raw: Raw) -> None:
    """state/exec runs atomically and is recorded as state.changed with statements and changes."""
    await create(raw, sessionId="x")
    statements = [{"sql": "CREATE TABLE t (x)"},
                  {"sql": "INSERT INTO t VALUES (?), (?)", "params": [1, 2]}]
    result = await raw.call("state/exec", {"sessionId": "x", "statements": statements})
    assert result == {"seq": 2, "changes": 2}
    [event] = (await raw.call("session/history", {"sessionId": "x", "afterSeq": 1}))["events"]
    assert event["type"] == "state.changed"
    assert event["data"] == {"statements": statements, "changes": 2}
    err = await raw.error("state/exec", {"sessionId": "x", "statements": [
        {"sql": "INSERT INTO t VALUES (3)"}, {"sql": "INSERT INTO missing VALUES (1)"}]})
    assert err["code"] == -32602
    count = await raw.call("state/query", {"sessionId": "x", "sql": "SELECT count(*) FROM t"})
    assert count["rows"] == [[2]]
