"""Cluster mode for tests: a real ``redis-server`` and ``axtui serve`` replicas on loopback.

``redis-server`` is Debian's, installed by the setup when missing (bench/redis_peer.py),
run with ``--appendonly yes --appendfsync always`` on a free port. Each replica is its own
process with its own data dir and the same config: the test tokens, ``cluster:`` pointing
at that Redis, a short lease.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bench.redis_peer import PeerUnavailable, RedisServer
from tests.conftest import TOKENS
from tests.server.hubproc import HubProcess

SECRET = "cluster-test-secret"
ADMIN = "admin-token"
LEASE = "1s"


def write_config(path: Path, redis_port: int, node: str, **cluster: object) -> Path:
    """A replica's config: the test tokens, and ``cluster:`` on the Redis at ``redis_port``."""
    config = {
        "auth": {"tokens": [{"name": name, "token": token, "role": role.label}
                            for token, (name, role) in TOKENS.items()]},
        "cluster": {"redis": f"redis://127.0.0.1:{redis_port}/0", "secret": SECRET,
                    "node_id": node, "lease": LEASE, **cluster},
    }
    path.write_text(yaml.safe_dump(config))
    return path


class Cluster:
    """Replicas of one cluster; :meth:`start` adds one, all stop at the end."""

    def __init__(self, tmp: Path, redis: RedisServer) -> None:
        self.tmp = tmp
        self.redis = redis
        self.replicas: list[HubProcess] = []
        self._names = itertools.count(1)

    def start(self, **cluster: object) -> HubProcess:
        """One more replica, started and ready (``/healthz`` answers)."""
        node = f"node{next(self._names)}"
        config = write_config(self.tmp / f"{node}.yaml", self.redis.port, node, **cluster)
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
