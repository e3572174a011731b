"""Cluster mode for tests: a real ``redis-server`` and ``axtui serve`` replicas on loopback.

``redis-server`` is Debian's, installed by the setup when missing (bench/redis_peer.py),
run with ``--appendonly yes --appendfsync always`` on a free port. Each replica is its own
process with its own data dir and the same config: the test tokens, ``cluster:`` pointing
at that Redis, a short lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from websockets.asyncio.client import connect

from axtui.client import HubClient
from bench.redis_peer import PeerUnavailable, RedisServer
from tests.conftest import TOKENS, Raw
from tests.server.hubproc import HubProcess

SECRET = "cluster-test-secret"
ADMIN = "admin-token"
LEASE = "1s"
HTTP_LISTENING = re.compile(r"axtui http listening on (http://\S+)")


def http_url(replica: HubProcess) -> str:
    """The replica's HTTP API (``http://host:port``), from its log line."""
    match = HTTP_LISTENING.search(replica.stderr)
    assert match is not None, "the replica has not said where its HTTP API listens"
    return match[1]


@contextlib.asynccontextmanager
async def clients(replicas: list[HubProcess], token: str = ADMIN,
                  kind: str = "cli") -> AsyncIterator[list[HubClient]]:
    """One connected client per replica (``reconnect=False``), authenticated as ``token``."""
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(
            HubClient(r.url or "", token=token, kind=kind, reconnect=False)) for r in replicas]


@contextlib.asynccontextmanager
async def raw_client(replica: HubProcess, token: str = ADMIN) -> AsyncIterator[Raw]:
    """A bare, initialized websocket connection to ``replica`` (frames as sent: a duplicate
    event shows, where HubClient's subscription would drop it)."""
    async with connect(replica.url or "", max_size=None, compression=None) as ws:
        raw = Raw(ws)
        await raw.initialize(token=token)
        yield raw


async def eventually(check: Callable[[], object], timeout: float, what: str) -> None:
    """Poll ``check()`` (a coroutine function's result is awaited) until it is true; fails
    with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.02)


async def metrics_of(replica: HubProcess) -> dict[str, float]:
    """The replica's ``/metrics`` (admin token) as name -> value (unlabelled ones)."""
    def get() -> str:
        request = urllib.request.Request(replica.http_base + "/metrics",
                                         headers={"Authorization": f"Bearer {ADMIN}"})
        with urllib.request.urlopen(request, timeout=5) as response:
            return str(response.read().decode())
    lines = (await asyncio.to_thread(get)).splitlines()
    return {name: float(value) for name, _, value in
            (line.partition(" ") for line in lines if line and not line.startswith("#"))
            if "{" not in name}


def write_config(path: Path, redis_port: int, node: str,
                 agents: Mapping[str, object] | None = None, **cluster: object) -> Path:
    """A replica's config: the test tokens, and ``cluster:`` on the Redis at ``redis_port``
    (and ``agents:`` as given)."""
    config: dict[str, object] = {
        "auth": {"tokens": [{"name": name, "token": token, "role": role.label}
                            for token, (name, role) in TOKENS.items()]},
        "cluster": {"redis": f"redis://127.0.0.1:{redis_port}/0", "secret": SECRET,
                    "node_id": node, "lease": LEASE, **cluster},
    }
    if agents is not None:
        config["agents"] = dict(agents)
    path.write_text(yaml.safe_dump(config))
    return path


class Cluster:
    """Replicas of one cluster; :meth:`start` adds one, all stop at the end."""

    def __init__(self, tmp: Path, redis: RedisServer) -> None:
        self.tmp = tmp
        self.redis = redis
        self.replicas: list[HubProcess] = []
        self._names = itertools.count(1)

    def start(self, agents: Callable[[str], Mapping[str, object]] | None = None,
              **cluster: object) -> HubProcess:
        """One more replica, started and ready (``/healthz`` answers); ``agents`` makes its
        ``agents:`` section from its node id (each replica its own agent state dirs)."""
        node = f"node{next(self._names)}"
        config = write_config(self.tmp / f"{node}.yaml", self.redis.port, node,
                              None if agents is None else agents(node), **cluster)
        replica = HubProcess(self.tmp / node, config=config)
        self.replicas.append(replica)
        return replica.start()

    def stop(self) -> None:
        """Stop every replica still running."""
        for replica in self.replicas:
            replica.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh ``redis-server`` (AOF, fsync always) for one test."""
    server = RedisServer(tmp_path / "redis")
    try:
        server.start()
    except PeerUnavailable as exc:
        pytest.skip(f"cluster tests need redis-server: {exc}")
    yield server
    server.stop()


@pytest.fixture
def cluster(tmp_path: Path, redis_server: RedisServer) -> Iterator[Cluster]:
    """Replicas on ``redis_server``: ``cluster.start()`` adds one."""
    made = Cluster(tmp_path, redis_server)
    yield made
    made.stop()


@pytest.fixture
def three(cluster: Cluster) -> list[HubProcess]:
    """Three replicas of ``cluster`` (node1, node2, node3), started side by side."""
    with ThreadPoolExecutor(3) as pool:
        started = list(pool.map(lambda _: cluster.start(), range(3)))
    return sorted(started, key=lambda replica: replica.data_dir.name)


def log_tails(replicas: list[HubProcess], chars: int = 2000) -> str:
    """The end of each replica's log, for a failure message."""
    return "\n".join(f"--- {r.data_dir.name}:\n{r.stderr[-chars:]}" for r in replicas)
