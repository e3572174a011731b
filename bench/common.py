"""What every workload shares: results, percentiles, the event loop, the machine's facts."""

from __future__ import annotations

import asyncio
import math
import os
import platform
import sqlite3
import subprocess
import sys
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import orjson

from axtui.client import HubClient

T = TypeVar("T")

EVENT_TYPE = "bench.tick"  # the event type every workload publishes
EVENT_BYTES = 300  # about this size for each event as stored and sent


@dataclass
class Figure:
    """One reported number, and the issue's target for it if there is one."""

    name: str
    value: float
    unit: str
    target: str | None = None  # e.g. "<= 10"
    met: bool | None = None

    def to_json(self) -> dict[str, Any]:
        """The figure as it goes into the results file."""
        out: dict[str, Any] = {"value": rounded(self.value), "unit": self.unit}
        if self.target is not None:
            out |= {"target": self.target, "met": self.met}
        return out


@dataclass
class WorkloadResult:
    """The outcome of one workload: headline figures and everything else worth keeping."""

    key: str
    title: str
    figures: list[Figure]
    details: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # failed correctness checks
    ran_at: str = ""  # when it finished, ISO 8601

    def to_json(self) -> dict[str, Any]:
        """The workload as it goes into the results file."""
        return {
            "ran_at": self.ran_at,
            "title": self.title,
            "figures": {f.name: f.to_json() for f in self.figures},
            "details": rounded(self.details),
            "problems": self.problems,
        }


def rounded(value: Any) -> Any:
    """``value`` with every float rounded to 4 decimals, for a readable results file."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


def at_most(name: str, value: float, unit: str, limit: float) -> Figure:
    """A figure whose target is ``value <= limit``."""
    return Figure(name, value, unit, f"<= {limit:g}", value <= limit)


def at_least(name: str, value: float, unit: str, floor: float) -> Figure:
    """A figure whose target is ``value >= floor``."""
    return Figure(name, value, unit, f">= {floor:,g}", value >= floor)


def percentile(ordered: Sequence[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile of an already sorted, non-empty sequence."""
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def tick(i: int, pad: str) -> dict[str, Any]:
    """The data of a benchmark event: its index, the send time, and filler."""
    return {"i": i, "sentNs": time.perf_counter_ns(), "pad": pad}


async def padding(client: HubClient, session_id: str) -> tuple[str, int]:
    """The filler that makes a published event about ``EVENT_BYTES`` as stored and sent.

    Publishes one unpadded event to learn the envelope's size (so this event is in the
    session's log too); returns the filler and the padded event's size in bytes.
    """
    ack = await client.publish(session_id, EVENT_TYPE, tick(0, ""))
    page = await client.history(session_id, afterSeq=ack["seq"] - 1, limit=1)
    envelope = len(orjson.dumps(page["events"][0]))
    pad = "x" * max(0, EVENT_BYTES - envelope)
    return pad, envelope + len(pad)


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop when installed (the hub uses it too), else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def machine_busy_seconds() -> float:
    """CPU seconds all CPUs have spent busy since boot (to see what else ran meanwhile)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return math.nan
    idle = fields[3] + fields[4]  # idle and iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")  # guest time is in user


def machine_info(data_root: Path) -> dict[str, Any]:
    """The facts that make figures comparable: CPU, Python, SQLite, libraries, disk."""
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "data_root": str(data_root),
        "data_root_fs": _filesystem(data_root),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    for package in ("websockets", "aiosqlite", "orjson", "uvloop"):
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            info[package] = None
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _filesystem(path: Path) -> str:
    try:
        out = subprocess.run(["df", "--output=fstype", str(path)], capture_output=True,
                             text=True, check=True).stdout.split()
        return out[-1]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return "unknown"
