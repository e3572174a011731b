"""Starting what W1 and W2 measure: the hub, the floor program, and Redis."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.harness import Target
from bench.hub import HubUnderTest, write_config
from bench.redis_peer import RedisServer, redis_py_version

TARGETS = ("axtui", "floor", "redis")


@dataclass
class Running:
    """A started target: where to reach it, its server process, its delivery counter."""

    target: Target
    pid: int
    deliveries: Callable[[], float] | None  # the server's own count of deliveries
    version: str = ""


@contextlib.contextmanager
def started(name: str, workdir: Path) -> Iterator[Running]:
    """Start ``name`` (one of :data:`TARGETS`) on a fresh dir under ``workdir``; stop it
    afterwards. Raises :class:`bench.redis_peer.PeerUnavailable` if Redis cannot run."""
    workdir.mkdir(parents=True, exist_ok=True)
    if name == "redis":
        version = redis_py_version()
        with RedisServer(workdir / "redis") as server:
            server.start()
            yield Running(Target(name, "redis", f"redis://127.0.0.1:{server.port}/0"),
                          server.pid, None, f"{server.version}; redis-py {version}")
        return
    if name == "axtui":
        hub = HubUnderTest(workdir / "axtui", write_config(workdir / "axtui.yaml"))
    else:
        hub = HubUnderTest.floor(workdir / "floor")
    with hub:
        hub.start()
        yield Running(Target(name, "hub", hub.url), hub.pid,
                      lambda: hub.metrics()["axtui_deliveries_total"])
