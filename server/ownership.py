"""Who owns which session in cluster mode (cluster.md §2.2, §2.5, §2.6).

A replica owns a session while it holds the session's lease in Redis
(:class:`server.redisstore.Lease`): it is the only one that writes its log, runs its agent
and holds its state database. The first replica that needs a session nobody holds takes
the lease (:meth:`Ownership.claim`); a request that reaches another replica meanwhile is
forwarded to the owner (:class:`~server.clustererrors.OwnedElsewhere` says where). Leases
of open sessions are renewed every third of ``cluster.lease``; one found lost (the replica
was paused past it, or Redis was away that long) makes this replica step down from the
session at once. The
store's compare-and-set append is what keeps a stale owner harmless; the lease decides who
runs the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from server.clustererrors import OwnedElsewhere, StoreUnavailable
from server.metrics import Metrics

log = logging.getLogger("axtui.cluster")

if TYPE_CHECKING:
    from server.redisstore import Lease, RedisStore

T = TypeVar("T")
OWNER_CACHE = 0.5  # seconds a session's known remote owner is believed without asking


class Ownership:
    """The leases this replica holds, and what it knows of the others'."""

    def __init__(self, store: RedisStore, metrics: Metrics) -> None:
        self.store = store
        self.metrics = metrics
        self.node_id = store.node_id
        self.leases: dict[str, Lease] = {}
        self.on_lost: list[Callable[[str], None]] = []  # a lease found lost: step down
        self._remote: dict[str, tuple[str, float]] = {}  # session -> (owner, until)
        self._renewer: asyncio.Task[None] | None = None

    def start(self, advertise: str) -> None:
        """Renew leases (and this replica's address) in the background."""
        self._renewer = asyncio.create_task(self._renew_loop(advertise), name="lease renewal")

    async def stop(self) -> None:
        """Stop renewing and give every lease back: the others take the sessions over at
        their next request, with no wait for the leases to run out (a graceful hand-over)."""
        if self._renewer is not None:
            self._renewer.cancel()
        for lease in list(self.leases.values()):
            await self.release(lease.session_id)

    # --- one session ---------------------------------------------------------------------

    def remote_owner(self, session_id: str) -> str | None:
        """The replica believed to own ``session_id`` (asked of Redis less than
        OWNER_CACHE s ago), if another one; no I/O."""
        known = self._remote.get(session_id)
        if known is None or known[1] < time.monotonic():
            return None
        return known[0]

    def forget_owner(self, session_id: str) -> None:
        """Drop what is known of the session's remote owner (it did not answer)."""
        self._remote.pop(session_id, None)

    async def claim(self, session_id: str) -> Lease:
        """The session's lease: this replica's, or taken now if nobody holds it. Raises
        :class:`OwnedElsewhere` when another replica holds it, StoreUnavailable when Redis
        cannot be reached."""
        lease = self.leases.get(session_id)
        if lease is not None:
            return lease
        lease = await self._call(self.store.acquire(session_id))
        if lease is None:
            node = await self._call(self.store.owner(session_id))
            if node is None:  # released or expired between the two calls
                lease = await self._call(self.store.acquire(session_id))
            if lease is None:
                node = node or "another replica"
                self._remote[session_id] = (node, time.monotonic() + OWNER_CACHE)
                raise OwnedElsewhere(session_id, node)
        self.hold(lease)
        return lease

    def hold(self, lease: Lease) -> None:
        """Keep ``lease`` (claimed, or made by creating the session) and renew it."""
        self.leases[lease.session_id] = lease
        self._remote.pop(lease.session_id, None)
        self.metrics.cluster_owned = len(self.leases)

    async def release(self, session_id: str) -> None:
        """Give the session's lease back (it was closed here)."""
        lease = self.leases.pop(session_id, None)
        self.metrics.cluster_owned = len(self.leases)
        if lease is not None:
            with contextlib.suppress(StoreUnavailable):  # it runs out by itself
                await self._call(self.store.release(lease))

    def drop(self, session_id: str) -> None:
        """Forget the session's lease without a word to Redis (it was lost or deleted)."""
        self.leases.pop(session_id, None)
        self.metrics.cluster_owned = len(self.leases)

    # --- in the background ---------------------------------------------------------------

    async def _renew_loop(self, advertise: str) -> None:
        interval = self.store.config.lease / 3
        while True:
            try:
                await self._call(self.store.announce(advertise))
                leases = list(self.leases.values())
                held = await self._call(self.store.renew(leases)) if leases else []
                for lease, ok in zip(leases, held, strict=True):
                    if not ok and self.leases.get(lease.session_id) is lease:
                        self._lost(lease.session_id)
            except StoreUnavailable as exc:
                log.warning("cannot renew leases: %s", exc.message)
            except Exception as exc:
                self.metrics.background_failed(log, "renewing leases", exc)
            await asyncio.sleep(interval)

    def _lost(self, session_id: str) -> None:
        log.warning("the lease of session %s was lost (another replica took it over, or"
                    " Redis was away past the lease): stepping down", session_id)
        self.drop(session_id)
        for callback in self.on_lost:
            try:
                callback(session_id)
            except Exception as exc:
                self.metrics.background_failed(log, "stepping down from a session", exc)

    async def _call(self, call: Awaitable[T]) -> T:
        """Await a store call, counting errors and noting whether Redis answered."""
        try:
            result = await call
        except StoreUnavailable:
            self.metrics.cluster_store_errors += 1
            self.metrics.store_reachable = False
            raise
        self.metrics.store_reachable = True
        return result
