"""``python -m bench``: run the workloads, print a table, write ``bench/results/<date>.json``."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench import (
    common,
    w1_latency,
    w2_throughput,
    w3_catchup,
    w4_wake,
    w5_idle,
    w6_start,
    w7_tui,
    w8_http_publish,
    w9_sse_fanout,
    w9m_sse_idle,
    w10_cluster,
    w11_failover,
)
from bench.common import WorkloadResult

RESULTS = Path(__file__).parent / "results"

Workload = Callable[[Path, argparse.Namespace], WorkloadResult]
WORKLOADS: dict[str, tuple[str, Workload]] = {
    "W1": ("latency", lambda d, a: w1_latency.run(d, quick=a.quick, peers=a.peers)),
    "W2": ("throughput", lambda d, a: w2_throughput.run(d, quick=a.quick, peers=a.peers)),
    "W3": ("catch-up", lambda d, a: w3_catchup.run(d, quick=a.quick)),
    "W4": ("wake", lambda d, a: w4_wake.run(d, quick=a.quick)),
    "W5": ("idle", lambda d, a: w5_idle.run(d, quick=a.quick)),
    "W6": ("start", lambda d, a: w6_start.run(d, quick=a.quick)),
    "W7": ("TUI", lambda d, a: w7_tui.run(d, quick=a.quick)),
    "W8": ("HTTP publish", lambda d, a: w8_http_publish.run(d, quick=a.quick)),
    "W9": ("SSE fan-out", lambda d, a: w9_sse_fanout.run(d, quick=a.quick)),
    "W9m": ("SSE idle", lambda d, a: w9m_sse_idle.run(d, quick=a.quick)),
    "W10": ("cluster", lambda d, a: w10_cluster.run(d, quick=a.quick)),
    "W11": ("failover", lambda d, a: w11_failover.run(d, quick=a.quick)),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="shorter runs (W1 3 s, W2 2 windows of 1 s, W3 20,000 events, 5 W4"
                             " wakes, W5 200 sessions and 400 connections, fewer W6 starts,"
                             " W8 2 s phases, W9 3 s, W9m 200 streams, W10 1 s steps, 3 W11"
                             " rounds)")
    parser.add_argument("--only", type=_workload_list, default=list(WORKLOADS),
                        metavar="W1,W3,...", help="run only these workloads")
    parser.add_argument("--data-root", type=Path, default=None,
                        help="where the hubs' temp data dirs go (default: the system temp"
                             " dir); put it on the disk you want to measure")
    parser.add_argument("--keep", action="store_true", help="keep the data dirs afterwards")
    parser.add_argument("--peers", type=_peer_list, default=("axtui", "floor", "redis"),
                        metavar="floor,redis", help="the peers W1 and W2 measure beside the hub"
                        " (default floor,redis; 'none' for the hub alone)")
    parser.add_argument("--no-save", action="store_true", help="do not write a results file")
    return parser.parse_args(argv)


def _workload_list(text: str) -> list[str]:
    by_upper = {k.upper(): k for k in WORKLOADS}  # W9m as w9m, W9M or W9m
    keys = [by_upper.get(k.strip().upper(), k.strip()) for k in text.split(",") if k.strip()]
    unknown = [k for k in keys if k not in WORKLOADS]
    if unknown or not keys:
        raise argparse.ArgumentTypeError(
            f"unknown workload {', '.join(unknown) or text!r}; choose from {', '.join(WORKLOADS)}"
        )
    return keys


def _peer_list(text: str) -> tuple[str, ...]:
    keys = [k.strip().lower() for k in text.split(",") if k.strip() and k.strip() != "none"]
    unknown = [k for k in keys if k not in ("floor", "redis")]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown peer {', '.join(unknown)}; choose from"
                                         " floor, redis (or none)")
    return ("axtui", *keys)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen workloads; 1 if any failed a correctness check or crashed."""
    args = parse_args(argv)
    console = Console()
    root = args.data_root or Path(tempfile.gettempdir())
    root.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="axtui-bench-", dir=root))
    machine = common.machine_info(root)  # before the run: its load average is the others'
    results: dict[str, WorkloadResult] = {}
    try:
        for key in args.only:
            name, workload = WORKLOADS[key]
            data = workdir / key
            data.mkdir()
            started = time.perf_counter()
            with console.status(f"{key} {name}…"):
                try:
                    result = workload(data, args)
                except Exception as exc:
                    traceback.print_exc()
                    result = WorkloadResult(key, name, [], problems=[f"crashed: {exc!r}"])
            result.details["bench_seconds"] = round(time.perf_counter() - started, 1)
            result.ran_at = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
            results[key] = result
            console.print(f"{key} {name}: done in {result.details['bench_seconds']} s")
    finally:
        if args.keep:
            console.print(f"data dirs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    console.print(table(results, args.quick))
    console.print(f"[dim]{machine['cpu_count']} CPUs ({machine['cpu_model']}), Python"
                  f" {machine['python']}, SQLite {machine['sqlite']}, data on"
                  f" {machine['data_root_fs']}[/dim]")
    for result in results.values():
        for problem in result.problems:
            console.print(f"[red]{result.key}: {problem}[/red]")
    if not args.no_save:
        path = save(results, machine, args.quick)
        console.print(f"results written to {path}")
    return 1 if any(r.problems for r in results.values()) else 0


def table(results: dict[str, WorkloadResult], quick: bool) -> Table:
    """The figures as a rich table, with the issue's targets."""
    out = Table(title="axtui hub benchmarks" + (" (quick)" if quick else ""))
    for column in ("workload", "figure", "value", "target", ""):
        out.add_column(column, justify="right" if column in ("value", "target") else "left",
                       no_wrap=True)
    for result in results.values():
        for n, figure in enumerate(result.figures):
            mark = {True: "[green]met[/green]", False: "[red]missed[/red]", None: ""}[figure.met]
            value = f"{figure.value:,.0f}" if figure.value >= 1000 else f"{figure.value:.3g}"
            out.add_row(f"{result.key} {WORKLOADS[result.key][0]}" if n == 0 else "", figure.name,
                        f"{value} {figure.unit}", figure.target or "", mark)
        if result.problems:
            out.add_row(f"{result.key} {WORKLOADS[result.key][0]}", "[red]FAILED[/red]", "",
                        "", "")
        out.add_section()
    return out


def save(results: dict[str, WorkloadResult], machine: dict[str, Any], quick: bool) -> Path:
    """Merge ``results`` into today's results file (a workload run again replaces its entry)."""
    RESULTS.mkdir(exist_ok=True)
    today = datetime.date.today().isoformat()
    path = RESULTS / f"{today}{'-quick' if quick else ''}.json"
    doc: dict[str, Any] = {"date": today, "quick": quick, "workloads": {}}
    if path.exists():
        doc = json.loads(path.read_text(encoding="utf-8"))
    doc["machine"] = machine
    doc["hub"] = {"durability": "full", "commit": _commit()}
    for key, result in results.items():
        # The file's machine and commit are the last run's: each entry keeps its own too.
        doc["workloads"][key] = {**result.to_json(), "commit": doc["hub"]["commit"],
                                 "load_average_before_run": machine["load_average"]}
    doc["workloads"] = dict(sorted(doc["workloads"].items()))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def _commit() -> str | None:
    """The repository's HEAD commit (read-only), if this is a git checkout, marked
    ``+uncommitted`` when the hub, client or bench code differs from it."""
    here = Path(__file__).resolve().parent.parent  # the repository, for the pathspecs below
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True, cwd=here).stdout.strip()
        changes = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no",
                                  "server", "axtui", "bench"], capture_output=True, text=True,
                                 check=True, cwd=here).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{head}+uncommitted" if changes else head


if __name__ == "__main__":
    sys.exit(main())
