"""W7 TUI: opening a large session, and following a busy one (issue 4's two measures).

The hub runs as its own process (as in every workload) and the TUI (``AxtuiApp``, headless
through ``App.run_test``) in the bench's. Two measures:

- **open**: a session of 10,000 events (user messages and application events of about
  300 bytes); the time from ``open_session`` until the newest event is folded in and its
  widgets are on screen (the screen refreshed once more). Median of 3 opens.
- **stream**: 200 events/s for 10 s from a publisher in another process, to a session the
  TUI has open. Each event carries ``time.perf_counter_ns()`` taken just before its
  publish (CLOCK_MONOTONIC, one clock for the machine); the TUI records when the redraw
  that shows it ran. Reported: p50, p99 and max of that lag, and how long after the last
  publish the screen was up to date. Every event must be folded in exactly once.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from axtui.client import HubClient
from axtui.tui.app import AxtuiApp
from axtui.tui.screens.main import MainScreen
from bench import common
from bench.common import EVENT_TYPE, Figure, WorkloadResult, at_most
from bench.hub import HubUnderTest, write_config

BIG_EVENTS = 10_000
OPENS = 3
RATE, SECONDS, QUICK_SECONDS = 200, 10.0, 3.0
OPEN_TARGET_S = 2.0
SIZE = (120, 40)

PUBLISHER = """
import asyncio, sys, time
from axtui.client import HubClient

async def main(url, sid, count, rate):
    async with HubClient(url, kind="bench") as client:
        start = time.perf_counter()
        sends = []
        for i in range(count):
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            sends.append(asyncio.ensure_future(client.publish(
                sid, EVENT_TYPE, {"i": i, "sent_ns": time.perf_counter_ns(), "pad": "x" * 200})))
        await asyncio.gather(*sends)
        print(time.perf_counter_ns(), flush=True)

EVENT_TYPE = sys.argv[5]
asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
"""


async def _fill(url: str) -> None:
    """The 10,000-event session ``big`` and the empty session ``live``."""
    async with HubClient(url, kind="bench", reconnect=False) as client:
        await client.create_session(sessionId="big", title="10,000 events")
        await client.create_session(sessionId="live", title="200 events/s")
        window = asyncio.Semaphore(100)

        async def one(n: int) -> None:
            async with window:
                if n % 4 == 0:
                    await client.publish("big", "user.message", {"text": f"message {n} " * 25})
                else:
                    await client.publish("big", EVENT_TYPE, common.tick(n, "x" * 200))

        await asyncio.gather(*(one(n) for n in range(BIG_EVENTS - 1)))


async def _until(pilot: Any, condition: Any, timeout: float = 120.0) -> None:
    deadline = time.perf_counter() + timeout
    while not condition():
        if time.perf_counter() > deadline:
            raise TimeoutError("the TUI did not get there in time")
        await pilot.pause(0.002)


async def _measure(url: str, seconds: float) -> dict[str, Any]:
    app = AxtuiApp(url, label="bench hub")
    shown_at: dict[int, int] = {}  # event index -> when the redraw showing it ran
    original_sync = MainScreen._sync

    def timed_sync(screen: MainScreen) -> None:
        original_sync(screen)
        now = time.perf_counter_ns()
        for block in reversed(screen.conversation.blocks.values()):
            data = getattr(block, "data", None)
            if not data or "sent_ns" not in data or data["i"] in shown_at:
                break
            shown_at[data["i"]] = now - data["sent_ns"]

    MainScreen._sync = timed_sync  # type: ignore[method-assign]
    opens: list[float] = []
    try:
        async with app.run_test(size=SIZE) as pilot:
            await _until(pilot, lambda: app.main.sidebar.loaded)
            view = app.main.view
            for _ in range(OPENS):
                started = time.perf_counter()
                app.main.open_session("big")
                await _until(pilot, lambda: app.main.conversation.last_seq == BIG_EVENTS
                             and view.shown == view.max_widgets)
                await pilot.pause()
                opens.append(time.perf_counter() - started)
                app.main.open_session("live")
                await _until(pilot, lambda: app.main.conversation.last_seq == 1)
            count = int(RATE * seconds)
            publisher = await asyncio.create_subprocess_exec(
                sys.executable, "-c", PUBLISHER, url, "live", str(count), str(RATE), EVENT_TYPE,
                stdout=subprocess.PIPE)
            await _until(pilot, lambda: app.main.conversation.last_seq == 1 + count)
            up_to_date = time.perf_counter_ns()
            out, _ = await publisher.communicate()
            last_publish = int(out.decode().split()[-1])
            blocks = [b for b in app.main.conversation.blocks.values()
                      if getattr(b, "data", {}).get("sent_ns")]
    finally:
        MainScreen._sync = original_sync  # type: ignore[method-assign]
    lags = sorted(v / 1e6 for v in shown_at.values())
    indexes = [b.data["i"] for b in blocks]  # type: ignore[attr-defined]
    return {"opens": opens, "lags": lags, "count": count, "indexes": indexes,
            "caught_up_ms": max(0.0, (up_to_date - last_publish) / 1e6)}


def run(workdir: Path, *, quick: bool) -> WorkloadResult:
    """Run W7 on a fresh data dir under ``workdir``."""
    config = write_config(workdir / "w7.yaml")
    with HubUnderTest(workdir / "w7", config) as hub:
        hub.start()
        common.run(_fill(hub.url))
        busy = common.machine_busy_seconds()
        wall = time.perf_counter()
        measured = common.run(_measure(hub.url, QUICK_SECONDS if quick else SECONDS))
        wall = time.perf_counter() - wall
        busy = common.machine_busy_seconds() - busy
    problems = []
    if measured["indexes"] != list(range(measured["count"])):
        problems.append("the TUI did not fold in every streamed event exactly once, in order")
    lags = measured["lags"]
    open_median = statistics.median(measured["opens"])
    return WorkloadResult(
        key="W7", title="TUI: open a 10,000-event session; follow 200 events/s",
        figures=[
            at_most("open", open_median, "s", OPEN_TARGET_S),
            Figure("stream p50", common.percentile(lags, 50), "ms"),
            Figure("stream p99", common.percentile(lags, 99), "ms"),
            Figure("caught up", measured["caught_up_ms"], "ms"),
        ],
        details={"opens_s": measured["opens"], "events_streamed": measured["count"],
                 "rate": RATE, "stream_max_ms": lags[-1] if lags else None,
                 "lag_samples": len(lags),
                 "machine_cpu_percent": 100 * busy / wall if wall else None},
        problems=problems,
    )
