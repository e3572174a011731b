"""W2 throughput: events/s acknowledged and delivered to 10 subscribers, p99 under 50 ms.

"Publishers as fast as acknowledgements allow", precisely: ``PUBLISHERS`` publishing
clients, each its own connection, each keeping a window of ``k`` publishes in flight (the
next is sent the moment one is acknowledged, so the rate is set by how fast the server
acknowledges durable commits). The window is swept over :data:`WINDOWS`, each step running
for a fixed time; a step's rate is the events it published divided by the time from its
first send to the last of them reaching the last subscriber (every event must reach every
subscriber). The reported throughput is the best step rate whose publish-to-deliver p99
(over all 10 subscribers' deliveries of that step) stays under 50 ms. A larger window
raises the rate until the server saturates, after which it only adds queueing latency.

The hub, the floor program and Redis Streams are measured the same way in the same run.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench import common
from bench.common import Figure, WorkloadResult, at_least
from bench.harness import Indexes, Publisher, Subscribers, prepare, publish_windowed, settle_gc
from bench.hub import process_cpu_seconds
from bench.redis_peer import PeerUnavailable
from bench.targets import TARGETS, Running, started

SUBSCRIBERS = 10
PUBLISHERS = 2
WINDOWS, QUICK_WINDOWS = (1, 4, 16, 64, 256), (4, 64)  # publishes in flight per publisher
STEP_SECONDS, QUICK_STEP_SECONDS = 3.0, 1.0
MAX_P99_MS = 50.0
TARGET_VS_FLOOR, TARGET_VS_REDIS = 0.7, 1.0
DRAIN_TIMEOUT = 60.0


async def measure(running: Running, windows: tuple[int, ...], seconds: float,
                  ) -> tuple[dict[str, Any], list[str]]:
    """W2 on one started target: its figures and what went wrong."""
    target, event_bytes = await prepare(running.target, "W2 throughput")
    subscribers = Subscribers(target, SUBSCRIBERS, DRAIN_TIMEOUT)
    await subscribers.start()
    indexes = Indexes()
    steps: list[tuple[int, int]] = []
    runs: list[dict[str, Any]] = []
    publishers = [Publisher(target) for _ in range(PUBLISHERS)]
    for p in publishers:
        await p.__aenter__()
    try:
        settle_gc()
        before = running.deliveries() if running.deliveries else None
        subscribers.go()
        for window in windows:
            first = indexes.last + 1
            busy = common.machine_busy_seconds()
            cpu, bench_cpu = process_cpu_seconds(running.pid), time.process_time()
            wall = time.perf_counter()
            report = await publish_windowed(publishers, target.pad, window, seconds, indexes)
            wall = time.perf_counter() - wall
            last = indexes.last
            steps.append((first, last))
            acks = sorted(report.acks_ns)
            runs.append({
                "window": window, "in_flight": window * PUBLISHERS, "events": last - first + 1,
                "acked_per_s": len(acks) / wall, "errors": report.errors[:3],
                "ack_p50_ms": common.percentile(acks, 50) / 1e6 if acks else None,
                "ack_p99_ms": common.percentile(acks, 99) / 1e6 if acks else None,
                "server_cpu_percent": 100 * (process_cpu_seconds(running.pid) - cpu) / wall,
                "publisher_cpu_percent": 100 * (time.process_time() - bench_cpu) / wall,
                "machine_cpu_percent": 100 * (common.machine_busy_seconds() - busy) / wall,
            })
        total = steps[-1][1]
        seen = await subscribers.results(total, steps)
        counted = None if before is None else running.deliveries() - before
    finally:
        for p in publishers:
            await p.__aexit__(None, None, None)
    problems = []
    for run_, stats in zip(runs, seen["steps"], strict=True):
        run_.update(stats)
        span = (stats["last_arrived_ns"] - stats["first_sent_ns"]) / 1e9 \
            if stats["first_sent_ns"] is not None else float("inf")
        run_["rate"] = round(run_["events"] / span)
        run_.pop("first_sent_ns")
        run_.pop("last_arrived_ns")
        if run_["errors"]:
            problems.append(f"window {run_['window']}: publishes failed: {run_['errors'][0]}")
    if seen["duplicates"] or seen["missing"] or seen["seq_problems"]:
        problems.append(f"{seen['duplicates']} duplicates, {seen['missing']} missing,"
                        f" {seen['seq_problems']} seq gaps or disorders")
    if seen["errors"]:
        problems.append(f"subscriber errors: {seen['errors'][:3]}")
    expected = SUBSCRIBERS * total
    if counted is not None and int(counted) != expected:
        problems.append(f"the server counted {int(counted)} deliveries, {expected} expected")
    good = [r for r in runs if r.get("p99_ms") is not None and r["p99_ms"] < MAX_P99_MS]
    best = max(good, key=lambda r: r["rate"]) if good else None
    return {
        "rate": best["rate"] if best else 0, "best_window": best["window"] if best else None,
        "p99_ms_at_best": best["p99_ms"] if best else None, "event_bytes": event_bytes,
        "events": total, "subscriber_cpu_seconds": seen["cpu_seconds"],
        "server": running.version or None, "steps": runs,
    }, problems


def run(workdir: Path, *, quick: bool, peers: tuple[str, ...] = TARGETS) -> WorkloadResult:
    """Run W2 on the hub and on each of ``peers`` (fresh servers under ``workdir``)."""
    windows = QUICK_WINDOWS if quick else WINDOWS
    seconds = QUICK_STEP_SECONDS if quick else STEP_SECONDS
    details: dict[str, Any] = {"subscribers": SUBSCRIBERS, "publishers": PUBLISHERS,
                               "windows": list(windows), "step_seconds": seconds,
                               "max_p99_ms": MAX_P99_MS}
    problems: list[str] = []
    for name in ("axtui", *(p for p in peers if p != "axtui")):
        try:
            with started(name, workdir) as running:
                details[name], trouble = common.run(measure(running, windows, seconds))
        except PeerUnavailable as exc:
            details[name] = {"skipped": str(exc)}
            print(f"W2: {name} skipped: {exc}")
            continue
        problems += [f"{name}: {p}" for p in trouble]
    hub = details["axtui"]["rate"]
    figures = [Figure("rate", hub, "events/s")]
    for name, floor in (("floor", TARGET_VS_FLOOR), ("redis", TARGET_VS_REDIS)):
        peer = details.get(name, {}).get("rate")
        if peer is None:
            continue  # not measured (skipped, or not asked for)
        figures.append(Figure(f"{name} rate", peer, "events/s"))
        if peer:  # 0: no step of the peer's stayed under 50 ms (a busy machine)
            figures.append(at_least(f"vs {name}", hub / peer, "x", floor))
    return WorkloadResult("W2", "throughput, 10 subscribers, p99 under 50 ms", figures,
                          details, problems)
