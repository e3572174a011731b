"""The platform-neutral core under the Slack adapter: items, splitting, the outbox and
its resume cursor, driven by hand-made events and an in-memory thread."""

from __future__ import annotations

import json
from typing import Any

from axtui.adapters.outbox import Mark, Outbox, Posted, resume_point
from axtui.adapters.threads import thread_session_id
from axtui.adapters.view import Item, SessionView, split_text


class Thread:
    """A chat thread in memory: what was posted, edited and reacted."""

    def __init__(self) -> None:
        self.messages: dict[str, tuple[Any, Mark]] = {}
        self.posts = 0
        self.edits = 0
        self.reactions: set[tuple[str, str]] = set()

    def render(self, item: Item) -> tuple[Any, str]:
        content = json.dumps(item.body, sort_keys=True)
        return content, str(hash(content))

    async def post(self, content: Any, mark: Mark) -> str:
        self.posts += 1
        ref = f"m{len(self.messages)}"
        self.messages[ref] = (content, mark)
        return ref

    async def update(self, ref: str, content: Any, mark: Mark) -> None:
        self.edits += 1
        self.messages[ref] = (content, mark)

    async def react(self, ref: str, reaction: str, on: bool) -> None:
        (self.reactions.add if on else self.reactions.discard)((ref, reaction))

    async def read_marks(self) -> list[Posted]:
        return [Posted(ref, mark) for ref, (_, mark) in self.messages.items()]


def chunks(texts: list[str], start: int = 3) -> list[dict[str, Any]]:
    """A turn streaming ``texts`` as one agent message, then the whole message."""
    events: list[dict[str, Any]] = [
        {"seq": 1, "type": "session.created", "data": {}},
        {"seq": 2, "type": "user.message", "data": {"text": "hi"},
         "source": {"kind": "client", "name": "ada", "client": "tui"}},
        {"seq": start, "type": "turn.started", "data": {"turnId": "t1", "triggerSeq": 2}}]
    for i, text in enumerate(texts):
        events.append({"seq": start + 1 + i, "type": "agent.message.chunk", "turnId": "t1",
                       "data": {"messageId": "m", "text": text},
                       "source": {"kind": "agent", "name": "echo"}})
    seq = start + 1 + len(texts)
    events.append({"seq": seq, "type": "agent.message", "turnId": "t1",
                   "data": {"messageId": "m", "text": "".join(texts)},
                   "source": {"kind": "agent", "name": "echo"}})
    events.append({"seq": seq + 1, "type": "turn.completed",
                   "data": {"turnId": "t1", "stopReason": "end_turn"}})
    return events


def agent_texts(thread: Thread) -> list[str]:
    """The agent message parts in the thread, in key order."""
    parts = sorted((m.key, json.loads(c)["text"]) for c, m in thread.messages.values()
                   if m.key.startswith("msg:"))
    return [text for _, text in parts]


def test_split_text_keeps_earlier_parts_as_text_grows() -> None:
    """Parts are at most the limit, rejoin to the text, and never change as text grows."""
    text = " ".join(f"word{i}" for i in range(400))
    earlier: list[str] = []
    for end in range(0, len(text), 37):
        parts = split_text(text[:end], 100)
        assert "".join(parts) == text[:end]
        assert all(len(p) <= 100 for p in parts)
        assert parts[:len(earlier) - 1] == earlier[:-1]
        earlier = parts


def test_thread_session_ids_are_valid_and_stable() -> None:
    """A thread's session id is readable when it can be, hashed when it cannot."""
    assert thread_session_id("slack", "T1", "C2", "1712.0001") == "slack-T1-C2-1712.0001"
    odd = thread_session_id("chat", "a team", "#room", "x" * 200)
    assert odd == thread_session_id("chat", "a team", "#room", "x" * 200)
    assert odd.startswith("chat-") and len(odd) <= 128 and " " not in odd


def test_resume_point_goes_back_to_unfinished_messages() -> None:
    """Resume after the highest posted-through seq, or before an unfinished message."""
    def mark(first: int, through: int, done: bool) -> Posted:
        return Posted("r", Mark("s", "e", f"k{first}", first, through, done, "d"))

    assert resume_point([]).after_seq == 0
    point = resume_point([mark(2, 5, True), mark(4, 9, False), mark(7, 8, True)])
    assert (point.after_seq, point.posted_through) == (3, 9)
    assert resume_point([mark(2, 5, True), mark(6, 9, True)]).after_seq == 9


async def test_edits_are_throttled_and_coalesced() -> None:
    """Many chunks between flushes become one post and one edit per interval."""
    now = [0.0]
    thread = Thread()
    view = SessionView("s", lambda e: None)
    outbox = Outbox(thread, view, "e", edit_interval=1.0, clock=lambda: now[0])
    events = chunks([f"part {i} " for i in range(10)])
    for event in events[:4]:
        view.apply(event)
    assert await outbox.flush() is None  # posted, nothing else waits
    for event in events[4:9]:
        view.apply(event)
    assert await outbox.flush() == 1.0  # the edit waits a second after the post
    now[0] = 1.0
    await outbox.flush()
    assert (thread.posts, thread.edits) == (2, 1)  # the TUI message and the reply; one edit
    assert agent_texts(thread) == ["".join(f"part {i} " for i in range(6))]


async def test_restart_mid_stream_continues_in_place() -> None:
    """Stopped mid-stream (with a continuation message due), a new outbox on the same
    thread edits the posted parts, posts the missing ones, and repeats nothing."""
    words = [f"w{i:03d} " for i in range(60)]  # 300 characters: three parts of <= 120
    thread = Thread()
    view = SessionView("s", lambda e: None, max_chars=120)
    outbox = Outbox(thread, view, "e", edit_interval=0)
    events = chunks(words)
    for event in events[:30]:  # part one and the start of part two
        view.apply(event)
        await outbox.flush()
    posts = thread.posts

    again = SessionView("s", lambda e: None, max_chars=120)
    restarted = Outbox(thread, again, "e", edit_interval=0)
    point = restarted.bind(await thread.read_marks())
    assert point.after_seq == 3  # the message's first chunk is seq 4
    # As the bridge does: back to the latest turn's trigger (seq 2), for its reactions.
    for event in events[1:]:
        again.apply(event)
        await restarted.flush()
    assert agent_texts(thread) == split_text("".join(words), 120)
    assert len(agent_texts(thread)) == 3
    assert thread.posts == posts + 1  # only the third part is new
    keys = [m.key for _, m in thread.messages.values()]
    assert len(keys) == len(set(keys))
    assert all(m.done for _, m in thread.messages.values())
    assert ("m0", "done") in thread.reactions  # the trigger (the TUI message) got "done"
