"""W1 latency: publish-to-delivery time with 10 live subscribers at 2,000 events/s.

One publisher sends ~300-byte events on a fixed schedule (pipelined: it never waits for an
ack before sending the next). Each event's data carries ``time.perf_counter_ns()`` taken
just before the send; every subscriber takes the time when the frame holding it is handed
over by its ``HubClient`` and records the difference. ``perf_counter_ns`` is
CLOCK_MONOTONIC on Linux, one clock for the whole machine, so subscribers may run in other
processes (``subscriber_procs``) and the differences stay exact.

Correctness is checked on the way: every subscriber must see every seq exactly once, in
order, and the hub's ``axtui_deliveries_total`` must grow by exactly subscribers x events
(``HubClient`` drops duplicate seqs silently, so the hub's own count is what would show
one).
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import time
from array import array
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path

from axtui.client import HubClient, Subscription
from bench import common
from bench.common import EVENT_TYPE, Figure, WorkloadResult, at_most
from bench.hub import HubUnderTest, write_config

RATE = 2000  # events per second
SUBSCRIBERS = 10
SECONDS, QUICK_SECONDS = 10.0, 3.0
TARGET_P99_MS = 10.0
DRAIN_TIMEOUT = 30.0  # seconds after the last send for every delivery to arrive
MIN_SLEEP = 0.001  # seconds: the publisher sends what is due at most this often


def _settle_gc() -> None:
    """Collect now and exempt what exists from later collections, so that no long GC pass
    in the bench process (over imports and setup) lands inside the measurement."""
    gc.collect()
    gc.freeze()


@dataclass
class Deliveries:
    """What a group of subscribers saw."""

    latencies_ns: array[int] = field(default_factory=lambda: array("q"))
    duplicates: int = 0
    gaps: int = 0  # seqs never received
    out_of_order: int = 0
    incomplete: int = 0  # subscribers that did not reach the last seq in time
    cpu_seconds: float = 0.0  # of the process the group ran in, while it received

    def merge(self, other: Deliveries) -> None:
        """Add another group's deliveries to this one."""
        self.latencies_ns.extend(other.latencies_ns)
        self.duplicates += other.duplicates
        self.gaps += other.gaps
        self.out_of_order += other.out_of_order
        self.incomplete += other.incomplete


async def _consume(sub: Subscription, last_seq: int, out: Deliveries) -> None:
    """Receive up to ``last_seq``, recording each event's latency and any seq anomaly."""
    expected = sub.last_seq + 1
    while expected <= last_seq:
        batch = await sub.next_batch()
        now = time.perf_counter_ns()
        for event in batch:
            seq = event["seq"]
            if seq < expected:
                out.duplicates += 1
                continue
            if seq > expected:
                out.gaps += seq - expected
                out.out_of_order += 1
            out.latencies_ns.append(now - event["data"]["sentNs"])
            expected = seq + 1


async def _receive(url: str, session_id: str, after_seq: int, last_seq: int, count: int,
                   ready: asyncio.Future[None] | None = None,
                   go: asyncio.Future[None] | None = None) -> Deliveries:
    """Run ``count`` subscribers, each its own ``HubClient``, until they reach ``last_seq``.

    ``ready`` is resolved once every subscription is live; receiving is timed from ``go``.
    """
    out = Deliveries()
    clients = [HubClient(url, kind="bench", reconnect=False) for _ in range(count)]
    try:
        for client in clients:
            await client.start()
        subs = [client.subscribe(session_id, after_seq) for client in clients]
        await asyncio.gather(*(sub.ready.wait() for sub in subs))
        if ready is not None:
            ready.set_result(None)
        if go is not None:
            await go
        cpu = time.process_time()
        await asyncio.gather(*(_consume(sub, last_seq, out) for sub in subs))
        out.cpu_seconds = time.process_time() - cpu
    finally:
        await asyncio.gather(*(client.close() for client in clients))
    return out


def _subscriber_process(url: str, session_id: str, after_seq: int, last_seq: int, count: int,
                        timeout: float, conn: Connection) -> None:
    """A child process running ``count`` subscribers (entry point for multiprocessing)."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        ready, go = loop.create_future(), loop.create_future()
        receiving = asyncio.create_task(
            _receive(url, session_id, after_seq, last_seq, count, ready, go)
        )
        await ready
        _settle_gc()
        conn.send("ready")
        await loop.run_in_executor(None, conn.recv)  # "go"
        go.set_result(None)
        try:
            out = await asyncio.wait_for(receiving, timeout)
        except TimeoutError:
            out = Deliveries(incomplete=count)
        conn.send((out.latencies_ns.tobytes(), out.duplicates, out.gaps, out.out_of_order,
                   out.incomplete, out.cpu_seconds))

    common.run(main())
    conn.close()


@dataclass
class Publishing:
    """What the publisher did: acks, errors, and how well it kept to its schedule."""

    acks_ns: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    first_send: float = 0.0
    last_send: float = 0.0
    max_lag: float = 0.0  # seconds an event was sent after its scheduled time


async def _publish_at_rate(client: HubClient, session_id: str, rate: float, count: int,
                           pad: str) -> Publishing:
    """Publish ``count`` events at ``rate`` per second without waiting for acks."""
    report = Publishing()
    start = time.perf_counter()

    async def publish_one(i: int) -> None:
        data = common.tick(i, pad)
        sent = data["sentNs"]
        now = sent / 1e9
        report.max_lag = max(report.max_lag, now - (start + (i - 1) / rate))
        report.last_send = max(report.last_send, now)
        if i == 1:
            report.first_send = now
        try:
            await client.publish(session_id, EVENT_TYPE, data)
        except Exception as exc:
            report.errors.append(repr(exc))
            return
        report.acks_ns.append(time.perf_counter_ns() - sent)

    under_way: set[asyncio.Task[None]] = set()  # done tasks are dropped: no garbage piles up
    sent = 0
    while sent < count:
        # Everything due by now goes out at once: the rate follows the clock, not sleeps.
        due = min(count, int((time.perf_counter() - start) * rate) + 1)
        for i in range(sent, due):
            task = asyncio.create_task(publish_one(i + 1))
            under_way.add(task)
            task.add_done_callback(under_way.discard)
        sent = due
        if sent < count:
            # uvloop rounds a sub-millisecond sleep down to zero, which would spin the loop.
            await asyncio.sleep(max(MIN_SLEEP, start + sent / rate - time.perf_counter()))
    await asyncio.gather(*under_way)
    return report


class _Subscribers:
    """The subscribers, in this process or spread over child processes."""

    def __init__(self, url: str, session_id: str, after_seq: int, last_seq: int,
                 procs: int, timeout: float) -> None:
        self.args = (url, session_id, after_seq, last_seq)
        self.procs = procs
        self.timeout = timeout
        self._local: asyncio.Task[Deliveries] | None = None
        self._go: asyncio.Future[None] | None = None
        self._children: list[tuple[BaseProcess, Connection]] = []

    async def start(self) -> None:
        """Connect and subscribe every subscriber; returns when all are live."""
        if self.procs == 0:
            loop = asyncio.get_running_loop()
            ready, self._go = loop.create_future(), loop.create_future()
            self._local = asyncio.create_task(_receive(*self.args, SUBSCRIBERS, ready, self._go))
            await ready
            return
        ctx = multiprocessing.get_context("spawn")
        shares = [SUBSCRIBERS // self.procs + (i < SUBSCRIBERS % self.procs)
                  for i in range(self.procs)]
        for share in shares:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_subscriber_process,
                               args=(*self.args, share, self.timeout, child), daemon=True)
            proc.start()
            child.close()
            self._children.append((proc, parent))
        for _, conn in self._children:
            if not await asyncio.to_thread(conn.poll, 60.0):
                raise RuntimeError("a subscriber process did not get ready within 60 s")
            conn.recv()

    def go(self) -> None:
        """Start timing the receivers (the publisher is about to send)."""
        if self._go is not None:
            self._go.set_result(None)
        for _, conn in self._children:
            conn.send("go")

    async def results(self) -> tuple[Deliveries, list[float]]:
        """Wait for every subscriber to finish: the deliveries, and CPU seconds a process."""
        if self._local is not None:
            try:
                out = await asyncio.wait_for(self._local, self.timeout)
            except TimeoutError:
                return Deliveries(incomplete=SUBSCRIBERS), []
            return out, []
        total, cpu = Deliveries(), []
        for proc, conn in self._children:
            if not await asyncio.to_thread(conn.poll, self.timeout + 10):
                raise RuntimeError("a subscriber process did not report back")
            raw, dupes, gaps, disorder, incomplete, seconds = conn.recv()
            group = Deliveries(array("q"), dupes, gaps, disorder, incomplete, seconds)
            group.latencies_ns.frombytes(raw)
            total.merge(group)
            cpu.append(seconds)
            await asyncio.to_thread(proc.join, 10)
        return total, cpu


async def _measure(hub: HubUnderTest, seconds: float, procs: int) -> WorkloadResult:
    count = int(RATE * seconds)
    async with HubClient(hub.url, kind="bench", reconnect=False) as publisher:
        session = await publisher.create_session(title="W1 latency")
        sid = session["sessionId"]
        pad, event_bytes = await common.padding(publisher, sid)
        after = (await publisher.get_session(sid))["headSeq"]
        subscribers = _Subscribers(hub.url, sid, after, after + count, procs,
                                   seconds + DRAIN_TIMEOUT)
        await subscribers.start()
        _settle_gc()
        before = hub.metrics()
        busy = common.machine_busy_seconds()
        hub_cpu, bench_cpu, wall = hub.cpu_seconds(), time.process_time(), time.perf_counter()
        subscribers.go()
        publishing = await _publish_at_rate(publisher, sid, RATE, count, pad)
        deliveries, child_cpu = await subscribers.results()
        wall = time.perf_counter() - wall
        hub_cpu, bench_cpu = hub.cpu_seconds() - hub_cpu, time.process_time() - bench_cpu
        busy = common.machine_busy_seconds() - busy
        after_metrics = hub.metrics()

    lat = sorted(deliveries.latencies_ns)
    acks = sorted(publishing.acks_ns)
    ms = 1e-6
    achieved = (count - 1) / (publishing.last_send - publishing.first_send)
    delivered = int(after_metrics["axtui_deliveries_total"] - before["axtui_deliveries_total"])
    expected = SUBSCRIBERS * count
    problems = []
    if publishing.errors:
        problems.append(f"{len(publishing.errors)} publishes failed, e.g. {publishing.errors[0]}")
    if deliveries.duplicates or deliveries.gaps or deliveries.out_of_order:
        problems.append(f"{deliveries.duplicates} duplicates, {deliveries.gaps} missing seqs,"
                        f" {deliveries.out_of_order} out of order")
    if deliveries.incomplete:
        problems.append(f"{deliveries.incomplete} subscribers did not receive every event")
    if len(lat) != expected:
        problems.append(f"{len(lat)} deliveries received, {expected} expected")
    if delivered != expected:
        problems.append(f"the hub counted {delivered} deliveries, {expected} expected")

    figures = [
        Figure("p50", percentile_ms(lat, 50), "ms"),
        at_most("p99", percentile_ms(lat, 99), "ms", TARGET_P99_MS),
        Figure("max", lat[-1] * ms if lat else float("nan"), "ms"),
        Figure("rate", round(achieved), "events/s"),
    ]
    details = {
        "events": count, "subscribers": SUBSCRIBERS, "subscriber_processes": procs,
        "target_rate": RATE, "seconds": seconds, "event_bytes": event_bytes,
        "deliveries": len(lat), "hub_counted_deliveries": delivered,
        "duplicates": deliveries.duplicates, "gaps": deliveries.gaps,
        "p90_ms": percentile_ms(lat, 90), "p999_ms": percentile_ms(lat, 99.9),
        "ack_p50_ms": percentile_ms(acks, 50), "ack_p99_ms": percentile_ms(acks, 99),
        "ack_max_ms": acks[-1] * ms if acks else None,
        "max_send_lag_ms": publishing.max_lag * 1e3,
        "wall_seconds": wall,
        "hub_cpu_percent": 100 * hub_cpu / wall,
        "bench_cpu_percent": 100 * bench_cpu / wall,
        "subscriber_process_cpu_percent": [100 * c / wall for c in child_cpu],
        # All CPUs together (100 = one CPU): well above hub + bench means others ran too.
        "machine_cpu_percent": 100 * busy / wall,
    }
    return WorkloadResult("W1", "latency, 10 subscribers at 2,000 events/s", figures, details,
                          problems)


def percentile_ms(ordered: list[int], p: float) -> float:
    """A percentile of nanosecond samples, in milliseconds (NaN when there are none)."""
    return common.percentile(ordered, p) * 1e-6 if ordered else float("nan")


def run(workdir: Path, *, quick: bool, subscriber_procs: int = 1) -> WorkloadResult:
    """Run W1 against a fresh hub on ``workdir``."""
    config = write_config(workdir / "w1.yaml")
    with HubUnderTest(workdir / "w1", config) as hub:
        hub.start()
        return common.run(_measure(hub, QUICK_SECONDS if quick else SECONDS, subscriber_procs))
