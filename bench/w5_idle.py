"""W5 idle: the hub's memory with 1,000 suspended agent sessions and 2,000 idle connections.

The bench opens 2,000 websocket connections (``HubClient``s, connected and initialized,
then doing nothing until the end). Then 1,000 sessions with the echo agent
(``idle_timeout`` 0.2 s) are created, and each is woken once: a ``user.message``, one
turn, followed by a subscriber to ``turn.completed`` (8 sessions at a time, each by its
own ``HubClient``, which then unsubscribes). The bench waits until ``session/list``
shows every session's ``agentState`` as ``suspended`` and measures the hub's resident
memory (``VmRSS`` in ``/proc/<pid>/status``) and the agent processes still alive: the
hub's child processes and theirs (agents started through ``setpriv`` keep its pid, so
they are the hub's children). ``--quick``: 200 sessions and 400 connections.

The hub keeps a session's database open (a SQLite connection and its thread, two once an
agent has run) for ``session_idle_close`` after its last use: 60 s, the default, here.
Right after the wakes, the sessions woken in the last minute are still open, so the
bench measures again once the hub has closed every session (``axtui_sessions_open`` 0):
the state an idle hub settles in, and the headline figure. ``--quick`` uses 12 s so the
run stays short. The connections are opened first, on the fresh hub, so that their cost
is a clean difference (opened later, their memory would come partly out of what the
closed sessions left free in the allocator); the state measured at the end is the same.
The hub's memory, threads, open files, open sessions and connections are recorded after
each step.

Many connections need many file descriptors: the bench raises its own ``RLIMIT_NOFILE``
soft limit (the hub, its child, inherits it) and checks the hub's limit with ``prlimit``,
raising it there too if needed.
"""

from __future__ import annotations

import asyncio
import resource
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from axtui.client import HubClient
from bench import common
from bench.common import Figure, WorkloadResult, at_most, percentile
from bench.hub import HubUnderTest, echo_agent, status_kib, write_config

SESSIONS, QUICK_SESSIONS = 1000, 200
CONNECTIONS, QUICK_CONNECTIONS = 2000, 400
WAKE_CONCURRENCY = 8  # sessions woken at a time
CONNECT_CONCURRENCY = 50  # connections being opened at a time
CREATE_WINDOW = 50  # session/create requests in flight
IDLE_TIMEOUT = 0.2  # seconds: agents are suspended this long after their turn
SESSION_IDLE_CLOSE = 60  # seconds: the hub's default
QUICK_SESSION_IDLE_CLOSE = 12  # seconds: still longer than the quick run's wakes take
SETTLE = 1.0  # seconds between the last action and a measurement
TIMEOUT = 120.0  # seconds for any one thing the bench waits for
TARGET_RSS_MB, TARGET_AGENTS = 150.0, 0
MB = 1_000_000


def _raise_open_files(want: int) -> tuple[int, int]:
    """Raise this process's soft ``RLIMIT_NOFILE`` to ``want`` (at most the hard limit);
    the limits as they were, to restore."""
    before = soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    return before


def _hub_open_files(hub: HubUnderTest, want: int) -> int:
    """The hub's soft ``RLIMIT_NOFILE``, raised to ``want`` (at most its hard limit) first."""
    soft, hard = resource.prlimit(hub.pid, resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.prlimit(hub.pid, resource.RLIMIT_NOFILE, (new, hard))
    return resource.prlimit(hub.pid, resource.RLIMIT_NOFILE)[0]


def _snapshot(hub: HubUnderTest) -> dict[str, Any]:
    """The hub's memory, threads, open files, open sessions and connections now."""
    status = hub.status()
    metrics = hub.metrics()
    agents = hub.descendants()
    return {
        "rss_mb": status_kib(status["VmRSS"]) * 1024 / MB,
        "rss_anon_mb": status_kib(status["RssAnon"]) * 1024 / MB,
        "rss_file_mb": status_kib(status["RssFile"]) * 1024 / MB,
        "peak_rss_mb": status_kib(status["VmHWM"]) * 1024 / MB,
        "threads": int(status["Threads"]),
        "open_fds": hub.open_fds(),
        "sessions_open": int(metrics["axtui_sessions_open"]),
        "connections": int(metrics["axtui_connections"]),
        "child_processes": sum(1 for _, state in agents if state != "Z"),
        "zombies": sum(1 for _, state in agents if state == "Z"),
    }


async def _create(url: str, count: int) -> dict[str, int]:
    """Create ``count`` echo sessions: their ids and head seqs."""
    async with HubClient(url, kind="bench", reconnect=False) as client:
        window = asyncio.Semaphore(CREATE_WINDOW)

        async def one(i: int) -> tuple[str, int]:
            async with window:
                session = await client.create_session(agent="echo", title=f"W5 {i}")
                return session["sessionId"], session["headSeq"]

        return dict(await asyncio.gather(*(one(i) for i in range(count))))


async def _wake_all(url: str, heads: dict[str, int]) -> tuple[list[float], list[str]]:
    """Wake every session once, ``WAKE_CONCURRENCY`` at a time: seconds from each publish to
    its ``turn.completed``, and what went wrong."""
    todo: Iterator[str] = iter(list(heads))
    times: list[float] = []
    problems: list[str] = []

    async def worker() -> None:
        async with HubClient(url, kind="bench", reconnect=False) as client:
            for sid in todo:  # shared by the workers: each session is taken once
                sub = client.subscribe(sid, heads[sid])
                async with asyncio.timeout(TIMEOUT):
                    await sub.ready.wait()
                    start = time.perf_counter()
                    await client.publish(sid, "user.message", {"text": "hello"})
                    end: dict[str, Any] = {"type": "none", "data": "the subscription ended"}
                    async for event in sub:
                        if event["type"] in ("turn.completed", "turn.failed"):
                            end = event
                            break
                times.append(time.perf_counter() - start)
                if end["type"] != "turn.completed":
                    problems.append(f"session {sid}: the turn failed: {end['data']}")
                await sub.close()

    await asyncio.gather(*(worker() for _ in range(WAKE_CONCURRENCY)))
    return times, problems


async def _until_suspended(url: str, count: int) -> tuple[float, dict[str, int]]:
    """Poll ``session/list`` until all ``count`` echo sessions are suspended: the seconds
    it took, and the sessions by ``agentState`` at the end."""
    start = time.perf_counter()
    async with HubClient(url, kind="bench", reconnect=False) as client:
        while True:
            states: dict[str, int] = {}
            async for session in client.list_sessions(agent="echo"):
                states[session["agentState"]] = states.get(session["agentState"], 0) + 1
            waited = time.perf_counter() - start
            if states == {"suspended": count} or waited > TIMEOUT:
                return waited, states
            await asyncio.sleep(0.2)


async def _until_closed(hub: HubUnderTest, timeout: float) -> float:
    """Wait until the hub has closed every session's database: the seconds it took."""
    start = time.perf_counter()
    while (await asyncio.to_thread(hub.metrics))["axtui_sessions_open"] > 0:
        if time.perf_counter() - start > timeout:
            break
        await asyncio.sleep(0.5)
    return time.perf_counter() - start


async def _measure(hub: HubUnderTest, sessions: int, connections: int, idle_close: float,
                   steps: dict[str, dict[str, Any]], problems: list[str]) -> dict[str, Any]:
    """The workload after the hub started; fills ``steps`` with a snapshot after each."""

    async def snapshot(name: str) -> None:
        await asyncio.sleep(SETTLE)
        steps[name] = await asyncio.to_thread(_snapshot, hub)

    await snapshot("started")
    timing: dict[str, Any] = {}
    clients = [HubClient(hub.url, name="idle", kind="bench", reconnect=False)
               for _ in range(connections)]
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def open_one(client: HubClient) -> None:
        async with gate:
            await client.start()

    try:
        start = time.perf_counter()
        await asyncio.gather(*(open_one(c) for c in clients))
        timing["connect_seconds"] = time.perf_counter() - start
        await snapshot("connected")
        start = time.perf_counter()
        heads = await _create(hub.url, sessions)
        timing["create_seconds"] = time.perf_counter() - start
        await snapshot("created")
        start = time.perf_counter()
        wake_times, wake_problems = await _wake_all(hub.url, heads)
        timing["wake_seconds"] = time.perf_counter() - start
        problems += wake_problems[:5]
        waited, states = await _until_suspended(hub.url, sessions)
        timing["wait_for_suspended_seconds"] = waited
        if states != {"suspended": sessions}:
            problems.append(f"not every session was suspended after {waited:.0f} s: {states}")
        await snapshot("suspended")
        timing["wait_for_close_seconds"] = await _until_closed(hub, idle_close + TIMEOUT)
        await snapshot("closed")
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    wake_times.sort()
    if wake_times:
        timing["wakes_per_second"] = sessions / timing["wake_seconds"]
        timing["wake_to_turn_completed_s"] = {
            "median": statistics.median(wake_times), "p90": percentile(wake_times, 90),
            "max": wake_times[-1],
        }
    return timing


def run(workdir: Path, *, quick: bool) -> WorkloadResult:
    """Run W5 on a fresh data dir under ``workdir``."""
    sessions = QUICK_SESSIONS if quick else SESSIONS
    connections = QUICK_CONNECTIONS if quick else CONNECTIONS
    idle_close = QUICK_SESSION_IDLE_CLOSE if quick else SESSION_IDLE_CLOSE
    want_fds = connections + 8 * sessions + 1024  # sockets, session databases, spare
    config = write_config(workdir / "w5.yaml", session_idle_close=idle_close,
                          agents={"echo": echo_agent(idle_timeout=IDLE_TIMEOUT)})
    problems: list[str] = []
    steps: dict[str, dict[str, Any]] = {}
    before = _raise_open_files(want_fds)
    try:
        with HubUnderTest(workdir / "w5", config) as hub:
            hub.start()
            hub_fds = _hub_open_files(hub, want_fds)
            if hub_fds < want_fds:
                problems.append(f"the hub may open only {hub_fds} files; {want_fds} wanted")
            busy, wall = common.machine_busy_seconds(), time.perf_counter()
            timing = common.run(_measure(hub, sessions, connections, idle_close, steps,
                                         problems))
            wall = time.perf_counter() - wall
            timing["cpus_busy"] = {"machine": (common.machine_busy_seconds() - busy) / wall,
                                   "hub": hub.cpu_seconds() / wall}
            timing["agent_cpu_seconds_each"] = hub.children_cpu_seconds() / sessions
            code = hub.stop()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)
    if code != 0:
        problems.append(f"the hub exited with {code} on SIGTERM")
    woken, closed = steps["suspended"], steps["closed"]
    for name in ("connected", "created", "suspended", "closed"):
        if steps[name]["connections"] != connections:
            problems.append(f"{name}: the hub counted {steps[name]['connections']} connections,"
                            f" expected {connections}")
    if closed["sessions_open"]:
        problems.append(f"{closed['sessions_open']} sessions were still open"
                        f" {timing['wait_for_close_seconds']:.0f} s after the last wake")

    def kb_each(later: str, earlier: str, count: float) -> float:
        change = float(steps[later]["rss_mb"] - steps[earlier]["rss_mb"])
        return change * MB / 1000 / count if count else 0.0

    figures = [
        at_most("RSS, idle", closed["rss_mb"], "MB", TARGET_RSS_MB),
        at_most("agent processes", max(woken["child_processes"], closed["child_processes"]), "",
                TARGET_AGENTS),
        # Sessions stay open session_idle_close (60 s) after their last use: the target is
        # for the idle hub above; this is the busy moment before it, kept as a figure.
        Figure("RSS after the wakes", woken["rss_mb"], "MB"),
        Figure("sessions open then", woken["sessions_open"], ""),
        Figure("peak RSS", closed["peak_rss_mb"], "MB"),
        Figure("RSS per connection", kb_each("connected", "started", connections), "kB"),
        Figure("RSS per open session", kb_each("created", "connected", sessions), "kB"),
    ]
    details: dict[str, Any] = {
        "sessions": sessions, "connections": connections,
        "wake_concurrency": WAKE_CONCURRENCY, "idle_timeout_s": IDLE_TIMEOUT,
        "session_idle_close_s": idle_close,
        "open_files_limit": {"hub": hub_fds, "wanted": want_fds},
        "steps": steps,
        "rss_freed_per_session_closed_kb": kb_each("suspended", "closed",
                                                   woken["sessions_open"]),
        **timing,
    }
    return WorkloadResult("W5", f"idle: {sessions:,} sessions, {connections:,} connections",
                          figures, details, problems)
