"""The task-free ``session/publish`` path (an open session): sources encoded once per
connection, and a hub that stops answers every publish it took."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.conftest import HubFactory, RawFactory
from tests.server.raw_helpers import OVERLOADED, assert_error, request


async def test_each_publish_keeps_its_own_source(
        hub_factory: HubFactory, raw_factory: RawFactory) -> None:
    """On one connection, publishes alternating onBehalfOf names (and none) are each stored
    with their own source: the per-connection encoding cache never mixes them up."""
    hub = await hub_factory(tokens=True)
    raw = await raw_factory(hub, initialize=False)
    await raw.initialize(token="participant-token", kind="slack")
    await raw.call("session/create", {"sessionId": "s"})
    names = ["Bob", "Eve", None, "Bob", None, "Eve"]
    ids = [f"p{i}" for i in range(len(names))]
    for rid, name in zip(ids, names, strict=True):  # pipelined: one group commit or a few
        params: dict[str, Any] = {"sessionId": "s", "type": "ci.note", "data": {"rid": rid}}
        if name is not None:
            params["onBehalfOf"] = name
        await raw.send(request(rid, "session/publish", params))
    for rid in ids:
        assert "result" in await raw.response(rid)
    history = await raw.call("session/history", {"sessionId": "s", "types": ["ci.note"]})
    got = {e["data"]["rid"]: e["source"] for e in history["events"]}
    for rid, name in zip(ids, names, strict=True):
        if name is None:
            assert got[rid] == {"kind": "client", "name": "paul", "client": "slack"}
        else:
            assert got[rid] == {"kind": "client", "name": name, "client": "slack",
                                "principal": "paul"}


async def test_stop_answers_every_publish_it_took(
        hub_factory: HubFactory, raw_factory: RawFactory) -> None:
    """Publishes under way when the hub stops are each answered before the 1001 close:
    with their committed seq (and the event is stored), or -32029 if they came too late."""
    hub = await hub_factory()
    raw = await raw_factory(target=hub)
    await raw.call("session/create", {"sessionId": "s"})
    ids = [f"p{i}" for i in range(300)]
    for i, rid in enumerate(ids):
        await raw.send(request(rid, "session/publish",
                               {"sessionId": "s", "type": "note", "data": {"i": i}}))
    first = await raw.response(ids[0])
    assert "result" in first
    stopping = asyncio.create_task(hub.stop())
    answers = {ids[0]: first}
    async with asyncio.timeout(15):
        while len(answers) < len(ids):
            msg = await raw.recv(15)
            if msg.get("id") in ids:
                assert msg["id"] not in answers, f"two responses for {msg['id']}"
                answers[msg["id"]] = msg
    await stopping
    seqs = []
    for msg in answers.values():
        if "error" in msg:
            assert_error(msg, OVERLOADED)
        else:
            seqs.append(msg["result"]["seq"])
    assert sorted(seqs) == list(range(2, 2 + len(seqs)))
    hub = await hub_factory(config=hub.config)
    raw = await raw_factory(target=hub)
    assert (await raw.call("session/get", {"sessionId": "s"}))["session"]["headSeq"] == (
        1 + len(seqs))
