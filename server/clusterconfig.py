"""The ``cluster:`` section (cluster.md §1): several replicas on one Redis.

Absent, the hub runs alone (single-node mode). Present, ``redis`` and ``secret`` are
required; ``node_id`` defaults to the host name and ``advertise`` to the replica's own
websocket URL (known once it listens).
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

from server.configvalues import (
    Check,
    fields,
    integer,
    nonempty,
    opt_str,
    parse_duration,
    ws_url,
)

SECRET_ENV = "AXTUI_CLUSTER_SECRET"  # the secret for ``axtui serve --cluster URL``
_NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class ClusterConfig:
    """Where the shared store is, who this replica is, and how long an owner holds a
    session without renewing its lease (seconds)."""

    redis: str = field(repr=False)  # the URL may hold a password
    secret: str = field(repr=False)
    node_id: str = field(default_factory=socket.gethostname)
    advertise: str | None = None
    lease: float = 10.0
    wait_replicas: int = 0
    # Bounded Redis memory: a session closed with this many events past its last snapshot
    # gets a new one and its stream is trimmed to the last keep_events (0: never).
    snapshot_after: int = 1000
    keep_events: int = 1000


def redis_url(value: object, key: str) -> str:
    """A Redis URL (``redis://``, ``rediss://`` for TLS, ``unix://``)."""
    url = nonempty(value, key)
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"{key}: must be a redis://, rediss:// or unix:// URL")
    return url


def _node_id(value: object, key: str) -> str:
    node = nonempty(value, key)
    if not _NODE_ID.fullmatch(node):
        raise ValueError(f"{key}: use up to 64 letters, digits, '.', '_' or '-', starting with"
                         f" a letter or digit (got {node!r})")
    return node


def _lease(value: object, key: str) -> float:
    seconds = parse_duration(value, key)
    if not 0.2 <= seconds <= 3600:
        raise ValueError(f"{key}: must be between 200ms and 1h (got {value!r})")
    return seconds


_CLUSTER: dict[str, Check] = {
    "redis": redis_url, "secret": nonempty, "node_id": _node_id,
    "advertise": lambda v, k: None if opt_str(v, k) is None else ws_url(v, k),
    "lease": _lease, "wait_replicas": lambda v, k: integer(v, k, 0, 16),
    "snapshot_after": lambda v, k: integer(v, k, 0, 2**31 - 1),
    "keep_events": lambda v, k: integer(v, k, 0, 2**31 - 1),
}


def parse_cluster(raw: object, environ: Mapping[str, str],
                  redis: str | None = None) -> ClusterConfig | None:
    """The ``cluster:`` section (``None`` when absent and no ``redis`` URL is given, as by
    ``--cluster``, which overrides the section's). Without ``secret``, the environment's
    :data:`SECRET_ENV` is used."""
    if raw is None and redis is None:
        return None
    values: object = raw
    if isinstance(raw, dict) or raw is None:
        values = dict(raw or {})
        if redis is not None:
            values["redis"] = redis
        if values.get("secret") is None and environ.get(SECRET_ENV):
            values["secret"] = environ[SECRET_ENV]
    parsed = fields(values, "cluster", _CLUSTER, required=("redis",))
    if parsed.get("secret") is None:
        raise ValueError(f"cluster.secret: required (replicas authenticate to each other with"
                         f" it): set it, or ${SECRET_ENV}")
    return ClusterConfig(**parsed)
