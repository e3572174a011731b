"""Redis memory of cluster mode, before and after sessions are snapshotted and trimmed.

``python -m bench.redis_memory [--sessions 1000] [--events 1000] [--bytes 300]`` runs one
cluster replica (in this process) on a fresh ``redis-server`` (AOF, ``appendfsync
always``; installed by the bench when missing), publishes ``--events`` events of about
``--bytes`` bytes of data to each of ``--sessions`` sessions, and reads Redis's
``used_memory`` three times: empty, with every event in the streams, and once every
session was closed (as an idle close does), snapshotted and its stream trimmed to
``keep_events`` (100 here). It prints one line per figure; bench/README.md has the latest.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from axtui.client import HubClient
from bench.redis_peer import RedisServer
from server.clusterconfig import ClusterConfig
from server.config import TokenConfig, load_config
from server.protocol import Role
from server.wiring import build_hub

KEEP = 100  # events a trimmed stream keeps
WINDOW = 200  # publishes in flight


async def used_memory(hub_store: object) -> int:
    """Redis's ``used_memory``, in bytes."""
    info = await hub_store.aio.info("memory")  # type: ignore[attr-defined]
    return int(info["used_memory"])


async def measure(sessions: int, events: int, size: int, root: Path) -> dict[str, float]:
    """The three readings, and the time each step took."""
    with RedisServer(root / "redis") as redis:
        redis.start()
        config = load_config(None).with_overrides(port=0, data_dir=root / "replica")
        config = replace(
            config, tokens=(TokenConfig("bench", "bench-token", Role.ADMIN),),
            hub=replace(config.hub, http_port=None, session_idle_close=3600.0,
                        max_open_sessions=max(500, sessions + 10)),
            cluster=ClusterConfig(f"redis://127.0.0.1:{redis.port}/0", "s", "bench",
                                  lease=10.0, snapshot_after=min(events, 1000),
                                  keep_events=KEEP))
        hub = build_hub(config)
        await hub.start()
        assert hub.cluster is not None
        store = hub.cluster.store
        figures: dict[str, float] = {"empty": await used_memory(store)}
        started = time.perf_counter()
        pad = "x" * size
        async with HubClient(hub.url, token="bench-token", reconnect=False) as client:
            slots = asyncio.Semaphore(WINDOW)

            async def publish(sid: str, i: int) -> None:
                async with slots:
                    await client.publish(sid, "bench.event", {"i": i, "pad": pad})

            for n in range(sessions):
                sid = f"s{n:05d}"
                await client.create_session(sessionId=sid)
                await asyncio.gather(*(publish(sid, i) for i in range(events - 1)))
        figures["write_seconds"] = time.perf_counter() - started
        figures["full"] = await used_memory(store)
        started = time.perf_counter()
        await hub.sessions.close_all()  # as idle closes would, all at once: snapshots
        figures["snapshot_seconds"] = time.perf_counter() - started
        figures["trimmed"] = await used_memory(store)
        await hub.stop()
    return figures


def main() -> None:
    """Run and print the readings."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--bytes", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="axtui-redis-memory-") as tmp:
        figures = asyncio.run(measure(args.sessions, args.events, args.bytes, Path(tmp)))
    total = args.sessions * args.events
    mb = 1_000_000
    print(f"{args.sessions} sessions x {args.events} events of ~{args.bytes} B of data")
    print(f"Redis used_memory empty:   {figures['empty'] / mb:8.1f} MB")
    print(f"  with every event:        {figures['full'] / mb:8.1f} MB"
          f"  ({(figures['full'] - figures['empty']) / total * 1000 / 1024:.0f} KiB per"
          f" 1,000 events; written in {figures['write_seconds']:.0f} s)")
    print(f"  snapshotted and trimmed: {figures['trimmed'] / mb:8.1f} MB"
          f"  (keep_events {KEEP}; {figures['snapshot_seconds']:.0f} s to close and snapshot them)")


if __name__ == "__main__":
    main()
