"""Who makes a request, whatever the transport: a websocket connection or an HTTP request.

A method's handler (:mod:`server.methods`) sees only a :class:`Caller`: its principal, the
client it came through, the sessions it is subscribed to, and the tasks and commit futures
of its requests under way (which ``hub.max_inflight`` counts and the hub's stop waits for).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from server.auth import Principal
from server.sources import Source
from server.tasks import TaskSet

if TYPE_CHECKING:
    from server.sessions import Subscription

ON_BEHALF_CACHE = 256  # encoded sources kept per caller for onBehalfOf names


class Caller:
    """A client of the hub as the methods see it."""

    def __init__(self, principal: Principal | None, log: logging.Logger,
                 client_kind: str = "unknown", client_name: str = "") -> None:
        self.principal = principal
        self.client_kind = client_kind
        self.client_name = client_name
        self.subscriptions: dict[str, Subscription] = {}
        self.tasks = TaskSet(log, "a client connection")
        # Requests answered from a future, with no task (a publish to an open session: see
        # server.methods): with ``tasks``, what counts against ``hub.max_inflight`` and
        # what the hub's stop() waits for.
        self.publishes: set[asyncio.Future[Any]] = set()
        self.forwarded = False  # a request another replica forwarded (never forwarded again)
        self._source_json: tuple[Principal | None, str, bytes] | None = None
        self._on_behalf_json: dict[str, bytes] = {}

    @property
    def source(self) -> Source:
        """The ``source`` of events this client publishes."""
        assert self.principal is not None
        return Source(self.principal.kind, self.principal.name, self.client_kind)

    def source_json(self, on_behalf_of: str | None = None) -> bytes:
        """The encoded ``source`` of this client's events, or of those it publishes on
        behalf of the person ``on_behalf_of`` (a bridge); encoded once, not per publish."""
        cached = self._source_json
        if cached is None or cached[0] is not self.principal or cached[1] != self.client_kind:
            self._on_behalf_json.clear()
            cached = self._source_json = (
                self.principal, self.client_kind, self.source.to_json()
            )
        if on_behalf_of is None:
            return cached[2]
        encoded = self._on_behalf_json.get(on_behalf_of)
        if encoded is None:
            if len(self._on_behalf_json) >= ON_BEHALF_CACHE:
                self._on_behalf_json.clear()  # a bridge for many people: start over
            source = self.source
            encoded = replace(source, name=on_behalf_of, principal=source.name).to_json()
            self._on_behalf_json[on_behalf_of] = encoded
        return encoded
