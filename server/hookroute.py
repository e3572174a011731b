"""``POST /v1/hooks/{name}``: a signed delivery from GitHub or a CI system (http.md §6).

The signature is checked against the raw body before anything is parsed; then the hook's
templates (:mod:`server.webhooks`) name the session, type and idempotency key, the session
is created with the hook's agent when it does not exist, and the body is published as the
event's data by the hook's own principal, ``webhook:<name>``, which may only create
sessions and publish to them. The agent's ``wake_on`` decides whether it wakes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from server import protocol
from server.auth import Principal
from server.caller import Caller
from server.config import Config
from server.httpbase import JSON_TYPE, Problem, json_response
from server.protocol import (
    InvalidRequest,
    NotAuthenticated,
    NotFound,
    ProtocolError,
    Role,
    TooLarge,
)
from server.sources import Source
from server.webhooks import MissingField, WebhookConfig, render, verify

Call = Callable[[Caller, str, dict[str, Any]], Awaitable[Any]]  # see HttpApi.call

log = logging.getLogger("axtui.http")


class HookCaller(Caller):
    """A webhook as a client: principal ``webhook:<name>``, events from source
    ``{"kind": "webhook", "name": <name>, "principal": "webhook:<name>"}``."""

    def __init__(self, hook: WebhookConfig) -> None:
        super().__init__(Principal(f"webhook:{hook.name}", Role.PARTICIPANT, "webhook"), log,
                         "webhook", hook.name)
        self.hook = hook

    @property
    def source(self) -> Source:
        """Who the events are from: the hook."""
        return Source("webhook", self.hook.name, principal=f"webhook:{self.hook.name}")


class HookRoute:
    """The webhooks of the config, and the route that takes their deliveries."""

    def __init__(self, config: Config, call: Call) -> None:
        self.hooks = config.webhooks
        self.max_event_bytes = config.hub.max_event_bytes
        self.call = call
        self._creating: dict[str, asyncio.Future[None]] = {}  # sessions being created

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Check, render and publish one delivery: ``202 {"sessionId", "seq", "duplicate"}``."""
        name = request.match_info["name"]
        hook = self.hooks.get(name)
        if hook is None:
            raise Problem(NotFound(f"no webhook named {name!r} is configured",
                                   {"hook": name}))
        raw = await request.read()
        if not verify(hook, raw, request.headers):
            log.info("webhook %s: a delivery with a bad or missing signature was refused", name)
            raise Problem(NotAuthenticated(
                f"webhook {name}: the signature is missing or wrong"))
        if request.content_type != JSON_TYPE:
            raise Problem(InvalidRequest(
                f"webhook {name}: the body must be {JSON_TYPE}, not"
                f" {request.content_type or 'untyped'} (on GitHub: Content type"
                " application/json)"), 415)
        if len(raw) > self.max_event_bytes:
            raise Problem(TooLarge(
                f"the body is {len(raw)} bytes; the limit is {self.max_event_bytes}"
                " (hub.max_event_bytes)", {"size": len(raw), "limit": self.max_event_bytes}))
        try:
            event = render(hook, protocol.loads(raw), request.headers)
        except MissingField as exc:
            raise Problem(exc, 422) from None
        except ProtocolError as exc:
            raise Problem(exc) from None
        caller = HookCaller(hook)
        params: dict[str, Any] = {"sessionId": event.session_id, "type": event.type,
                                  "data": event.data, "idempotencyKey": event.idempotency_key}
        try:
            result = await self.call(caller, "session/publish", params)
        except Problem as problem:
            if problem.error.code != NotFound.code:
                raise
            await self._create(caller, event.session_id)
            result = await self.call(caller, "session/publish", params)
        return json_response({"sessionId": event.session_id, **result}, 202)

    async def _create(self, caller: HookCaller, session_id: str) -> None:
        """Create the session with the hook's agent, once: deliveries racing to a new session
        wait for the one creation (a session still being created answers its publishes
        not-found, so each must not go on before it is done)."""
        pending = self._creating.get(session_id)
        if pending is None:
            pending = asyncio.ensure_future(self._create_once(caller, session_id))
            self._creating[session_id] = pending

            def done(fut: asyncio.Future[None]) -> None:
                self._creating.pop(session_id, None)
                if not fut.cancelled():
                    fut.exception()  # retrieved: each waiter gets it from shield()

            pending.add_done_callback(done)
        await asyncio.shield(pending)

    async def _create_once(self, caller: HookCaller, session_id: str) -> None:
        """Create the session; one created meanwhile by someone else is as good."""
        params: dict[str, Any] = {"sessionId": session_id, "agent": caller.hook.agent}
        try:
            await self.call(caller, "session/create", params)
        except Problem as problem:
            if problem.error.code != protocol.Conflict.code:
                raise
