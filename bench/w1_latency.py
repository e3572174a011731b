"""W1 latency: publish-to-delivery time with 10 live subscribers at 2,000 events/s.

One publisher sends ~300-byte events on a fixed schedule (pipelined: it never waits for an
ack before sending the next); 10 subscribers, each its own client and connection, run in
one child process (see :mod:`bench.harness`). The same run measures the hub, the floor
program (:mod:`bench.floor`) and Redis Streams (:mod:`bench.redis_peer`) one after the
other with the same harness.

Correctness is checked on the way: every subscriber must see every event exactly once
(over the hub's protocol also with contiguous seqs), and the server's own
``axtui_deliveries_total`` must grow by exactly subscribers x events (``HubClient`` drops
duplicate seqs silently, so the server's count is what would show one).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench import common
from bench.common import Figure, WorkloadResult, at_most
from bench.harness import Publisher, Subscribers, prepare, publish_at_rate, settle_gc
from bench.hub import process_cpu_seconds
from bench.redis_peer import PeerUnavailable
from bench.targets import TARGETS, Running, started

RATE = 2000  # events per second
SUBSCRIBERS = 10
SECONDS, QUICK_SECONDS = 10.0, 3.0
TARGET_P99_MS = 10.0
DRAIN_TIMEOUT = 30.0  # seconds after the last send for every delivery to arrive


async def measure(running: Running, seconds: float) -> tuple[dict[str, Any], list[str]]:
    """W1 on one started target: its figures and what went wrong."""
    target, event_bytes = await prepare(running.target, "W1 latency")
    count = int(RATE * seconds)
    subscribers = Subscribers(target, SUBSCRIBERS, seconds + DRAIN_TIMEOUT)
    await subscribers.start()
    async with Publisher(target) as publisher:
        settle_gc()
        before = running.deliveries() if running.deliveries else None
        busy = common.machine_busy_seconds()
        server_cpu = process_cpu_seconds(running.pid)
        bench_cpu, wall = time.process_time(), time.perf_counter()
        subscribers.go()
        publishing = await publish_at_rate(publisher, target.pad, RATE, count)
        seen = await subscribers.results(count, [(1, count)])
        wall = time.perf_counter() - wall
        server_cpu = process_cpu_seconds(running.pid) - server_cpu
        bench_cpu = time.process_time() - bench_cpu
        busy = common.machine_busy_seconds() - busy
        counted = None if before is None else running.deliveries() - before
    step = seen["steps"][0]
    acks = sorted(publishing.acks_ns)
    expected = SUBSCRIBERS * count
    problems = []
    if publishing.errors:
        problems.append(f"{len(publishing.errors)} publishes failed, e.g. {publishing.errors[0]}")
    if seen["duplicates"] or seen["missing"] or seen["seq_problems"]:
        problems.append(f"{seen['duplicates']} duplicates, {seen['missing']} missing,"
                        f" {seen['seq_problems']} seq gaps or disorders")
    if seen["incomplete_subscribers"]:
        problems.append(f"{seen['incomplete_subscribers']} subscribers did not receive every"
                        " event")
    if seen["errors"]:
        problems.append(f"subscriber errors: {seen['errors'][:3]}")
    if step["deliveries"] != expected:
        problems.append(f"{step['deliveries']} deliveries received, {expected} expected")
    if counted is not None and int(counted) != expected:
        problems.append(f"the server counted {int(counted)} deliveries, {expected} expected")
    achieved = (count - 1) / (publishing.last_send - publishing.first_send)
    return {
        "p50_ms": step.get("p50_ms"), "p90_ms": step.get("p90_ms"),
        "p99_ms": step.get("p99_ms"), "p999_ms": step.get("p999_ms"),
        "max_ms": step.get("max_ms"), "rate": round(achieved),
        "events": count, "event_bytes": event_bytes, "deliveries": step["deliveries"],
        "server_counted_deliveries": counted, "duplicates": seen["duplicates"],
        "missing": seen["missing"],
        "ack_p50_ms": common.percentile(acks, 50) / 1e6 if acks else None,
        "ack_p99_ms": common.percentile(acks, 99) / 1e6 if acks else None,
        "max_send_lag_ms": publishing.max_lag * 1e3,
        "wall_seconds": wall,
        "server_cpu_percent": 100 * server_cpu / wall,
        "publisher_cpu_percent": 100 * bench_cpu / wall,
        "subscriber_process_cpu_percent": 100 * seen["cpu_seconds"] / wall,
        # All CPUs together (100 = one CPU): well above the sum of ours means others ran too.
        "machine_cpu_percent": 100 * busy / wall,
        "server": running.version or None,
    }, problems


def run(workdir: Path, *, quick: bool, peers: tuple[str, ...] = TARGETS) -> WorkloadResult:
    """Run W1 on the hub and on each of ``peers`` (fresh servers under ``workdir``)."""
    seconds = QUICK_SECONDS if quick else SECONDS
    details: dict[str, Any] = {"subscribers": SUBSCRIBERS, "target_rate": RATE,
                               "seconds": seconds, "subscriber_processes": 1}
    problems: list[str] = []
    for name in ("axtui", *(p for p in peers if p != "axtui")):
        try:
            with started(name, workdir) as running:
                details[name], trouble = common.run(measure(running, seconds))
        except PeerUnavailable as exc:
            details[name] = {"skipped": str(exc)}
            print(f"W1: {name} skipped: {exc}")
            continue
        problems += [f"{name}: {p}" for p in trouble]
    hub = details["axtui"]
    figures = [
        Figure("p50", hub["p50_ms"], "ms"),
        at_most("p99", hub["p99_ms"], "ms", TARGET_P99_MS),
        Figure("max", hub["max_ms"], "ms"),
        Figure("rate", hub["rate"], "events/s"),
    ]
    for name in peers:
        if name != "axtui" and "p50_ms" in details[name]:
            figures += [Figure(f"{name} p50", details[name]["p50_ms"], "ms"),
                        Figure(f"{name} p99", details[name]["p99_ms"], "ms")]
    return WorkloadResult("W1", "latency, 10 subscribers at 2,000 events/s", figures, details,
                          problems)
