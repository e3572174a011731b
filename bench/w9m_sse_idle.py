"""W9m SSE idle: the hub's memory with 1,000 open, idle Server-Sent Events streams.

A fresh hub, 10 sessions created (``session_idle_close`` is raised so that none closes
during the run), and one stream opened, read and closed, so that what the first stream
costs once (imports, caches) is in the baseline. The hub's ``VmRSS``
(``/proc/<pid>/status``) then is the idle hub. A load process (:func:`_streams`) opens
1,000 streams, 100 on each session, each its own request and connection (aiohttp's
client, no connection limit), from the head (``afterSeq`` = the head seq: no backlog, so
each stream is idle from its start), 50 being opened at a time. Once the hub counts
1,000 (``axtui_sse_streams``) and a second has passed, its RSS is measured again: the
difference is the headline figure. Then one event is published to each session and every
stream must receive it (so all 1,000 were live), the streams are closed, and the RSS is
measured once more after the hub counts none.

1,000 connections need file descriptors on both sides: the bench raises its own soft
``RLIMIT_NOFILE`` (the load process and the hub inherit it) and the hub's through
``prlimit`` if it is short. MB and kB are 10^6 and 10^3 bytes.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp

from axtui.client import HubClient
from bench import common
from bench.common import EVENT_TYPE, Figure, WorkloadResult, at_most
from bench.httpload import (
    client,
    raise_open_files,
    raise_process_open_files,
    sse_messages,
)
from bench.hub import HubUnderTest, status_kib, write_config

STREAMS, QUICK_STREAMS = 1000, 200
SESSIONS = 10
OPEN_CONCURRENCY = 50  # streams being opened at a time
SETTLE = 1.0  # seconds between the last action and a measurement
TIMEOUT = 120.0  # seconds for any one thing the bench waits for
TARGET_MB = 30.0
MB = 1_000_000


async def _stream(http: aiohttp.ClientSession, url: str, after: int,
                  opened: asyncio.Semaphore, got: dict[int, int], n: int) -> None:
    """One idle stream: open it (holding ``opened`` until the answer's headers are in),
    then note in ``got[n]`` the newest seq it received until it is cancelled."""
    async with opened:
        response = await http.get(url, params={"afterSeq": str(after)})
        if response.status != 200:
            raise RuntimeError(f"the stream answered {response.status}")
    got[n] = after
    async with response:
        async for messages in sse_messages(response):
            got[n] = messages[-1][0]


async def _streams(address: str, token: str, heads: dict[str, int], count: int,
                   conn: Connection) -> dict[str, Any]:
    """The load process: warm up with one stream, then open ``count`` streams spread over
    the sessions of ``heads``; each step when the bench says so (over ``conn``)."""
    loop = asyncio.get_running_loop()
    sessions = list(heads)
    got: dict[int, int] = {}
    async with client(token, connections=0) as http:
        warm = asyncio.create_task(_stream(
            http, f"{address}/v1/sessions/{sessions[0]}/stream", heads[sessions[0]],
            asyncio.Semaphore(1), got, -1))
        async with asyncio.timeout(TIMEOUT):
            while -1 not in got:
                await asyncio.sleep(0.01)
        warm.cancel()
        await asyncio.gather(warm, return_exceptions=True)
        got.clear()
        conn.send("warm")
        await loop.run_in_executor(None, conn.recv)  # "open"
        opened = asyncio.Semaphore(OPEN_CONCURRENCY)
        started = time.perf_counter()
        tasks = [asyncio.create_task(_stream(
            http, f"{address}/v1/sessions/{sessions[n % len(sessions)]}/stream",
            heads[sessions[n % len(sessions)]], opened, got, n)) for n in range(count)]
        async with asyncio.timeout(TIMEOUT):
            while len(got) < count and not any(t.done() for t in tasks):
                await asyncio.sleep(0.01)
        open_seconds = time.perf_counter() - started
        conn.send(len(got))
        expected: dict[str, int] = await loop.run_in_executor(None, conn.recv)
        want = [expected[sessions[n % len(sessions)]] for n in range(count)]
        live = False
        try:
            async with asyncio.timeout(30):
                while not live:
                    await asyncio.sleep(0.01)
                    live = all(got.get(n, 0) >= want[n] for n in range(count))
        except TimeoutError:
            pass
        received = sum(1 for n in range(count) if got.get(n, 0) >= want[n])
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    errors = [repr(r) for r in results
              if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError)]
    return {"open_seconds": open_seconds, "received_the_event": received,
            "errors": errors[:3], "error_count": len(errors)}


def _load_process(address: str, token: str, heads: dict[str, int], count: int,
                  conn: Connection) -> None:
    """The child's entry point (see :func:`_streams`)."""
    conn.send(common.run(_streams(address, token, heads, count, conn)))
    conn.close()


def _snapshot(hub: HubUnderTest) -> dict[str, Any]:
    """The hub's memory, threads, open files and SSE streams now."""
    status = hub.status()
    return {
        "rss_mb": status_kib(status["VmRSS"]) * 1024 / MB,
        "rss_anon_mb": status_kib(status["RssAnon"]) * 1024 / MB,
        "threads": int(status["Threads"]),
        "open_fds": hub.open_fds(),
        "sse_streams": int(hub.metrics()["axtui_sse_streams"]),
    }


def _until_streams(hub: HubUnderTest, count: int) -> None:
    """Wait until the hub counts ``count`` open SSE streams, then ``SETTLE`` more."""
    deadline = time.perf_counter() + TIMEOUT
    while hub.metrics()["axtui_sse_streams"] != count:
        if time.perf_counter() > deadline:
            raise RuntimeError(f"the hub did not reach {count} SSE streams")
        time.sleep(0.05)
    time.sleep(SETTLE)


async def _create(url: str) -> dict[str, int]:
    """``SESSIONS`` sessions: their ids and head seqs."""
    async with HubClient(url, kind="bench", reconnect=False) as hub:
        made = [await hub.create_session(title=f"W9m {n}") for n in range(SESSIONS)]
    return {s["sessionId"]: s["headSeq"] for s in made}


async def _publish_each(url: str, heads: dict[str, int]) -> dict[str, int]:
    """One event to each session: the seq each got."""
    async with HubClient(url, kind="bench", reconnect=False) as hub:
        return {sid: (await hub.publish(sid, EVENT_TYPE, {"i": 1}))["seq"] for sid in heads}


def _receive(conn: Connection, what: str) -> Any:
    if not conn.poll(TIMEOUT + 30):
        raise RuntimeError(f"the load process did not report {what}")
    return conn.recv()


def run(workdir: Path, *, quick: bool) -> WorkloadResult:
    """Run W9m on a fresh hub under ``workdir``."""
    count = QUICK_STREAMS if quick else STREAMS
    want_fds = count + 1000
    details: dict[str, Any] = {"streams": count, "sessions": SESSIONS,
                               "bench_open_files_limit": raise_open_files(want_fds)}
    problems: list[str] = []
    config = write_config(workdir / "axtui.yaml", session_idle_close=3600)
    with HubUnderTest(workdir / "axtui", config) as hub:
        hub.start()
        details["hub_open_files_limit"] = raise_process_open_files(hub.pid, want_fds)
        time.sleep(SETTLE)
        details["fresh"] = _snapshot(hub)
        heads = common.run(_create(hub.url))
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_load_process, daemon=True,
                           args=(hub.http_url, hub.local_token(), heads, count, child))
        proc.start()
        child.close()
        try:
            _receive(parent, "its warm-up")
            _until_streams(hub, 0)
            details["idle"] = _snapshot(hub)
            parent.send("open")
            opened = _receive(parent, "the streams open")
            if opened != count:
                problems.append(f"{opened} of {count} streams opened")
            _until_streams(hub, count)
            details["streams_open"] = _snapshot(hub)
            parent.send(common.run(_publish_each(hub.url, heads)))
            out = _receive(parent, "the end")
            gone = time.perf_counter()
            _until_streams(hub, 0)
            # The hub notices a reader that went away only when it next writes to it.
            details["seconds_until_the_hub_closed_them"] = time.perf_counter() - gone - SETTLE
            details["closed"] = _snapshot(hub)
        finally:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
    details |= out
    if out["received_the_event"] != count:
        problems.append(f"{out['received_the_event']} of {count} streams received the event"
                        " published after they opened")
    if out["error_count"]:
        problems.append(f"{out['error_count']} streams failed, e.g. {out['errors'][0]}")
    idle, busy = details["idle"]["rss_mb"], details["streams_open"]["rss_mb"]
    details["per_stream_kb"] = (busy - idle) * MB / count / 1000
    return WorkloadResult("W9m", f"{count:,} idle SSE streams", [
        Figure("RSS, idle hub", idle, "MB"),
        Figure(f"RSS with {count:,} streams", busy, "MB"),
        at_most("above the idle hub", busy - idle, "MB", TARGET_MB),
        Figure("per stream", details["per_stream_kb"], "kB"),
        Figure("RSS after they closed", details["closed"]["rss_mb"], "MB"),
    ], details, problems)
