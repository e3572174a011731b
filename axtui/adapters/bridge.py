"""Bridges: one task per session that keeps its chat thread showing the session.

A bridge reads back what it posted in the thread (:meth:`Surface.read_marks`), finds the
resume point, subscribes to the session after it (the hub client resumes across hub
disconnects by itself), applies each batch of events to a :class:`SessionView` and lets
the :class:`Outbox` deliver the result. Chat API failures are retried with backoff;
nothing is lost because the outbox carries on where it stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from axtui.adapters.outbox import DeliveryError, Outbox, ResumePoint, Surface
from axtui.adapters.view import MAX_CHARS, OwnRef, SessionView
from axtui.backoff import Backoff
from axtui.client import HubClient, HubUnavailable, Subscription
from server.protocol import CannotResume, NotFound, ProtocolError

log = logging.getLogger("axtui.adapters")

RETRY_AFTER, MAX_BACKOFF = 0.5, 30.0  # seconds before retrying a failed attach or delivery


class SessionBridge:
    """Keeps one session's thread up to date until cancelled or the session is deleted."""

    def __init__(self, hub: HubClient, session_id: str, surface: Surface,
                 own_ref: OwnRef, *, edit_interval: float = 1.0,
                 max_chars: int = MAX_CHARS) -> None:
        self.hub = hub
        self.session_id = session_id
        self.surface = surface
        self.own_ref = own_ref
        self.edit_interval = edit_interval
        self.max_chars = max_chars
        self.outbox: Outbox | None = None

    async def run(self) -> None:
        """Attach and follow; start over (re-reading the thread) if the session was
        re-created, stop when it is deleted or the hub client closes."""
        backoff = Backoff(RETRY_AFTER, MAX_BACKOFF)
        while True:
            try:
                await self._attach_and_follow()
                return
            except CannotResume:
                log.info("session %s was re-created; attaching again", self.session_id)
            except (NotFound, StopAsyncIteration, HubUnavailable):
                return
            except (DeliveryError, ProtocolError, ConnectionError) as exc:
                delay = backoff.next()
                log.warning("session %s: %s; retrying in %.1f s", self.session_id, exc, delay)
                await asyncio.sleep(delay)

    async def _resume_point(self, epoch: str) -> tuple[SessionView, Outbox, ResumePoint]:
        posted = [p for p in await self.surface.read_marks()
                  if p.mark.session == self.session_id and p.mark.epoch == epoch]
        view = SessionView(self.session_id, self.own_ref, self.max_chars)
        outbox = Outbox(self.surface, view, epoch, edit_interval=self.edit_interval)
        point = outbox.bind(posted)
        if point.posted_through > 0:
            # Reactions follow the latest turn: replay from its trigger so they are right.
            found = await self.hub.history(self.session_id, beforeSeq=point.posted_through + 1,
                                           types=["turn.started"], limit=1)
            for event in found["events"]:
                trigger = int(event["data"].get("triggerSeq") or event["seq"])
                point = ResumePoint(min(point.after_seq, trigger - 1), point.posted_through)
        return view, outbox, point

    async def _attach_and_follow(self) -> None:
        session = await self.hub.get_session(self.session_id)
        view, outbox, point = await self._resume_point(session["epoch"])
        self.outbox = outbox
        log.info("session %s: resuming after seq %d (posted through %d)", self.session_id,
                 point.after_seq, point.posted_through)
        sub = self.hub.subscribe(self.session_id, point.after_seq, session["epoch"])
        try:
            await self._follow(sub, view, outbox)
        finally:
            await sub.close()

    async def _follow(self, sub: Subscription, view: SessionView, outbox: Outbox) -> None:
        getter: asyncio.Future[list[dict[str, Any]]] | None = None
        delay: float | None = None
        backoff = Backoff(RETRY_AFTER, MAX_BACKOFF)
        try:
            while True:
                if getter is None:
                    getter = asyncio.ensure_future(sub.next_batch())
                done, _ = await asyncio.wait({getter}, timeout=delay)
                if getter in done:
                    batch, getter = getter.result(), None
                    for event in batch:
                        view.apply(event)
                try:
                    delay = await outbox.flush()
                    backoff.reset()
                except DeliveryError as exc:
                    delay = backoff.next()
                    log.warning("session %s: %s; retrying in %.1f s", self.session_id, exc,
                                delay)
        finally:
            if getter is not None:
                getter.cancel()
                with contextlib.suppress(BaseException):
                    await getter


class Bridges:
    """The running bridges, one per session, started on demand."""

    def __init__(self, make: Callable[[dict[str, Any]], SessionBridge | None]) -> None:
        self._make = make
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def attach(self, session: dict[str, Any]) -> bool:
        """Start the session's bridge unless it runs; False if ``make`` declines it."""
        sid = session["sessionId"]
        task = self._tasks.get(sid)
        if task is not None and not task.done():
            return True
        bridge = self._make(session)
        if bridge is None:
            return False
        self._tasks[sid] = asyncio.create_task(self._run(bridge), name=f"bridge {sid}")
        return True

    async def _run(self, bridge: SessionBridge) -> None:
        try:
            await bridge.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("the bridge of session %s failed", bridge.session_id)

    async def close(self) -> None:
        """Stop every bridge."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
