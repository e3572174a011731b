"""The JSON-RPC envelope against a real hub: frames, ids, notifications, methods, params.

Where a request must not change anything, the test checks the session's ``headSeq``
(nothing stored) and that the hub still answers ``ping`` afterwards.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from server.hub import Hub
from tests.conftest import Raw
from tests.server.raw_helpers import (
    FORBIDDEN,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    assert_error,
    call_cases,
    create,
    exec_sql,
    head,
    request,
    session_files,
    tree,
)

# --- frames ------------------------------------------------------------------------------


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
    pytest.param("[]", id="empty-batch"),
    pytest.param('[{"jsonrpc": "2.0", "id": 9, "method": "ping"}]', id="batch"),
    pytest.param("5", id="number"),
    pytest.param('"ping"', id="string"),
    pytest.param("null", id="null"),
])
async def test_non_object_json_is_invalid_request(raw: Raw, frame: str) -> None:
    """A JSON array (a batch) or scalar gets -32600 with id null; the connection stays open."""
    await raw.send(frame)
    msg = await raw.recv()
    assert msg["id"] is None
    assert_error(msg, INVALID_REQUEST)
    assert await raw.call("ping") == {}


# --- the request object ------------------------------------------------------------------

@pytest.mark.parametrize("message", [
    pytest.param({"id": "r", "method": "ping"}, id="no-jsonrpc"),
    pytest.param({"jsonrpc": "1.0", "id": "r", "method": "ping"}, id="jsonrpc-1.0"),
    pytest.param({"jsonrpc": 2.0, "id": "r", "method": "ping"}, id="jsonrpc-number"),
    pytest.param({"jsonrpc": "2.0", "id": "r"}, id="no-method"),
    pytest.param({"jsonrpc": "2.0", "id": "r", "method": 5}, id="method-number"),
    pytest.param({"jsonrpc": "2.0", "id": "r", "method": None}, id="method-null"),
])
async def test_request_without_jsonrpc_or_method_is_invalid_request(
    raw: Raw, message: dict[str, Any]
) -> None:
    """A request without "jsonrpc": "2.0" or a string method gets -32600 with its id."""
    await raw.send(message)
    msg = await raw.response("r")
    assert_error(msg, INVALID_REQUEST)
    assert await raw.call("ping") == {}


@pytest.mark.parametrize("bad_id", [
    pytest.param(1.5, id="float"),
    pytest.param(1.0, id="integral-float"),
    pytest.param({"a": 1}, id="object"),
    pytest.param([1], id="array"),
    pytest.param(True, id="true"),
    pytest.param(False, id="false"),
    pytest.param(None, id="null"),
])
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


@pytest.mark.parametrize("name", [
    pytest.param("nope", id="nope"),
    pytest.param("session/nope", id="session-nope"),
    pytest.param("Session/Get", id="wrong-case"),
    pytest.param("session/get ", id="trailing-space"),
    pytest.param("", id="empty"),
])
async def test_unknown_method_is_method_not_found(raw: Raw, name: str) -> None:
    """An unknown method gets -32601 carrying the request's id."""
    assert_error(await raw.request(name, {}), METHOD_NOT_FOUND)
    assert await raw.call("ping") == {}


# --- params ------------------------------------------------------------------------------

@pytest.mark.parametrize("params", [
    pytest.param([], id="empty-array"),
    pytest.param(["s"], id="array"),
    pytest.param("s", id="string"),
    pytest.param(5, id="number"),
    pytest.param(True, id="true"),
])
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


@pytest.mark.parametrize(("method", "params"), call_cases(WRONG_TYPES))
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


BAD_SESSION_IDS = [
    pytest.param("../x", id="parent-dir"),
    pytest.param("a/b", id="slash"),
    pytest.param("..", id="dotdot"),
    pytest.param(".hidden", id="leading-dot"),
    pytest.param("", id="empty"),
    pytest.param("x" * 129, id="129-chars"),
    pytest.param("x\u0000y", id="nul"),
    pytest.param("../s", id="parent-dir-existing"),
    pytest.param("-x", id="leading-dash"),
]

CALLS_WITH_SESSION_ID = [
    pytest.param("session/create", {}, id="create"),
    pytest.param("session/get", {}, id="get"),
    pytest.param("session/subscribe", {}, id="subscribe"),
    pytest.param("session/publish", {"type": "note", "data": {"x": 1}}, id="publish"),
    pytest.param("session/history", {}, id="history"),
    pytest.param("session/delete", {}, id="delete"),
    pytest.param("state/query", {"sql": "SELECT 1"}, id="query"),
    pytest.param("state/exec", {"statements": [{"sql": "INSERT INTO t VALUES (1)"}]},
                 id="exec"),
    pytest.param("session/fork", {"sessionId": "s", "newSessionId": None}, id="fork-into"),
    pytest.param("session/fork", {}, id="fork-from"),
]


@pytest.mark.parametrize(("method", "extra"), CALLS_WITH_SESSION_ID)
@pytest.mark.parametrize("bad_id", BAD_SESSION_IDS)
async def test_invalid_session_id_is_refused_and_touches_no_file(
    hub: Hub, raw: Raw, tmp_path: Path, bad_id: str, method: str, extra: dict[str, Any]
) -> None:
    """A session id that breaks the pattern (path tricks too) gets -32602 and writes nothing."""
    await create(raw)
    await exec_sql(raw, "CREATE TABLE t(a)")
    before = tree(tmp_path)
    if "newSessionId" in extra:  # the bad id is where the fork would go
        params = {**extra, "newSessionId": bad_id}
    else:
        params = {"sessionId": bad_id, **extra}
    assert_error(await raw.request(method, params), INVALID_PARAMS)
    assert tree(tmp_path) == before
    assert session_files(hub) == ["s.db"]
    assert await head(raw) == 2
    listed = await raw.call("session/list")
    assert [s["sessionId"] for s in listed["sessions"]] == ["s"]
    assert await raw.call("ping") == {}


# --- event types -------------------------------------------------------------------------

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


@pytest.mark.parametrize("event_type", ["agents.x", "planning", "hubx", "state.changes"])
async def test_reserved_prefix_needs_the_dot(raw: Raw, event_type: str) -> None:
    """Types that only look like reserved ones (agents.x, planning, hubx) may be published."""
    await create(raw)
    result = await raw.call("session/publish", {"sessionId": "s", "type": event_type})
    assert result["seq"] == 2
