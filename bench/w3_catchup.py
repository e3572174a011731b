"""W3 catch-up: how fast one subscriber replays a 100,000-event session from seq 0.

The session is filled first (not timed) by several clients publishing ~300-byte events
pipelined, a window of requests in flight each, so the hub commits them in large groups.
Then a ``HubClient`` that is already connected subscribes from seq 0, and the clock runs
from the subscribe request until the last event has been handed to the subscriber. The
replay is measured on the hub that just wrote the session (``warm``: open, its tail in
memory, the file in the page cache) and on a hub restarted with SIGTERM (``reopened``: the
subscribe opens the session file first); median of 3 of each.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from axtui.client import HubClient
from bench import common
from bench.common import EVENT_TYPE, Figure, WorkloadResult, at_least
from bench.hub import HubUnderTest, write_config

EVENTS, QUICK_EVENTS = 100_000, 20_000
FILL_CLIENTS = 4
FILL_WINDOW = 500  # publishes in flight per filling client (the hub allows 1024)
TARGET_RATE = 100_000  # events per second
TIMEOUT = 120.0
REPLAYS = 3  # of each kind; the median is reported


async def _fill(url: str, session_id: str, count: int, pad: str) -> float:
    """Publish ``count`` events from several pipelined clients; the seconds it took."""

    async def one_client(first: int, share: int) -> None:
        async with HubClient(url, kind="bench", reconnect=False) as client:
            window = asyncio.Semaphore(FILL_WINDOW)
            under_way: set[asyncio.Task[Any]] = set()

            async def publish(i: int) -> None:
                try:
                    await client.publish(session_id, EVENT_TYPE, common.tick(i, pad))
                finally:
                    window.release()

            for i in range(first, first + share):
                await window.acquire()
                task = asyncio.create_task(publish(i))
                under_way.add(task)
                task.add_done_callback(under_way.discard)
            await asyncio.gather(*under_way)

    start = time.perf_counter()
    share = count // FILL_CLIENTS
    await asyncio.gather(*(
        one_client(1 + n * share, share if n < FILL_CLIENTS - 1 else count - n * share)
        for n in range(FILL_CLIENTS)
    ))
    return time.perf_counter() - start


@dataclass
class Replay:
    """One catch-up from seq 0: how long, how much, and whether it was gap-free."""

    seconds: float
    events: int
    hub_cpu_seconds: float
    client_cpu_seconds: float
    machine_cpu_seconds: float  # all CPUs together: to tell whether others ran meanwhile
    problem: str | None = None

    @property
    def rate(self) -> float:
        """Events per second."""
        return self.events / self.seconds

    def to_json(self) -> dict[str, Any]:
        """The replay's figures for the results file."""
        return {
            "events": self.events, "seconds": self.seconds, "events_per_s": round(self.rate),
            "hub_cpu_percent": 100 * self.hub_cpu_seconds / self.seconds,
            "client_cpu_percent": 100 * self.client_cpu_seconds / self.seconds,
            "machine_cpu_percent": 100 * self.machine_cpu_seconds / self.seconds,
        }


async def _replay(hub: HubUnderTest, session_id: str, head: int) -> Replay:
    """Subscribe from 0 with a connected client and receive up to ``head``."""
    async with HubClient(hub.url, kind="bench", reconnect=False) as client:
        busy = common.machine_busy_seconds()
        hub_cpu, client_cpu = hub.cpu_seconds(), time.process_time()
        start = time.perf_counter()
        sub = client.subscribe(session_id, 0)
        expected, problem = 1, None
        async with asyncio.timeout(TIMEOUT):
            while expected <= head:
                batch = await sub.next_batch()
                first, last = batch[0]["seq"], batch[-1]["seq"]
                if first != expected or last != first + len(batch) - 1:
                    problem = problem or f"expected seq {expected}, got {first}..{last}"
                expected = last + 1
        seconds = time.perf_counter() - start
        hub_cpu, client_cpu = hub.cpu_seconds() - hub_cpu, time.process_time() - client_cpu
        busy = common.machine_busy_seconds() - busy
        return Replay(seconds, head, hub_cpu, client_cpu, busy, problem)


def _median(replays: list[Replay]) -> Replay:
    """The replay with the median rate."""
    return sorted(replays, key=lambda r: r.rate)[len(replays) // 2]


async def _build(hub: HubUnderTest, count: int) -> tuple[str, int, float, int]:
    """Create and fill the session: its id, head seq, fill seconds and event size."""
    async with HubClient(hub.url, kind="bench", reconnect=False) as client:
        session = await client.create_session(title="W3 catch-up")
        sid = session["sessionId"]
        pad, event_bytes = await common.padding(client, sid)
        head = (await client.get_session(sid))["headSeq"]
        fill = await _fill(hub.url, sid, count - head, pad)
        head = (await client.get_session(sid))["headSeq"]
    return sid, head, fill, event_bytes


def run(workdir: Path, *, quick: bool) -> WorkloadResult:
    """Run W3 on a fresh data dir under ``workdir``."""
    count = QUICK_EVENTS if quick else EVENTS
    config = write_config(workdir / "w3.yaml")
    data = workdir / "w3"
    with HubUnderTest(data, config) as hub:
        hub.start()
        sid, head, fill, event_bytes = common.run(_build(hub, count))
        warm = [common.run(_replay(hub, sid, head)) for _ in range(REPLAYS)]
    reopened = []
    for _ in range(REPLAYS):
        with HubUnderTest(data, config) as hub:
            hub.start()
            reopened.append(common.run(_replay(hub, sid, head)))

    problems = [f"replay: {r.problem}" for r in warm + reopened if r.problem]
    if head != count:
        problems.append(f"the session holds {head} events, {count} expected")
    figures = [
        at_least("rate", round(_median(warm).rate), "events/s", TARGET_RATE),
        Figure("rate reopened", round(_median(reopened).rate), "events/s"),
    ]
    details = {
        "events": head, "event_bytes": event_bytes, "fill_seconds": fill,
        "fill_events_per_s": round((count - 2) / fill),
        "warm": [r.to_json() for r in warm], "reopened": [r.to_json() for r in reopened],
    }
    return WorkloadResult("W3", f"catch-up from seq 0 of a {count:,}-event session", figures,
                          details, problems)
