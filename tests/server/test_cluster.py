"""Normal operation of a cluster, from outside (cluster.md §2.1-§2.4): three ``axtui serve``
replicas and a real ``redis-server`` on loopback; every request for a session is sent to
the replicas that do not own it too, and must answer as the owner (one hub) would.

Redis trouble, the start without Redis and ``/metrics`` are in test_cluster_redis.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any, cast

import aiohttp
import pytest

from axtui.client import HubClient, Subscription
from server.hub import Hub
from server.protocol import ProtocolError
from tests.server.cluster_helpers import (  # noqa: F401 - fixtures
    Cluster,
    clients,
    cluster,
    eventually,
    http_url,
    raw_client,
    redis_server,
    three,
)
from tests.server.http_helpers import Http, Message, sse
from tests.server.hubproc import HubProcess

Events = list[dict[str, Any]]


def node_of(replica: HubProcess) -> str:
    """The replica's node id (Cluster names its data dir after it)."""
    return replica.data_dir.name


async def error_of(call: Any) -> ProtocolError:
    """The protocol error that awaiting ``call`` raises (fails if it succeeds)."""
    with pytest.raises(ProtocolError) as caught:
        await call
    return caught.value


async def follow(sub: Subscription, last_seq: int, timeout: float = 20.0) -> Events:
    """Events of ``sub`` until the one with ``last_seq`` (each one, in the order sent)."""
    got: Events = []
    async with asyncio.timeout(timeout):
        async for event in sub:
            got.append(event)
            if event["seq"] >= last_seq:
                break
    return got


async def whole_log(hub: HubClient, sid: str) -> Events:
    """Every event of ``sid`` as ``hub``'s replica serves it."""
    events: Events = (await hub.history(sid, afterSeq=0, limit=5000))["events"]
    return events


@contextlib.asynccontextmanager
async def http_of(replica: HubProcess, token: str = "admin-token") -> AsyncIterator[Http]:
    """The HTTP API client of tests/server/http_helpers.py on ``replica``'s HTTP port."""
    endpoint = SimpleNamespace(http=SimpleNamespace(url=http_url(replica)))  # all Http reads
    async with aiohttp.ClientSession() as session:
        yield Http(cast(Hub, endpoint), session, token)


async def test_events_published_on_a_non_owner_reach_every_replicas_subscribers_once_in_order(
        three: list[HubProcess]) -> None:  # noqa: F811
    """B's clients publish to A's session while subscribers on A, B and C start from 0 one
    after another: each gets every event once, in seq order, the same events (ids) as the
    log, with the source of the client on B. Each subscribes while publishes go on."""
    count = 300
    async with clients(three[:1]) as (on_a,), \
            clients(three[1:2], "participant-token", kind="tui") as (on_b,):
        await on_a.create_session(sessionId="ev")
        acked: list[int] = []
        started = {n: asyncio.Event() for n in (3, 80, 160)}
        heads: list[int] = []

        async def publisher(who: int) -> None:
            for i in range(who, count, 2):
                acked.append((await on_b.publish("ev", "user.note", {"i": i}))["seq"])
                for n, ready in started.items():
                    if len(acked) >= n:
                        ready.set()

        async def subscriber(replica: HubProcess, after: int) -> Events:
            async with raw_client(replica) as raw:  # frames as sent: duplicates would show
                await started[after].wait()
                answer = await raw.call("session/subscribe", {"sessionId": "ev", "afterSeq": 0})
                heads.append(answer["headSeq"])
                return await raw.events("ev", count + 1, timeout=20)

        publishers = [asyncio.create_task(publisher(who)) for who in (0, 1)]
        seen = await asyncio.gather(*(subscriber(replica, n)
                                      for replica, n in zip(three, started, strict=True)))
        await asyncio.gather(*publishers)
        log = await whole_log(on_a, "ev")
    assert sorted(acked) == list(range(2, count + 2))
    assert max(heads) < count + 1, "a subscriber started after the publishes"
    assert [e["seq"] for e in log] == list(range(1, count + 2))
    for one in seen:  # on A, B and C
        assert [(e["seq"], e["id"]) for e in one] == [(e["seq"], e["id"]) for e in log]
    sources = [e["source"] for e in log[1:]]
    assert sources == [{"kind": "client", "name": "paul", "client": "tui"}] * count


async def test_state_and_history_are_the_same_through_every_replica(
        three: list[HubProcess]) -> None:  # noqa: F811
    """state/exec through B and C change A's session's state; state/query through A, B and
    C answer the same rows, and the same error for bad SQL; session/history windows too."""
    async with clients(three) as hubs:
        on_a, on_b, on_c = hubs
        await on_a.create_session(sessionId="st")
        first = await on_b.exec("st", [{"sql": "CREATE TABLE t (k TEXT PRIMARY KEY, n INT)"},
                                       {"sql": "INSERT INTO t VALUES ('b', 1)"}])
        second = await on_c.exec("st", [{"sql": "INSERT INTO t VALUES (?, ?)",
                                         "params": ["c", 2]}])
        assert (first["seq"], second["seq"], second["changes"]) == (2, 3, 1)
        await on_b.publish("st", "user.note", {"x": 1},
                           state=[{"sql": "UPDATE t SET n = n + 10 WHERE k = 'b'"}])
        sql = "SELECT k, n FROM t ORDER BY k"
        answers = [await hub.query("st", sql) for hub in hubs]
        assert answers[0]["rows"] == [["b", 11], ["c", 2]]
        assert answers[1:] == [answers[0], answers[0]]
        bad_query = [await error_of(hub.query("st", "SELECT nope FROM t")) for hub in hubs]
        bad_exec = [await error_of(hub.exec("st", [{"sql": "INSERT INTO missing VALUES (1)"}]))
                    for hub in hubs]
        for errors in (bad_query, bad_exec):
            assert {(e.code, e.message) for e in errors} == {(errors[0].code, errors[0].message)}
            assert errors[0].code == -32602
        assert (await on_a.query("st", "SELECT count(*) FROM t"))["rows"] == [[2]]
        windows: list[dict[str, Any]] = [{"afterSeq": 0}, {"afterSeq": 2, "limit": 1},
                                         {"beforeSeq": 4}, {"types": ["state.*"]}]
        for window in windows:
            seen = [await hub.history("st", **window) for hub in hubs]
            assert seen[1:] == [seen[0], seen[0]], window
        assert [e["type"] for e in seen[0]["events"]] == ["state.changed", "state.changed"]
        assert {e["source"]["name"] for e in seen[0]["events"]} == {"ada"}  # who asked on B, C
        assert seen[0]["headSeq"] == 4


async def test_an_idempotency_key_is_stored_once_whichever_replicas_it_reaches(
        three: list[HubProcess]) -> None:  # noqa: F811
    """The same key published at once through A (the owner), B and C: one event, and every
    answer has its seq, two of them as duplicates; later retries anywhere too."""
    async with clients(three) as hubs:
        await hubs[0].create_session(sessionId="idem")
        for n in range(8):
            key = f"key-{n}"
            answers = await asyncio.gather(*(
                hub.publish("idem", "user.note", {"n": n}, idempotency_key=key)
                for hub in hubs))
            assert len({a["seq"] for a in answers}) == 1, answers
            assert sorted(a["duplicate"] for a in answers) == [False, True, True], answers
            again = await hubs[n % 3].publish("idem", "user.note", {"n": n},
                                              idempotency_key=key)
            assert (again["seq"], again["duplicate"]) == (answers[0]["seq"], True)
        log = await whole_log(hubs[2], "idem")
    keys = [e.get("idempotencyKey") for e in log[1:]]
    assert keys == [f"key-{n}" for n in range(8)]
    assert [e["seq"] for e in log] == list(range(1, 10))


ANSWERERS = ("participant-token", "admin-token", "participant-token")  # on A, B, C


async def test_the_first_permission_answer_wins_across_replicas(
        three: list[HubProcess]) -> None:  # noqa: F811
    """The demo agent, run by A, asks permission; answers sent at once through A, B and C:
    one is stored, the two others get -32009 naming who answered, and the agent goes on."""
    async with contextlib.AsyncExitStack() as stack:
        on_a, = await stack.enter_async_context(clients(three[:1]))
        people = [(await stack.enter_async_context(clients([r], token, kind)))[0]
                  for r, token, kind in zip(three, ANSWERERS, ("tui", "slack", "web"),
                                            strict=True)]
        await on_a.create_session(sessionId="perm", agent="demo")
        sub = people[2].subscribe("perm")
        await on_a.publish("perm", "user.message", {"text": "printer on floor 3 jams"})
        async with asyncio.timeout(30):
            request = None
            async for event in sub:
                if event["type"] == "permission.request":
                    request = event
                    break
        assert request is not None
        answer = {"requestId": request["data"]["requestId"], "optionId": "allow"}
        outcomes = await asyncio.gather(
            *(hub.publish("perm", "permission.response", answer) for hub in people),
            return_exceptions=True)
        wins = [o for o in outcomes if isinstance(o, dict)]
        losses = [o for o in outcomes if isinstance(o, ProtocolError)]
        assert len(wins) == 1 and len(losses) == 2, outcomes
        winner = outcomes.index(wins[0])
        name, via = ("paul", "ada", "paul")[winner], ("tui", "slack", "web")[winner]
        assert {e.code for e in losses} == {-32009}
        assert {(e.data or {}).get("answeredBy", {}).get("name") for e in losses} == {name}
        assert all(f"answered by {name} via {via}" in e.message for e in losses), losses
        async with asyncio.timeout(30):
            async for event in sub:
                if event["type"] in ("turn.completed", "turn.failed"):
                    break
        assert event["type"] == "turn.completed", event
        log = await whole_log(people[1], "perm")
        rows = await people[1].query("perm", "SELECT count(*) FROM tickets")
    answered = [e for e in log if e["type"] == "permission.response"]
    assert [e["seq"] for e in answered] == [wins[0]["seq"]]
    assert answered[0]["source"] == {"kind": "client", "name": name, "client": via}
    assert rows["rows"] == [[1]]  # allowed: the agent wrote its ticket


async def listed(hub: HubClient, limit: int, **filters: str) -> list[str]:
    """Every session id of ``hub``'s session/list, following ``nextCursor`` in pages."""
    params: dict[str, Any] = {"limit": limit, **filters}
    ids: list[str] = []
    while True:
        page = await hub.call("session/list", params)
        assert len(page["sessions"]) <= limit
        ids += [s["sessionId"] for s in page["sessions"]]
        if "nextCursor" not in page:
            return ids
        params["cursor"] = page["nextCursor"]


ECHOED = (1, 4)  # the sessions of test_list_get_and_watch_cover_the_whole_cluster with an agent


async def test_list_get_and_watch_cover_the_whole_cluster(
        three: list[HubProcess]) -> None:  # noqa: F811
    """Sessions made on A, B and C: session/list in pages through each replica lists them
    all (those of one agent too), once, newest first, the same, each as soon as its
    session/create was answered; session/get through each answers the same Session
    with its owner; sessions/watch on C hears of a new session and of a publish on A."""
    async with clients(three) as hubs:
        updates: list[dict[str, Any]] = []
        hubs[2].on_notification = lambda method, params: updates.append(params) \
            if method == "session/updated" else None
        await hubs[2].call("sessions/watch")
        made = []
        for n in range(7):
            sid = f"ls-{n}"
            made.append(await hubs[n % 3].create_session(
                sessionId=sid, title=f"t{n}", agent="echo" if n in ECHOED else None))
            elsewhere = hubs[(n + 1) % 3]  # acknowledged: listed everywhere at once
            assert sid in await listed(elsewhere, 1000), f"{sid} not listed at once elsewhere"
            assert (await elsewhere.get_session(sid))["headSeq"] == made[-1]["headSeq"]
        await eventually(lambda: {u.get("session", {}).get("sessionId") for u in updates}
                         >= {"ls-0", "ls-3", "ls-6"}, 10, "C hearing of A's new sessions")
        published = await hubs[0].publish("ls-3", "user.note", {})
        await eventually(lambda: any(
            u.get("session", {}).get("sessionId") == "ls-3"
            and u["session"]["headSeq"] >= published["seq"] for u in updates),
            10, "C hearing of the publish on A")
        for hub in hubs:
            everything = await listed(hub, 1000)
            assert sorted(everything) == [f"ls-{n}" for n in range(7)]
            assert await listed(hub, 3) == everything
            assert await listed(hub, 1) == everything
            assert await listed(hub, 1, agent="echo") == \
                [sid for sid in everything if int(sid[3:]) in ECHOED]
        for n in range(7):
            seen = [await hub.get_session(f"ls-{n}") for hub in hubs]
            assert seen[0]["owner"] == node_of(three[n % 3]), seen[0]
            assert seen[0]["title"] == f"t{n}" and seen[0]["epoch"] == made[n]["epoch"]
            assert seen[1:] == [seen[0], seen[0]]
        order = [await listed(hub, 2) for hub in hubs]
        assert order[0][0] == "ls-3"  # the newest activity first
        assert order[1:] == [order[0], order[0]]
        missing = [await error_of(hub.get_session("nope")) for hub in hubs]
        assert {e.code for e in missing} == {-32004}


async def test_create_conflicts_fork_and_delete_through_a_non_owner(
        three: list[HubProcess]) -> None:  # noqa: F811
    """The same new id on A and B at once: one created, the other -32009 (HTTP: 409 on C);
    a fork taken through B of A's session has its events; a delete through C ends it
    everywhere: subscribers told, watchers told, then -32004 on every replica."""
    async with clients(three) as hubs:
        on_a, on_b, on_c = hubs
        outcomes = await asyncio.gather(on_a.create_session(sessionId="dup"),
                                        on_b.create_session(sessionId="dup"),
                                        return_exceptions=True)
        made = [o for o in outcomes if isinstance(o, dict)]
        refused = [o for o in outcomes if isinstance(o, ProtocolError)]
        assert len(made) == 1 and [e.code for e in refused] == [-32009], outcomes
        async with http_of(three[2]) as http:
            again = await http.post("/v1/sessions", {"sessionId": "dup"})
        assert (again.status, again.code) == (409, -32009)
        await on_a.create_session(sessionId="orig")
        for i in range(5):
            await on_c.publish("orig", "user.note", {"i": i})
        fork = (await on_b.call("session/fork", {"sessionId": "orig", "atSeq": 4,
                                                 "newSessionId": "orig-fork"}))["session"]
        assert fork["sessionId"] == "orig-fork" and fork["headSeq"] >= 4
        original = await whole_log(on_a, "orig")
        forked = await whole_log(on_c, "orig-fork")
        assert [(e["type"], e["data"]) for e in forked[1:4]] == \
            [(e["type"], e["data"]) for e in original[1:4]]
        assert (await on_a.get_session("orig-fork"))["epoch"] == fork["epoch"]
        gone = on_b.subscribe("orig")
        await follow(gone, 6)
        deleted: list[dict[str, Any]] = []
        on_a.on_notification = lambda method, params: deleted.append(params) \
            if method == "session/updated" and params.get("deleted") else None
        await on_a.call("sessions/watch")
        assert await on_c.call("session/delete", {"sessionId": "orig"}) == {}
        with pytest.raises(ProtocolError) as ended:
            async with asyncio.timeout(10):
                async for _ in gone:
                    pass
        assert ended.value.code == -32004
        await eventually(lambda: [d["sessionId"] for d in deleted] == ["orig"], 10,
                         "A's watcher hearing of the delete through C")
        for hub in hubs:
            assert (await error_of(hub.get_session("orig"))).code == -32004
            assert (await error_of(hub.history("orig"))).code == -32004
            assert (await error_of(hub.publish("orig", "user.note", {}))).code == -32004
            assert "orig" not in await listed(hub, 1000)
        assert len(await whole_log(on_b, "orig-fork")) == len(forked)


def seqs(messages: list[Message]) -> list[int]:
    """The seqs of SSE ``messages``, checking each ``id:`` is its event's seq."""
    for message in messages:
        assert message.id == str(message.event["seq"])
    return [message.event["seq"] for message in messages]


async def test_the_http_api_through_a_non_owner(three: list[HubProcess]) -> None:  # noqa: F811
    """A's session through B's and C's HTTP API: a keyed POST stored once (retried on
    either), GET history as A serves it, and an SSE stream on B from 0 while C publishes,
    cut and resumed on C with Last-Event-ID: every event once, in order."""
    async with clients(three[:1]) as (on_a,), http_of(three[1]) as on_b, \
            http_of(three[2], "participant-token") as on_c:
        await on_a.create_session(sessionId="web")
        first = await on_b.ok("POST", "/v1/sessions/web/events", {"type": "ci.done"},
                              headers={"Idempotency-Key": "build-7"})
        retried = [await http.ok("POST", "/v1/sessions/web/events", {"type": "ci.done"},
                                 headers={"Idempotency-Key": "build-7"})
                   for http in (on_b, on_c)]
        assert first["duplicate"] is False and first["seq"] == 2
        assert [(r["seq"], r["duplicate"]) for r in retried] == [(2, True), (2, True)]
        page = await on_b.history("web", "?afterSeq=0&limit=100")
        assert page["events"] == await whole_log(on_a, "web") and page["headSeq"] == 2
        assert page["events"][1]["source"]["client"] == "http"
        count = 60

        async def publish() -> None:
            for i in range(count):
                await on_c.publish("web", "user.note", data={"i": i})

        publishing = asyncio.create_task(publish())
        async with sse(on_b, "web") as reader:
            before = await reader.take(25, timeout=20)
        async with sse(on_c, "web", headers={"Last-Event-ID": before[-1].id or ""}) as again:
            await publishing
            after = await again.take(count + 2 - 25, timeout=20)
        assert seqs(before + after) == list(range(1, count + 3))
        log = await whole_log(on_a, "web")
        assert [m.event for m in before + after] == log
        assert {e["source"]["name"] for e in log[2:]} == {"paul"}
        ahead = await on_b.get("/v1/sessions/web/stream?afterSeq=999")
        assert (ahead.status, ahead.code) == (409, -32010)


async def test_roles_hold_through_forwarding(three: list[HubProcess]) -> None:  # noqa: F811
    """On B, A's session: a viewer reads but cannot publish or exec (-32003), a participant
    publishes (its own source) but cannot delete; the viewer's HTTP publish is 403."""
    async with clients(three[:1]) as (on_a,), \
            clients(three[1:2], "viewer-token") as (viewer,), \
            clients(three[1:2], "participant-token") as (participant,):
        await on_a.create_session(sessionId="roles")
        assert (await error_of(viewer.publish("roles", "user.note", {}))).code == -32003
        assert (await error_of(viewer.exec("roles", [{"sql": "CREATE TABLE x (a)"}]))).code \
            == -32003
        denied = await error_of(participant.call("session/delete", {"sessionId": "roles"}))
        assert denied.code == -32003
        ack = await participant.publish("roles", "user.note", {"ok": True})
        history = await viewer.history("roles")
        async with http_of(three[1], "viewer-token") as http:
            refused = await http.post("/v1/sessions/roles/events", {"type": "user.note"})
        assert (refused.status, refused.code) == (403, -32003)
    assert [e["seq"] for e in history["events"]] == [1, ack["seq"]]
    assert history["events"][-1]["source"] == {"kind": "client", "name": "paul",
                                               "client": "cli"}
