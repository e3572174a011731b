"""Client JSON nested past 64 levels is refused where it would be stored (publish data and
state, state/exec statements, session/create metadata, imported events), history's type
patterns are bounded, and every bad request gets -32602 with one log line, never -32603."""

from __future__ import annotations

import itertools
import json
import logging
from typing import Any

import pytest

from server.protocol import MAX_DEPTH, InvalidParams, check_depth
from tests.conftest import Raw
from tests.server.raw_helpers import INVALID_PARAMS, assert_error, create, head, request

IDS = itertools.count(1000)


async def send(raw: Raw, method: str, params: dict[str, Any]) -> dict[str, Any]:
    """Send a request encoded by Python's json (orjson cannot encode past 254 levels, the
    point of these tests); return the whole response."""
    rid = next(IDS)
    await raw.send(json.dumps(request(rid, method, params)))
    return await raw.response(rid)


def nested(depth: int, leaf: Any = 1) -> Any:
    """Lists nested ``depth`` levels deep around ``leaf``."""
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def nested_object(depth: int) -> dict[str, Any]:
    """An object whose values nest to ``depth`` levels in all (the object is level 1)."""
    return {"k": nested(depth - 1)}


# --- the check itself ------------------------------------------------------------------------

def test_check_depth_counts_arrays_and_objects() -> None:
    """A scalar is depth 0, [] and {} depth 1; 64 levels pass, 65 are refused."""
    check_depth(1, "v")
    check_depth(nested(MAX_DEPTH), "v")
    check_depth({"a": [{"b": nested(MAX_DEPTH - 3)}]}, "v")
    with pytest.raises(InvalidParams) as caught:
        check_depth(nested(MAX_DEPTH + 1), "v")
    assert caught.value.data == {"param": "v"}
    with pytest.raises(InvalidParams):
        check_depth({"a": [{"b": nested(MAX_DEPTH - 2)}]}, "v")


def test_check_depth_handles_any_depth_without_recursion() -> None:
    """Nesting far past Python's recursion limit is refused, not a RecursionError."""
    with pytest.raises(InvalidParams):
        check_depth(nested(100_000), "v")


def test_check_depth_with_the_encoding_skips_shallow_values() -> None:
    """Given the encoded value, a value with few brackets is accepted at once, and a deep
    one is still refused."""
    check_depth(list(range(10_000)), "v", b"[" + b"1," * 9999 + b"1]")
    with pytest.raises(InvalidParams):
        check_depth(nested(MAX_DEPTH + 1), "v", b"[" * 65 + b"1" + b"]" * 65)


# --- where clients send JSON ---------------------------------------------------------------

@pytest.mark.parametrize(("method", "params", "param"), [
    pytest.param("session/publish", {"type": "note", "data": nested_object(MAX_DEPTH + 1)},
                 "data", id="publish-data"),
    pytest.param("session/publish", {"type": "note", "data": nested_object(253)},
                 "data", id="publish-data-253"),
    pytest.param("session/publish", {"type": "note", "state": [
        {"sql": "SELECT 1", "extra": nested(MAX_DEPTH)}]}, "state", id="publish-state"),
    pytest.param("state/exec", {"statements": [
        {"sql": "SELECT 1", "extra": nested(MAX_DEPTH)}]}, "statements", id="exec"),
    pytest.param("state/exec", {"statements": [
        {"sql": "SELECT 1", "extra": nested(300)}]}, "statements", id="exec-300"),
])
async def test_deep_writes_are_refused(
    raw: Raw, method: str, params: dict[str, Any], param: str
) -> None:
    """A publish or state/exec nesting past 64 levels gets -32602 naming the param, and
    stores nothing."""
    await create(raw)
    err = assert_error(await send(raw, method, {"sessionId": "s", **params}), INVALID_PARAMS)
    assert err.get("data", {}).get("param") == param, err
    assert await head(raw) == 1


async def test_data_at_the_limit_is_accepted_and_forks(raw: Raw) -> None:
    """Data nested exactly 64 levels is stored, and the session still forks."""
    await create(raw)
    seq = (await raw.call("session/publish", {"sessionId": "s", "type": "note",
                                              "data": nested_object(MAX_DEPTH)}))["seq"]
    assert seq == 2
    fork = await raw.call("session/fork", {"sessionId": "s", "newSessionId": "f"})
    assert fork["session"]["headSeq"] == 3


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 300])
async def test_deep_metadata_is_refused(raw: Raw, depth: int) -> None:
    """session/create with metadata nested past 64 levels gets -32602; no session is made."""
    err = assert_error(await send(raw, "session/create", {
        "sessionId": "s", "metadata": nested_object(depth)}), INVALID_PARAMS)
    assert err["data"] == {"param": "metadata"}
    assert_error(await raw.request("session/get", {"sessionId": "s"}), -32004)


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 300])
async def test_deep_imported_events_are_refused(raw: Raw, depth: int) -> None:
    """session/import with an event whose data nests past 64 levels gets -32602 naming
    the event; no session is made."""
    events = [
        {"seq": 1, "ts": 1, "type": "session.created", "source": {"kind": "hub", "name": "hub"},
         "data": {"title": "", "agent": None, "metadata": {}}},
        {"seq": 2, "ts": 2, "type": "note", "source": {"kind": "client", "name": "x"},
         "data": nested_object(depth)},
    ]
    err = assert_error(await send(raw, "session/import", {
        "newSessionId": "i", "events": events}), INVALID_PARAMS)
    assert err["data"]["param"] == "events" and err["data"]["index"] == 1, err
    assert_error(await raw.request("session/get", {"sessionId": "i"}), -32004)


# --- history's type patterns -----------------------------------------------------------------

@pytest.mark.parametrize("types", [
    pytest.param(["note"] * 5000, id="5000-patterns"),
    pytest.param(["note"] * 101, id="101-patterns"),
    pytest.param(["x" * 129], id="too-long"),
    pytest.param([""], id="empty"),
    pytest.param([1], id="not-a-string"),
    pytest.param("note", id="not-a-list"),
])
async def test_bad_history_types_are_invalid_params(raw: Raw, types: Any) -> None:
    """session/history refuses more than 100 type patterns, or one that is not a string of
    1 to 128 characters, with -32602 naming types."""
    await create(raw)
    err = assert_error(await raw.request("session/history", {"sessionId": "s", "types": types}),
                       INVALID_PARAMS)
    assert err["data"] == {"param": "types"}


async def test_a_hundred_history_types_are_accepted(raw: Raw) -> None:
    """Up to 100 patterns are fine and filter as documented."""
    await create(raw)
    await raw.call("session/publish", {"sessionId": "s", "type": "note"})
    types = [f"other{i}" for i in range(99)] + ["no*"]
    events = (await raw.call("session/history", {"sessionId": "s", "types": types}))["events"]
    assert [e["type"] for e in events] == ["note"]


# --- every bad request: -32602 and one line ---------------------------------------------------

DEEP = nested(300)

BAD_REQUESTS = [
    ("session/create", {"sessionId": DEEP}),
    ("session/create", {"sessionId": "n", "title": DEEP}),
    ("session/create", {"sessionId": "n", "agent": DEEP}),
    ("session/create", {"sessionId": "n", "metadata": {"a": DEEP}}),
    ("session/create", {"sessionId": "n", "metadata": DEEP}),
    ("session/get", {"sessionId": DEEP}),
    ("session/list", {"limit": DEEP, "cursor": DEEP}),
    ("session/list", {"cursor": "x" * 10_000}),
    ("session/subscribe", {"sessionId": "s", "afterSeq": DEEP}),
    ("session/subscribe", {"sessionId": "s", "epoch": DEEP}),
    ("session/publish", {"sessionId": "s", "type": DEEP}),
    ("session/publish", {"sessionId": "s", "type": "note", "data": DEEP}),
    ("session/publish", {"sessionId": "s", "type": "note", "idempotencyKey": DEEP}),
    ("session/publish", {"sessionId": "s", "type": "note", "onBehalfOf": DEEP}),
    ("session/publish", {"sessionId": "s", "type": "note", "state": DEEP}),
    ("session/publish", {"sessionId": "s", "type": "note", "state": [{"sql": DEEP}]}),
    ("session/publish", {"sessionId": "s", "type": "note",
                         "state": [{"sql": "SELECT 1", "params": DEEP}]}),
    ("session/history", {"sessionId": "s", "types": DEEP}),
    ("session/history", {"sessionId": "s", "types": ["note"] * 5000}),
    ("session/history", {"sessionId": "s", "limit": DEEP}),
    ("session/fork", {"sessionId": "s", "atSeq": DEEP}),
    ("session/fork", {"sessionId": "s", "title": DEEP}),
    ("session/import", {"events": DEEP}),
    ("session/import", {"events": [DEEP]}),
    ("session/import", {"events": [{"seq": 1, "data": DEEP}]}),
    ("session/import", {"metadata": DEEP, "events": []}),
    ("state/query", {"sessionId": "s", "sql": DEEP}),
    ("state/query", {"sessionId": "s", "sql": "SELECT ?", "params": DEEP}),
    ("state/query", {"sessionId": "s", "sql": "SELECT ?", "params": [DEEP]}),
    ("state/query", {"sessionId": "s", "sql": "SELECT :a", "params": {"a": DEEP}}),
    ("state/exec", {"sessionId": "s", "statements": DEEP}),
    ("state/exec", {"sessionId": "s", "statements": [DEEP]}),
    ("state/exec", {"sessionId": "s", "statements": [{"sql": "SELECT 1", "x": DEEP}]}),
    ("state/exec", {"sessionId": "s", "statements": [{"sql": "SELECT ?", "params": [DEEP]}]}),
]


@pytest.mark.parametrize(("method", "params"), BAD_REQUESTS,
                         ids=[f"{m}-{i}" for i, (m, _) in enumerate(BAD_REQUESTS)])
async def test_bad_request_is_invalid_params_with_one_log_line(
    raw: Raw, caplog: pytest.LogCaptureFixture, method: str, params: dict[str, Any]
) -> None:
    """A malformed request gets -32602 (never -32603), the hub logs it in one line with no
    traceback, and keeps answering."""
    await create(raw)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="axtui"):
        msg = await send(raw, method, params)
    assert_error(msg, INVALID_PARAMS)
    assert not any(r.exc_info for r in caplog.records), [r.getMessage() for r in caplog.records]
    assert not any(r.levelno >= logging.ERROR for r in caplog.records)
    lines = [r.getMessage() for r in caplog.records if r.name == "axtui.hub"]
    assert len(lines) == 1 and "\n" not in lines[0] and method in lines[0], lines
    assert await raw.call("ping") == {}
