"""Subscribe and resume: the backlog-then-live guarantee, as a table of cases."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from server.hub import Hub
from tests.conftest import Raw, RawFactory


async def session_with(raw: Raw, sid: str, count: int) -> dict[str, Any]:
    """A session holding session.created plus ``count`` published events."""
    await raw.call("session/create", {"sessionId": sid})
    for i in range(count):
        await raw.call("session/publish", {"sessionId": sid, "type": "ci.step", "data": {"i": i}})
    session: dict[str, Any] = (await raw.call("session/get", {"sessionId": sid}))["session"]
    return session


@pytest.mark.parametrize(
    ("after", "expected"),
    [
        pytest.param(0, list(range(1, 12)), id="from-zero"),
        pytest.param(5, list(range(6, 12)), id="from-middle"),
        pytest.param(11, [], id="at-head"),
    ],
)
async def test_resume_delivers_exactly_what_follows(
    raw: Raw, raw_factory: RawFactory, after: int, expected: list[int]
) -> None:
    """A subscriber gets every event after afterSeq, then live ones, none twice."""
    session = await session_with(raw, "r", 10)
    sub = await raw_factory()
    result = await sub.call("session/subscribe",
                            {"sessionId": "r", "afterSeq": after, "epoch": session["epoch"]})
    assert result == {"sessionId": "r", "epoch": session["epoch"], "headSeq": 11}
    backlog = await sub.events("r", len(expected))
    assert [e["seq"] for e in backlog] == expected
    await raw.call("session/publish", {"sessionId": "r", "type": "ci.step", "data": {"i": 10}})
    [live] = await sub.events("r", 1)
    assert live["seq"] == 12


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        pytest.param({"afterSeq": 12}, "ahead", id="ahead-of-head"),
        pytest.param({"afterSeq": 3, "epoch": "not-the-epoch"}, "epoch", id="wrong-epoch"),
    ],
)
async def test_resume_refused(raw: Raw, params: dict[str, Any], reason: str) -> None:
    """afterSeq ahead of the head, or another epoch, is refused with -32010 and details."""
    session = await session_with(raw, "r", 10)
    err = await raw.error("session/subscribe", {"sessionId": "r", **params})
    assert err["code"] == -32010
    assert reason in err["message"]
    assert err["data"] == {"epoch": session["epoch"], "headSeq": 11}


async def test_recreated_session_is_a_new_epoch(raw: Raw) -> None:
    """A session deleted and created again under the same id refuses the old epoch."""
    old = await session_with(raw, "again", 2)
    await raw.call("session/delete", {"sessionId": "again"})
    new = await session_with(raw, "again", 2)
    assert new["epoch"] != old["epoch"]
    err = await raw.error("session/subscribe", {"sessionId": "again", "afterSeq": 3,
                                                "epoch": old["epoch"]})
    assert err["code"] == -32010


async def test_publishes_racing_subscribes_are_gap_free(hub: Hub, raw_factory: RawFactory) -> None:
    """Thousands of events from concurrent publishers: every subscriber sees 1..N once each."""
    setup = await raw_factory()
    await setup.call("session/create", {"sessionId": "race"})
    publishers = [await raw_factory() for _ in range(4)]
    per_publisher = 750
    total = 1 + len(publishers) * per_publisher

    async def publish_all(conn: Raw, n: int) -> None:
        # Pipelined: many requests in flight on one connection, answers awaited at the end.
        ids = []
        for i in range(per_publisher):
            request_id = f"{n}-{i}"
            ids.append(request_id)
            await conn.send({"jsonrpc": "2.0", "id": request_id, "method": "session/publish",
                             "params": {"sessionId": "race", "type": "load.tick",
                                        "data": {"p": n, "i": i}}})
            if i % 50 == 0:
                await asyncio.sleep(0)
        for request_id in ids:
            assert "result" in await conn.response(request_id, timeout=30)

    async def subscribe_late(delay_events: int) -> list[int]:
        conn = await raw_factory()
        async with asyncio.timeout(30):
            while (await conn.call("session/get", {"sessionId": "race"}))["session"][
                    "headSeq"] < delay_events:
                await asyncio.sleep(0.005)
        await conn.call("session/subscribe", {"sessionId": "race", "afterSeq": 0})
        return [e["seq"] for e in await conn.events("race", total, timeout=30)]

    results = await asyncio.gather(
        *(publish_all(p, n) for n, p in enumerate(publishers)),
        *(subscribe_late(d) for d in (1, 200, 1200, 2500)),
    )
    for seqs in results[len(publishers):]:
        assert seqs == list(range(1, total + 1))


async def test_resume_after_disconnect_continues_exactly(raw: Raw, raw_factory: RawFactory) -> None:
    """A client that drops and resubscribes from its last seq misses and repeats nothing."""
    session = await session_with(raw, "d", 5)
    first = await raw_factory()
    await first.call("session/subscribe", {"sessionId": "d"})
    got = await first.events("d", 6)
    await first.ws.close()
    for i in range(5):
        await raw.call("session/publish", {"sessionId": "d", "type": "ci.step", "data": {"i": i}})
    second = await raw_factory()
    await second.call("session/subscribe", {"sessionId": "d", "afterSeq": got[-1]["seq"],
                                            "epoch": session["epoch"]})
    got += await second.events("d", 5)
    assert [e["seq"] for e in got] == list(range(1, 12))
    assert len({e["id"] for e in got}) == 11


async def test_large_backlog_arrives_in_batches(raw: Raw, raw_factory: RawFactory) -> None:
    """A long backlog is sent in several session/events notifications, in order."""
    await raw.call("session/create", {"sessionId": "big"})
    for window in range(0, 2500, 500):  # pipelined, within hub.max_inflight
        for i in range(window, window + 500):
            await raw.send({"jsonrpc": "2.0", "id": f"p{i}", "method": "session/publish",
                            "params": {"sessionId": "big", "type": "note", "data": {"i": i}}})
        for i in range(window, window + 500):
            assert "result" in await raw.response(f"p{i}")
    sub = await raw_factory()
    await sub.call("session/subscribe", {"sessionId": "big"})
    frames: list[int] = []
    seqs: list[int] = []
    async with asyncio.timeout(10):
        while len(seqs) < 2501:
            msg = await sub.recv()
            if msg.get("method") == "session/events":
                frames.append(len(msg["params"]["events"]))
                seqs += [e["seq"] for e in msg["params"]["events"]]
    assert seqs == list(range(1, 2502))
    assert len(frames) >= 3 and max(frames) <= 1000
