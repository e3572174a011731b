"""Idempotency keys: the same key in the same session stores one event."""

from __future__ import annotations

import asyncio

from tests.conftest import Raw, RawFactory


async def test_same_key_twice_stores_once(raw: Raw) -> None:
    """A repeated key returns the original seq and ts with duplicate: true."""
    await raw.call("session/create", {"sessionId": "i"})
    params = {"sessionId": "i", "type": "user.message", "data": {"text": "hi"},
              "idempotencyKey": "slack:Ev123"}
    first = await raw.call("session/publish", params)
    again = await raw.call("session/publish", {**params, "data": {"text": "different"}})
    assert first["duplicate"] is False
    assert again == {"seq": first["seq"], "ts": first["ts"], "duplicate": True}
    head = (await raw.call("session/get", {"sessionId": "i"}))["session"]["headSeq"]
    assert head == first["seq"] == 2


async def test_same_key_concurrently_stores_once(raw_factory: RawFactory) -> None:
    """Many connections racing with one key: one event stored, all told the same seq."""
    conns = [await raw_factory() for _ in range(8)]
    await conns[0].call("session/create", {"sessionId": "c"})
    params = {"sessionId": "c", "type": "ci.build_failed", "data": {}, "idempotencyKey": "ci:1"}
    results = await asyncio.gather(*(c.call("session/publish", params) for c in conns))
    assert len({(r["seq"], r["ts"]) for r in results}) == 1
    assert sum(not r["duplicate"] for r in results) == 1
    history = await conns[0].call("session/history", {"sessionId": "c"})
    assert [e["type"] for e in history["events"]] == ["session.created", "ci.build_failed"]


async def test_same_key_within_one_pipelined_batch(raw: Raw) -> None:
    """Duplicates inside one group commit are caught too."""
    await raw.call("session/create", {"sessionId": "b"})
    for i in range(20):
        await raw.send({"jsonrpc": "2.0", "id": i, "method": "session/publish", "params": {
            "sessionId": "b", "type": "note", "idempotencyKey": f"k{i % 4}"}})
    results = [(await raw.response(i))["result"] for i in range(20)]
    assert sum(not r["duplicate"] for r in results) == 4
    assert {r["seq"] for r in results} == {2, 3, 4, 5}


async def test_keys_are_per_session(raw: Raw) -> None:
    """The same key in two sessions stores an event in each."""
    for sid in ("s1", "s2"):
        await raw.call("session/create", {"sessionId": sid})
    for sid in ("s1", "s2"):
        result = await raw.call("session/publish", {"sessionId": sid, "type": "note",
                                                    "idempotencyKey": "same"})
        assert result["duplicate"] is False


async def test_long_key_refused(raw: Raw) -> None:
    """A key over 128 characters is invalid params and stores nothing."""
    await raw.call("session/create", {"sessionId": "k"})
    err = await raw.error("session/publish", {"sessionId": "k", "type": "note",
                                              "idempotencyKey": "x" * 129})
    assert err["code"] == -32602
    assert (await raw.call("session/get", {"sessionId": "k"}))["session"]["headSeq"] == 1
