"""Every error code and close code of protocol.md, and hostile input, against a real hub.

Each test talks to a hub on port 0 over real websockets. Where a request must not change
anything, the test checks the session's ``headSeq`` (nothing stored) and that the hub still
answers ``ping`` afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from server.hub import Hub
from tests.conftest import HubFactory, Raw, RawFactory

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
NOT_AUTHENTICATED = -32001
FORBIDDEN = -32003
NOT_FOUND = -32004
CONFLICT = -32009
CANNOT_RESUME = -32010
TOO_LARGE = -32013
OVERLOADED = -32029
CONTRACT_CODES = {
    PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, INTERNAL_ERROR,
    NOT_AUTHENTICATED, FORBIDDEN, NOT_FOUND, CONFLICT, CANNOT_RESUME, TOO_LARGE, OVERLOADED,
}

RUNAWAY = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c"
BAD_SESSION_IDS = ["../x", "a/b", "..", ".hidden", "", "x" * 129, "x\u0000y", "../s", "-x"]


# --- helpers -----------------------------------------------------------------------------

def request(request_id: Any, method: str, params: Any = None) -> dict[str, Any]:
    """A JSON-RPC request object."""
    msg: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        msg["params"] = params
    return msg


async def create(raw: Raw, sid: str = "s", **params: Any) -> dict[str, Any]:
    """Create session ``sid``; return its Session object."""
    result = await raw.call("session/create", {"sessionId": sid, **params})
    session: dict[str, Any] = result["session"]
    return session


async def head(raw: Raw, sid: str = "s") -> int:
    """The session's headSeq."""
    result = await raw.call("session/get", {"sessionId": sid})
    seq: int = result["session"]["headSeq"]
    return seq


async def exec_sql(raw: Raw, *sqls: str, sid: str = "s") -> dict[str, Any]:
    """Run ``sqls`` as one ``state/exec``; return the whole response message."""
    return await raw.request(
        "state/exec", {"sessionId": sid, "statements": [{"sql": s} for s in sqls]}
    )


async def query(raw: Raw, sql: str, sid: str = "s", **params: Any) -> dict[str, Any]:
    """Run ``sql`` with ``state/query``; return the whole response message."""
    return await raw.request("state/query", {"sessionId": sid, "sql": sql, **params})


async def collect(raw: Raw, ids: list[Any], timeout: float = 15.0) -> dict[Any, dict[str, Any]]:
    """The responses to ``ids`` in whatever order they come; fails on a duplicate."""
    wanted = set(ids)
    got: dict[Any, dict[str, Any]] = {}
    kept = []
    for msg in raw.notifications:
        if msg.get("id") in wanted:
            got[msg["id"]] = msg
        else:
            kept.append(msg)
    raw.notifications = kept
    async with asyncio.timeout(timeout):
        while len(got) < len(wanted):
            msg = await raw.recv(timeout)
            if "id" in msg and msg["id"] in wanted:
                assert msg["id"] not in got, f"two responses for id {msg['id']!r}"
                got[msg["id"]] = msg
            else:
                raw.notifications.append(msg)
    return got


def assert_error(msg: dict[str, Any], code: int) -> dict[str, Any]:
    """Check that ``msg`` is an error response with ``code`` and a clear message."""
    assert "error" in msg and "result" not in msg, msg
    err: dict[str, Any] = msg["error"]
    assert err["code"] == code, err
    assert isinstance(err["message"], str) and err["message"].strip(), err
    return err


def tree(root: Path) -> set[str]:
    """Every path under ``root``, relative to it."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def sqlite_has_module(name: str) -> bool:
    """Whether the SQLite library the hub uses was built with the virtual table ``name``."""
    con = sqlite3.connect(":memory:")
    try:
        rows = con.execute("SELECT 1 FROM pragma_module_list WHERE name = ?", (name,)).fetchall()
    finally:
        con.close()
    return bool(rows)


async def event_seqs(raw: Raw, sid: str = "s") -> list[int]:
    """The seqs the ``events`` view shows, read through a plain column query."""
    result = await raw.call("state/query", {"sessionId": sid,
                                            "sql": "SELECT seq, type FROM events ORDER BY seq"})
    return [row[0] for row in result["rows"]]


def database_threads() -> set[threading.Thread]:
    """The live worker threads of aiosqlite connections."""
    return {t for t in threading.enumerate() if "_connection_worker_thread" in t.name}


async def close_leaked_database_threads(before: set[threading.Thread]) -> int:
    """Close aiosqlite connections still open since ``before``; return how many there were.

    Call it once every hub is stopped. A connection left open keeps a non-daemon thread
    alive, and that thread would stop the test process from ever exiting.
    """
    deadline = time.monotonic() + 2  # closed connections' threads end right after close
    while (extra := database_threads() - before) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    if not extra:
        return 0
    for obj in gc.get_objects():
        try:
            leaked = isinstance(obj, aiosqlite.Connection) and obj._thread in extra
        except ReferenceError:  # a dead weak proxy
            continue
        if leaked:
            with contextlib.suppress(Exception):
                await obj.close()
    return len(extra)


async def token_conn(raw_factory: RawFactory, hub: Hub, token: str) -> Raw:
    """A connection to a token-mode ``hub`` initialized with ``token``."""
    raw = await raw_factory(target=hub, initialize=False)
    await raw.initialize(token)
    return raw


# --- framing and JSON-RPC ----------------------------------------------------------------

async def test_malformed_json_is_parse_error_and_connection_stays_open(raw: Raw) -> None:
    """A frame that is not JSON gets -32700 with id null; the next ping works."""
    await raw.send('{"jsonrpc": "2.0", "id": 9, "method": "ping"')
    msg = await raw.recv()
    assert msg["id"] is None
    assert_error(msg, PARSE_ERROR)
    assert await raw.call("ping") == {}


async def test_binary_frame_is_invalid_request_and_connection_stays_open(raw: Raw) -> None:
    """A binary frame gets -32600 with id null; the connection stays open."""
    await raw.send(b'{"jsonrpc": "2.0", "id": 9, "method": "ping"}')
    msg = await raw.recv()
    assert msg["id"] is None
    assert_error(msg, INVALID_REQUEST)
    assert await raw.call("ping") == {}


@pytest.mark.parametrize("frame", [
    "[]",
    '[{"jsonrpc": "2.0", "id": 9, "method": "ping"}]',
    "5",
    '"ping"',
    "null",
])
async def test_non_object_json_is_invalid_request(raw: Raw, frame: str) -> None:
    """A JSON array (a batch) or scalar gets -32600 with id null; the connection stays open."""
    await raw.send(frame)
    msg = await raw.recv()
    assert msg["id"] is None
    assert_error(msg, INVALID_REQUEST)
    assert await raw.call("ping") == {}


@pytest.mark.parametrize("message", [
    {"id": "r", "method": "ping"},
    {"jsonrpc": "1.0", "id": "r", "method": "ping"},
    {"jsonrpc": 2.0, "id": "r", "method": "ping"},
    {"jsonrpc": "2.0", "id": "r"},
    {"jsonrpc": "2.0", "id": "r", "method": 5},
    {"jsonrpc": "2.0", "id": "r", "method": None},
])
async def test_request_without_jsonrpc_or_method_is_invalid_request(
    raw: Raw, message: dict[str, Any]
) -> None:
    """A request without "jsonrpc": "2.0" or a string method gets -32600 with its id."""
    await raw.send(message)
    msg = await raw.response("r")
    assert_error(msg, INVALID_REQUEST)
    assert await raw.call("ping") == {}


@pytest.mark.parametrize("bad_id", [1.5, 1.0, {"a": 1}, [1], True, False, None])
async def test_id_of_wrong_type_is_invalid_request_with_null_id(raw: Raw, bad_id: Any) -> None:
    """An id that is not an integer or a string gets -32600 with id null, and no result."""
    await raw.send(request(bad_id, "ping"))
    msg = await raw.recv()
    assert msg["id"] is None
    assert_error(msg, INVALID_REQUEST)
    assert await raw.call("ping") == {}


async def test_notification_gets_no_answer(raw: Raw) -> None:
    """A request without an id is a notification: the hub answers nothing."""
    await raw.send({"jsonrpc": "2.0", "method": "ping"})
    await raw.send(request("after", "ping"))
    msg = await raw.recv()
    assert msg == {"jsonrpc": "2.0", "id": "after", "result": {}}


async def test_unknown_method_is_method_not_found(raw: Raw) -> None:
    """An unknown method gets -32601 carrying the request's id."""
    for name in ("nope", "session/nope", "Session/Get", "session/get ", ""):
        assert_error(await raw.request(name, {}), METHOD_NOT_FOUND)
    assert await raw.call("ping") == {}


@pytest.mark.parametrize("params", [[], ["s"], "s", 5, True])
async def test_non_object_params_are_invalid_params(raw: Raw, params: Any) -> None:
    """params that are not an object get -32602."""
    await create(raw)
    assert_error(await raw.request("session/get", params), INVALID_PARAMS)
    assert_error(await raw.request("ping", params), INVALID_PARAMS)
    assert await head(raw) == 1


WRONG_TYPES: list[tuple[str, dict[str, Any]]] = [
    ("session/get", {"sessionId": 5}),
    ("session/get", {}),
    ("session/get", {"sessionId": ["s"]}),
    ("session/subscribe", {"sessionId": "s", "afterSeq": "x"}),
    ("session/subscribe", {"sessionId": "s", "afterSeq": -1}),
    ("session/subscribe", {"sessionId": "s", "afterSeq": 1.5}),
    ("session/subscribe", {"sessionId": "s", "afterSeq": True}),
    ("session/subscribe", {"sessionId": "s", "epoch": 5}),
    ("session/history", {"sessionId": "s", "afterSeq": "x"}),
    ("session/history", {"sessionId": "s", "beforeSeq": "x"}),
    ("session/history", {"sessionId": "s", "limit": 0}),
    ("session/history", {"sessionId": "s", "limit": 5001}),
    ("session/history", {"sessionId": "s", "types": "user.*"}),
    ("session/history", {"sessionId": "s", "types": [5]}),
    ("session/list", {"limit": 0}),
    ("session/list", {"limit": 1001}),
    ("session/list", {"limit": "10"}),
    ("session/list", {"cursor": 5}),
    ("session/list", {"cursor": "not-a-cursor"}),
    ("session/list", {"agent": 5}),
    ("state/query", {"sessionId": "s", "sql": "SELECT 1", "limit": 0}),
    ("state/query", {"sessionId": "s", "sql": "SELECT 1", "limit": 10001}),
    ("state/query", {"sessionId": "s", "sql": 5}),
    ("state/query", {"sessionId": "s"}),
    ("state/query", {"sessionId": "s", "sql": "SELECT ?", "params": "x"}),
    ("state/query", {"sessionId": "s", "sql": "SELECT ?", "params": [[1]]}),
    ("state/query", {"sessionId": "s", "sql": "SELECT ?", "params": [{"a": 1}]}),
    ("session/publish", {"sessionId": "s", "type": "note", "data": [1, 2]}),
    ("session/publish", {"sessionId": "s", "type": "note", "data": "text"}),
    ("session/publish", {"sessionId": "s", "type": 5}),
    ("session/publish", {"sessionId": "s"}),
    ("session/publish", {"sessionId": "s", "type": "Note"}),
    ("session/publish", {"sessionId": "s", "type": "note."}),
    ("session/publish", {"sessionId": "s", "type": "a" * 65}),
    ("session/publish", {"sessionId": "s", "type": "user.message", "data": {}}),
    ("session/publish", {"sessionId": "s", "type": "user.message", "data": {"text": 5}}),
    ("session/publish", {"sessionId": "s", "type": "note", "idempotencyKey": 5}),
    ("session/publish", {"sessionId": "s", "type": "note", "idempotencyKey": "k" * 129}),
    ("session/publish", {"sessionId": "s", "type": "note", "state": "CREATE TABLE t(a)"}),
    ("session/publish", {"sessionId": "s", "type": "note", "state": []}),
    ("session/publish", {"sessionId": "s", "type": "note", "state": [{"sql": 5}]}),
    ("session/publish", {"sessionId": "s", "type": "permission.response", "data": {}}),
    ("state/exec", {"sessionId": "s"}),
    ("state/exec", {"sessionId": "s", "statements": []}),
    ("state/exec", {"sessionId": "s", "statements": "CREATE TABLE t(a)"}),
    ("state/exec", {"sessionId": "s", "statements": [{"params": [1]}]}),
    ("state/exec", {"sessionId": "s", "statements": [{"sql": "SELECT ?", "params": 5}]}),
    ("session/create", {"sessionId": "n", "title": 5}),
    ("session/create", {"sessionId": "n", "title": "t" * 1001}),
    ("session/create", {"sessionId": "n", "metadata": [1]}),
    ("session/create", {"sessionId": "n", "agent": 5}),
    ("session/fork", {"sessionId": "s", "atSeq": 0}),
    ("session/fork", {"sessionId": "s", "atSeq": "x"}),
    ("session/fork", {"sessionId": "s", "atSeq": 2}),
    ("session/fork", {"sessionId": "s", "newSessionId": 5}),
    ("session/fork", {"sessionId": "s", "title": 5}),
]


@pytest.mark.parametrize(("method", "params"), WRONG_TYPES)
async def test_wrong_param_types_are_invalid_params(
    raw: Raw, method: str, params: dict[str, Any]
) -> None:
    """A param of the wrong type or out of range gets -32602 and stores nothing."""
    await create(raw)
    err = assert_error(await raw.request(method, params), INVALID_PARAMS)
    assert "data" not in err or isinstance(err["data"], dict)
    assert await head(raw) == 1
    listed = await raw.call("session/list")
    assert [s["sessionId"] for s in listed["sessions"]] == ["s"]


@pytest.mark.parametrize("bad_id", BAD_SESSION_IDS)
async def test_invalid_session_id_is_refused_and_touches_no_file(
    hub: Hub, raw: Raw, tmp_path: Path, bad_id: str
) -> None:
    """A session id that breaks the pattern (path tricks too) gets -32602 and writes nothing."""
    await create(raw)
    await exec_sql(raw, "CREATE TABLE t(a)")
    before = tree(tmp_path)
    calls: list[tuple[str, dict[str, Any]]] = [
        ("session/create", {"sessionId": bad_id}),
        ("session/get", {"sessionId": bad_id}),
        ("session/subscribe", {"sessionId": bad_id}),
        ("session/publish", {"sessionId": bad_id, "type": "note", "data": {"x": 1}}),
        ("session/history", {"sessionId": bad_id}),
        ("session/delete", {"sessionId": bad_id}),
        ("state/query", {"sessionId": bad_id, "sql": "SELECT 1"}),
        ("state/exec", {"sessionId": bad_id, "statements": [{"sql": "INSERT INTO t VALUES (1)"}]}),
        ("session/fork", {"sessionId": "s", "newSessionId": bad_id}),
        ("session/fork", {"sessionId": bad_id}),
    ]
    for method, params in calls:
        assert_error(await raw.request(method, params), INVALID_PARAMS)
    assert tree(tmp_path) == before
    sessions_dir = hub.config.hub.data_dir / "sessions"
    assert sorted(p.name for p in sessions_dir.iterdir() if p.suffix == ".db") == ["s.db"]
    assert await head(raw) == 2
    listed = await raw.call("session/list")
    assert [s["sessionId"] for s in listed["sessions"]] == ["s"]
    assert await raw.call("ping") == {}


@pytest.mark.parametrize("version", [2, 0, "1", None, True, [1]])
async def test_other_protocol_version_is_refused_with_supported_list(
    raw_factory: RawFactory, version: Any
) -> None:
    """initialize with protocolVersion other than 1 gets -32602 with data {"supported": [1]}."""
    raw = await raw_factory(initialize=False)
    params = {"protocolVersion": version, "clientInfo": {"name": "t", "kind": "t", "version": "0"}}
    err = assert_error(await raw.request("initialize", params), INVALID_PARAMS)
    assert err["data"] == {"supported": [1]}
    assert (await raw.initialize())["protocolVersion"] == 1


async def test_initialize_twice_is_invalid_request(raw: Raw) -> None:
    """A second initialize on the same connection is refused; the connection stays usable."""
    params = {"protocolVersion": 1, "clientInfo": {"name": "t", "kind": "t", "version": "0"}}
    assert_error(await raw.request("initialize", params), INVALID_REQUEST)
    assert await raw.call("ping") == {}


# --- authentication ----------------------------------------------------------------------

async def test_requests_before_initialize_get_not_authenticated_then_4401(
    raw_factory: RawFactory,
) -> None:
    """Each method before initialize gets -32001; the third closes the connection with 4401."""
    raw = await raw_factory(initialize=False)
    for method in ("ping", "session/list", "no/such/method"):
        assert_error(await raw.request(method), NOT_AUTHENTICATED)
    assert await raw.closed() == 4401


async def test_two_requests_before_initialize_leave_the_connection_usable(
    raw_factory: RawFactory,
) -> None:
    """Two -32001 errors do not close the connection: initialize still succeeds."""
    raw = await raw_factory(initialize=False)
    for _ in range(2):
        assert_error(await raw.request("ping"), NOT_AUTHENTICATED)
    await raw.initialize()
    assert await raw.call("ping") == {}


async def test_no_initialize_in_time_closes_4408(
    hub_factory: HubFactory, raw_factory: RawFactory
) -> None:
    """A connection that sends no initialize within hub.initialize_timeout is closed with 4408."""
    hub = await hub_factory(initialize_timeout=0.5)
    silent = await raw_factory(target=hub, initialize=False)
    chatty = await raw_factory(target=hub, initialize=False)
    assert_error(await chatty.request("ping"), NOT_AUTHENTICATED)
    initialized = await raw_factory(target=hub)
    assert await silent.closed(timeout=5) == 4408
    assert await chatty.closed(timeout=5) == 4408
    assert await initialized.call("ping") == {}


@pytest.mark.parametrize("token", ["wrong-token", "", None, "viewer-token "])
async def test_bad_token_in_initialize_gets_not_authenticated_then_4401(
    hub_factory: HubFactory, raw_factory: RawFactory, token: str | None
) -> None:
    """A bad or missing params.token gets -32001, then the hub closes with 4401."""
    hub = await hub_factory(tokens=True)
    raw = await raw_factory(target=hub, initialize=False)
    params: dict[str, Any] = {"protocolVersion": 1,
                              "clientInfo": {"name": "t", "kind": "t", "version": "0"}}
    if token is not None:
        params["token"] = token
    assert_error(await raw.request("initialize", params), NOT_AUTHENTICATED)
    assert await raw.closed() == 4401


@pytest.mark.parametrize("header", ["Bearer nope", "Bearer ", "Basic dmVyYTp4", "admin-token"])
async def test_bad_bearer_header_refuses_the_upgrade_with_401(
    hub_factory: HubFactory, raw_factory: RawFactory, header: str
) -> None:
    """A bad Authorization header makes the upgrade fail with HTTP 401."""
    hub = await hub_factory(tokens=True)
    with pytest.raises(InvalidStatus) as exc_info:
        await raw_factory(target=hub, headers={"Authorization": header}, initialize=False)
    assert exc_info.value.response.status_code == 401
    good = await token_conn(raw_factory, hub, "viewer-token")
    assert await good.call("ping") == {}


async def test_header_token_wins_over_params_token(
    hub_factory: HubFactory, raw_factory: RawFactory
) -> None:
    """With both a Bearer header and params.token, the header's principal is used."""
    hub = await hub_factory(tokens=True)
    admin = await token_conn(raw_factory, hub, "admin-token")
    await create(admin)
    for params_token in ("admin-token", "wrong-token"):
        raw = await raw_factory(
            target=hub, headers={"Authorization": "Bearer viewer-token"}, initialize=False
        )
        result = await raw.initialize(params_token)
        assert result["principal"] == {"name": "vera", "role": "viewer"}
        assert_error(
            await raw.request("session/publish", {"sessionId": "s", "type": "note"}), FORBIDDEN
        )
    assert await head(admin) == 1


# --- -32003: roles and reserved types ----------------------------------------------------

async def test_viewer_cannot_change_anything(
    hub_factory: HubFactory, raw_factory: RawFactory
) -> None:
    """A viewer gets -32003 for publish, create, fork, state/exec and cancel; nothing is stored."""
    hub = await hub_factory(tokens=True)
    admin = await token_conn(raw_factory, hub, "admin-token")
    await create(admin)
    viewer = await token_conn(raw_factory, hub, "viewer-token")
    for method, params in [
        ("session/publish", {"sessionId": "s", "type": "user.message", "data": {"text": "hi"}}),
        ("session/create", {"sessionId": "v"}),
        ("session/fork", {"sessionId": "s", "newSessionId": "v"}),
        ("state/exec", {"sessionId": "s", "statements": [{"sql": "CREATE TABLE t(a)"}]}),
        ("session/cancel", {"sessionId": "s"}),
        ("session/delete", {"sessionId": "s"}),
        ("session/suspend", {"sessionId": "s"}),
    ]:
        err = assert_error(await viewer.request(method, params), FORBIDDEN)
        assert err["data"]["role"] == "viewer"
    assert await head(viewer) == 1
    assert [s["sessionId"] for s in (await viewer.call("session/list"))["sessions"]] == ["s"]
    rows = await viewer.call("state/query", {"sessionId": "s", "sql": "SELECT 1"})
    assert rows["rows"] == [[1]]


async def test_participant_cannot_delete_or_suspend(
    hub_factory: HubFactory, raw_factory: RawFactory
) -> None:
    """A participant gets -32003 for session/delete and session/suspend; the session stays."""
    hub = await hub_factory(tokens=True)
    participant = await token_conn(raw_factory, hub, "participant-token")
    await create(participant)
    for method in ("session/delete", "session/suspend"):
        err = assert_error(await participant.request(method, {"sessionId": "s"}), FORBIDDEN)
        assert err["data"] == {"role": "participant", "needed": "admin"}
    assert await head(participant) == 1
    published = await participant.call("session/publish", {"sessionId": "s", "type": "note"})
    assert published["seq"] == 2


@pytest.mark.parametrize("event_type", [
    "agent.x", "agent.message", "turn.started", "turn.completed", "tool.call", "tool.update",
    "session.created", "session.forked", "hub.x", "plan", "permission.request", "state.changed",
])
async def test_reserved_event_type_is_forbidden(raw: Raw, event_type: str) -> None:
    """Publishing a reserved type gets -32003 and stores nothing."""
    await create(raw)
    err = assert_error(
        await raw.request("session/publish", {"sessionId": "s", "type": event_type,
                                              "data": {"requestId": "r", "turnId": "t"}}),
        FORBIDDEN,
    )
    assert event_type in err["message"]
    assert await head(raw) == 1
    assert await raw.call("ping") == {}


async def test_reserved_prefix_needs_the_dot(raw: Raw) -> None:
    """Types that only look like reserved ones (agents.x, planning, hubx) may be published."""
    await create(raw)
    for seq, event_type in enumerate(("agents.x", "planning", "hubx", "state.changes"), start=2):
        result = await raw.call("session/publish", {"sessionId": "s", "type": event_type})
        assert result["seq"] == seq


# --- -32004 ------------------------------------------------------------------------------

SESSION_METHODS: list[tuple[str, dict[str, Any]]] = [
    ("session/get", {}),
    ("session/delete", {}),
    ("session/subscribe", {}),
    ("session/unsubscribe", {}),
    ("session/publish", {"type": "note"}),
    ("session/history", {}),
    ("session/cancel", {}),
    ("session/suspend", {}),
    ("session/fork", {}),
    ("state/query", {"sql": "SELECT 1"}),
    ("state/exec", {"statements": [{"sql": "CREATE TABLE t(a)"}]}),
]


@pytest.mark.parametrize(("method", "extra"), SESSION_METHODS)
async def test_unknown_session_is_not_found(
    hub: Hub, raw: Raw, tmp_path: Path, method: str, extra: dict[str, Any]
) -> None:
    """Every method taking a sessionId gets -32004 for a session that does not exist."""
    await create(raw)
    before = tree(tmp_path)
    err = assert_error(await raw.request(method, {"sessionId": "ghost", **extra}), NOT_FOUND)
    assert "ghost" in err["message"]
    assert tree(tmp_path) == before
    assert not (hub.config.hub.data_dir / "sessions" / "ghost.db").exists()
    assert await head(raw) == 1


async def test_deleted_session_is_not_found(raw: Raw) -> None:
    """After session/delete the session answers -32004 like one that never existed."""
    await create(raw)
    assert await raw.call("session/delete", {"sessionId": "s"}) == {}
    assert_error(await raw.request("session/get", {"sessionId": "s"}), NOT_FOUND)
    assert_error(await raw.request("session/delete", {"sessionId": "s"}), NOT_FOUND)


@pytest.mark.parametrize(("method", "extra"), [
    ("session/history", {}),
    ("session/publish", {"type": "note"}),
    ("state/query", {"sql": "SELECT 1"}),
    ("session/subscribe", {}),
])
async def test_request_racing_delete_does_not_resurrect_the_session(
    hub: Hub, raw: Raw, method: str, extra: dict[str, Any]
) -> None:
    """A request right behind session/delete gets a result or -32004; the session stays gone."""
    before = database_threads()
    try:
        await create(raw)
        await raw.call("session/publish", {"sessionId": "s", "type": "note"})
        await raw.send(request("delete", "session/delete", {"sessionId": "s"}))
        await raw.send(request("racer", method, {"sessionId": "s", **extra}))
        got = await collect(raw, ["delete", "racer"])
        assert got["delete"].get("result") == {}, got["delete"]
        if "error" in got["racer"]:
            assert_error(got["racer"], NOT_FOUND)
        assert_error(await raw.request("session/get", {"sessionId": "s"}), NOT_FOUND)
        sessions_dir = hub.config.hub.data_dir / "sessions"
        assert sorted(p.name for p in sessions_dir.iterdir()) == []
        await create(raw)  # the id is free again
        await raw.call("session/subscribe", {"sessionId": "s"})
        assert [e["seq"] for e in await raw.events("s", 1)] == [1]
        assert await raw.call("ping") == {}
    finally:
        await asyncio.wait_for(hub.stop(), 10)
        leaked = await close_leaked_database_threads(before)
    assert leaked == 0, f"{leaked} session database connection(s) still open after stop()"


async def test_unknown_agent_is_not_found(raw: Raw) -> None:
    """session/create with an agent that is not configured gets -32004; no session is made."""
    err = assert_error(
        await raw.request("session/create", {"sessionId": "s", "agent": "no-such-agent"}),
        NOT_FOUND,
    )
    assert "no-such-agent" in err["message"]
    assert_error(await raw.request("session/get", {"sessionId": "s"}), NOT_FOUND)
    assert (await raw.call("session/list"))["sessions"] == []


# --- -32009 ------------------------------------------------------------------------------

async def test_existing_session_id_is_conflict(raw: Raw) -> None:
    """Creating (or forking into) an id that exists gets -32009; the session is unchanged."""
    first = await create(raw, title="first")
    await create(raw, "other")
    assert_error(await raw.request("session/create", {"sessionId": "s", "title": "x"}), CONFLICT)
    assert_error(
        await raw.request("session/fork", {"sessionId": "other", "newSessionId": "s"}), CONFLICT
    )
    session = (await raw.call("session/get", {"sessionId": "s"}))["session"]
    assert session["epoch"] == first["epoch"]
    assert session["title"] == "first"
    assert session["headSeq"] == 1


async def test_concurrent_creates_of_one_id_conflict(raw: Raw) -> None:
    """Of several creates of one id sent at once, exactly one succeeds; the others get -32009."""
    ids = [f"c{i}" for i in range(5)]
    for rid in ids:
        await raw.send(request(rid, "session/create", {"sessionId": "s"}))
    got = await collect(raw, ids)
    assert sum("result" in m for m in got.values()) == 1
    for msg in got.values():
        if "error" in msg:
            assert_error(msg, CONFLICT)
    assert await head(raw) == 1


async def test_permission_response_without_open_request_is_conflict(raw: Raw) -> None:
    """A permission.response for a request that was never made gets -32009; nothing is stored."""
    await create(raw)
    data = {"requestId": "never-asked", "optionId": "allow"}
    err = assert_error(
        await raw.request("session/publish", {"sessionId": "s", "type": "permission.response",
                                              "data": data}),
        CONFLICT,
    )
    assert "never-asked" in err["message"]
    cancelled = {"requestId": "never-asked", "outcome": "cancelled"}
    assert_error(
        await raw.request("session/publish", {"sessionId": "s", "type": "permission.response",
                                              "data": cancelled}),
        CONFLICT,
    )
    assert await head(raw) == 1


# --- -32010 ------------------------------------------------------------------------------

async def test_after_seq_ahead_of_head_cannot_resume(raw: Raw) -> None:
    """Subscribing with afterSeq greater than headSeq gets -32010; afterSeq == head works."""
    await create(raw)
    assert_error(await raw.request("session/subscribe", {"sessionId": "s", "afterSeq": 2}),
                 CANNOT_RESUME)
    assert_error(await raw.request("session/subscribe", {"sessionId": "s", "afterSeq": 10**15}),
                 CANNOT_RESUME)
    result = await raw.call("session/subscribe", {"sessionId": "s", "afterSeq": 1})
    assert result["headSeq"] == 1


async def test_wrong_epoch_cannot_resume(raw: Raw) -> None:
    """Subscribing with an epoch that is not the session's gets -32010; the right one works."""
    session = await create(raw)
    for epoch in ("0" * 16, "", session["epoch"].upper() + "x"):
        err = assert_error(
            await raw.request("session/subscribe", {"sessionId": "s", "epoch": epoch}),
            CANNOT_RESUME,
        )
        assert err["data"]["epoch"] == session["epoch"]
    result = await raw.call("session/subscribe", {"sessionId": "s", "epoch": session["epoch"]})
    assert result["epoch"] == session["epoch"]


async def test_recreated_session_has_a_new_epoch(raw: Raw) -> None:
    """A session deleted and created again under the same id refuses the old epoch."""
    old = await create(raw)
    await raw.call("session/delete", {"sessionId": "s"})
    new = await create(raw)
    assert new["epoch"] != old["epoch"]
    assert_error(await raw.request("session/subscribe", {"sessionId": "s", "epoch": old["epoch"],
                                                         "afterSeq": 1}), CANNOT_RESUME)


# --- -32013 ------------------------------------------------------------------------------

async def test_event_data_over_limit_is_too_large(
    hub_factory: HubFactory, raw_factory: RawFactory
) -> None:
    """Data, state statements or metadata over hub.max_event_bytes get -32013; nothing is stored."""
    hub = await hub_factory(max_event_bytes=1000)
    raw = await raw_factory(target=hub)
    await create(raw)
    big = "x" * 1200
    cases: list[tuple[str, dict[str, Any]]] = [
        ("session/publish", {"sessionId": "s", "type": "note", "data": {"blob": big}}),
        ("session/publish", {"sessionId": "s", "type": "user.message", "data": {"text": big}}),
        ("session/publish", {"sessionId": "s", "type": "note",
                             "state": [{"sql": f"CREATE TABLE t(a) -- {big}"}]}),
        ("session/publish", {"sessionId": "s", "type": "note", "data": {"a": "x" * 600},
                             "state": [{"sql": "SELECT ?", "params": ["y" * 600]}]}),
        ("state/exec", {"sessionId": "s", "statements": [{"sql": "CREATE TABLE t(a)"},
                                                         {"sql": "SELECT ?", "params": [big]}]}),
        ("session/create", {"sessionId": "n", "metadata": {"blob": big}}),
    ]
    for method, params in cases:
        err = assert_error(await raw.request(method, params), TOO_LARGE)
        assert "1000" in err["message"] or "large" in err["message"]
    assert await head(raw) == 1
    assert_error(await raw.request("session/get", {"sessionId": "n"}), NOT_FOUND)
    assert_error(await query(raw, "SELECT * FROM t"), INVALID_PARAMS)
    ok = await raw.call("session/publish", {"sessionId": "s", "type": "note",
                                            "data": {"blob": "x" * 500}})
    assert ok["seq"] == 2


# --- -32029 ------------------------------------------------------------------------------

async def test_too_many_requests_in_flight_is_overloaded(
    hub_factory: HubFactory, raw_factory: RawFactory
) -> None:
    """With max_inflight=1, pipelined publishes get -32029; only answered ones are stored."""
    hub = await hub_factory(max_inflight=1)
    raw = await raw_factory(target=hub)
    await create(raw)
    stored = 0
    overloaded = 0
    for attempt in range(5):
        ids = [f"p{attempt}-{i}" for i in range(40)]
        for i, rid in enumerate(ids):
            await raw.send(request(rid, "session/publish",
                                   {"sessionId": "s", "type": "note", "data": {"i": i}}))
        got = await collect(raw, ids)
        for msg in got.values():
            if "error" in msg:
                assert_error(msg, OVERLOADED)
                overloaded += 1
            else:
                stored += 1
        if overloaded:
            break
    assert overloaded > 0
    assert await head(raw) == 1 + stored
    history = await raw.call("session/history", {"sessionId": "s", "limit": 5000})
    assert [e["seq"] for e in history["events"]] == list(range(1, 2 + stored))
    assert await raw.call("ping") == {}
    published = await raw.call("session/publish", {"sessionId": "s", "type": "note"})
    assert published["seq"] == stored + 2


async def test_full_session_queue_is_overloaded(
    hub_factory: HubFactory, raw_factory: RawFactory
) -> None:
    """With max_queue=1, concurrent publishers get -32029; the hub keeps serving afterwards."""
    hub = await hub_factory(max_queue=1)
    conns = [await raw_factory(target=hub) for _ in range(4)]
    await create(conns[0])
    stored = 0
    overloaded = 0
    for attempt in range(5):
        batches = []
        for n, conn in enumerate(conns):
            ids = [f"q{attempt}-{n}-{i}" for i in range(25)]
            batches.append((conn, ids))
        for i in range(25):
            for conn, ids in batches:
                await conn.send(request(ids[i], "session/publish",
                                        {"sessionId": "s", "type": "note"}))
        for conn, ids in batches:
            for msg in (await collect(conn, ids)).values():
                if "error" in msg:
                    assert_error(msg, OVERLOADED)
                    overloaded += 1
                else:
                    stored += 1
        if overloaded:
            break
    assert overloaded > 0
    assert await head(conns[0]) == 1 + stored
    for conn in conns:
        assert await conn.call("ping") == {}
    assert (await conns[1].call("session/publish", {"sessionId": "s", "type": "note"}))["seq"] \
        == stored + 2


# --- close codes -------------------------------------------------------------------------

async def test_frame_over_max_frame_bytes_closes_1009(
    hub_factory: HubFactory, raw_factory: RawFactory
) -> None:
    """A frame larger than hub.max_frame_bytes closes the connection with 1009; nothing stored."""
    hub = await hub_factory(max_frame_bytes=10_000)
    raw = await raw_factory(target=hub)
    await create(raw)
    await raw.send(request("big", "session/publish",
                           {"sessionId": "s", "type": "note", "data": {"blob": "x" * 20_000}}))
    assert await raw.closed() == 1009
    fresh = await raw_factory(target=hub)
    assert await fresh.call("ping") == {}
    assert await head(fresh) == 1


async def test_frame_just_under_max_frame_bytes_is_served(
    hub_factory: HubFactory, raw_factory: RawFactory
) -> None:
    """A frame below hub.max_frame_bytes is an ordinary request."""
    hub = await hub_factory(max_frame_bytes=10_000)
    raw = await raw_factory(target=hub)
    await create(raw)
    result = await raw.call("session/publish",
                            {"sessionId": "s", "type": "note", "data": {"blob": "x" * 9_000}})
    assert result["seq"] == 2


async def test_hub_shutdown_closes_1001(hub_factory: HubFactory, raw_factory: RawFactory) -> None:
    """Stopping the hub closes client connections with 1001."""
    hub = await hub_factory()
    raw = await raw_factory(target=hub)
    await raw.call("ping")
    stopping = asyncio.create_task(hub.stop())
    try:
        code = await raw.closed(timeout=3)
    except TimeoutError:
        code = None
    finally:
        await raw.ws.close()  # lets a stuck stop() finish so the test cannot hang
        await asyncio.wait_for(stopping, 10)
    assert code == 1001, "the hub did not close the client within 3 s of stop()"


async def test_stalled_subscriber_is_closed_4429_and_resumes_without_loss(
    hub_factory: HubFactory, raw_factory: RawFactory
) -> None:
    """A subscriber that stops reading gets its pending events, then 4429; it resumes gap-free."""
    hub = await hub_factory(max_lag_bytes=64 * 1024)
    writer = await raw_factory(target=hub)
    await create(writer)
    # A small receive buffer, and a client that stops reading after one queued message.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", hub.port))
    reader = await raw_factory(target=hub, sock=sock, max_queue=1)
    await reader.call("session/subscribe", {"sessionId": "s", "afterSeq": 1})
    blob = "x" * 100_000
    async with asyncio.timeout(30):
        while hub.metrics.slow_disconnects == 0:
            await writer.call("session/publish", {"sessionId": "s", "type": "load",
                                                  "data": {"blob": blob}})
    head_seq = await head(writer)
    seen = [e["seq"] for m in reader.notifications for e in m.get("params", {}).get("events", [])]
    with contextlib.suppress(ConnectionClosed):
        async with asyncio.timeout(15):
            while True:
                msg = await reader.recv()
                seen += [e["seq"] for e in msg.get("params", {}).get("events", [])]
    assert reader.ws.close_code == 4429
    last = seen[-1] if seen else 1
    assert seen == list(range(2, last + 1))
    again = await raw_factory(target=hub)
    await again.call("session/subscribe", {"sessionId": "s", "afterSeq": last})
    rest = await again.events("s", head_seq - last, timeout=15)
    assert [e["seq"] for e in rest] == list(range(last + 1, head_seq + 1))
    assert await writer.call("ping") == {}


async def test_catching_up_reader_is_not_cut_off(
    hub_factory: HubFactory, raw_factory: RawFactory
) -> None:
    """A backlog bigger than max_lag_bytes reaches a subscriber that reads, without 4429."""
    hub = await hub_factory(max_lag_bytes=4000)
    writer = await raw_factory(target=hub)
    await create(writer)
    for i in range(6):
        await writer.call("session/publish", {"sessionId": "s", "type": "note",
                                              "data": {"i": i, "pad": "p" * 1000}})
    reader = await raw_factory(target=hub)
    await reader.call("session/subscribe", {"sessionId": "s", "afterSeq": 0})
    events = await reader.events("s", 7)
    assert [e["seq"] for e in events] == list(range(1, 8))
    assert await reader.call("ping") == {}
    assert hub.metrics.slow_disconnects == 0


# --- hostile SQL: state/query ------------------------------------------------------------

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


# --- hostile SQL: state/exec -------------------------------------------------------------

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
    """state/exec refuses hub tables, the events view, transactions, ATTACH, PRAGMA (-32003).

    The statement before it in the same request is rolled back and no event is recorded.
    """
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
    for table in ("t", "u"):
        rows = await raw.call("state/query", {"sessionId": "s", "sql": f"SELECT a FROM {table}"})
        assert rows["rows"] == []
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


@pytest.mark.parametrize(("sql", "fragment"), [
    ("SELEC 1", "syntax error"),
    ("SELECT * FROM nowhere", "no such table"),
    ("SELECT nosuchcolumn FROM events", "no such column"),
    ("SELECT 1; SELECT 2", "one statement"),
    ("SELECT ?", "binding"),
])
async def test_sql_sqlite_rejects_is_invalid_params(raw: Raw, sql: str, fragment: str) -> None:
    """SQL that SQLite rejects gets -32602 with SQLite's message, in query, exec and publish."""
    await create(raw)
    for msg in (
        await query(raw, sql),
        await exec_sql(raw, "CREATE TABLE t(a)", sql),
        await raw.request("session/publish", {"sessionId": "s", "type": "note",
                                              "state": [{"sql": "CREATE TABLE t(a)"},
                                                        {"sql": sql}]}),
    ):
        err = assert_error(msg, INVALID_PARAMS)
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
    ("state/query", {"sql": "SELECT ?", "params": [2**63]}),
    ("state/query", {"sql": "SELECT :v", "params": {"v": 2**64 - 1}}),
    ("state/exec", {"statements": [{"sql": "INSERT INTO t VALUES (?)", "params": [2**63]}]}),
    ("session/publish", {"type": "note",
                         "state": [{"sql": "INSERT INTO t VALUES (?)", "params": [2**64 - 1]}]}),
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


@pytest.mark.parametrize("params", [{"afterSeq": 2**63}, {"beforeSeq": 2**64 - 1}])
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
