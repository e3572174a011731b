"""The adapters' outbox (:class:`axtui.adapters.outbox.Outbox`): posts in order with their
marks, edits throttled per thread and coalesced, reactions, failures retried or dropped,
and resuming from the marks. Time is the outbox's own clock, moved by hand."""

from __future__ import annotations

import json
from typing import Any

import pytest

from axtui.adapters.outbox import DeliveryError, Mark, Outbox, Posted
from axtui.adapters.view import Item, SessionView

TUI = {"kind": "client", "name": "ada", "client": "tui"}
AGENT = {"kind": "agent", "name": "echo"}


class Platform:
    """A chat thread standing in for the platform's API: it records every call, and fails
    the calls it is told to."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.failures: dict[str, list[DeliveryError | None]] = {"post": [], "update": []}
        self.marks: dict[str, Mark] = {}

    def render(self, item: Item) -> tuple[Any, str]:
        """The item's body as JSON; the digest is that JSON itself."""
        content = json.dumps(item.body, sort_keys=True)
        return content, content

    def _fail(self, call: str) -> None:
        if self.failures[call]:
            failure = self.failures[call].pop(0)
            if failure is not None:
                raise failure

    async def post(self, content: Any, mark: Mark) -> str:
        """Record a post; its ref is ``m<n>``."""
        self.calls.append(("post", mark.key, json.loads(content), mark))
        self._fail("post")
        ref = f"m{len(self.marks)}"
        self.marks[ref] = mark
        return ref

    async def update(self, ref: str, content: Any, mark: Mark) -> None:
        """Record an edit."""
        self.calls.append(("update", ref, json.loads(content), mark))
        self._fail("update")
        self.marks[ref] = mark

    async def react(self, ref: str, reaction: str, on: bool) -> None:
        """Record a reaction set or cleared."""
        self.calls.append(("react", ref, reaction, on))

    async def read_marks(self) -> list[Posted]:
        """The marks of the messages posted."""
        return [Posted(ref, mark) for ref, mark in self.marks.items()]

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        """The calls of one kind so far."""
        calls = [c for c in self.calls if c[0] == kind]
        return calls

    def take(self) -> list[tuple[Any, ...]]:
        """Every call since the last take."""
        calls, self.calls = self.calls, []
        return calls


class Clock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def platform() -> Platform:
    """A fresh thread."""
    return Platform()


@pytest.fixture
def clock() -> Clock:
    """Time zero."""
    return Clock()


@pytest.fixture
def view() -> SessionView:
    """A view of session ``s`` in which no message is the adapter's own."""
    return SessionView("s", lambda event: None)


@pytest.fixture
def outbox(platform: Platform, view: SessionView, clock: Clock) -> Outbox:
    """An outbox editing at most once a second."""
    return Outbox(platform, view, "e1", edit_interval=1.0, clock=clock)


def user(seq: int, text: str = "hi") -> dict[str, Any]:
    """A user.message from another client."""
    return {"seq": seq, "type": "user.message", "data": {"text": text}, "source": TUI}


def note(seq: int) -> dict[str, Any]:
    """A custom event (shown as a notice, done at once)."""
    return {"seq": seq, "type": "ci.step", "data": {"n": seq}, "source": TUI}


def turn(seq: int, trigger: int) -> dict[str, Any]:
    """turn.started for the user message at ``trigger``."""
    return {"seq": seq, "type": "turn.started", "data": {"turnId": "t1", "triggerSeq": trigger}}


def chunk(seq: int, text: str, message: str = "m") -> dict[str, Any]:
    """A streamed chunk of agent message ``message``."""
    return {"seq": seq, "type": "agent.message.chunk", "turnId": "t1", "source": AGENT,
            "data": {"messageId": message, "text": text}}


def message(seq: int, text: str, message: str = "m") -> dict[str, Any]:
    """The whole agent message ``message``."""
    return {"seq": seq, "type": "agent.message", "turnId": "t1", "source": AGENT,
            "data": {"messageId": message, "text": text}}


def completed(seq: int) -> dict[str, Any]:
    """turn.completed."""
    return {"seq": seq, "type": "turn.completed", "data": {"turnId": "t1",
                                                          "stopReason": "end_turn"}}


def apply(view: SessionView, *events: dict[str, Any]) -> None:
    """Apply ``events`` in order."""
    for event in events:
        view.apply(event)


# --- posts -------------------------------------------------------------------------------

async def test_posts_go_out_in_creation_order_with_their_marks(
    platform: Platform, view: SessionView, outbox: Outbox
) -> None:
    """New items are posted at once, in the order they were created, each with its mark."""
    apply(view, note(1), user(2), note(4))
    assert await outbox.flush() is None
    posts = platform.take()
    assert [(c[0], c[1]) for c in posts] == [
        ("post", "event:1"), ("post", "user:2"), ("post", "event:4")]
    marks = [c[3] for c in posts]
    assert all((m.session, m.epoch, m.done) == ("s", "e1", True) for m in marks)
    assert [m.first for m in marks] == [1, 2, 4]
    # through: every item created up to it was posted when the mark was written
    assert [m.through for m in marks] == [1, 3, 4]
    assert posts[1][2] == {"text": "hi", "name": "ada", "client": "tui"}
    assert marks[1].digest == platform.render(view.items["user:2"])[1]
    assert [outbox.ref_of(k) for k in ("event:1", "user:2", "event:4")] == ["m0", "m1", "m2"]
    assert outbox.ref_of("event:3") is None


async def test_posts_are_not_throttled(
    platform: Platform, view: SessionView, outbox: Outbox
) -> None:
    """Posts never wait for the edit interval: items created later are posted at once."""
    apply(view, note(1))
    await outbox.flush()
    apply(view, note(2))
    await outbox.flush()
    apply(view, note(3))
    await outbox.flush()
    assert [c[1] for c in platform.of("post")] == ["event:1", "event:2", "event:3"]


# --- edits -------------------------------------------------------------------------------

async def test_first_edit_waits_an_interval_after_the_post(
    platform: Platform, view: SessionView, outbox: Outbox, clock: Clock
) -> None:
    """A change right after a post is held until edit_interval has passed since the post."""
    apply(view, user(2), turn(3, 2), chunk(4, "a"))
    assert await outbox.flush() is None
    apply(view, chunk(5, "b"))
    platform.take()
    assert await outbox.flush() == 1.0
    clock.now = 0.25
    assert await outbox.flush() == 0.75
    assert platform.take() == []
    clock.now = 1.0
    assert await outbox.flush() is None
    [(kind, ref, content, mark)] = platform.take()
    assert (kind, ref, content["text"]) == ("update", "m1", "ab")
    assert (mark.key, mark.first, mark.through, mark.done) == ("msg:m:0", 4, 5, False)


async def test_edits_are_coalesced_to_the_latest_content(
    platform: Platform, view: SessionView, outbox: Outbox, clock: Clock
) -> None:
    """Many changes while an edit waits become one edit showing only the latest content."""
    apply(view, user(2), turn(3, 2), chunk(4, "a"))
    await outbox.flush()
    for seq, text in enumerate("bcdef", start=5):
        apply(view, chunk(seq, text))
        assert await outbox.flush() == 1.0  # waiting: nothing sent
    clock.now = 1.0
    await outbox.flush()
    updates = platform.of("update")
    assert [(c[1], c[2]["text"], c[3].through) for c in updates] == [("m1", "abcdef", 9)]


async def test_at_most_one_edit_per_interval_per_thread(
    platform: Platform, view: SessionView, outbox: Outbox, clock: Clock
) -> None:
    """Two messages changed at once are edited one interval apart, not together."""
    apply(view, user(2), turn(3, 2), chunk(4, "a", "m1"), chunk(5, "x", "m2"))
    await outbox.flush()
    apply(view, chunk(6, "b", "m1"), chunk(7, "y", "m2"))
    clock.now = 1.0
    assert await outbox.flush() == 1.0  # one edit sent; the other waits a whole interval
    first = platform.of("update")
    assert len(first) == 1
    clock.now = 1.5
    assert await outbox.flush() == 0.5
    assert platform.of("update") == first
    clock.now = 2.0
    assert await outbox.flush() is None
    updates = platform.of("update")
    assert sorted(c[2]["text"] for c in updates) == ["ab", "xy"]
    assert sorted(c[1] for c in updates) == ["m1", "m2"]


async def test_edit_interval_counts_from_the_last_edit(
    platform: Platform, view: SessionView, outbox: Outbox, clock: Clock
) -> None:
    """After an edit, the next edit of the thread waits edit_interval from that edit."""
    apply(view, user(2), turn(3, 2), chunk(4, "a"))
    await outbox.flush()
    clock.now = 5.0  # long after the post: the first change is edited at once
    apply(view, chunk(5, "b"))
    assert await outbox.flush() is None
    apply(view, chunk(6, "c"))
    clock.now = 5.5
    assert await outbox.flush() == 0.5
    clock.now = 6.0
    assert await outbox.flush() is None
    assert [c[2]["text"] for c in platform.of("update")] == ["ab", "abc"]


async def test_done_is_edited_even_when_the_text_is_unchanged(
    platform: Platform, view: SessionView, outbox: Outbox, clock: Clock
) -> None:
    """A message that becomes done with the same text is edited once, to mark it done."""
    apply(view, user(2), turn(3, 2), chunk(4, "all"))
    await outbox.flush()
    apply(view, message(5, "all"), completed(6))
    clock.now = 1.0
    assert await outbox.flush() is None
    [(_, ref, content, mark)] = platform.of("update")
    assert (ref, content["text"], mark.done, mark.through) == ("m1", "all", True, 6)
    apply(view, note(7))
    clock.now = 10.0
    await outbox.flush()
    assert len(platform.of("update")) == 1  # nothing more to edit


async def test_no_edit_when_the_content_is_back_to_what_was_sent(
    platform: Platform, view: SessionView, outbox: Outbox, clock: Clock
) -> None:
    """An item changed and changed back before its edit was due is not edited."""
    apply(view, {"seq": 4, "type": "tool.call", "turnId": "t1", "source": AGENT,
                 "data": {"toolCallId": "c1", "title": "Read", "status": "pending"}})
    await outbox.flush()
    for seq, status in ((5, "in_progress"), (6, "pending")):
        apply(view, {"seq": seq, "type": "tool.update", "turnId": "t1", "source": AGENT,
                     "data": {"toolCallId": "c1", "status": status}})
    clock.now = 3.0
    assert await outbox.flush() is None
    assert [c[0] for c in platform.take()] == ["post"]


# --- reactions ---------------------------------------------------------------------------

async def test_reactions_go_to_the_posted_message(
    platform: Platform, view: SessionView, outbox: Outbox
) -> None:
    """A turn's state is shown as reactions on the message that started it, once posted."""
    apply(view, user(2), turn(3, 2))
    await outbox.flush()
    assert [c for c in platform.take() if c[0] == "react"] == [("react", "m0", "working", True)]
    apply(view, completed(4))
    await outbox.flush()
    assert sorted(c[1:] for c in platform.take()) == [
        ("m0", "done", True), ("m0", "working", False)]


async def test_reactions_on_the_adapters_own_message(
    platform: Platform, clock: Clock
) -> None:
    """A turn started by a message this adapter published gets reactions on that message."""
    own = SessionView("s", lambda event: "slack-ts-1" if event["seq"] == 2 else None)
    outbox = Outbox(platform, own, "e1", edit_interval=1.0, clock=clock)
    apply(own, user(2), turn(3, 2))
    await outbox.flush()
    assert platform.take() == [("react", "slack-ts-1", "working", True)]


# --- failures ----------------------------------------------------------------------------

async def test_failed_post_is_retried_in_order(
    platform: Platform, view: SessionView, outbox: Outbox
) -> None:
    """A post that fails for now raises; the next flush posts it again, before later items."""
    apply(view, note(1), note(2), note(3))
    platform.failures["post"] = [None, DeliveryError("timeout", permanent=False)]
    with pytest.raises(DeliveryError):
        await outbox.flush()
    assert [c[1] for c in platform.take()] == ["event:1", "event:2"]
    apply(view, note(4))
    assert await outbox.flush() is None
    assert [c[1] for c in platform.take()] == ["event:2", "event:3", "event:4"]
    assert [outbox.ref_of(f"event:{i}") for i in range(1, 5)] == ["m0", "m1", "m2", "m3"]


async def test_permanently_failed_post_is_dropped(
    platform: Platform, view: SessionView, outbox: Outbox, clock: Clock
) -> None:
    """A post refused for good is dropped: later items go out; it is never edited or reposted."""
    apply(view, user(2), turn(3, 2), chunk(4, "a"), note(5))
    platform.failures["post"] = [None, DeliveryError("too long", permanent=True)]
    assert await outbox.flush() is None
    assert [c[1] for c in platform.of("post")] == ["user:2", "msg:m:0", "event:5"]
    assert outbox.ref_of("msg:m:0") is None
    apply(view, chunk(6, "b"))
    clock.now = 10.0
    assert await outbox.flush() is None
    assert platform.of("update") == []
    assert len(platform.of("post")) == 3


async def test_failed_edit_is_retried(
    platform: Platform, view: SessionView, outbox: Outbox, clock: Clock
) -> None:
    """An edit that fails for now raises; the next flush sends the latest content."""
    apply(view, user(2), turn(3, 2), chunk(4, "a"))
    await outbox.flush()
    apply(view, chunk(5, "b"))
    platform.failures["update"] = [DeliveryError("rate limited", permanent=False)]
    clock.now = 1.0
    with pytest.raises(DeliveryError):
        await outbox.flush()
    apply(view, chunk(6, "c"))
    assert await outbox.flush() is None
    assert [c[2]["text"] for c in platform.of("update")] == ["ab", "abc"]
    assert platform.marks["m1"].through == 6


async def test_permanently_failed_edit_is_dropped(
    platform: Platform, view: SessionView, outbox: Outbox, clock: Clock
) -> None:
    """An edit the platform will never take is given up: the item is not edited again."""
    apply(view, user(2), turn(3, 2), chunk(4, "a"))
    await outbox.flush()
    apply(view, chunk(5, "b"))
    platform.failures["update"] = [DeliveryError("message deleted", permanent=True)]
    clock.now = 1.0
    assert await outbox.flush() is None
    apply(view, chunk(6, "c"))
    clock.now = 10.0
    assert await outbox.flush() is None
    assert [c[2]["text"] for c in platform.of("update")] == ["ab"]


# --- resuming ----------------------------------------------------------------------------

async def test_bound_outbox_posts_nothing_twice(
    platform: Platform, view: SessionView, outbox: Outbox, clock: Clock
) -> None:
    """An outbox bound to the thread's marks and fed the same events posts only what is new."""
    events = [note(1), user(2), turn(3, 2), chunk(4, "a"), message(5, "a"), completed(6)]
    apply(view, *events)
    await outbox.flush()
    again = SessionView("s", lambda event: None)
    restarted = Outbox(platform, again, "e1", edit_interval=1.0, clock=clock)
    point = restarted.bind(await platform.read_marks())
    assert (point.after_seq, point.posted_through) == (6, 6)
    platform.take()
    apply(again, *events)
    clock.now = 10.0
    assert await restarted.flush() is None
    assert [c[0] for c in platform.take()] == ["react", "react"]  # reactions are re-set
    apply(again, note(7))
    await restarted.flush()
    assert [(c[0], c[1]) for c in platform.take()] == [("post", "event:7")]
    assert restarted.ref_of("user:2") == "m1"


async def test_dropped_item_is_not_posted_after_a_restart(
    platform: Platform, view: SessionView, outbox: Outbox, clock: Clock
) -> None:
    """An item dropped before the thread's posted-through seq is not posted on replay."""
    apply(view, note(1), note(2), note(3))
    platform.failures["post"] = [None, DeliveryError("refused", permanent=True)]
    await outbox.flush()
    again = SessionView("s", lambda event: None)
    restarted = Outbox(platform, again, "e1", edit_interval=1.0, clock=clock)
    restarted.bind(await platform.read_marks())
    platform.take()
    apply(again, note(1), note(2), note(3))
    assert await restarted.flush() is None
    assert platform.take() == []
    assert restarted.ref_of("event:2") is None
