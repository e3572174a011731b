"""W8 HTTP publish: keyed ``POST /v1/sessions/{id}/events`` against ``session/publish``.

10 concurrent clients, each one keep-alive connection (aiohttp's client, one connection
per ``ClientSession``) with one request in flight: the next POST is sent the moment the
previous one is answered, so the rate is what the hub acknowledges (durably: the answer
comes after the commit's fsync). Every POST carries an ``Idempotency-Key`` of its own.
The same run measures the websocket the same way: 10 ``HubClient``s, each its own
connection and one ``session/publish`` in flight, with the same event data and an
``idempotencyKey`` each, so the two differ only in the transport. Then both again at a
fixed 500 requests/s (a clock-driven schedule; a request waits for a free client if all
10 are busy). Latency is from just before a request is sent to its answer; at a rate it
is also kept from each request's scheduled time (``from_schedule_p99_ms``), which counts
a wait for a free client and the load process's own lateness too. Each phase gets its own
session and its own load process (:func:`in_child`).

Checked: every answer is 200 with ``duplicate: false`` and a seq of its own, the
session's head grew by exactly the number of publishes, and a POST repeating the first
key answers that event's seq with ``duplicate: true``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from axtui.client import HubClient
from bench import common
from bench.common import EVENT_TYPE, Figure, WorkloadResult, at_least, at_most
from bench.harness import Target, prepare, settle_gc
from bench.httpload import client, in_child, post_event
from bench.hub import HubUnderTest, process_cpu_seconds, write_config

CLIENTS = 10
SECONDS, QUICK_SECONDS = 5.0, 2.0  # each throughput phase
RATE = 500  # requests per second in the fixed-rate phases
RATE_SECONDS, QUICK_RATE_SECONDS = 10.0, 3.0
TARGET_VS_WEBSOCKET, TARGET_P99_MS = 0.5, 20.0

Publish = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


async def _clients(kind: str, address: str, token: str, sid: str,
                   ) -> tuple[list[Publish], Callable[[], Awaitable[None]]]:
    """``CLIENTS`` publishing clients over ``kind`` ("http" or "ws"), each its own
    connection: their publish functions (key, data) and how to close them all."""
    if kind == "http":
        https = [client(token) for _ in range(CLIENTS)]
        url = f"{address}/v1/sessions/{sid}/events"

        def http_publish(h: Any) -> Publish:
            return lambda key, data: post_event(h, url, key, data)

        async def close_http() -> None:
            await asyncio.gather(*(h.close() for h in https))

        return [http_publish(h) for h in https], close_http
    hubs = [HubClient(address, kind="bench", reconnect=False) for _ in range(CLIENTS)]
    await asyncio.gather(*(h.start() for h in hubs))

    def ws_publish(h: HubClient) -> Publish:
        return lambda key, data: h.publish(sid, EVENT_TYPE, data, idempotency_key=key)

    async def close_ws() -> None:
        await asyncio.gather(*(h.close() for h in hubs))

    return [ws_publish(h) for h in hubs], close_ws


async def load(kind: str, address: str, token: str, sid: str, pad: str, seconds: float,
               rate: float | None, hub_pid: int) -> dict[str, Any]:
    """One phase, in the load process: ``CLIENTS`` clients publishing for ``seconds``,
    back to back (``rate`` None) or at ``rate`` requests/s in all."""
    publishers, close = await _clients(kind, address, token, sid)
    latencies: list[int] = []  # ns, from the send to the answer
    scheduled: list[int] = []  # ns, from the scheduled time (at a rate) to the answer
    seqs: list[int] = []
    errors: list[str] = []
    duplicates = 0
    first_seq = None  # the seq of event 1, which the retry repeats
    try:
        for n, publish in enumerate(publishers):  # the connections are open and warm
            await publish(f"{kind}-warm-{n}", common.tick(0, pad))
        settle_gc()
        queue: asyncio.Queue[tuple[int, int] | None] = asyncio.Queue()
        counter = iter(range(1, 1 << 62))
        start = time.perf_counter()
        deadline = start + seconds

        async def worker(publish: Publish) -> None:
            nonlocal duplicates, first_seq
            while True:
                if rate is None:
                    if time.perf_counter() >= deadline:
                        return
                    i, due = next(counter), 0
                else:
                    item = await queue.get()
                    if item is None:
                        return
                    i, due = item
                data = common.tick(i, pad)
                try:
                    answer = await publish(f"{kind}-{i}", data)
                except Exception as exc:
                    errors.append(repr(exc))
                    return
                now = time.perf_counter_ns()
                latencies.append(now - data["sentNs"])
                scheduled.append(now - (due or data["sentNs"]))
                seqs.append(answer["seq"])
                if i == 1:
                    first_seq = answer["seq"]
                duplicates += bool(answer["duplicate"])

        async def schedule() -> None:
            assert rate is not None
            count, sent = int(rate * seconds), 0
            while sent < count:
                due = min(count, int((time.perf_counter() - start) * rate) + 1)
                for i in range(sent + 1, due + 1):
                    queue.put_nowait((i, int((start + (i - 1) / rate) * 1e9)))
                sent = due
                if sent < count:
                    await asyncio.sleep(max(0.001, start + sent / rate - time.perf_counter()))
            for _ in publishers:
                queue.put_nowait(None)

        server_cpu, own_cpu = process_cpu_seconds(hub_pid), time.process_time()
        busy = common.machine_busy_seconds()
        jobs = [worker(p) for p in publishers] + ([schedule()] if rate is not None else [])
        await asyncio.gather(*jobs)
        wall = time.perf_counter() - start
        server_cpu = process_cpu_seconds(hub_pid) - server_cpu
        own_cpu = time.process_time() - own_cpu
        busy = common.machine_busy_seconds() - busy
        again = await publishers[0](f"{kind}-1", common.tick(1, pad))  # a retried publish
    finally:
        await close()
    ordered = sorted(latencies)
    late = sorted(scheduled)
    pct = {f"p{p}_ms": common.percentile(ordered, p) / 1e6 for p in (50, 90, 99)} \
        if ordered else {}
    return {
        "transport": kind, "requests": len(seqs), "rate": len(seqs) / wall,
        **pct, "max_ms": ordered[-1] / 1e6 if ordered else None,
        # At a rate: from the scheduled time, so time spent waiting for a free client (all
        # 10 busy) or for the load process's own loop counts too.
        "from_schedule_p99_ms": common.percentile(late, 99) / 1e6 if late else None,
        "wall_seconds": wall, "distinct_seqs": len(set(seqs)), "duplicates": duplicates,
        "errors": errors[:3], "error_count": len(errors),
        "retry_duplicate": bool(again["duplicate"]),
        "retry_seq_matches": first_seq == again["seq"],
        "server_cpu_percent": 100 * server_cpu / wall,
        "server_cpu_us_per_request": 1e6 * server_cpu / max(1, len(seqs)),
        "load_cpu_percent": 100 * own_cpu / wall,
        "machine_cpu_percent": 100 * busy / wall,
    }


async def _session(url: str, title: str) -> tuple[Target, int]:
    return await prepare(Target("axtui", "hub", url), title)


async def _head_and_size(url: str, sid: str) -> tuple[int, int]:
    """The session's head seq, and the size of its newest event as stored and sent."""
    async with HubClient(url, kind="bench", reconnect=False) as hub:
        head = (await hub.get_session(sid))["headSeq"]
        page = await hub.history(sid, afterSeq=head - 1, limit=1)
    return head, len(orjson.dumps(page["events"][0]))


def _phase(hub: HubUnderTest, kind: str, seconds: float, rate: float | None,
           ) -> tuple[dict[str, Any], list[str]]:
    """One phase on a session of its own: the load process's figures and the problems."""
    label = f"{kind}{'' if rate is None else f' at {rate:g}/s'}"
    target, _ = common.run(_session(hub.url, f"W8 {label}"))
    head = int(target.after)
    address = hub.http_url if kind == "http" else hub.url
    out = in_child(load, kind, address, hub.local_token(), target.stream, target.pad,
                   seconds, rate, hub.pid)
    after, size = common.run(_head_and_size(hub.url, target.stream))
    out["event_bytes"] = size
    problems = []
    if out["error_count"]:
        problems.append(f"{out['error_count']} publishes failed, e.g. {out['errors'][0]}")
    if out["duplicates"] or out["distinct_seqs"] != out["requests"]:
        problems.append(f"{out['duplicates']} answers said duplicate, {out['distinct_seqs']}"
                        f" distinct seqs for {out['requests']} publishes")
    if after - head != out["requests"] + CLIENTS:  # the warm-up publishes too
        problems.append(f"the head moved by {after - head}, {out['requests'] + CLIENTS}"
                        " expected")
    if not (out["retry_duplicate"] and out["retry_seq_matches"]):
        problems.append("a retried key was not answered as a duplicate of its first event")
    return out, [f"{label}: {p}" for p in problems]


def run(workdir: Path, *, quick: bool) -> WorkloadResult:
    """Run W8 on a fresh hub under ``workdir``."""
    seconds = QUICK_SECONDS if quick else SECONDS
    rate_seconds = QUICK_RATE_SECONDS if quick else RATE_SECONDS
    details: dict[str, Any] = {"clients": CLIENTS, "seconds": seconds, "rate": RATE,
                               "rate_seconds": rate_seconds}
    problems: list[str] = []
    with HubUnderTest(workdir / "axtui", write_config(workdir / "axtui.yaml")) as hub:
        hub.start()
        for key, kind, secs, rate in (("ws", "ws", seconds, None),
                                      ("http", "http", seconds, None),
                                      ("http_at_rate", "http", rate_seconds, RATE),
                                      ("ws_at_rate", "ws", rate_seconds, RATE)):
            details[key], trouble = _phase(hub, kind, secs, rate)
            problems += trouble
    http, ws = details["http"], details["ws"]
    figures = [
        Figure("http rate", http["rate"], "events/s"),
        Figure("http p99", http["p99_ms"], "ms"),
        Figure("websocket rate", ws["rate"], "events/s"),
        Figure("websocket p99", ws["p99_ms"], "ms"),
        at_least("vs websocket", http["rate"] / ws["rate"], "x", TARGET_VS_WEBSOCKET),
        at_most(f"http p99 at {RATE}/s", details["http_at_rate"]["p99_ms"], "ms",
                TARGET_P99_MS),
        Figure(f"http p99 at {RATE}/s from schedule", details["http_at_rate"]
               ["from_schedule_p99_ms"], "ms"),
        Figure(f"websocket p99 at {RATE}/s", details["ws_at_rate"]["p99_ms"], "ms"),
    ]
    details["http_vs_websocket"] = http["rate"] / ws["rate"]
    return WorkloadResult("W8", "HTTP publish, 10 keep-alive clients", figures, details,
                          problems)
