"""The outbox: posts a view's items to a chat thread, edits them in place, and keeps the
resume cursor in the posted messages themselves.

Every message an adapter posts carries a :class:`Mark` (Slack: message ``metadata``): the
session and epoch, the item's key, ``first`` (the seq its content is built from),
``through`` (every item created at or before this seq had been posted when the mark was
written), ``done`` (no later event changes it) and a digest of what it shows. The post and
its mark are one API call, so the thread itself is an exact record of what was posted.

On (re)attach the adapter reads the marks back (:func:`resume_point`): events up to the
highest ``through`` were all posted, so replaying them never posts anew; a message not yet
``done`` (an agent message cut off mid-stream, an open permission card) is rebuilt from
its ``first`` seq and edited in place. So a restart posts nothing twice and misses nothing.

Edits are throttled (one per ``edit_interval`` per thread; chat platforms rate-limit
edits) and coalesced: only the latest content of an item is sent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from axtui.adapters.view import Item, SessionView, Target

log = logging.getLogger("axtui.adapters")


@dataclass(frozen=True)
class Mark:
    """What a posted message records about itself (see the module docstring)."""

    session: str
    epoch: str
    key: str
    first: int
    through: int
    done: bool
    digest: str


@dataclass(frozen=True)
class Posted:
    """A message found in the thread: its platform id and its mark."""

    ref: str
    mark: Mark


@dataclass(frozen=True)
class ResumePoint:
    """Where to pick up: subscribe after ``after_seq``; items created at or before
    ``posted_through`` were posted already (or deliberately dropped)."""

    after_seq: int
    posted_through: int


def resume_point(posted: list[Posted]) -> ResumePoint:
    """The resume point from the marks found in the thread (all of one session and epoch)."""
    through = max((p.mark.through for p in posted), default=0)
    after = min([through, *(p.mark.first - 1 for p in posted if not p.mark.done)])
    return ResumePoint(max(after, 0), through)


class DeliveryError(Exception):
    """A chat API call failed. ``permanent``: retrying the same call will not help."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


class Surface(Protocol):
    """One chat thread, as the outbox needs it (the Slack adapter implements it)."""

    def render(self, item: Item) -> tuple[Any, str]:
        """The platform's content for ``item`` and a digest of it."""

    async def post(self, content: Any, mark: Mark) -> str:
        """Post a new message in the thread; returns its platform id."""

    async def update(self, ref: str, content: Any, mark: Mark) -> None:
        """Replace a posted message's content and mark."""

    async def react(self, ref: str, reaction: str, on: bool) -> None:
        """Set or clear a reaction (``working``, ``done``, ...) on a message."""

    async def read_marks(self) -> list[Posted]:
        """The marked messages this adapter posted in the thread (any session or epoch)."""


@dataclass
class _Sent:
    ref: str
    digest: str
    done: bool


class Outbox:
    """Delivers one :class:`SessionView` to one :class:`Surface`."""

    def __init__(self, surface: Surface, view: SessionView, epoch: str, *,
                 edit_interval: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.surface = surface
        self.view = view
        self.epoch = epoch
        self.edit_interval = edit_interval
        self.clock = clock
        self.posted_through = 0
        self._sent: dict[str, _Sent] = {}
        self._dropped: set[str] = set()
        self._queue: list[str] = []  # items to post, in creation order
        self._dirty: dict[str, None] = {}  # items that may need an edit, oldest first
        self._reactions: dict[tuple[Target, str], bool] = {}
        self._next_edit = 0.0

    def bind(self, posted: list[Posted]) -> ResumePoint:
        """Adopt the messages found in the thread; returns where to resume."""
        for p in posted:
            self._sent[p.mark.key] = _Sent(p.ref, p.mark.digest, p.mark.done)
        point = resume_point(posted)
        self.posted_through = point.posted_through
        return point

    def ref_of(self, key: str) -> str | None:
        """The platform id of a posted item."""
        sent = self._sent.get(key)
        return sent.ref if sent else None

    def _mark(self, item: Item, digest: str, through: int) -> Mark:
        return Mark(self.view.session_id, self.epoch, item.key, item.first, through,
                    item.done, digest)

    def _collect(self) -> None:
        for key in self.view.take_new():
            item = self.view.items[key]
            if key in self._sent:
                self._dirty[key] = None  # posted before a restart: edit if it differs
            elif item.created <= self.posted_through:
                self._dropped.add(key)  # posted and since removed, or dropped: not again
            else:
                self._queue.append(key)
        for key in self.view.take_changed():
            if key not in self._dropped:
                self._dirty[key] = None
        self._reactions.update(self.view.take_reactions())

    async def flush(self) -> float | None:
        """Send what is due: posts in order, then reactions, then at most one edit.

        Returns the seconds until the next edit is due, or None when nothing waits.
        Raises :class:`DeliveryError` (not permanent) when the platform cannot be reached;
        calling again later carries on where it stopped.
        """
        self._collect()
        while self._queue:
            key = self._queue[0]
            item = self.view.items[key]
            content, digest = self.surface.render(item)
            following = self.view.items[self._queue[1]].created - 1 if len(self._queue) > 1 \
                else self.view.applied
            try:
                ref = await self.surface.post(content, self._mark(item, digest, following))
            except DeliveryError as exc:
                if not exc.permanent:
                    raise
                log.warning("dropping %s of session %s: %s", key, self.view.session_id, exc)
                self._dropped.add(key)
            else:
                self._sent[key] = _Sent(ref, digest, item.done)
                self._next_edit = max(self._next_edit, self.clock() + self.edit_interval)
            self._queue.pop(0)
            self._dirty.pop(key, None)
        while self._reactions:
            (target, reaction), on = next(iter(self._reactions.items()))
            where = target[1] if target[0] == "ref" else self.ref_of(target[1])
            if where is not None:
                await self.surface.react(where, reaction, on)
            del self._reactions[(target, reaction)]
        return await self._edit_one()

    async def _edit_one(self) -> float | None:
        while self._dirty:
            key = next(iter(self._dirty))
            item, sent = self.view.items[key], self._sent.get(key)
            content, digest = self.surface.render(item)
            if sent is None or (sent.digest == digest and sent.done == item.done):
                del self._dirty[key]
                continue
            wait = self._next_edit - self.clock()
            if wait > 0:
                return wait
            try:
                await self.surface.update(sent.ref, content,
                                          self._mark(item, digest, self.view.applied))
            except DeliveryError as exc:
                if not exc.permanent:
                    raise
                log.warning("cannot edit %s of session %s: %s", key, self.view.session_id,
                            exc)
                self._dropped.add(key)
            else:
                sent.digest, sent.done = digest, item.done
            del self._dirty[key]
            self._next_edit = self.clock() + self.edit_interval
        return None
