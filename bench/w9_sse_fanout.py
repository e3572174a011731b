"""W9 SSE fan-out: publish-to-deliver latency of 10 Server-Sent Events readers.

W1 with the subscribers reading ``GET /v1/sessions/{id}/stream`` instead of holding a
websocket: one session, 10 SSE readers (each its own aiohttp client and connection, all
in one child process, as W1's subscribers are), one ``HubClient`` publisher sending
~300-byte events at 2,000 events/s on W1's clock-driven schedule, from the bench's own
process. Each event's data carries ``sentNs``; a reader takes the time once the chunk
holding the event is read and its messages parsed (each event's JSON decoded, as
``HubClient`` does before handing a batch over). W1 itself runs in the same run
(:func:`bench.w1_latency.measure`, on a hub of its own), so the ratio of the two p99s
is what SSE costs against the websocket on the machine as it is at that moment.

Checked as in W1: every reader sees every index exactly once, ``id:`` seqs contiguous
and ascending, and the hub's ``axtui_deliveries_total`` grows by exactly 10 x events.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson

from bench import common, w1_latency
from bench.common import Figure, WorkloadResult, at_most
from bench.harness import (
    Publisher,
    Received,
    Subscribers,
    Target,
    prepare,
    publish_at_rate,
    settle_gc,
)
from bench.httpload import client, sse_messages
from bench.hub import HubUnderTest, process_cpu_seconds, write_config
from bench.targets import Running, started

RATE = w1_latency.RATE
READERS = 10
SECONDS, QUICK_SECONDS = w1_latency.SECONDS, w1_latency.QUICK_SECONDS
TARGET_VS_W1 = 1.5
DRAIN_TIMEOUT = 30.0


async def sse_receiver(target: Target, out: Received, ready: asyncio.Event) -> None:
    """One SSE reader of ``target.stream`` after ``target.after`` (a
    :data:`bench.harness.Receiver`, run in the subscriber process)."""
    url = f"{target.address}/v1/sessions/{target.stream}/stream"
    async with client(target.token) as http, \
            http.get(url, params={"afterSeq": target.after}) as response:
        if response.status != 200:
            raise RuntimeError(f"the stream answered {response.status}")
        ready.set()  # subscribed from a fixed seq: nothing published meanwhile is missed
        expected = int(target.after) + 1
        async for messages in sse_messages(response):
            events = [orjson.loads(data) for _, data in messages]
            now = time.perf_counter_ns()
            if messages[0][0] != expected or messages[-1][0] != expected + len(messages) - 1:
                out.seq_problems += 1
            expected = messages[-1][0] + 1
            out.add([e["data"] for e in events], now)


async def measure(hub: HubUnderTest, seconds: float) -> tuple[dict[str, Any], list[str]]:
    """W9 on a started hub: its figures and what went wrong."""
    ws, event_bytes = await prepare(Target("axtui", "hub", hub.url), "W9 SSE fan-out")
    sse = Target("axtui-sse", "sse", hub.http_url, ws.stream, ws.after, ws.pad,
                 hub.local_token())
    count = int(RATE * seconds)
    readers = Subscribers(sse, READERS, seconds + DRAIN_TIMEOUT, sse_receiver)
    await readers.start()
    async with Publisher(ws) as publisher:
        settle_gc()
        before = hub.metrics()["axtui_deliveries_total"]
        busy = common.machine_busy_seconds()
        server_cpu = process_cpu_seconds(hub.pid)
        wall = time.perf_counter()
        readers.go()
        publishing = await publish_at_rate(publisher, ws.pad, RATE, count)
        seen = await readers.results(count, [(1, count)])
        wall = time.perf_counter() - wall
        server_cpu = process_cpu_seconds(hub.pid) - server_cpu
        busy = common.machine_busy_seconds() - busy
        counted = hub.metrics()["axtui_deliveries_total"] - before
    step = seen["steps"][0]
    expected = READERS * count
    problems = []
    if publishing.errors:
        problems.append(f"{len(publishing.errors)} publishes failed, e.g. {publishing.errors[0]}")
    if seen["duplicates"] or seen["missing"] or seen["seq_problems"]:
        problems.append(f"{seen['duplicates']} duplicates, {seen['missing']} missing,"
                        f" {seen['seq_problems']} seq gaps or disorders")
    if seen["errors"]:
        problems.append(f"reader errors: {seen['errors'][:3]}")
    if step["deliveries"] != expected:
        problems.append(f"{step['deliveries']} deliveries received, {expected} expected")
    if int(counted) != expected:
        problems.append(f"the server counted {int(counted)} deliveries, {expected} expected")
    return {
        "p50_ms": step.get("p50_ms"), "p90_ms": step.get("p90_ms"),
        "p99_ms": step.get("p99_ms"), "p999_ms": step.get("p999_ms"),
        "max_ms": step.get("max_ms"),
        "rate": round((count - 1) / (publishing.last_send - publishing.first_send)),
        "events": count, "event_bytes": event_bytes, "deliveries": step["deliveries"],
        "server_counted_deliveries": counted, "max_send_lag_ms": publishing.max_lag * 1e3,
        "wall_seconds": wall, "server_cpu_percent": 100 * server_cpu / wall,
        "reader_process_cpu_percent": 100 * seen["cpu_seconds"] / wall,
        "machine_cpu_percent": 100 * busy / wall,
    }, problems


def run(workdir: Path, *, quick: bool) -> WorkloadResult:
    """Run W1 and then W9, each on a fresh hub under ``workdir``."""
    seconds = QUICK_SECONDS if quick else SECONDS
    details: dict[str, Any] = {"readers": READERS, "target_rate": RATE, "seconds": seconds}
    problems: list[str] = []
    running: Running
    with started("axtui", workdir / "w1") as running:
        details["w1"], trouble = common.run(w1_latency.measure(running, seconds))
    problems += [f"W1: {p}" for p in trouble]
    with HubUnderTest(workdir / "sse", write_config(workdir / "sse.yaml")) as hub:
        hub.start()
        details["sse"], trouble = common.run(measure(hub, seconds))
    problems += trouble
    sse, w1 = details["sse"], details["w1"]
    details["p99_vs_w1"] = sse["p99_ms"] / w1["p99_ms"]
    figures = [
        Figure("p50", sse["p50_ms"], "ms"),
        Figure("p99", sse["p99_ms"], "ms"),
        Figure("max", sse["max_ms"], "ms"),
        Figure("W1 p50", w1["p50_ms"], "ms"),
        Figure("W1 p99", w1["p99_ms"], "ms"),
        at_most("p99 vs W1", details["p99_vs_w1"], "x", TARGET_VS_W1),
    ]
    return WorkloadResult("W9", "SSE fan-out, 10 readers at 2,000 events/s", figures,
                          details, problems)
