"""Cluster mode under test (W10, W11): one ``redis-server`` and ``axtui serve`` replicas.

:class:`ClusterUnderTest` starts Debian's ``redis-server`` as the Redis Streams peer does
(:class:`bench.redis_peer.RedisServer`: a temp dir, a free port, ``--appendonly yes
--appendfsync always``) and replicas on it, each ``axtui serve --config X --port 0
--http-port 0 --data-dir D`` (:class:`bench.hub.HubUnderTest`) with its own data dir and a
config of its own: an admin token (cluster mode needs tokens), ``durability: full`` and a
``cluster:`` section on that Redis with its own ``node_id``. The clients use that token.
"""

from __future__ import annotations

import asyncio
import http.client
import itertools
import json
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from axtui.client import HubClient
from bench.harness import Publisher, Received, Target
from bench.hub import HubUnderTest
from bench.redis_peer import PeerUnavailable, RedisServer, redis_py_version, redis_server_binary

TOKEN = "bench-admin-token"  # the replicas' one token (admin)
SECRET = "bench-cluster-secret"  # cluster.secret: what the replicas authenticate with


def write_cluster_config(path: Path, redis_port: int, node: str, lease: float,
                         **hub: object) -> Path:
    """A replica's config: loopback, ``durability: full``, the bench's admin token, and
    ``cluster:`` on the Redis at ``redis_port`` as ``node`` with a ``lease`` in seconds."""
    config = {
        "hub": {"host": "127.0.0.1", "durability": "full", **hub},
        "auth": {"tokens": [{"name": "bench", "token": TOKEN, "role": "admin"}]},
        "cluster": {"redis": f"redis://127.0.0.1:{redis_port}/0", "secret": SECRET,
                    "node_id": node, "lease": f"{lease:g}s"},
    }
    path.write_text(json.dumps(config) + "\n", encoding="utf-8")  # JSON is YAML
    return path


def unavailable() -> str | None:
    """Why cluster mode cannot run here (no redis-py, no ``redis-server`` and no way to
    install it), or ``None``."""
    try:
        redis_py_version()
        redis_server_binary()
    except PeerUnavailable as exc:
        return str(exc)
    return None


class ClusterUnderTest:
    """A ``redis-server`` and the replicas started on it; a context manager that stops
    them all (replicas first, with SIGTERM)."""

    def __init__(self, workdir: Path, lease: float, **hub: object) -> None:
        self.workdir = workdir
        self.lease = lease
        self.hub = hub
        self.redis = RedisServer(workdir / "redis")
        self.replicas: list[HubUnderTest] = []
        self._names = itertools.count(1)

    def __enter__(self) -> ClusterUnderTest:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.redis.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for replica in self.replicas:
            replica.stop()
        self.redis.stop()

    @property
    def redis_url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.redis.port}/0"

    def start_replica(self) -> HubUnderTest:
        """One more replica (``node1``, ``node2``...), started and answering ``/healthz``."""
        node = f"node{next(self._names)}"
        config = write_cluster_config(self.workdir / f"{node}.yaml", self.redis.port, node,
                                      self.lease, **self.hub)
        replica = HubUnderTest(self.workdir / node, config)
        self.replicas.append(replica)
        replica.start()
        return replica

    async def redis_memory(self) -> dict[str, int]:
        """Redis's ``INFO memory`` figures the bench keeps (bytes)."""
        import redis.asyncio

        client = redis.asyncio.Redis.from_url(self.redis_url)
        try:
            info = await client.info("memory")
        finally:
            await client.aclose()
        return {k: int(info[k]) for k in ("used_memory", "used_memory_dataset")}

    def aof_bytes(self) -> int:
        """The size of Redis's append-only files on disk."""
        return sum(p.stat().st_size for p in self.redis.dir.rglob("*") if p.is_file()
                   and "aof" in p.name)


def metrics(hub: HubUnderTest, token: str | None = TOKEN) -> dict[str, float]:
    """A replica's ``/metrics`` samples by name (``/metrics`` needs the admin token)."""
    conn = http.client.HTTPConnection("127.0.0.1", hub.port, timeout=10)
    try:
        conn.request("GET", "/metrics",
                     headers={"Authorization": f"Bearer {token}"} if token else {})
        response = conn.getresponse()
        body = response.read().decode()
    finally:
        conn.close()
    if response.status != 200:
        raise RuntimeError(f"/metrics answered {response.status}")
    samples = {}
    for line in body.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, value = line.split()
            samples[name] = float(value)
    return samples


def client(url: str, token: str | None) -> HubClient:
    """A bench ``HubClient`` for ``url`` (no token: a local-mode hub's own secret)."""
    return HubClient(url, token=token, kind="bench", reconnect=False)


class TokenPublisher(Publisher):
    """:class:`bench.harness.Publisher` over the hub's protocol with ``target.token``."""

    async def __aenter__(self) -> TokenPublisher:
        self._hub = client(self.target.address, self.target.token or None)
        await self._hub.start()
        return self


async def token_receiver(target: Target, out: Received, ready: asyncio.Event) -> None:
    """A :class:`bench.harness.Subscribers` receiver: ``HubClient`` with ``target.token``
    (as the harness's own, which connects without one)."""
    async with client(target.address, target.token or None) as hub:
        sub = hub.subscribe(target.stream, int(target.after))
        await sub.ready.wait()
        ready.set()
        expected = int(target.after) + 1
        while True:
            batch = await sub.next_batch()
            now = time.perf_counter_ns()
            if batch[0]["seq"] != expected or batch[-1]["seq"] != expected + len(batch) - 1:
                out.seq_problems += 1
            expected = batch[-1]["seq"] + 1
            out.add([e["data"] for e in batch], now)


async def create_sessions(url: str, token: str | None, count: int,
                          title: str) -> list[dict[str, Any]]:
    """``count`` sessions created through the replica (or hub) at ``url``."""
    async with client(url, token) as hub:
        return [await hub.create_session(title=f"{title} {n}") for n in range(count)]
