"""One connection's pipelined writes to one session commit in the order they were sent
(protocol.md §6.1): publishes and ``state/exec`` alike, to an open session and to one that
must be opened first."""

from __future__ import annotations

import asyncio
from typing import Any

from server.hub import Hub
from tests.conftest import HubFactory, Raw, RawFactory
from tests.server.raw_helpers import collect, request

WRITES = 300  # pipelined writes per round: enough that some arrive once the session is open
ROUNDS = 8


def write(rid: str, sid: str, i: int) -> dict[str, Any]:
    """Write number ``i``: every fourth a ``state/exec``, the others publishes."""
    if i % 4 == 1:
        return request(rid, "state/exec", {"sessionId": sid, "statements": [
            {"sql": "INSERT INTO t VALUES (?)", "params": [i]}]})
    return request(rid, "session/publish", {"sessionId": sid, "type": "note", "data": {"i": i}})


async def pipeline(raw: Raw, sid: str, tag: str) -> list[int]:
    """Send ``WRITES`` writes to ``sid`` without waiting; the seqs they got, in send order."""
    ids = [f"{tag}-{i}" for i in range(WRITES)]
    for i, rid in enumerate(ids):
        await raw.send(write(rid, sid, i))
        await asyncio.sleep(0)  # a stream, not one burst: some arrive while the session opens
    got = await collect(raw, ids)
    failed = [got[rid] for rid in ids if "result" not in got[rid]]
    assert failed == [], failed[:3]
    return [got[rid]["result"]["seq"] for rid in ids]


def out_of_order(seqs: list[int]) -> str:
    """Where ``seqs`` first goes backwards, for the failure message."""
    i = next(i for i in range(1, len(seqs)) if seqs[i] < seqs[i - 1])
    return f"write {i} got seq {seqs[i]} after write {i - 1} got {seqs[i - 1]}"


async def until_closed(hub: Hub, sid: str) -> None:
    """Wait until the hub has closed the idle session ``sid``."""
    async with asyncio.timeout(10):
        while sid in hub.sessions.open or sid in hub.sessions._closing:
            await asyncio.sleep(0.01)


async def test_writes_to_a_session_being_opened_keep_their_order(
    hub_factory: HubFactory, raw_factory: RawFactory
) -> None:
    """Publishes and state/exec pipelined into a closed session (opened by the first of
    them) get seqs in the order they were sent, round after round."""
    hub = await hub_factory(session_idle_close=0.1)
    raw = await raw_factory(target=hub)
    await raw.call("session/create", {"sessionId": "s"})
    await raw.call("state/exec", {"sessionId": "s", "statements": [{"sql": "CREATE TABLE t(a)"}]})
    for n in range(ROUNDS):
        await until_closed(hub, "s")
        seqs = await pipeline(raw, "s", f"r{n}")
        assert seqs == sorted(seqs), f"round {n}: {out_of_order(seqs)}"


async def test_writes_to_an_open_session_keep_their_order(raw: Raw) -> None:
    """A state/exec pipelined with publishes to an open session commits in send order."""
    await raw.call("session/create", {"sessionId": "s"})
    await raw.call("state/exec", {"sessionId": "s", "statements": [{"sql": "CREATE TABLE t(a)"}]})
    for n in range(ROUNDS):
        seqs = await pipeline(raw, "s", f"r{n}")
        assert seqs == sorted(seqs), f"round {n}: {out_of_order(seqs)}"


async def test_writes_to_several_closed_sessions_keep_their_order_per_session(
    hub_factory: HubFactory, raw_factory: RawFactory
) -> None:
    """Writes interleaved across several sessions being opened keep each session's order."""
    hub = await hub_factory(session_idle_close=0.1)
    raw = await raw_factory(target=hub)
    sids = [f"s{k}" for k in range(4)]
    for sid in sids:
        await raw.call("session/create", {"sessionId": sid})
        await raw.call("state/exec", {"sessionId": sid,
                                      "statements": [{"sql": "CREATE TABLE t(a)"}]})
    for sid in sids:
        await until_closed(hub, sid)
    count = WRITES // 2  # all of them under hub.max_inflight
    ids = {sid: [f"{sid}-{i}" for i in range(count)] for sid in sids}
    for i in range(count):
        for sid in sids:
            await raw.send(write(ids[sid][i], sid, i))
        await asyncio.sleep(0)
    got = await collect(raw, [rid for rids in ids.values() for rid in rids])
    for sid in sids:
        seqs = [got[rid]["result"]["seq"] for rid in ids[sid]]
        assert seqs == sorted(seqs), f"{sid}: {out_of_order(seqs)}"


async def test_a_write_to_an_unknown_session_fails_and_later_ones_too(raw: Raw) -> None:
    """Pipelined writes to a session that does not exist each get -32004."""
    ids = [f"w{i}" for i in range(6)]
    for i, rid in enumerate(ids):
        await raw.send(write(rid, "nope", i))
    got = await collect(raw, ids)
    assert {got[rid]["error"]["code"] for rid in ids} == {-32004}
