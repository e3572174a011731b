"""The hub's limits and close codes against a real hub: -32013 (too large), -32029
(overloaded), 1009 (frame too big), 1001 (shutdown) and 4429 (a subscriber too far behind)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from tests.conftest import HubFactory, RawFactory
from tests.server.raw_helpers import (
    INVALID_PARAMS,
    NOT_FOUND,
    OVERLOADED,
    TOO_LARGE,
    assert_error,
    collect,
    create,
    head,
    query,
    request,
)

# --- -32013 ------------------------------------------------------------------------------

BIG = "x" * 1200

TOO_LARGE_CASES = [
    pytest.param("session/publish", {"sessionId": "s", "type": "note", "data": {"blob": BIG}},
                 id="publish-data"),
    pytest.param("session/publish",
                 {"sessionId": "s", "type": "user.message", "data": {"text": BIG}},
                 id="publish-user-message"),
    pytest.param("session/publish", {"sessionId": "s", "type": "note",
                                      "state": [{"sql": f"CREATE TABLE t(a) -- {BIG}"}]},
                 id="publish-state-sql"),
    pytest.param("session/publish", {"sessionId": "s", "type": "note", "data": {"a": "x" * 600},
                                      "state": [{"sql": "SELECT ?", "params": ["y" * 600]}]},
                 id="publish-data-and-state"),
    pytest.param("state/exec", {"sessionId": "s", "statements": [
        {"sql": "CREATE TABLE t(a)"}, {"sql": "SELECT ?", "params": [BIG]}]},
                 id="exec-params"),
    pytest.param("session/create", {"sessionId": "n", "metadata": {"blob": BIG}},
                 id="create-metadata"),
]


@pytest.mark.parametrize(("method", "params"), TOO_LARGE_CASES)
async def test_event_data_over_limit_is_too_large(
    hub_factory: HubFactory, raw_factory: RawFactory, method: str, params: dict[str, Any]
) -> None:
    """Data, state statements or metadata over hub.max_event_bytes get -32013; nothing is stored."""
    hub = await hub_factory(max_event_bytes=1000)
    raw = await raw_factory(target=hub)
    await create(raw)
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
    for attempt in range(5):  # until a round overloads the hub
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
    for attempt in range(5):  # until a round overloads the hub
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

