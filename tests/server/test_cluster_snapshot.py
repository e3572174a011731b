"""Bounded Redis memory: a closed session's snapshot, the trimmed stream, and a replica with
no copy of the session that takes it over from them (issue 17, item 4)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

from axtui.client import HubClient
from bench.redis_peer import RedisServer
from server.clusterconfig import ClusterConfig
from server.hub import Hub
from server.redisstore import log_key
from tests.conftest import HubFactory, make_config
from tests.server.cluster_helpers import redis_server  # noqa: F401 - a fixture

EVENTS = 120
SNAPSHOT_AFTER = 50
KEEP = 10


async def replica(hub_factory: HubFactory, tmp: Path, redis: RedisServer, node: str) -> Hub:
    config = make_config(tmp / node, tokens=True, session_idle_close=0.2)
    cluster = ClusterConfig(f"redis://127.0.0.1:{redis.port}/0", "secret", node, lease=1.0,
                            snapshot_after=SNAPSHOT_AFTER, keep_events=KEEP)
    return await hub_factory(config=replace(config, cluster=cluster))


async def test_a_trimmed_session_taken_over_elsewhere_has_every_event_and_its_state(
        hub_factory: HubFactory, tmp_path: Path, redis_server: RedisServer) -> None:  # noqa: F811
    """A closes the session: a snapshot, and the stream trimmed to the last KEEP events.
    B, with no copy, serves it from snapshot plus stream: every event, the same state."""
    a = await replica(hub_factory, tmp_path, redis_server, "a")
    b = await replica(hub_factory, tmp_path, redis_server, "b")
    async with HubClient(a.url, token="admin-token", reconnect=False) as on_a:
        await on_a.create_session(sessionId="long")
        await on_a.exec("long", [{"sql": "CREATE TABLE n (i INTEGER)"}])
        for i in range(EVENTS):
            await on_a.publish("long", "user.note", {"i": i},
                               state=[{"sql": "INSERT INTO n VALUES (?)", "params": [i]}])
        before = (await on_a.history("long", afterSeq=0, limit=1000))["events"]
    head = before[-1]["seq"]
    assert head == EVENTS + 2
    store = a.cluster.store if a.cluster is not None else None
    assert store is not None
    async with asyncio.timeout(10):  # A closes it once idle, and snapshots it
        while await store.snapshot_seq("long") != head:
            await asyncio.sleep(0.05)
    assert await store.aio.xlen(log_key("long")) == KEEP
    assert await store.first_seq("long") == head - KEEP + 1
    assert not (tmp_path / "b" / "sessions").exists() or not any(
        (tmp_path / "b" / "sessions").iterdir())
    async with HubClient(b.url, token="admin-token", reconnect=False) as on_b:
        after = (await on_b.history("long", afterSeq=0, limit=1000))["events"]
        rows = await on_b.query("long", "SELECT count(*), sum(i) FROM n")
        ack = await on_b.publish("long", "user.note", {"i": "after"})
    assert after == before  # ids included: the same events, not copies
    assert rows["rows"] == [[EVENTS, sum(range(EVENTS))]]
    assert ack["seq"] == head + 1
    assert b.metrics.cluster_takeovers >= 1


async def test_a_subscriber_elsewhere_gets_the_trimmed_events_from_the_owner(
        hub_factory: HubFactory, tmp_path: Path, redis_server: RedisServer) -> None:  # noqa: F811
    """Subscribed from 0 on a replica that does not own the session, a client gets the
    events trimmed from the stream too (forwarded history from the owner), then the
    stream's, then live ones: each once, in order."""
    a = await replica(hub_factory, tmp_path, redis_server, "a")
    b = await replica(hub_factory, tmp_path, redis_server, "b")
    assert a.cluster is not None
    async with HubClient(a.url, token="admin-token", reconnect=False) as on_a, \
            HubClient(b.url, token="admin-token", reconnect=False) as on_b:
        await on_a.create_session(sessionId="long")
        for i in range(EVENTS):
            await on_a.publish("long", "user.note", {"i": i})
        async with asyncio.timeout(10):
            while await a.cluster.store.snapshot_seq("long") != EVENTS + 1:
                await asyncio.sleep(0.05)
        await on_b.publish("long", "user.note", {"i": "b"})  # B owns it now
        seqs: list[int] = []
        async with asyncio.timeout(10):
            async for event in on_a.subscribe("long"):
                seqs.append(event["seq"])
                if event["seq"] == EVENTS + 2:
                    await on_b.publish("long", "user.note", {"i": "live"})
                if event["seq"] == EVENTS + 3:
                    break
    assert seqs == list(range(1, EVENTS + 4))
