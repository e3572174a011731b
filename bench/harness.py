"""The W1/W2 harness: the same publishers and subscribers for the hub and for its peers.

A :class:`Target` says where to publish and subscribe: over the hub's protocol through
``HubClient`` (the hub itself, or the floor program) or to a Redis stream through redis-py's
asyncio client (``XADD``, ``XREAD BLOCK``). Every event's data carries its index ``i``
(1, 2, ... across the whole run) and ``sentNs``, ``time.perf_counter_ns()`` taken just
before the publish is sent; a subscriber takes the time when its client hands the events
over, so latency is publish-to-deliver. ``perf_counter_ns`` is CLOCK_MONOTONIC on Linux,
one clock for the whole machine, so subscribers run in a child process
(:class:`Subscribers`) and the publishers in the bench's own.

Checked for every subscriber: each index exactly once (no gap, no duplicate) and, over the
hub's protocol, seqs contiguous and ascending (a Redis stream's ids ascend by design).
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import time
from array import array
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import orjson

from axtui.client import HubClient
from bench import common
from bench.common import EVENT_BYTES, EVENT_TYPE

REDIS_FIELD = b"e"
MAX_REDIS_CONNECTIONS = 4096  # per publishing client
REDIS_WARM_CONNECTIONS = 32  # opened before publishing starts
REDIS_SOURCE = {"kind": "client", "name": "local", "client": "bench"}


@dataclass(frozen=True)
class Target:
    """Where to publish and subscribe (picklable: it goes to the subscriber process)."""

    name: str  # "axtui", "floor" or "redis": as shown in the results
    kind: str  # "hub" (the hub's protocol, HubClient) or "redis"
    address: str  # the websocket URL, or redis://127.0.0.1:PORT
    stream: str = ""  # the session id or the stream key
    after: str = "0"  # subscribe after this seq (hub) or stream id (redis)
    pad: str = ""  # filler that makes an event about EVENT_BYTES
    token: str = ""  # a Bearer token, for the HTTP API (bench.w9_sse_fanout)


def settle_gc() -> None:
    """Collect now and exempt what exists from later collections, so that no long GC pass
    over the setup lands inside a measurement."""
    gc.collect()
    gc.freeze()


# --- publishing -----------------------------------------------------------------------------


class Publisher:
    """One publishing client (one connection, many publishes in flight)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._hub: HubClient | None = None
        self._redis: Any = None

    async def __aenter__(self) -> Publisher:
        if self.target.kind == "hub":
            self._hub = HubClient(self.target.address, kind="bench", reconnect=False)
            await self._hub.start()
        else:
            import redis.asyncio

            # redis-py runs one command at a time per connection: a window of publishes in
            # flight takes that many pooled connections (redis-py 8 allows 100 by default).
            self._redis = redis.asyncio.Redis.from_url(self.target.address,
                                                       max_connections=MAX_REDIS_CONNECTIONS)
            # Open some pooled connections now, so that none is opened mid-measurement
            # (a new one costs a connect and redis-py's handshake: HELLO, CLIENT SETINFO).
            await asyncio.gather(*(self._redis.ping() for _ in range(REDIS_WARM_CONNECTIONS)))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._hub is not None:
            await self._hub.close()
        if self._redis is not None:
            await self._redis.aclose()

    async def publish(self, data: dict[str, Any]) -> None:
        """Publish one event and wait for its durable acknowledgement."""
        if self._hub is not None:
            await self._hub.publish(self.target.stream, EVENT_TYPE, data)
        else:
            event = {"type": EVENT_TYPE, "source": REDIS_SOURCE, "data": data}
            await self._redis.xadd(self.target.stream, {REDIS_FIELD: orjson.dumps(event)})


async def prepare(target: Target, title: str) -> tuple[Target, int]:
    """Make the session (or stream) and learn the filler for ~``EVENT_BYTES`` events: the
    target to use (stream, after, pad filled in) and the event size in bytes."""
    if target.kind == "hub":
        async with HubClient(target.address, kind="bench", reconnect=False) as client:
            session = await client.create_session(title=title)
            sid = session["sessionId"]
            pad, size = await common.padding(client, sid)
            after = (await client.get_session(sid))["headSeq"]
        return Target(target.name, target.kind, target.address, sid, str(after), pad), size
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(target.address)
    try:
        key = f"bench:{title.replace(' ', '-')}:{time.time_ns()}"
        probe = {"type": EVENT_TYPE, "source": REDIS_SOURCE, "data": common.tick(0, "")}
        pad = "x" * max(0, EVENT_BYTES - len(orjson.dumps(probe)))
        probe["data"] = common.tick(0, pad)
        payload = orjson.dumps(probe)
        after = (await client.xadd(key, {REDIS_FIELD: payload})).decode()
    finally:
        await client.aclose()
    return Target(target.name, target.kind, target.address, key, after, pad), len(payload)


# --- subscribing ------------------------------------------------------------------------------


@dataclass
class Received:
    """What one subscriber saw: per event its index, send time and arrival time."""

    index: array[int] = field(default_factory=lambda: array("q"))
    sent: array[int] = field(default_factory=lambda: array("q"))
    arrived: array[int] = field(default_factory=lambda: array("q"))
    seq_problems: int = 0  # over the hub's protocol: a seq that was not the next one
    total: int | None = None  # stop once this many events have arrived
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, events: list[dict[str, Any]], now: int) -> None:
        """Record a batch handed over at ``now``."""
        for data in events:
            self.index.append(data["i"])
            self.sent.append(data["sentNs"])
            self.arrived.append(now)
        if self.total is not None and len(self.index) >= self.total:
            self.done.set()


async def _hub_receiver(target: Target, out: Received, ready: asyncio.Event) -> None:
    async with HubClient(target.address, kind="bench", reconnect=False) as client:
        sub = client.subscribe(target.stream, int(target.after))
        await sub.ready.wait()
        ready.set()
        expected = int(target.after) + 1
        while True:
            batch = await sub.next_batch()
            now = time.perf_counter_ns()
            if batch[0]["seq"] != expected or batch[-1]["seq"] != expected + len(batch) - 1:
                out.seq_problems += 1
            expected = batch[-1]["seq"] + 1
            out.add([e["data"] for e in batch], now)


async def _redis_receiver(target: Target, out: Received, ready: asyncio.Event) -> None:
    import redis.asyncio

    # No socket timeout (redis-py 8 has 5 s by default): XREAD BLOCK 0 waits as long as it takes.
    client = redis.asyncio.Redis.from_url(target.address, socket_timeout=None)
    last = target.after
    key = target.stream
    try:
        await client.ping()
        ready.set()  # reading from a fixed id: nothing published meanwhile can be missed
        while True:
            reply = await client.xread({key: last}, block=0)
            now = time.perf_counter_ns()
            entries = reply[0][1]
            last = entries[-1][0]
            out.add([orjson.loads(fields[REDIS_FIELD])["data"] for _, fields in entries], now)
    finally:
        await client.aclose()


def _stats(received: list[Received], steps: list[tuple[int, int]]) -> list[dict[str, Any]]:
    """Per step (a range of indexes): deliveries, latency percentiles, first send, last
    arrival (ns), over every subscriber."""
    out = []
    bounds = sorted((first, last, n) for n, (first, last) in enumerate(steps))
    lat: list[list[int]] = [[] for _ in steps]
    first_sent = [None] * len(steps)
    last_arrived = [0] * len(steps)
    for r in received:
        for i, sent, arrived in zip(r.index, r.sent, r.arrived, strict=True):
            for first, last, n in bounds:
                if first <= i <= last:
                    lat[n].append(arrived - sent)
                    fs = first_sent[n]
                    first_sent[n] = sent if fs is None or sent < fs else fs
                    last_arrived[n] = max(last_arrived[n], arrived)
                    break
    for n in range(len(steps)):
        ordered = sorted(lat[n])
        pct = {f"p{str(p).replace('.', '')}_ms": common.percentile(ordered, p) / 1e6
               for p in (50, 90, 99, 99.9)} if ordered else {}
        out.append({"deliveries": len(ordered), **pct,
                    "max_ms": ordered[-1] / 1e6 if ordered else None,
                    "first_sent_ns": first_sent[n], "last_arrived_ns": last_arrived[n]})
    return out


def _check(received: list[Received], total: int) -> dict[str, int]:
    """Every subscriber must have every index 1..``total`` exactly once."""
    duplicates = missing = incomplete = seq_problems = 0
    for r in received:
        seen = bytearray(total + 1)
        for i in r.index:
            if 1 <= i <= total and not seen[i]:
                seen[i] = 1
            else:
                duplicates += 1
        gone = total - sum(seen)
        missing += gone
        incomplete += gone > 0
        seq_problems += r.seq_problems
    return {"duplicates": duplicates, "missing": missing, "incomplete_subscribers": incomplete,
            "seq_problems": seq_problems}


Receiver = Callable[[Target, Received, asyncio.Event], Coroutine[Any, Any, None]]


def _subscriber_process(target: Target, count: int, timeout: float, conn: Connection,
                        receiver: Receiver | None = None) -> None:
    """A child process running ``count`` subscribers (entry point for multiprocessing)."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        received = [Received() for _ in range(count)]
        readies = [asyncio.Event() for _ in range(count)]
        run = receiver or (_hub_receiver if target.kind == "hub" else _redis_receiver)
        tasks = [asyncio.create_task(run(target, r, e)) for r, e in zip(received, readies,
                                                                         strict=True)]
        try:
            async with asyncio.timeout(60):
                await asyncio.gather(*(e.wait() for e in readies))
            settle_gc()
            conn.send("ready")
            await loop.run_in_executor(None, conn.recv)  # "go"
            cpu = time.process_time()
            total, steps = await loop.run_in_executor(None, conn.recv)
            for r in received:
                r.total = total
                if len(r.index) >= total:
                    r.done.set()
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.gather(*(r.done.wait() for r in received))
            except TimeoutError:
                pass
            cpu = time.process_time() - cpu
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        errors = [repr(t.exception()) for t in tasks
                  if t.done() and not t.cancelled() and t.exception() is not None]
        conn.send({**_check(received, total), "steps": _stats(received, steps),
                   "cpu_seconds": cpu, "errors": errors})

    common.run(main())
    conn.close()


class Subscribers:
    """``count`` subscribers, each its own client and connection, in one child process.

    ``receiver`` (a module-level function: it goes to the child by name) runs each one;
    by default ``HubClient``'s or redis-py's, by ``target.kind``.
    """

    def __init__(self, target: Target, count: int, timeout: float,
                 receiver: Receiver | None = None) -> None:
        self.receiver = receiver
        self.target = target
        self.count = count
        self.timeout = timeout
        self._proc: BaseProcess | None = None
        self._conn: Connection | None = None

    async def start(self) -> None:
        """Connect and subscribe them all; returns when every subscription is live."""
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        self._proc = ctx.Process(target=_subscriber_process,
                                 args=(self.target, self.count, self.timeout, child,
                                       self.receiver),
                                 daemon=True)
        self._proc.start()
        child.close()
        self._conn = parent
        if not await asyncio.to_thread(parent.poll, 90.0):
            raise RuntimeError("the subscriber process did not get ready within 90 s")
        parent.recv()

    def go(self) -> None:
        """Publishing is about to start."""
        assert self._conn is not None
        self._conn.send("go")

    async def results(self, total: int, steps: list[tuple[int, int]]) -> dict[str, Any]:
        """Wait until every subscriber has ``total`` events (indexes 1..total): the checks,
        and latency per step (each a range of indexes)."""
        assert self._conn is not None and self._proc is not None
        self._conn.send((total, steps))
        if not await asyncio.to_thread(self._conn.poll, self.timeout + 60):
            raise RuntimeError("the subscriber process did not report back")
        out: dict[str, Any] = self._conn.recv()
        await asyncio.to_thread(self._proc.join, 10)
        return out


# --- publishing patterns -------------------------------------------------------------------------


@dataclass
class Publishing:
    """What the publishers did."""

    acks_ns: list[int] = field(default_factory=list)  # publish to acknowledgement
    errors: list[str] = field(default_factory=list)
    first_send: float = 0.0
    last_send: float = 0.0
    max_lag: float = 0.0  # seconds an event was sent after its scheduled time (at a rate)


async def publish_at_rate(publisher: Publisher, pad: str, rate: float, count: int,
                          min_sleep: float = 0.001) -> Publishing:
    """Publish events 1..``count`` at ``rate`` per second without waiting for acks (W1)."""
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
            await publisher.publish(data)
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
            await asyncio.sleep(max(min_sleep, start + sent / rate - time.perf_counter()))
    await asyncio.gather(*under_way)
    return report


class Indexes:
    """Event indexes, 1, 2, ... across a whole run."""

    def __init__(self) -> None:
        self.last = 0

    def next(self) -> int:
        """The next index."""
        self.last += 1
        return self.last


async def publish_windowed(publishers: list[Publisher], pad: str, window: int,
                           seconds: float, indexes: Indexes) -> Publishing:
    """Each publisher keeps ``window`` publishes in flight (the next is sent as soon as one
    is acknowledged) for ``seconds``; event indexes come from ``indexes`` (W2)."""
    report = Publishing()
    deadline = time.perf_counter() + seconds

    async def worker(publisher: Publisher) -> None:
        while time.perf_counter() < deadline:
            data = common.tick(indexes.next(), pad)
            try:
                await publisher.publish(data)
            except Exception as exc:
                report.errors.append(repr(exc))
                return
            report.acks_ns.append(time.perf_counter_ns() - data["sentNs"])

    await asyncio.gather(*(worker(p) for p in publishers for _ in range(window)))
    return report
