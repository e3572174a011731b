"""Cluster mode's parts, put together (cluster.md): the store, the leases, the registry's
cluster side, the forwarder, and the watch channel between replicas.

:func:`build_cluster` wires them into a hub's registry, supervisor, authenticator,
dispatcher and watch broadcaster; the hub calls :meth:`Cluster.check` before it opens
anything (a replica that cannot reach Redis exits 2), :meth:`Cluster.start` once it
listens, and :meth:`Cluster.stop` after its sessions are closed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from server.auth import Authenticator
from server.clusterconfig import ClusterConfig
from server.clustererrors import OwnedElsewhere
from server.clustersessions import ClusterSessions
from server.dispatch import Dispatcher
from server.forward import ClusterRoute, Forwarder
from server.metrics import Metrics
from server.ownership import Ownership
from server.redisstore import WATCH_CHANNEL, RedisStore
from server.registry import SessionRegistry
from server.supervisor import Supervisor
from server.watch import WatchBroadcaster

log = logging.getLogger("axtui.cluster")


class Cluster:
    """This replica's membership of a cluster."""

    def __init__(self, config: ClusterConfig, store: RedisStore, ownership: Ownership,
                 sessions: ClusterSessions, forwarder: Forwarder,
                 watch: WatchBroadcaster, claim: Callable[[str], Awaitable[object]]) -> None:
        self.config = config
        self.store = store
        self.ownership = ownership
        self.sessions = sessions
        self.forwarder = forwarder
        self.watch = watch
        self._claim = claim  # open a session as its owner: the registry's get
        self._listener: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def check(self) -> None:
        """Raise StoreUnavailable unless Redis answers."""
        await self.store.check()

    def start(self, url: str) -> None:
        """Renew leases, say where this replica is (``cluster.advertise``, else ``url``), and
        pass the other replicas' session changes to this one's watchers."""
        advertise = self.config.advertise or url
        self.ownership.start(advertise)
        self._listener = asyncio.create_task(self._listen(), name="cluster watch")
        self._sweeper = asyncio.create_task(self._sweep(), name="cluster sweeper")
        log.info("axtui cluster replica %s (reached at %s)", self.config.node_id, advertise)

    async def stop(self) -> None:
        """Give every lease back, close the peer connections and the store."""
        for task in (self._listener, self._sweeper):
            if task is not None:
                task.cancel()
        self.sessions.stop_following()
        await self.ownership.stop()
        await self.forwarder.close()
        await self.store.close()

    async def _listen(self) -> None:
        """Session descriptions published by any replica, to this one's watchers (those
        of sessions owned here are told already)."""
        while True:
            try:
                async with self.store.follow.pubsub() as pubsub:
                    await pubsub.subscribe(WATCH_CHANNEL)
                    async for message in pubsub.listen():
                        if message.get("type") != "message":
                            continue
                        await self._changed(message["data"].decode())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("the cluster's watch channel failed (%s); listening again", exc)
                await asyncio.sleep(1.0)

    async def _sweep(self) -> None:
        """Every lease: take over the sessions whose agent was active and whose owner is
        gone, so their interrupted turns are recorded (and re-run) within two leases."""
        while True:
            await asyncio.sleep(self.config.lease)
            try:
                for session_id in await self.store.orphans():
                    try:
                        await self._claim(session_id)
                        log.info("took session %s over (its owner is gone)", session_id)
                    except OwnedElsewhere:
                        pass  # another replica was quicker
            except Exception as exc:
                log.warning("looking for sessions without an owner: %s", exc)

    async def _changed(self, session_id: str) -> None:
        if session_id in self.ownership.leases:
            return
        info = await self.store.describe(session_id)
        if info is not None:
            self.watch.session_changed(info)


def build_cluster(config: ClusterConfig, durability: str, query_timeout: float,
                  metrics: Metrics,
                  registry: SessionRegistry, supervisor: Supervisor, auth: Authenticator,
                  dispatcher: Dispatcher, watch: WatchBroadcaster) -> Cluster:
    """The cluster parts for ``config``, wired into the hub's."""
    store = RedisStore(config)
    ownership = Ownership(store, metrics)
    sessions = ClusterSessions(store, ownership, metrics, durability)
    # A forwarded request may take a state/query's time, or an owner's step-down.
    forwarder = Forwarder(ownership, config.secret, metrics,
                          timeout=query_timeout + 2 * config.lease + 2)
    registry.cluster = sessions
    sessions.claim = registry.get
    sessions.forwarder = forwarder
    ownership.on_lost.append(registry.step_down)
    registry.on_stepped_down.append(supervisor.session_deleted)
    registry.on_taken_over.append(supervisor.taken_over)
    auth.cluster_secret = config.secret
    dispatcher.cluster = ClusterRoute(ownership, forwarder)
    return Cluster(config, store, ownership, sessions, forwarder, watch, registry.get)
