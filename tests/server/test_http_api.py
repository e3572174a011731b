"""The HTTP API of http.md §4, endpoint by endpoint, against a real hub on port 0: each
answers what its websocket method answers, with the same roles and idempotency."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson

from server.hub import Hub
from tests.conftest import HubFactory, Raw, RawFactory
from tests.server.agent_helpers import echo_agent
from tests.server.http_helpers import http_client
from tests.server.raw_helpers import FORBIDDEN, NOT_AUTHENTICATED


async def test_agents_answers_what_agents_list_does(hub: Hub, raw: Raw) -> None:
    """GET /v1/agents is agents/list."""
    async with http_client(hub) as http:
        body = await http.ok("GET", "/v1/agents")
    assert body == await raw.call("agents/list")
    assert isinstance(body["agents"], list)


async def test_create_get_and_delete_a_session(hub: Hub) -> None:
    """POST /v1/sessions answers 201 with the session; GET reads it back; DELETE removes it."""
    async with http_client(hub) as http:
        created = await http.create("s1", title="CI run", metadata={"build": 7})
        assert created["sessionId"] == "s1"
        assert (created["title"], created["metadata"], created["headSeq"]) == (
            "CI run", {"build": 7}, 1)
        got = await http.ok("GET", "/v1/sessions/s1")
        assert got["session"]["sessionId"] == "s1"
        assert got["session"]["epoch"] == created["epoch"]
        assert await http.ok("DELETE", "/v1/sessions/s1") == {}
        gone = await http.get("/v1/sessions/s1")
        assert gone.status == 404


async def test_create_without_an_id_makes_one(hub: Hub) -> None:
    """An empty body (or none) creates a session with an id the hub makes."""
    async with http_client(hub) as http:
        body = await http.ok("POST", "/v1/sessions", None, 201)
        assert body["session"]["sessionId"]
        body = await http.ok("POST", "/v1/sessions", {}, 201)
        assert body["session"]["sessionId"]


async def test_list_pages_with_a_cursor(hub: Hub) -> None:
    """GET /v1/sessions?limit= pages through every session with nextCursor, newest first."""
    async with http_client(hub) as http:
        for i in range(5):
            await http.create(f"p{i}")
        seen: list[str] = []
        query = "?limit=2"
        for _ in range(10):
            body = await http.ok("GET", f"/v1/sessions{query}")
            assert len(body["sessions"]) <= 2
            seen.extend(s["sessionId"] for s in body["sessions"])
            if "nextCursor" not in body:
                break
            query = f"?limit=2&cursor={body['nextCursor']}"
    assert sorted(seen) == [f"p{i}" for i in range(5)]
    assert len(seen) == len(set(seen))


async def test_list_filters_by_agent(hub_factory: HubFactory, tmp_path: Path) -> None:
    """?agent= lists only the sessions of that agent."""
    hub = await hub_factory(agents={"echo": echo_agent(tmp_path)})
    async with http_client(hub) as http:
        await http.create("plain")
        await http.create("with-echo", agent="echo")
        body = await http.ok("GET", "/v1/sessions?agent=echo")
    assert [s["sessionId"] for s in body["sessions"]] == ["with-echo"]


async def test_publish_and_history(hub: Hub) -> None:
    """POST .../events answers seq, ts, duplicate; GET .../events holds the event."""
    async with http_client(hub) as http:
        await http.create("s")
        answer = await http.publish("s", "ci.build_failed", data={"job": 3})
        assert answer["seq"] == 2 and answer["duplicate"] is False
        assert isinstance(answer["ts"], int)
        body = await http.history("s")
    assert body["headSeq"] == 2
    event = body["events"][-1]
    assert (event["seq"], event["type"], event["data"], event["ts"]) == (
        2, "ci.build_failed", {"job": 3}, answer["ts"])
    assert event["source"] == {"kind": "client", "name": "local", "client": "http"}


async def test_idempotency_key_header_stores_once(hub: Hub) -> None:
    """The Idempotency-Key header, the body's key, or both alike: one event, the first seq."""
    async with http_client(hub) as http:
        await http.create("s")
        path = "/v1/sessions/s/events"
        first = await http.ok("POST", path, {"type": "note"}, headers={"Idempotency-Key": "k1"})
        again = await http.ok("POST", path, {"type": "note"}, headers={"Idempotency-Key": "k1"})
        in_body = await http.ok("POST", path, {"type": "note", "idempotencyKey": "k1"})
        both = await http.ok("POST", path, {"type": "note", "idempotencyKey": "k1"},
                             headers={"Idempotency-Key": "k1"})
        assert first["duplicate"] is False
        for answer in (again, in_body, both):
            assert (answer["seq"], answer["ts"], answer["duplicate"]) == (
                first["seq"], first["ts"], True)
        events = await http.events("s")
    notes = [e for e in events if e["type"] == "note"]
    assert len(notes) == 1 and notes[0]["idempotencyKey"] == "k1"


async def test_header_and_body_keys_differing_is_400(hub: Hub) -> None:
    """Idempotency-Key and idempotencyKey both present and different: 400, nothing stored."""
    async with http_client(hub) as http:
        await http.create("s")
        answer = await http.post("/v1/sessions/s/events", {"type": "note", "idempotencyKey": "a"},
                                 headers={"Idempotency-Key": "b"})
        assert answer.status == 400 and answer.code == -32602
        assert (await http.history("s"))["headSeq"] == 1


async def test_same_key_over_http_and_websocket_stored_once(hub: Hub, raw: Raw) -> None:
    """A key published over the websocket, then over HTTP (and the other way): stored once."""
    async with http_client(hub) as http:
        await http.create("s")
        ws = await raw.call("session/publish", {"sessionId": "s", "type": "note",
                                                "idempotencyKey": "ws-first"})
        over_http = await http.ok("POST", "/v1/sessions/s/events", {"type": "note"},
                                  headers={"Idempotency-Key": "ws-first"})
        assert (over_http["seq"], over_http["duplicate"]) == (ws["seq"], True)
        first = await http.publish("s", idempotencyKey="http-first")
        ws_again = await raw.call("session/publish", {"sessionId": "s", "type": "note",
                                                      "idempotencyKey": "http-first"})
        assert (ws_again["seq"], ws_again["duplicate"]) == (first["seq"], True)
        assert (await http.history("s"))["headSeq"] == 3


async def test_concurrent_keyed_publishes_store_once(hub: Hub) -> None:
    """Ten concurrent retries of one key over HTTP: one event, all answer its seq."""
    async with http_client(hub) as http:
        await http.create("s")
        answers = await asyncio.gather(*[
            http.ok("POST", "/v1/sessions/s/events", {"type": "note"},
                    headers={"Idempotency-Key": "race"}) for _ in range(10)])
        assert len({a["seq"] for a in answers}) == 1
        assert sum(not a["duplicate"] for a in answers) == 1
        assert (await http.history("s"))["headSeq"] == 2


async def test_client_header_becomes_the_source(hub: Hub) -> None:
    """X-Axtui-Client: ci/github-actions makes the event's source.client ci."""
    async with http_client(hub) as http:
        await http.create("s")
        await http.ok("POST", "/v1/sessions/s/events", {"type": "note"},
                      headers={"X-Axtui-Client": "ci/github-actions"})
        bad = await http.post("/v1/sessions/s/events", {"type": "note"},
                              headers={"X-Axtui-Client": "ci/" + "x" * 500})
        events = await http.events("s")
    assert events[-1]["source"]["client"] == "ci"
    assert events[-1]["source"]["name"] == "local"
    assert bad.status == 400 and bad.data.get("param") == "X-Axtui-Client"
    assert len(events) == 2


async def test_publish_with_state_and_on_behalf_of(hub: Hub) -> None:
    """A publish's state runs with it; onBehalfOf names the person, principal the token."""
    async with http_client(hub) as http:
        await http.create("s")
        await http.ok("POST", "/v1/sessions/s/state/exec",
                      {"statements": [{"sql": "CREATE TABLE t (x)"}]})
        await http.publish("s", state=[{"sql": "INSERT INTO t VALUES (?)", "params": [5]}],
                           onBehalfOf="alice")
        rows = await http.ok("POST", "/v1/sessions/s/state/query", {"sql": "SELECT x FROM t"})
        events = await http.events("s")
    assert rows["rows"] == [[5]]
    assert events[-1]["source"]["name"] == "alice"
    assert events[-1]["source"]["principal"] == "local"


async def test_history_windows(hub: Hub) -> None:
    """afterSeq, beforeSeq, limit and types select what session/history would."""
    async with http_client(hub) as http:
        await http.create("s")
        for i in range(10):
            await http.publish("s", "ci.passed" if i % 2 else "ci.failed", data={"i": i})
        await http.publish("s", "user.message", data={"text": "hi"})
        def seqs(body: dict[str, Any]) -> list[int]:
            return [e["seq"] for e in body["events"]]
        assert seqs(await http.history("s", "?afterSeq=3&limit=4")) == [4, 5, 6, 7]
        assert seqs(await http.history("s", "?beforeSeq=5")) == [1, 2, 3, 4]
        assert seqs(await http.history("s", "?beforeSeq=10&limit=2")) == [8, 9]
        assert seqs(await http.history("s", "?afterSeq=2&beforeSeq=6")) == [3, 4, 5]
        typed = await http.history("s", "?types=ci.failed,user.*")
        assert [e["type"] for e in typed["events"]] == ["ci.failed"] * 5 + ["user.message"]
        assert typed["headSeq"] == 12
        assert seqs(await http.history("s", "?types=ci.*&afterSeq=9")) == [10, 11]


async def test_history_matches_the_websocket(hub: Hub, raw: Raw) -> None:
    """The events of GET .../events are those session/history gives, byte for byte."""
    async with http_client(hub) as http:
        await http.create("s")
        await http.publish("s", data={"text": "é ✓", "n": [1, 2.5, None]})
        body = await http.history("s")
    assert body == await raw.call("session/history", {"sessionId": "s"})


async def test_state_query_and_exec(hub: Hub) -> None:
    """state/exec records a state.changed event; state/query reads, with params and limit."""
    async with http_client(hub) as http:
        await http.create("s")
        done = await http.ok("POST", "/v1/sessions/s/state/exec", {"statements": [
            {"sql": "CREATE TABLE t (k TEXT, v INTEGER)"},
            {"sql": "INSERT INTO t VALUES (?, ?), (?, ?), (?, ?)",
             "params": ["a", 1, "b", 2, "c", 3]},
        ]})
        assert done["seq"] == 2 and done["changes"] == 3
        body = await http.ok("POST", "/v1/sessions/s/state/query",
                             {"sql": "SELECT k, v FROM t WHERE v >= ? ORDER BY v",
                              "params": [2]})
        assert body == {"columns": ["k", "v"], "rows": [["b", 2], ["c", 3]], "truncated": False}
        short = await http.ok("POST", "/v1/sessions/s/state/query",
                              {"sql": "SELECT k FROM t", "limit": 1})
        assert short["truncated"] is True and len(short["rows"]) == 1
        events = await http.events("s")
    assert events[-1]["type"] == "state.changed"


async def test_fork(hub: Hub) -> None:
    """POST .../fork answers 201 with the new session, holding the events up to atSeq."""
    async with http_client(hub) as http:
        await http.create("s")
        for _ in range(3):
            await http.publish("s")
        body = await http.ok("POST", "/v1/sessions/s/fork",
                             {"atSeq": 3, "newSessionId": "s-fork", "title": "forked"}, 201)
        assert body["session"]["sessionId"] == "s-fork"
        assert body["session"]["title"] == "forked"
        original = await http.ok("GET", "/v1/sessions/s")
        assert body["session"]["epoch"] != original["session"]["epoch"]
        forked = await http.events("s-fork")
        assert [e["type"] for e in forked[:3]] == ["session.created", "note", "note"]
        anywhere = await http.ok("POST", "/v1/sessions/s/fork", None, 201)
        assert anywhere["session"]["sessionId"] not in ("s", "s-fork")


async def test_cancel_and_suspend(hub_factory: HubFactory, tmp_path: Path) -> None:
    """POST .../cancel and .../suspend answer {} (a session with an agent, and one without)."""
    hub = await hub_factory(agents={"echo": echo_agent(tmp_path)})
    async with http_client(hub) as http:
        await http.create("plain")
        await http.create("e", agent="echo")
        for sid in ("plain", "e"):
            assert await http.ok("POST", f"/v1/sessions/{sid}/cancel") == {}
            assert await http.ok("POST", f"/v1/sessions/{sid}/suspend") == {}
        got = await http.ok("GET", "/v1/sessions/e")
    assert got["session"]["agentState"] == "suspended"


async def test_healthz_and_metrics_on_the_http_port(hub: Hub) -> None:
    """GET /healthz and /metrics answer on the HTTP port too."""
    async with http_client(hub) as http:
        health = await http.get("/healthz", auth=False)
        assert (health.status, health.raw) == (200, b"ok\n")
        metrics = await http.get("/metrics")
        assert metrics.status == 200 and b"axtui_events_appended_total" in metrics.raw


async def test_a_json_body_is_json(hub: Hub) -> None:
    """Answers are application/json; charset=utf-8."""
    async with http_client(hub) as http:
        answer = await http.get("/v1/agents")
    assert answer.headers["Content-Type"] == "application/json; charset=utf-8"


# --- authentication and roles ------------------------------------------------------------

async def test_no_or_bad_token_is_401(hub_factory: HubFactory) -> None:
    """Without a token, or with a wrong one, or as a query parameter: 401 with
    WWW-Authenticate: Bearer, and nothing is created."""
    hub = await hub_factory(tokens=True)
    async with http_client(hub, "admin-token") as admin, http_client(hub, "wrong") as bad:
        await admin.create("s")
        cases = [
            await bad.post("/v1/sessions", {"sessionId": "x"}),
            await admin.post("/v1/sessions", {"sessionId": "x"}, auth=False),
            await admin.post("/v1/sessions?token=admin-token", {"sessionId": "x"}, auth=False),
            await admin.post("/v1/sessions", {"sessionId": "x"}, auth=False,
                             headers={"Authorization": "Basic YWRtaW4tdG9rZW4="}),
            await bad.get("/v1/sessions/s/events"),
            await bad.post("/v1/sessions/s/events", {"type": "note"}),
            await bad.get("/v1/sessions/s/stream"),
        ]
        for answer in cases:
            assert answer.status == 401, answer.body
            assert answer.code == NOT_AUTHENTICATED
            assert answer.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await admin.get("/v1/sessions/x")).status == 404
        assert (await admin.history("s"))["headSeq"] == 1


async def test_local_mode_wants_the_local_secret(hub: Hub) -> None:
    """A local-mode hub answers 401 without its data dir's secret."""
    async with http_client(hub) as http:
        answer = await http.post("/v1/sessions", {"sessionId": "x"}, auth=False)
        assert answer.status == 401 and answer.headers["WWW-Authenticate"].startswith("Bearer")
        wrong = await http.post("/v1/sessions", {"sessionId": "x"}, auth=False,
                                headers={"Authorization": "Bearer not-the-secret"})
        assert wrong.status == 401
        assert (await http.get("/v1/sessions/x")).status == 404


async def test_viewer_cannot_write(hub_factory: HubFactory) -> None:
    """A viewer token reads but cannot create, publish, exec, fork, cancel or delete: 403,
    nothing stored."""
    hub = await hub_factory(tokens=True)
    async with http_client(hub, "admin-token") as admin, \
            http_client(hub, "viewer-token") as viewer:
        await admin.create("s")
        await admin.ok("POST", "/v1/sessions/s/state/exec",
                       {"statements": [{"sql": "CREATE TABLE t (x)"}]})
        refused = [
            await viewer.post("/v1/sessions", {"sessionId": "v"}),
            await viewer.post("/v1/sessions/s/events", {"type": "note"}),
            await viewer.post("/v1/sessions/s/events", {"type": "note"},
                              headers={"Idempotency-Key": "v"}),
            await viewer.post("/v1/sessions/s/state/exec",
                              {"statements": [{"sql": "INSERT INTO t VALUES (1)"}]}),
            await viewer.post("/v1/sessions/s/fork", {"newSessionId": "v"}),
            await viewer.post("/v1/sessions/s/cancel"),
            await viewer.post("/v1/sessions/s/suspend"),
            await viewer.request("DELETE", "/v1/sessions/s"),
        ]
        for answer in refused:
            assert answer.status == 403, answer.body
            assert answer.code == FORBIDDEN
        assert (await viewer.history("s"))["headSeq"] == 2
        assert (await viewer.ok("POST", "/v1/sessions/s/state/query",
                                {"sql": "SELECT count(*) FROM t"}))["rows"] == [[0]]
        assert (await viewer.get("/v1/sessions/v")).status == 404
        assert (await viewer.ok("GET", "/v1/agents"))["agents"] is not None


async def test_participant_cannot_delete_or_suspend(hub_factory: HubFactory) -> None:
    """A participant publishes, but session/delete and suspend need admin: 403."""
    hub = await hub_factory(tokens=True)
    async with http_client(hub, "participant-token") as paul:
        await paul.create("s")
        answer = await paul.publish("s")
        assert answer["seq"] == 2
        assert (await paul.request("DELETE", "/v1/sessions/s")).status == 403
        assert (await paul.post("/v1/sessions/s/suspend")).status == 403
        events = await paul.events("s")
    assert events[-1]["source"] == {"kind": "client", "name": "paul", "client": "http"}


async def test_agent_token_reaches_only_its_session(hub_factory: HubFactory) -> None:
    """An agent's token (minted for session a) reads a's state, nothing else: 403."""
    hub = await hub_factory(tokens=True)
    async with http_client(hub, "admin-token") as admin:
        await admin.create("a")
        await admin.create("b")
        _, token, revoke = hub.auth.agent_credentials("a", "echo")
        async with http_client(hub, token) as agent:
            assert (await agent.history("a"))["headSeq"] == 1
            for answer in [await agent.get("/v1/sessions/b/events"),
                           await agent.post("/v1/sessions/a/events", {"type": "note"}),
                           await agent.post("/v1/sessions", {"sessionId": "c"})]:
                assert answer.status == 403, answer.body
            revoke()
            assert (await agent.get("/v1/sessions/a/events")).status == 401
        assert (await admin.history("a"))["headSeq"] == 1


async def test_http_and_websocket_see_each_other(hub: Hub, raw_factory: RawFactory) -> None:
    """An event published over HTTP reaches a websocket subscriber."""
    raw = await raw_factory()
    async with http_client(hub) as http:
        await http.create("s")
        await raw.call("session/subscribe", {"sessionId": "s"})
        await raw.events("s", 1)
        answer = await http.publish("s", data={"from": "http"})
        (event,) = await raw.events("s", 1)
    assert (event["seq"], event["data"]) == (answer["seq"], {"from": "http"})
    assert orjson.dumps(event["source"]) == b'{"kind":"client","name":"local","client":"http"}'
