"""W4 wake: from a ``user.message`` to the agent's first event, agent suspended or frozen.

One hub, three echo agents that differ only in their timers: ``echo`` (``idle_timeout``
0.2 s: the process is stopped soon after each turn), ``echo-frozen`` (``freeze_after``
0.05 s, ``idle_timeout`` 60 s: the process is kept but paused with SIGSTOP) and
``echo-warm`` (``idle_timeout`` 60 s, no freezing: the process waits, running). Each has
its own session, its own subscribing ``HubClient`` (subscribed at the head beforehand,
so the session stays open) and one publishing ``HubClient`` for all. The agents run in
their bwrap sandbox (the default), and a fourth, ``echo-unsandboxed`` (``sandbox: none``,
otherwise as ``echo``), measures the wake from suspended without it: the difference is
what the sandbox costs a wake (the frozen and warm wakes start no process).

A wake is timed from just before ``session/publish`` of a ``user.message`` is sent until
the subscriber is handed the first event whose ``source.kind`` is ``agent`` (the first
``agent.message.chunk`` of the echo). Every wake starts from the state it measures: from
suspended, the bench waits for ``agent.status suspended`` first; from frozen, until the
agent's process (its pid is in ``agent.status ready``) shows state ``T`` in
``/proc/<pid>/stat``; warm, 50 ms after the previous turn ended. The arrival of every
event in between is kept, so each wake splits into phases: the publish's own commit, the
hub starting the agent, the agent's cold start (``agent.status starting`` to ``ready``:
spawn, interpreter, ``initialize`` and ``session/resume``), ``turn.started``, and the
prompt to the first chunk.

Then the wakes from suspended run once more on a fresh session, with 1,000 other sessions
(``--quick``: 200) created just before and so still open: each open session holds a
SQLite connection and its thread in the hub, which makes the hub a bigger process to fork
when it starts an agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from axtui.client import HubClient, Subscription
from bench import common
from bench.common import Figure, WorkloadResult, at_most, percentile
from bench.hub import HubUnderTest, echo_agent, process_state, status_kib, write_config
from server import sandbox

WAKES, QUICK_WAKES = 20, 5
IDLE_TIMEOUT = 0.2  # seconds: the suspending agent's processes stop this long after a turn
FREEZE_AFTER = 0.05  # seconds: the freezing agent's process is paused this long after
LONG_IDLE = 60.0  # seconds: the frozen and warm agents are not suspended during the run
WARM_PAUSE = 0.05  # seconds between a turn's end and the next warm wake
TARGET_SUSPENDED_MS, TARGET_FROZEN_MS = 150.0, 10.0
TARGET_SANDBOX_MS = 20.0  # what the sandbox may add to a wake from suspended (p50)
TIMEOUT = 30.0  # seconds for any one thing the bench waits for
OTHER_SESSIONS, QUICK_OTHER_SESSIONS = 1000, 200  # open during the last series
CREATE_WINDOW = 50  # session/create requests in flight while opening them
AGENTS: dict[str, tuple[str, dict[str, object]]] = {
    "suspended": ("echo", {"idle_timeout": IDLE_TIMEOUT}),
    "unsandboxed": ("echo-unsandboxed", {"idle_timeout": IDLE_TIMEOUT, "sandbox": "none"}),
    "frozen": ("echo-frozen", {"idle_timeout": LONG_IDLE, "freeze_after": FREEZE_AFTER}),
    "warm": ("echo-warm", {"idle_timeout": LONG_IDLE}),
}
SUSPENDING = ("suspended", "unsandboxed")  # the kinds whose process stops between wakes

Event = dict[str, Any]


class Watcher:
    """Receives a subscription's events in a task, each with the time it was handed over."""

    def __init__(self, sub: Subscription) -> None:
        self.sub = sub
        self.arrivals: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()
        self._task = asyncio.create_task(self._receive())

    async def _receive(self) -> None:
        while True:
            batch = await self.sub.next_batch()
            now = time.perf_counter_ns()
            for event in batch:
                self.arrivals.put_nowait((now, event))

    async def until(self, done: Callable[[Event], bool]) -> list[tuple[int, Event]]:
        """The events received up to and including the first for which ``done`` is true."""
        seen = []
        async with asyncio.timeout(TIMEOUT):
            while True:
                arrival = await self.arrivals.get()
                seen.append(arrival)
                if done(arrival[1]):
                    return seen

    async def close(self) -> None:
        """Stop receiving."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def _status(state: str) -> Callable[[Event], bool]:
    return lambda e: e["type"] == "agent.status" and e["data"].get("state") == state


@dataclass
class Wake:
    """One wake: the times (ms after the publish was sent) at which events arrived."""

    total_ms: float  # to the first agent event
    ack_ms: float
    phases_ms: dict[str, float]
    pid: int | None  # from agent.status ready, if the wake started the agent
    resume_mode: str | None
    statuses: list[str]  # the agent.status states seen during the wake


@dataclass
class Series:
    """The wakes of one kind, and what went wrong."""

    wakes: list[Wake] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def totals(self) -> list[float]:
        """Wake times in ms, sorted."""
        return sorted(w.total_ms for w in self.wakes)

    def summary(self) -> dict[str, Any]:
        """Median, p90 and max of the wake times, and the median of each phase."""
        totals = self.totals()
        phases = {name: statistics.median(w.phases_ms[name] for w in self.wakes)
                  for name in self.wakes[0].phases_ms} if self.wakes else {}
        return {
            "wakes": len(totals),
            "median_ms": statistics.median(totals) if totals else None,
            "p90_ms": percentile(totals, 90) if totals else None,
            "max_ms": totals[-1] if totals else None,
            "ack_median_ms": statistics.median(w.ack_ms for w in self.wakes) if totals else None,
            "phase_medians_ms": phases,
            "all_ms": [w.total_ms for w in self.wakes],
        }


async def _wake(publisher: HubClient, session_id: str, watcher: Watcher, n: int) -> Wake:
    """Publish a ``user.message`` and follow the turn to its end."""
    sent = time.perf_counter_ns()
    await publisher.publish(session_id, "user.message", {"text": f"wake {n}"})
    acked = time.perf_counter_ns()
    seen = await watcher.until(lambda e: e["type"] in ("turn.completed", "turn.failed"))
    if seen[-1][1]["type"] != "turn.completed":
        raise RuntimeError(f"wake {n}: the turn failed: {seen[-1][1]['data']}")

    def ms(ns: int) -> float:
        return (ns - sent) / 1e6

    marks: dict[str, float] = {}
    pid = mode = None
    statuses = []
    for at, event in seen:
        kind, data = event["type"], event["data"]
        if kind == "user.message":
            marks.setdefault("committed", ms(at))
        elif kind == "agent.status":
            statuses.append(data.get("state"))
            marks.setdefault(data.get("state"), ms(at))
            if data.get("state") == "ready":
                pid, mode = data.get("pid"), data.get("resumeMode")
        elif kind == "turn.started":
            marks.setdefault("turn.started", ms(at))
        elif event["source"]["kind"] == "agent":
            marks.setdefault("agent", ms(at))
    if "agent" not in marks:
        raise RuntimeError(f"wake {n}: the turn ended without an event from the agent")
    # Each phase: from the previous mark that happened to the next.
    order = ["committed", "starting", "ready", "turn.started", "agent"]
    names = {"committed": "publish to own event", "starting": "to agent.status starting",
             "ready": "cold start (starting to ready)", "turn.started": "to turn.started",
             "agent": "turn.started to first agent event"}
    phases, previous = {}, 0.0
    for mark in order:
        if mark in marks:
            phases[names[mark]] = marks[mark] - previous
            previous = marks[mark]
    return Wake(marks["agent"], (acked - sent) / 1e6, phases, pid, mode, statuses)


async def _until_stopped(pid: int) -> bool:
    """Poll ``/proc/<pid>/stat`` until the process is stopped (``T``); False if it is gone."""
    async with asyncio.timeout(TIMEOUT):
        while (state := process_state(pid)) != "T":
            if state is None or state == "Z":
                return False
            await asyncio.sleep(0.001)
    return True


async def _series(kind: str, publisher: HubClient, url: str, wakes: int,
                  label: str | None = None) -> tuple[Series, Wake]:
    """``wakes`` wakes of one kind after a first (cold) one, which is returned apart."""
    agent, label = AGENTS[kind][0], label or kind
    out = Series()
    session = await publisher.create_session(agent=agent, title=f"W4 {label}")
    sid = session["sessionId"]
    async with HubClient(url, kind="bench", reconnect=False) as subscriber:
        sub = subscriber.subscribe(sid, session["headSeq"])
        async with asyncio.timeout(TIMEOUT):
            await sub.ready.wait()
        watcher = Watcher(sub)
        try:
            first = await _wake(publisher, sid, watcher, 0)
            pid = first.pid
            for n in range(1, wakes + 1):
                if kind in SUSPENDING:
                    await watcher.until(_status("suspended"))
                elif kind == "frozen":
                    assert pid is not None
                    if not await _until_stopped(pid):
                        out.problems.append(f"{label}: the agent's process {pid} is gone")
                        break
                else:
                    await asyncio.sleep(WARM_PAUSE)
                wake = await _wake(publisher, sid, watcher, n)
                out.wakes.append(wake)
                if kind in SUSPENDING and wake.statuses != ["starting", "ready"]:
                    out.problems.append(f"{label} wake {n}: agent.status {wake.statuses},"
                                        " expected starting then ready")
                elif kind not in SUSPENDING and wake.statuses:
                    out.problems.append(f"{label} wake {n}: agent.status {wake.statuses}: the"
                                        " agent's process was not kept")
        finally:
            await watcher.close()
    return out, first


def _agent_floor(runs: int = 5, *, sandboxed: bool = False) -> float:
    """The floor under a cold start: launching the echo agent (through ``setpriv`` where the
    hub uses it, in a bwrap sandbox if ``sandboxed``) with stdin at EOF, so it exits at
    once; median seconds of ``runs``."""
    argv = [sys.executable, "-m", "server.agents.echo"]
    times = []
    with tempfile.TemporaryDirectory() as workspace:
        if sandboxed:
            argv = sandbox.sandbox_argv(argv, workspace=Path(workspace), hidden=[],
                                        network=True)
        if setpriv := shutil.which("setpriv"):
            argv = [setpriv, "--pdeathsig", "KILL", "--", *argv]
        for _ in range(runs):
            start = time.perf_counter()
            subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           check=True)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


async def _measure(hub: HubUnderTest, wakes: int, others: int,
                   loaded: dict[str, Any]) -> dict[str, tuple[Series, Wake]]:
    """The three series on a hub with nothing else open, then the wakes from suspended once
    more with ``others`` more sessions open (``loaded`` gets the hub's size then)."""
    async with HubClient(hub.url, kind="bench", reconnect=False) as publisher:
        out = {kind: await _series(kind, publisher, hub.url, wakes) for kind in AGENTS}
        window = asyncio.Semaphore(CREATE_WINDOW)

        async def create(i: int) -> None:
            async with window:
                await publisher.create_session(title=f"W4 other {i}")

        await asyncio.gather(*(create(i) for i in range(others)))
        status = await asyncio.to_thread(hub.status)
        loaded |= {"other_sessions": others, "hub_rss_kib": status_kib(status["VmRSS"]),
                   "hub_threads": int(status["Threads"]),
                   "sessions_open": (await asyncio.to_thread(hub.metrics))["axtui_sessions_open"]}
        out["loaded"] = await _series("suspended", publisher, hub.url, wakes, "loaded")
    return out


def run(workdir: Path, *, quick: bool) -> WorkloadResult:
    """Run W4 on a fresh data dir under ``workdir``."""
    state = workdir / "echo-state"  # so that a restarted echo resumes its conversation
    confined: dict[str, object] = {"sandbox": {"writable": [str(state)]}}  # state outlives
    agents = {name: echo_agent(**(confined | keys), env={"AXTUI_ECHO_STATE": str(state)})
              for name, keys in AGENTS.values()}
    # As root the hub runs agents as nobody, who may not read this venv or the temp data
    # dirs: agents run as the bench's own user, as in the tests.
    config = write_config(workdir / "w4.yaml", agents=agents, agent_user=getpass.getuser())
    wakes = QUICK_WAKES if quick else WAKES
    others = QUICK_OTHER_SESSIONS if quick else OTHER_SESSIONS
    loaded: dict[str, Any] = {}
    with HubUnderTest(workdir / "w4", config) as hub:
        hub.start()
        busy, wall, hub_cpu = common.machine_busy_seconds(), time.perf_counter(), hub.cpu_seconds()
        series = common.run(_measure(hub, wakes, others, loaded))
        wall = time.perf_counter() - wall
        machine_cpus = (common.machine_busy_seconds() - busy) / wall
        hub_cpus = (hub.cpu_seconds() - hub_cpu) / wall
        code = hub.stop()
    problems = [p for s, _ in series.values() for p in s.problems]
    if code != 0:
        problems.append(f"the hub exited with {code} on SIGTERM")
    suspended, unsandboxed, frozen, warm, loaded_ = (
        series[k][0] for k in ("suspended", "unsandboxed", "frozen", "warm", "loaded"))
    cold_starts = sorted(w.phases_ms["cold start (starting to ready)"] for w in suspended.wakes)
    if not (suspended.wakes and unsandboxed.wakes and frozen.wakes and warm.wakes
            and loaded_.wakes):
        problems.append("a series has no wakes")
        return WorkloadResult("W4", "agent wake", [], {}, problems)
    modes = {w.resume_mode for w in suspended.wakes + unsandboxed.wakes + loaded_.wakes}
    if modes != {"resume"}:
        problems.append(f"suspended wakes restored the conversation by {sorted(map(str, modes))},"
                        " expected resume")
    figures = [
        at_most("suspended p50", statistics.median(suspended.totals()), "ms",
                TARGET_SUSPENDED_MS),
        Figure("suspended p90", percentile(suspended.totals(), 90), "ms"),
        Figure("suspended max", suspended.totals()[-1], "ms"),
        Figure("agent cold start p50", statistics.median(cold_starts), "ms"),
        Figure("suspended p50, no sandbox", statistics.median(unsandboxed.totals()), "ms"),
        at_most("sandbox cost, suspended p50", statistics.median(suspended.totals())
                - statistics.median(unsandboxed.totals()), "ms", TARGET_SANDBOX_MS),
        at_most("frozen p50", statistics.median(frozen.totals()), "ms", TARGET_FROZEN_MS),
        Figure("frozen p90", percentile(frozen.totals(), 90), "ms"),
        Figure("frozen max", frozen.totals()[-1], "ms"),
        Figure("warm p50", statistics.median(warm.totals()), "ms"),
        Figure(f"suspended p50, {others:,} open", statistics.median(loaded_.totals()), "ms"),
        Figure(f"suspended p90, {others:,} open", percentile(loaded_.totals(), 90), "ms"),
    ]
    details: dict[str, Any] = {
        "wakes_per_series": wakes,
        "idle_timeout_s": IDLE_TIMEOUT, "freeze_after_s": FREEZE_AFTER,
        "suspended": suspended.summary(), "unsandboxed": unsandboxed.summary(),
        "sandbox": sandbox.bwrap_problem() or "bwrap",
        "frozen": frozen.summary(), "warm": warm.summary(),
        "loaded": {**loaded, **loaded_.summary()},
        "first_wake_ms": {kind: first.total_ms for kind, (_, first) in series.items()},
        "first_wake_phases_ms": series["suspended"][1].phases_ms,
        "echo_process_floor_s": _agent_floor(),
        "echo_process_floor_sandboxed_s": (_agent_floor(sandboxed=True)
                                           if sandbox.bwrap_works() else None),
        "cpus_busy": {"machine": machine_cpus, "hub": hub_cpus},  # CPUs' worth, on average
    }
    return WorkloadResult("W4", "agent wake", figures, details, problems)
