"""Every error status of http.md §3 against a real hub, each answered with the error body
``{"error": {"code", "message", "data"?}}``, and each storing nothing."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from server.hub import Hub
from tests.conftest import HubFactory
from tests.server.http_helpers import Answer, Http, http_client
from tests.server.raw_helpers import (
    CANNOT_RESUME,
    CONFLICT,
    FORBIDDEN,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    NOT_FOUND,
    OVERLOADED,
    PARSE_ERROR,
    TOO_LARGE,
)

JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def http(hub: Hub) -> AsyncIterator[Http]:
    """A client of the local-mode hub with session ``s`` (one event) created."""
    async with http_client(hub) as client:
        await client.create("s")
        yield client


def refused(answer: Answer, status: int, code: int | None = None) -> None:
    """``answer`` is an error body with ``status`` (and ``code``)."""
    assert answer.status == status, (answer.status, answer.raw[:300])
    assert answer.headers["Content-Type"] == "application/json; charset=utf-8"
    error = answer.body["error"]
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code, error


async def nothing_stored(http: Http, head: int = 1) -> None:
    """Session ``s`` still has ``head`` events, and no other session was created."""
    assert (await http.history("s"))["headSeq"] == head
    sessions = (await http.ok("GET", "/v1/sessions"))["sessions"]
    assert [s["sessionId"] for s in sessions] == ["s"]


async def test_body_not_json_is_400(http: Http) -> None:
    """A body that does not parse: 400 -32700."""
    for path in ("/v1/sessions/s/events", "/v1/sessions", "/v1/sessions/s/state/exec"):
        refused(await http.post(path, raw=b'{"type": "note"', headers=JSON), 400, PARSE_ERROR)
        refused(await http.post(path, raw=b"\xff\xfe", headers=JSON), 400, PARSE_ERROR)
    await nothing_stored(http)


async def test_body_not_an_object_is_400(http: Http) -> None:
    """A JSON array, string or number as the body: 400 -32600."""
    for raw in (b"[]", b'"note"', b"5", b"null"):
        refused(await http.post("/v1/sessions/s/events", raw=raw, headers=JSON), 400,
                INVALID_REQUEST)
        refused(await http.post("/v1/sessions", raw=raw, headers=JSON), 400, INVALID_REQUEST)
    await nothing_stored(http)


async def test_wrong_field_types_are_400(http: Http) -> None:
    """Fields of the wrong type or form: 400 -32602 naming the param where it can."""
    cases = [
        ("/v1/sessions/s/events", {"type": 5}),
        ("/v1/sessions/s/events", {"type": "Not A Type"}),
        ("/v1/sessions/s/events", {"type": "note", "data": [1, 2]}),
        ("/v1/sessions/s/events", {"type": "note", "idempotencyKey": 7}),
        ("/v1/sessions/s/events", {"type": "note", "idempotencyKey": "k" * 200}),
        ("/v1/sessions/s/events", {"type": "note", "state": "DROP TABLE x"}),
        ("/v1/sessions", {"sessionId": 5}),
        ("/v1/sessions", {"sessionId": "-bad id"}),
        ("/v1/sessions", {"sessionId": "n", "metadata": "x"}),
        ("/v1/sessions/s/state/exec", {"statements": "CREATE TABLE t (x)"}),
        ("/v1/sessions/s/state/query", {"sql": 5}),
        ("/v1/sessions/s/fork", {"atSeq": "one"}),
    ]
    for path, body in cases:
        refused(await http.post(path, body), 400, INVALID_PARAMS)
    await nothing_stored(http)


async def test_bad_query_values_are_400(http: Http) -> None:
    """A limit or seq that is not a number, or out of range, or a garbage cursor: 400."""
    for query in ("?limit=abc", "?limit=-1", "?limit=100000", "?afterSeq=x", "?beforeSeq=1.5",
                  "?afterSeq=-3"):
        refused(await http.get(f"/v1/sessions/s/events{query}"), 400, INVALID_PARAMS)
    for query in ("?cursor=garbage", "?cursor=", "?limit=zero", "?limit=0"):
        refused(await http.get(f"/v1/sessions{query}"), 400, INVALID_PARAMS)
    for query in ("?afterSeq=x", "?afterSeq=-1"):
        refused(await http.get(f"/v1/sessions/s/stream{query}"), 400, INVALID_PARAMS)
    refused(await http.get("/v1/sessions/s/stream", headers={"Last-Event-ID": "nope"}), 400,
            INVALID_PARAMS)


async def test_bad_session_id_in_the_path_is_400(http: Http) -> None:
    """A path whose session id is not one: 400 -32602."""
    refused(await http.get("/v1/sessions/-x"), 400, INVALID_PARAMS)
    refused(await http.post("/v1/sessions/" + "a" * 200 + "/events", {"type": "note"}), 400,
            INVALID_PARAMS)
    await nothing_stored(http)


async def test_reserved_type_is_403(http: Http) -> None:
    """A client may not publish turn.completed or session.created: 403 -32003."""
    for type_ in ("turn.completed", "session.created", "state.changed", "agent.message"):
        refused(await http.post("/v1/sessions/s/events", {"type": type_}), 403, FORBIDDEN)
    await nothing_stored(http)


async def test_body_over_max_frame_bytes_is_413(hub_factory: HubFactory) -> None:
    """A body over hub.max_frame_bytes: 413 -32013, nothing stored."""
    hub = await hub_factory(max_frame_bytes=4096)
    async with http_client(hub) as http:
        await http.create("s")
        big = {"type": "note", "data": {"text": "x" * 8192}}
        refused(await http.post("/v1/sessions/s/events", big), 413, TOO_LARGE)
        refused(await http.post("/v1/sessions", {"sessionId": "n", "title": "x" * 8192}), 413,
                TOO_LARGE)
        assert (await http.publish("s", data={"text": "x" * 1000}))["seq"] == 2
        await nothing_stored(http, 2)


async def test_event_over_max_event_bytes_is_413(hub_factory: HubFactory) -> None:
    """An event that fits the body limit but not hub.max_event_bytes: 413, nothing stored."""
    hub = await hub_factory(max_event_bytes=2048)
    async with http_client(hub) as http:
        await http.create("s")
        refused(await http.post("/v1/sessions/s/events",
                                {"type": "note", "data": {"text": "x" * 4096}}), 413, TOO_LARGE)
        await nothing_stored(http)


async def test_non_json_content_type_is_415(http: Http) -> None:
    """A body sent as text/plain or a form: 415; a JSON body with a charset is fine."""
    body = b'{"type": "note"}'
    for kind in ("text/plain", "application/x-www-form-urlencoded", "application/jsonx"):
        answer = await http.post("/v1/sessions/s/events", raw=body,
                                 headers={"Content-Type": kind})
        refused(answer, 415)
    answer = await http.post("/v1/sessions/s/events", raw=body,
                             headers={"Content-Type": "application/json; charset=utf-8"})
    assert answer.status == 200
    await nothing_stored(http, 2)


async def test_wrong_method_is_405_with_allow(http: Http) -> None:
    """A known path with a method it does not take: 405 and Allow naming those it does."""
    cases = [("PUT", "/v1/sessions", {"GET", "POST"}),
             ("PATCH", "/v1/sessions/s", {"GET", "DELETE"}),
             ("DELETE", "/v1/sessions/s/events", {"GET", "POST"}),
             ("GET", "/v1/sessions/s/state/exec", {"POST"}),
             ("POST", "/v1/sessions/s/stream", {"GET"}),
             ("GET", "/v1/hooks/github", {"POST"})]
    for method, path, allowed in cases:
        answer = await http.request(method, path)
        refused(answer, 405)
        assert {m.strip() for m in answer.headers["Allow"].split(",")} == allowed, answer.headers
    await nothing_stored(http)


async def test_unknown_path_is_404_method_not_found(http: Http) -> None:
    """A path the API does not have: 404 -32601."""
    for path in ("/v1/nope", "/v2/sessions", "/v1/sessions/s/nope", "/"):
        refused(await http.get(path), 404, METHOD_NOT_FOUND)
    refused(await http.post("/v1/sessions/s/events/extra", {"type": "note"}), 404,
            METHOD_NOT_FOUND)
    await nothing_stored(http)


async def test_unknown_session_is_404(http: Http) -> None:
    """Every endpoint of a session that does not exist: 404 -32004, nothing created."""
    cases = [("GET", "/v1/sessions/ghost", None),
             ("DELETE", "/v1/sessions/ghost", None),
             ("POST", "/v1/sessions/ghost/events", {"type": "note"}),
             ("GET", "/v1/sessions/ghost/events", None),
             ("GET", "/v1/sessions/ghost/stream", None),
             ("POST", "/v1/sessions/ghost/state/query", {"sql": "SELECT 1"}),
             ("POST", "/v1/sessions/ghost/state/exec", {"statements": [{"sql": "SELECT 1"}]}),
             ("POST", "/v1/sessions/ghost/fork", {}),
             ("POST", "/v1/sessions/ghost/cancel", None),
             ("POST", "/v1/sessions/ghost/suspend", None)]
    for method, path, body in cases:
        refused(await http.request(method, path, body), 404, NOT_FOUND)
    await nothing_stored(http)


async def test_create_an_existing_id_is_409(http: Http) -> None:
    """Creating s again, or forking onto it: 409 -32009, nothing changed."""
    refused(await http.post("/v1/sessions", {"sessionId": "s", "title": "again"}), 409, CONFLICT)
    refused(await http.post("/v1/sessions/s/fork", {"newSessionId": "s"}), 409, CONFLICT)
    assert (await http.ok("GET", "/v1/sessions/s"))["session"].get("title") in (None, "")
    await nothing_stored(http)


async def test_stream_cursor_ahead_or_other_epoch_is_409(http: Http) -> None:
    """A stream from past the head, or of another epoch: 409 -32010 before any stream."""
    refused(await http.get("/v1/sessions/s/stream?afterSeq=5"), 409, CANNOT_RESUME)
    refused(await http.get("/v1/sessions/s/stream", headers={"Last-Event-ID": "2"}), 409,
            CANNOT_RESUME)
    refused(await http.get("/v1/sessions/s/stream?epoch=not-it"), 409, CANNOT_RESUME)


async def test_bad_sql_is_400(http: Http) -> None:
    """SQL that SQLite rejects: 400 -32602 with its message; a failed exec or a publish
    whose state fails stores nothing."""
    refused(await http.post("/v1/sessions/s/state/query", {"sql": "SELEC 1"}), 400,
            INVALID_PARAMS)
    refused(await http.post("/v1/sessions/s/state/query", {"sql": "SELECT * FROM nope"}), 400,
            INVALID_PARAMS)
    refused(await http.post("/v1/sessions/s/state/exec", {"statements": [
        {"sql": "CREATE TABLE t (x)"}, {"sql": "INSERT INTO nope VALUES (1)"}]}), 400,
        INVALID_PARAMS)
    refused(await http.post("/v1/sessions/s/events", {
        "type": "note", "state": [{"sql": "INSERT INTO nope VALUES (1)"}]}), 400, INVALID_PARAMS)
    await nothing_stored(http)
    tables = await http.ok("POST", "/v1/sessions/s/state/query",
                           {"sql": "SELECT name FROM sqlite_master WHERE name = 't'"})
    assert tables["rows"] == []


async def test_a_write_in_a_query_is_403(http: Http) -> None:
    """state/query is read-only: a write is 403 -32003, and the hub's tables are closed."""
    await http.ok("POST", "/v1/sessions/s/state/exec",
                  {"statements": [{"sql": "CREATE TABLE t (x)"}]})
    refused(await http.post("/v1/sessions/s/state/query", {"sql": "INSERT INTO t VALUES (1)"}),
            403, FORBIDDEN)
    count = await http.ok("POST", "/v1/sessions/s/state/query", {"sql": "SELECT count(*) FROM t"})
    assert count["rows"] == [[0]]


async def test_full_queue_is_429_with_retry_after(hub_factory: HubFactory) -> None:
    """With max_queue=1, a burst of concurrent publishes gets some 429 with Retry-After: 1;
    exactly the answered ones are stored, and the hub serves on."""
    hub = await hub_factory(max_queue=1)
    async with http_client(hub) as http:
        await http.create("s")
        stored = overloaded = 0
        for _ in range(5):  # until a round overloads the hub
            answers = await asyncio.gather(*[
                http.post("/v1/sessions/s/events", {"type": "note"}) for _ in range(100)])
            for answer in answers:
                if answer.status == 200:
                    stored += 1
                else:
                    refused(answer, 429, OVERLOADED)
                    assert answer.headers["Retry-After"] == "1"
                    overloaded += 1
            if overloaded:
                break
        assert overloaded > 0
        assert (await http.history("s"))["headSeq"] == 1 + stored
        assert (await http.publish("s"))["seq"] == stored + 2


async def test_stopping_hub_answers_429(hub_factory: HubFactory) -> None:
    """While the hub stops, a new request is refused with 429 and Retry-After (or the
    connection is refused), never half-done."""
    hub = await hub_factory()
    async with http_client(hub) as http:
        await http.create("s")
        hub.dispatcher.stopping = True  # what Hub.stop() sets first
        try:
            answer = await http.post("/v1/sessions/s/events", {"type": "note"})
            refused(answer, 429, OVERLOADED)
            assert answer.headers["Retry-After"] == "1"
        finally:
            hub.dispatcher.stopping = False
        assert (await http.history("s"))["headSeq"] == 1


async def test_query_strings_are_not_logged(http: Http, caplog: pytest.LogCaptureFixture) -> None:
    """A failing request's query string (which might hold a token) is in no log line."""
    caplog.set_level(logging.DEBUG)
    refused(await http.get("/v1/sessions?cursor=s3cr3t-cursor-value"), 400, INVALID_PARAMS)
    refused(await http.get("/v1/sessions/s/events?token=s3cr3t-token&limit=x"), 400)
    refused(await http.get("/v1/nowhere?token=s3cr3t-token"), 404)
    assert caplog.records, "nothing was logged at all: the check would prove nothing"
    assert "s3cr3t" not in caplog.text
