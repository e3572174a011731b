"""W6 start: time from launching the hub process until ``/healthz`` answers, 1,000 sessions.

The sessions are created through ``session/create`` and the hub is stopped with SIGTERM,
so the catalog is clean. Each start is timed from just before the process is launched
(interpreter start-up and imports included) to the first 200 from ``/healthz``, polled
every millisecond; the median of 5 starts is reported. Then the crash case: a hub
publishes one event to every session (which opens it and marks its catalog row dirty) and
is killed with SIGKILL; the next start must refresh every dirty row from its session file.
Median of 3. The hub answers ``/healthz`` before its catalog is reconciled with the files
(that runs in the background, and catalog reads wait for it), so each start also records
when a freshly connected client's first ``session/list`` is answered. After each start
the catalog is checked against what was written.
"""

from __future__ import annotations

import asyncio
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

from axtui.client import HubClient
from bench import common
from bench.common import EVENT_TYPE, Figure, WorkloadResult, at_most
from bench.hub import HubUnderTest, write_config

SESSIONS = 1000
CLEAN_STARTS, DIRTY_STARTS = 5, 3
QUICK_CLEAN_STARTS, QUICK_DIRTY_STARTS = 3, 1
CLIENTS, WINDOW = 4, 25  # requests in flight per client while creating or touching sessions
TARGET_SECONDS = 0.5


async def _each_session(url: str, work: list[str], request: str) -> list[str]:
    """Send one request per item of ``work`` from several clients: ``session/create`` (the
    item is the title) or ``session/publish`` (the item is the session id); the session ids.
    """

    async def one_client(items: list[str]) -> list[str]:
        async with HubClient(url, kind="bench", reconnect=False) as client:
            window = asyncio.Semaphore(WINDOW)

            async def one(item: str) -> str:
                async with window:
                    if request == "session/create":
                        return str((await client.create_session(title=item))["sessionId"])
                    await client.publish(item, EVENT_TYPE, {"touch": True})
                    return item

            return await asyncio.gather(*(one(item) for item in items))

    shares = await asyncio.gather(*(one_client(work[n::CLIENTS]) for n in range(CLIENTS)))
    return [sid for share in shares for sid in share]


async def _list_one(url: str) -> None:
    """Connect and list one session: answered once the catalog is reconciled."""
    async with HubClient(url, kind="bench", reconnect=False) as client:
        await client.call("session/list", {"limit": 1})


def _start(hub: HubUnderTest) -> tuple[float, float]:
    """Start ``hub``: seconds from launch to ``/healthz``, and to a first ``session/list``."""
    healthy = hub.start()
    common.run(_list_one(hub.url))
    return healthy, hub.since_launch()


async def _catalog_heads(url: str) -> tuple[int, int]:
    """How many sessions the hub lists, and the sum of their head seqs."""
    async with HubClient(url, kind="bench", reconnect=False) as client:
        heads = [s["headSeq"] async for s in client.list_sessions()]
    return len(heads), sum(heads)


def _dirty_rows(data_dir: Path) -> int:
    """Catalog rows marked dirty (read while no hub is running)."""
    con = sqlite3.connect(f"file:{data_dir / 'hub.db'}?mode=ro", uri=True)
    try:
        return int(con.execute("SELECT count(*) FROM sessions WHERE dirty").fetchone()[0])
    finally:
        con.close()


def _import_seconds() -> float:
    """The floor under any start: a fresh interpreter importing the hub (median of 3)."""
    code = "import axtui.cli, server.app"
    times = []
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(workdir: Path, *, quick: bool) -> WorkloadResult:
    """Run W6 on a fresh data dir under ``workdir``."""
    config = write_config(workdir / "w6.yaml")
    data = workdir / "w6"
    problems: list[str] = []

    def check(url: str, round_: int, when: str) -> None:
        count, total = common.run(_catalog_heads(url))
        if (count, total) != (SESSIONS, SESSIONS * (1 + round_)):
            problems.append(f"{when}: the hub lists {count} sessions with heads summing to"
                            f" {total}; expected {SESSIONS} summing to {SESSIONS * (1 + round_)}")

    with HubUnderTest(data, config) as hub:
        hub.start()
        create = time.perf_counter()
        ids = common.run(_each_session(hub.url, [f"W6 {i}" for i in range(SESSIONS)],
                                       "session/create"))
        create = time.perf_counter() - create
        stop = time.perf_counter()
        code = hub.stop()
        stop = time.perf_counter() - stop
    if code != 0:
        problems.append(f"the hub exited with {code} on SIGTERM after creating the sessions")

    clean, clean_listed, listening = [], [], []
    for _ in range(QUICK_CLEAN_STARTS if quick else CLEAN_STARTS):
        with HubUnderTest(data, config) as hub:
            healthy, listed = _start(hub)
            clean.append(healthy)
            clean_listed.append(listed)
            listening.append(hub.listening_seconds)
            check(hub.url, 0, "clean start")

    dirty, dirty_listed, dirty_rows = [], [], []
    for round_ in range(1, 1 + (QUICK_DIRTY_STARTS if quick else DIRTY_STARTS)):
        with HubUnderTest(data, config) as hub:
            hub.start()
            common.run(_each_session(hub.url, ids, "session/publish"))
            hub.kill()
        dirty_rows.append(_dirty_rows(data))
        with HubUnderTest(data, config) as hub:
            healthy, listed = _start(hub)
            dirty.append(healthy)
            dirty_listed.append(listed)
            check(hub.url, round_, "start after SIGKILL")
    if min(dirty_rows) < SESSIONS:
        problems.append(f"only {min(dirty_rows)} catalog rows were dirty after SIGKILL")

    figures = [
        at_most("start", statistics.median(clean), "s", TARGET_SECONDS),
        at_most("start after SIGKILL", statistics.median(dirty), "s", TARGET_SECONDS),
        Figure("listed after SIGKILL", statistics.median(dirty_listed), "s"),
    ]
    details = {
        "sessions": SESSIONS, "clean_starts_s": clean, "dirty_starts_s": dirty,
        "clean_listening_line_s": listening, "import_seconds": _import_seconds(),
        "clean_listed_s": clean_listed, "dirty_listed_s": dirty_listed,
        "dirty_rows_before_start": dirty_rows, "create_seconds": create,
        "stop_seconds_with_sessions_open": stop,
    }
    return WorkloadResult("W6", f"start with {SESSIONS:,} sessions on disk", figures, details,
                          problems)
