"""W10 cluster throughput: 3 replicas on one Redis against one replica alone, and the
publish-to-deliver latency of a subscriber on a replica that does not own the session.

**Throughput.** 30 sessions in 3 groups of 10, each group created through its own replica
(so each replica owns 10), and on each replica 2 publishing clients (each its own
connection) keeping a window of *k* publishes in flight, as in W2 (the next is sent the
moment one is acknowledged). A client cycles over 15 sessions: its replica's 10 and 5 of
the others' (every fourth), so a third of the publishes are forwarded to their owner
(``cluster/forward``). The window is swept over :data:`WINDOWS`, each step for a fixed
time; the figure is the best step's acknowledged events/s (acks only: no subscribers).
The same load (30 sessions, 6 clients with the same session lists, the same windows) runs
against one cluster replica alone (its own fresh Redis) and against a plain single-node
hub (no ``cluster:``), one after the other in the same run. Checked: no publish failed,
and every session's head grew by exactly the publishes acknowledged for it.

**Latency.** W1's load on the 3 replicas: a session created through replica A (its owner),
one publisher on A at 2,000 events/s of about 300 bytes on W1's clock-driven schedule, 10
subscribers on replica B (which serves them from the session's Redis stream, cluster.md
§2.7), each its own client and connection, in one child process (``bench.harness``). The
figure is the p99 over all deliveries; the full run also measures the same with the 10
subscribers on A, the owner. Checked as W1: every index exactly once per subscriber, seqs
contiguous.

**Redis memory.** A fresh session on A, then 10,000 events of about 300 bytes published
to it (as stored: W2's filler); Redis's ``INFO memory`` ``used_memory`` before and after,
per 1,000 events, and the growth of its append-only file.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from axtui.client import HubClient
from bench import common
from bench.cluster import (
    TOKEN,
    ClusterUnderTest,
    TokenPublisher,
    client,
    create_sessions,
    token_receiver,
    unavailable,
)
from bench.common import Figure, WorkloadResult, at_least, at_most
from bench.harness import Indexes, Subscribers, Target, publish_at_rate, settle_gc
from bench.hub import HubUnderTest, process_cpu_seconds, write_config

REPLICAS = 3
SESSIONS_PER_REPLICA = 10
CLIENTS_PER_REPLICA = 2
FOREIGN_EVERY = 4  # a client also publishes to every fourth session owned elsewhere
WINDOWS, QUICK_WINDOWS = (4, 16, 64, 256), (16,)  # publishes in flight per client
STEP_SECONDS, QUICK_STEP_SECONDS = 3.0, 1.0
RATE = 2000
SUBSCRIBERS = 10
LATENCY_SECONDS, QUICK_LATENCY_SECONDS = 10.0, 3.0
MEMORY_EVENTS, QUICK_MEMORY_EVENTS = 10_000, 2_000
MEMORY_WINDOW = 64
LEASE = 10.0  # the default
TARGET_RATIO = 0.5
TARGET_P99_MS = 15.0
DRAIN_TIMEOUT = 30.0
TITLE = "cluster throughput, 3 replicas vs 1"


# --- throughput ----------------------------------------------------------------------------


def session_lists(groups: list[list[str]]) -> list[list[str]]:
    """Per group (a replica's sessions), the sessions its clients cycle over: the group's
    own and every ``FOREIGN_EVERY``-th of the others'."""
    out = []
    for n, own in enumerate(groups):
        others = [sid for m, group in enumerate(groups) if m != n for sid in group]
        out.append(own + others[::FOREIGN_EVERY])
    return out


async def _worker(hub: HubClient, cycle: Iterator[str], deadline: float, indexes: Indexes,
                  pad: str, acks: list[int], acked: dict[str, int], errors: list[str]) -> None:
    """One publish in flight on ``hub`` until ``deadline``, over the sessions of ``cycle``;
    each ack's latency goes to ``acks`` and is counted for its session in ``acked``."""
    while time.perf_counter() < deadline:
        sid = next(cycle)
        data = common.tick(indexes.next(), pad)
        try:
            await hub.publish(sid, common.EVENT_TYPE, data)
        except Exception as exc:
            errors.append(repr(exc))
            return
        acks.append(time.perf_counter_ns() - data["sentNs"])
        acked[sid] += 1


async def _heads(url: str, token: str | None, sessions: list[str]) -> dict[str, int]:
    async with client(url, token) as hub:
        return {sid: (await hub.get_session(sid))["headSeq"] for sid in sessions}


async def throughput(urls: list[str], groups: list[list[str]], token: str | None,
                     pids: list[int], windows: tuple[int, ...], seconds: float,
                     redis_pid: int | None = None) -> tuple[dict[str, Any], list[str]]:
    """The windowed load on ``groups`` (group n's clients connect to ``urls[n]``): per
    step its acknowledged rate, and the check of every session's head."""
    everything = [sid for group in groups for sid in group]
    async with client(urls[0], token) as hub:  # open every session (on its owner) and
        pad, event_bytes = await common.padding(hub, everything[0])  # learn the filler
        for sid in everything[1:]:
            await hub.publish(sid, common.EVENT_TYPE, common.tick(0, pad))
    before = await _heads(urls[0], token, everything)
    lists = session_lists(groups)
    clients = [(client(url, token), lists[n]) for n, url in enumerate(urls)
               for _ in range(CLIENTS_PER_REPLICA)]
    for hub, _ in clients:
        await hub.start()
    acked = dict.fromkeys(everything, 0)
    indexes = Indexes()
    steps: list[dict[str, Any]] = []
    errors: list[str] = []
    try:
        settle_gc()
        for window in windows:
            acks: list[int] = []
            deadline = time.perf_counter() + seconds

            busy = common.machine_busy_seconds()
            cpu = [process_cpu_seconds(p) for p in pids]
            redis_cpu = process_cpu_seconds(redis_pid) if redis_pid else 0.0
            wall = time.perf_counter()
            await asyncio.gather(*(_worker(hub, itertools.cycle(sids[w % len(sids):]
                                                                + sids[:w % len(sids)]),
                                           deadline, indexes, pad, acks, acked, errors)
                                   for hub, sids in clients for w in range(window)))
            wall = time.perf_counter() - wall
            acks.sort()
            steps.append({
                "window": window, "in_flight": window * len(clients),
                "acked_per_s": round(len(acks) / wall),
                "ack_p50_ms": common.percentile(acks, 50) / 1e6 if acks else None,
                "ack_p99_ms": common.percentile(acks, 99) / 1e6 if acks else None,
                "servers_cpu_percent": 100 * sum(process_cpu_seconds(p) - c
                                                 for p, c in zip(pids, cpu, strict=True)) / wall,
                "redis_cpu_percent": 100 * (process_cpu_seconds(redis_pid) - redis_cpu) / wall
                if redis_pid else None,
                "machine_cpu_percent": 100 * (common.machine_busy_seconds() - busy) / wall,
            })
    finally:
        for hub, _ in clients:
            await hub.close()
    problems = []
    if errors:
        problems.append(f"{len(errors)} publishes failed, e.g. {errors[0]}")
    after = await _heads(urls[-1], token, everything)
    wrong = [sid for sid in everything if after[sid] - before[sid] != acked[sid]]
    if wrong:
        problems.append(f"{len(wrong)} sessions' heads did not grow by their acknowledged"
                        f" publishes, e.g. {wrong[0]}: {after[wrong[0]] - before[wrong[0]]}"
                        f" for {acked[wrong[0]]}")
    best = max(steps, key=lambda s: s["acked_per_s"])
    forwarded = sum(len(s) - SESSIONS_PER_REPLICA for s in lists) / sum(len(s) for s in lists)
    return {"rate": best["acked_per_s"], "best_window": best["window"],
            "event_bytes": event_bytes, "clients": len(clients),
            "forwarded_share": forwarded if len(set(urls)) > 1 else 0.0,
            "steps": steps}, problems


def cluster_groups(cluster: ClusterUnderTest, replicas: int) -> tuple[list[str], list[list[str]]]:
    """Start ``replicas`` replicas and create the 3 groups of sessions: through replica n
    for group n (through the one replica when alone); the URLs by group and the groups."""
    started = [cluster.start_replica() for _ in range(replicas)]
    urls = [started[n % replicas].url for n in range(REPLICAS)]
    groups = [[s["sessionId"] for s in common.run(
        create_sessions(url, TOKEN, SESSIONS_PER_REPLICA, f"W10 group {n}"))]
        for n, url in enumerate(urls)]
    return urls, groups


# --- latency and memory ------------------------------------------------------------------


async def latency(owner: str, subscribed: str, seconds: float,
                  ) -> tuple[dict[str, Any], list[str]]:
    """W1's load: a session created through ``owner``, the publisher there, the 10
    subscribers on ``subscribed``."""
    async with client(owner, TOKEN) as hub:
        sid = (await hub.create_session(title="W10 latency"))["sessionId"]
        pad, event_bytes = await common.padding(hub, sid)
        head = (await hub.get_session(sid))["headSeq"]
    count = int(RATE * seconds)
    target = Target("cluster", "hub", subscribed, sid, str(head), pad, TOKEN)
    subscribers = Subscribers(target, SUBSCRIBERS, seconds + DRAIN_TIMEOUT, token_receiver)
    await subscribers.start()
    async with TokenPublisher(Target("cluster", "hub", owner, sid, str(head), pad,
                                     TOKEN)) as publisher:
        settle_gc()
        busy = common.machine_busy_seconds()
        wall = time.perf_counter()
        subscribers.go()
        publishing = await publish_at_rate(publisher, pad, RATE, count)
        seen = await subscribers.results(count, [(1, count)])
        wall = time.perf_counter() - wall
        busy = common.machine_busy_seconds() - busy
    step = seen["steps"][0]
    problems = []
    if publishing.errors:
        problems.append(f"{len(publishing.errors)} publishes failed, e.g. {publishing.errors[0]}")
    if seen["duplicates"] or seen["missing"] or seen["seq_problems"]:
        problems.append(f"{seen['duplicates']} duplicates, {seen['missing']} missing,"
                        f" {seen['seq_problems']} seq gaps or disorders")
    if seen["errors"]:
        problems.append(f"subscriber errors: {seen['errors'][:3]}")
    acks = sorted(publishing.acks_ns)
    return {
        **{k: step.get(k) for k in ("p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms")},
        "rate": round((count - 1) / (publishing.last_send - publishing.first_send)),
        "events": count, "event_bytes": event_bytes, "deliveries": step["deliveries"],
        "ack_p50_ms": common.percentile(acks, 50) / 1e6 if acks else None,
        "ack_p99_ms": common.percentile(acks, 99) / 1e6 if acks else None,
        "max_send_lag_ms": publishing.max_lag * 1e3,
        "machine_cpu_percent": 100 * busy / wall,
    }, problems


async def redis_memory(cluster: ClusterUnderTest, owner: str, events: int) -> dict[str, Any]:
    """Redis's memory and AOF growth for ``events`` events of about 300 bytes."""
    async with client(owner, TOKEN) as hub:
        sid = (await hub.create_session(title="W10 memory"))["sessionId"]
        pad, event_bytes = await common.padding(hub, sid)
        await asyncio.sleep(0.5)  # let the session's first writes and renewals settle
        before, aof = await cluster.redis_memory(), cluster.aof_bytes()
        slots = asyncio.Semaphore(MEMORY_WINDOW)

        async def one(i: int) -> None:
            async with slots:
                await hub.publish(sid, common.EVENT_TYPE, common.tick(i, pad))

        await asyncio.gather(*(one(i + 1) for i in range(events)))
        await asyncio.sleep(0.5)
        after, aof_after = await cluster.redis_memory(), cluster.aof_bytes()
    per = {k: (after[k] - before[k]) / events * 1000 for k in before}
    return {"events": events, "event_bytes": event_bytes, "before": before, "after": after,
            "used_memory_per_1000": per["used_memory"],
            "dataset_per_1000": per["used_memory_dataset"],
            "aof_bytes_per_1000": (aof_after - aof) / events * 1000}


# --- the workload --------------------------------------------------------------------------


def run(workdir: Path, *, quick: bool) -> WorkloadResult:
    """Run W10: the plain hub, one replica, three replicas (fresh servers under ``workdir``)."""
    skipped = unavailable()
    if skipped is not None:
        print(f"W10: skipped: {skipped}")
        return WorkloadResult("W10", TITLE, [], {"skipped": skipped})
    windows = QUICK_WINDOWS if quick else WINDOWS
    seconds = QUICK_STEP_SECONDS if quick else STEP_SECONDS
    details: dict[str, Any] = {"replicas": REPLICAS, "sessions": REPLICAS * SESSIONS_PER_REPLICA,
                               "clients_per_replica": CLIENTS_PER_REPLICA,
                               "windows": list(windows), "step_seconds": seconds,
                               "lease_seconds": LEASE}
    problems: list[str] = []

    with HubUnderTest(workdir / "plain", write_config(workdir / "plain.yaml")) as hub:
        hub.start()
        groups = [[s["sessionId"] for s in common.run(
            create_sessions(hub.url, None, SESSIONS_PER_REPLICA, f"W10 group {n}"))]
            for n in range(REPLICAS)]
        details["plain"], trouble = common.run(throughput(
            [hub.url] * REPLICAS, groups, None, [hub.pid], windows, seconds))
        problems += [f"plain hub: {p}" for p in trouble]

    with ClusterUnderTest(workdir / "one", LEASE) as one:
        urls, groups = cluster_groups(one, 1)
        details["one_replica"], trouble = common.run(throughput(
            urls, groups, TOKEN, [r.pid for r in one.replicas], windows, seconds, one.redis.pid))
        problems += [f"one replica: {p}" for p in trouble]
        details["redis"] = one.redis.version

    with ClusterUnderTest(workdir / "three", LEASE) as three:
        urls, groups = cluster_groups(three, REPLICAS)
        details["three_replicas"], trouble = common.run(throughput(
            urls, groups, TOKEN, [r.pid for r in three.replicas], windows, seconds,
            three.redis.pid))
        problems += [f"three replicas: {p}" for p in trouble]
        lat_seconds = QUICK_LATENCY_SECONDS if quick else LATENCY_SECONDS
        details["latency_non_owner"], trouble = common.run(latency(urls[0], urls[1],
                                                                   lat_seconds))
        problems += [f"latency, subscribers on a non-owner: {p}" for p in trouble]
        if not quick:
            details["latency_owner"], trouble = common.run(latency(urls[0], urls[0],
                                                                   lat_seconds))
            problems += [f"latency, subscribers on the owner: {p}" for p in trouble]
        details["memory"] = common.run(redis_memory(
            three, urls[0], QUICK_MEMORY_EVENTS if quick else MEMORY_EVENTS))

    rate3, rate1 = details["three_replicas"]["rate"], details["one_replica"]["rate"]
    plain = details["plain"]["rate"]
    lat = details["latency_non_owner"]
    figures = [
        Figure("3 replicas", rate3, "events/s"),
        Figure("1 replica", rate1, "events/s"),
        Figure("plain hub", plain, "events/s"),
        at_least("3 replicas vs 1", rate3 / rate1 if rate1 else 0.0, "x", TARGET_RATIO),
        Figure("1 replica vs plain hub", rate1 / plain if plain else 0.0, "x"),
        Figure("p50, subscribers on a non-owner", lat["p50_ms"], "ms"),
        at_most("p99, subscribers on a non-owner", lat["p99_ms"], "ms", TARGET_P99_MS),
    ]
    if "latency_owner" in details:
        figures.append(Figure("p99, subscribers on the owner",
                              details["latency_owner"]["p99_ms"], "ms"))
    figures.append(Figure("Redis memory per 1,000 events",
                          details["memory"]["used_memory_per_1000"] / 1000, "kB"))
    return WorkloadResult("W10", TITLE, figures, details,
                          problems)
