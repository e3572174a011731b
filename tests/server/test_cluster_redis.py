"""A cluster and its Redis, from outside (cluster.md §1, §2.9, §3): a replica that cannot
reach Redis at start, Redis killed and started again on its AOF under three running
replicas, and the cluster's figures in ``/metrics``."""

from __future__ import annotations

import asyncio
import functools
import signal
import time
import urllib.error
import urllib.request
from typing import Any

from axtui.client import HubClient
from bench.redis_peer import RedisServer, _free_port
from server.protocol import ProtocolError
from tests.server.cluster_helpers import (  # noqa: F401 - fixtures
    ADMIN,
    LEASE,
    Cluster,
    clients,
    cluster,
    eventually,
    http_url,
    metrics_of,
    raw_client,
    redis_server,
    three,
    write_config,
)
from tests.server.hubproc import HubProcess, run_axtui

SESSIONS = ("ra", "rb")  # owned by A and by B
LEASE_S = float(LEASE.removesuffix("s"))


def test_a_replica_that_cannot_reach_redis_at_start_exits_2_with_one_line(
        tmp_path: Any) -> None:
    """``cluster.redis`` on a closed port: exit code 2, and one line saying so."""
    config = write_config(tmp_path / "c.yaml", _free_port(), "lonely")
    done = run_axtui("serve", "--port", "0", "--http-port", "0", "--data-dir",
                     str(tmp_path / "data"), "--config", str(config))
    lines = done.stderr.splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1, lines
    assert lines[0].startswith("axtui: cannot reach the cluster's Redis (cluster.redis): "), lines


def health(url: str) -> int:
    """The status of ``GET url/healthz``."""
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=3) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


async def all_healthy(replicas: list[HubProcess], status: int) -> bool:
    """Whether ``/healthz`` answers ``status`` on every replica, on both ports."""
    urls = [u for r in replicas for u in (r.http_base, http_url(r))]
    answers = await asyncio.gather(*(asyncio.to_thread(health, u) for u in urls))
    return all(answer == status for answer in answers)


async def post_status(replica: HubProcess, sid: str) -> tuple[int, str | None]:
    """A publish over HTTP: its status and ``Retry-After``."""
    request = urllib.request.Request(
        f"{http_url(replica)}/v1/sessions/{sid}/events", data=b'{"type": "user.note"}',
        headers={"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"})

    def send() -> tuple[int, str | None]:
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status), None
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers.get("Retry-After")
    return await asyncio.to_thread(send)


async def written(hub: HubClient, sid: str) -> bool:
    """Whether a publish through ``hub`` succeeds now (-32029: not yet)."""
    return await refused(hub.publish(sid, "user.note", {"tag": "probe"})) == 0


async def errors_above(replica: HubProcess, count: float) -> bool:
    """Whether the replica answered more than ``count`` requests with an error."""
    return (await metrics_of(replica))["axtui_request_errors_total"] > count


async def refused(call: Any) -> int:
    """The error code awaiting ``call`` raises (0 if it succeeds)."""
    try:
        await call
    except ProtocolError as exc:
        return exc.code
    return 0


async def test_redis_away_fails_writes_and_every_replica_recovers_with_nothing_lost(
        three: list[HubProcess], redis_server: RedisServer) -> None:  # noqa: F811
    """Redis SIGKILLed under three replicas: writes through each get -32029 (HTTP 429),
    ``/healthz`` is 503; Redis started again on its AOF, same port: ``/healthz`` is 200 and
    writes through every replica succeed, with no restart; every acknowledged event is at
    its seq, none that failed is there, a keyed publish retried meanwhile is there once,
    and a subscriber on C from before has them all, once, in order."""
    pids = [r.pid for r in three]
    async with clients(three) as hubs, raw_client(three[2]) as follower, \
            HubClient(three[2].url or "", token=ADMIN) as retrier:
        for hub, sid in zip(hubs, SESSIONS, strict=False):
            await hub.create_session(sessionId=sid)
        acked: dict[str, dict[int, Any]] = {sid: {} for sid in SESSIONS}

        async def publish(hub: HubClient, sid: str, tag: str) -> None:
            ack = await hub.publish(sid, "user.note", {"tag": tag})
            acked[sid][ack["seq"]] = tag

        for i in range(5):
            for n, hub in enumerate(hubs):
                for sid in SESSIONS:
                    await publish(hub, sid, f"before-{i}-{n}")
        await follower.call("session/subscribe", {"sessionId": "ra", "afterSeq": 0})
        seen = await follower.events("ra", max(acked["ra"]))  # caught up: live from here
        redis_server.kill()
        down_at = time.monotonic()
        await eventually(lambda: all_healthy(three, 503), 10, "/healthz 503 on every replica")
        for n, hub in enumerate(hubs):
            for sid in SESSIONS:
                assert await refused(hub.publish(sid, "user.note", {"tag": f"lost-{n}"})) \
                    == -32029
                assert await refused(hub.exec(sid, [{"sql": "CREATE TABLE lost (a)"}])) == -32029
            assert await refused(hub.create_session(sessionId=f"new-{n}")) == -32029
        assert await post_status(three[2], "ra") == (429, "1")
        refusals = (await metrics_of(three[2]))["axtui_request_errors_total"]
        during = asyncio.create_task(retrier.publish("rb", "user.note", {"tag": "during"},
                                                     idempotency_key="during-1"))
        await eventually(lambda: errors_above(three[2], refusals), 10,
                         "the keyed publish refused at least once")
        # Away past every lease (their keys expire as the AOF is loaded): each owner must
        # find its leases lost and step down, and the sessions be claimed again.
        await asyncio.sleep(max(0.0, down_at + 2 * LEASE_S - time.monotonic()))
        redis_server.restart()
        await eventually(lambda: all_healthy(three, 200), 10, "/healthz 200 on every replica")
        for n, hub in enumerate(hubs):
            for sid in SESSIONS:
                await eventually(functools.partial(written, hub, sid), 10,
                                 f"a write to {sid} through replica {n}")
        assert (await during)["duplicate"] is False
        for i in range(3):  # from now on each write succeeds at once
            for n, hub in enumerate(hubs):
                for sid in SESSIONS:
                    await publish(hub, sid, f"after-{i}-{n}")
        await hubs[0].create_session(sessionId="new-after")
        logs = {sid: [await hub.history(sid, afterSeq=0, limit=5000) for hub in hubs]
                for sid in SESSIONS}
        seen += await follower.events("ra", logs["ra"][0]["headSeq"] - len(seen), timeout=15)
    assert [r.pid for r in three] == pids and all(r.alive() for r in three)
    for sid in SESSIONS:
        views = logs[sid]
        assert views[1:] == [views[0], views[0]], "the replicas serve different logs"
        events = views[0]["events"]
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        by_seq = {e["seq"]: e["data"].get("tag") for e in events}
        assert {seq: by_seq.get(seq) for seq in acked[sid]} == acked[sid], "an ack was lost"
        tags = [e["data"].get("tag") for e in events[1:]]
        assert not [t for t in tags if t.startswith("lost")]
        assert tags.count("during") == (sid == "rb")
        assert not [e for e in events if e["type"] == "state.changed"]
    assert [e["id"] for e in seen] == [e["id"] for e in logs["ra"][0]["events"]]
    errors = [(await metrics_of(r))["axtui_cluster_store_errors_total"] for r in three]
    assert all(count > 0 for count in errors), errors


async def test_metrics_count_owned_forwarded_and_taken_over_sessions(
        three: list[HubProcess]) -> None:  # noqa: F811
    """Two sessions made on A, one on B, five routed requests through C: owned 2/1/0,
    forwarded 0/0/5, no take-over, no store error. A stopped (its sessions handed over):
    C's next request takes one over, and B's history of it is forwarded to C."""
    a, b, c = three
    async with clients(three) as (on_a, on_b, on_c):
        for sid in ("m1", "m2"):
            await on_a.create_session(sessionId=sid)
        await on_b.create_session(sessionId="m3")
        for i in range(3):
            await on_c.publish("m1", "user.note", {"i": i})
        await on_c.exec("m3", [{"sql": "CREATE TABLE t (a)"}])
        await on_c.history("m2")
        await on_c.get_session("m1")  # answered from Redis: not forwarded
        figures = [await metrics_of(r) for r in three]

        def column(name: str) -> list[float]:
            return [f[f"axtui_cluster_{name}"] for f in figures]

        assert column("owned_sessions") == [2, 1, 0]
        assert column("forwarded_total") == [0, 0, 5]
        assert column("takeovers_total") == [0, 0, 0]
        assert column("store_errors_total") == [0, 0, 0]
        a.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(a.wait, 15.0) == 0
        # C may still believe A the owner for a moment (and answer -32029: try again).
        await eventually(functools.partial(written, on_c, "m1"), 10, "C taking m1 over")
        history = await on_b.history("m1")
        figures = [await metrics_of(r) for r in (b, c)]
    assert [e["seq"] for e in history["events"]] == [1, 2, 3, 4, 5]
    assert column("owned_sessions") == [1, 1]
    assert column("takeovers_total") == [0, 1]
    assert column("forwarded_total") == [1, 5]
    assert column("store_errors_total") == [0, 0]
