"""The conversation model: events folded into blocks, without Textual or a hub."""

from __future__ import annotations

import itertools
from typing import Any

from axtui.tui.model import (
    Conversation,
    EventBlock,
    NoticeBlock,
    PermissionBlock,
    PlanBlock,
    StateBlock,
    TextBlock,
    ToolBlock,
)

AGENT = {"kind": "agent", "name": "demo"}
HUB = {"kind": "hub", "name": "hub"}


class Log:
    """Makes events with dense seqs."""

    def __init__(self) -> None:
        self.seqs = itertools.count(1)

    def __call__(self, type_: str, data: dict[str, Any], source: dict[str, Any] = AGENT,
                 turn: str | None = "t1") -> dict[str, Any]:
        seq = next(self.seqs)
        return {"seq": seq, "ts": seq * 1000, "type": type_, "source": source, "data": data,
                "turnId": turn}


def test_chunks_stream_into_one_block_and_the_whole_message_completes_it() -> None:
    """Chunks append to the message with their messageId; agent.message replaces the text."""
    ev, convo = Log(), Conversation()
    convo.apply(ev("agent.message.chunk", {"messageId": "m", "text": "Hel"}))
    convo.apply(ev("agent.message.chunk", {"messageId": "m", "text": "lo"}))
    block = convo.blocks["msg:m"]
    assert isinstance(block, TextBlock) and (block.text, block.complete) == ("Hello", False)
    version = block.version
    convo.apply(ev("agent.message", {"messageId": "m", "text": "Hello!"}))
    assert (block.text, block.complete) == ("Hello!", True) and block.version > version
    assert len(convo) == 1


def test_a_replayed_or_duplicate_event_is_ignored() -> None:
    """Events at or below the last seq applied change nothing."""
    ev, convo = Log(), Conversation()
    first = ev("agent.message.chunk", {"messageId": "m", "text": "a"})
    convo.apply(first)
    convo.apply(first)
    assert convo.blocks["msg:m"].text == "a"  # type: ignore[attr-defined]


def test_tool_updates_merge_into_the_call() -> None:
    """tool.update changes only the fields it carries."""
    ev, convo = Log(), Conversation()
    convo.apply(ev("tool.call", {"toolCallId": "x", "title": "Read", "kind": "read",
                                 "status": "pending", "input": {"path": "a"}}))
    convo.apply(ev("tool.update", {"toolCallId": "x", "status": "completed",
                                   "content": [{"type": "content", "content": {"text": "ok"}}]}))
    block = convo.blocks["tool:x"]
    assert isinstance(block, ToolBlock)
    assert (block.title, block.kind, block.status, block.input) == ("Read", "read",
                                                                    "completed", {"path": "a"})
    assert block.content[0]["content"]["text"] == "ok"


def test_a_turn_has_one_plan_block_updated_in_place() -> None:
    """Each plan event of a turn replaces the entries of the same block."""
    ev, convo = Log(), Conversation()
    convo.apply(ev("plan", {"entries": [{"content": "a", "status": "pending"}]}))
    convo.apply(ev("plan", {"entries": [{"content": "a", "status": "completed"}]}))
    plans = [b for b in convo.blocks.values() if isinstance(b, PlanBlock)]
    assert len(plans) == 1 and plans[0].entries[0].status == "completed"


def test_permission_answers_name_the_option_who_and_where() -> None:
    """A response closes the request with the option's name, the principal and the client;
    a later response changes nothing (the first answer wins)."""
    ev, convo = Log(), Conversation()
    convo.apply(ev("turn.started", {"turnId": "t1"}, HUB))
    convo.apply(ev("permission.request", {
        "requestId": "r", "toolCall": {"title": "Write", "kind": "edit"},
        "options": [{"optionId": "allow", "name": "Allow", "kind": "allow_once"}]}))
    assert [b.request_id for b in convo.open_permissions()] == ["r"]
    convo.apply(ev("permission.response", {"requestId": "r", "optionId": "allow"},
                   {"kind": "client", "name": "alice", "client": "slack"}, None))
    convo.apply(ev("permission.response", {"requestId": "r", "outcome": "cancelled"},
                   {"kind": "client", "name": "bob", "client": "tui"}, None))
    block = convo.blocks["perm:r"]
    assert isinstance(block, PermissionBlock)
    assert (block.answer, block.answered_by, block.answered_via) == ("Allow", "alice", "slack")
    assert convo.open_permissions() == []


def test_a_turn_that_ends_closes_its_open_request_and_failures_are_stated() -> None:
    """turn.failed closes the turn's open permission and adds a failure line."""
    ev, convo = Log(), Conversation()
    convo.apply(ev("turn.started", {"turnId": "t1"}, HUB))
    assert convo.running_turn == "t1"
    convo.apply(ev("permission.request", {"requestId": "r", "toolCall": {}, "options": []}))
    convo.apply(ev("turn.failed", {"turnId": "t1", "reason": "crashed",
                                   "error": {"message": "exit code 3"}}, HUB))
    assert convo.running_turn is None and convo.open_permissions() == []
    failure = list(convo.blocks.values())[-1]
    assert isinstance(failure, NoticeBlock) and failure.failure
    assert failure.text == "turn failed (crashed): exit code 3"


def test_state_changes_and_app_events_get_their_blocks() -> None:
    """state.changed and application types are shown; unknown hub types are not."""
    ev, convo = Log(), Conversation()
    convo.apply(ev("state.changed", {"statements": [{"sql": "INSERT"}], "changes": 1}))
    convo.apply(ev("ci.build_failed", {"job": "lint"},
                   {"kind": "client", "name": "ci", "client": "cli"}, None))
    convo.apply(ev("hub.something_new", {}, HUB, None))
    kinds = [type(b) for b in convo.blocks.values()]
    assert kinds == [StateBlock, EventBlock]
    assert convo.blocks["ev:2"].by == "ci via cli"  # type: ignore[attr-defined]


def test_the_model_keeps_at_most_max_blocks() -> None:
    """Past max_blocks the oldest blocks are dropped and counted."""
    ev, convo = Log(), Conversation(max_blocks=10)
    for n in range(25):
        convo.apply(ev("ci.tick", {"n": n}, {"kind": "client", "name": "ci"}, None))
    assert len(convo) == 10 and convo.dropped == 15
    assert next(iter(convo.blocks.values())).seq == 16


def test_agent_ready_says_how_the_conversation_came_back_in_plain_words() -> None:
    """agent.status ready reads "agent ready (new conversation)", "(conversation resumed)"
    or "(conversation reloaded)", never the protocol's resume mode."""
    ev, convo = Log(), Conversation()
    for mode in ("new", "resume", "load"):
        convo.apply(ev("agent.status", {"state": "ready", "resumeMode": mode}, HUB, None))
    texts = [b.text for b in convo.blocks.values() if isinstance(b, NoticeBlock)]
    assert texts == ["agent ready (new conversation)", "agent ready (conversation resumed)",
                     "agent ready (conversation reloaded)"]
