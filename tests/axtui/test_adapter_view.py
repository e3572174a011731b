"""SessionView: a session's events folded into chat items and reactions, with no I/O."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

from axtui.adapters.view import DONE, FAILED, SUSPENDED, WORKING, SessionView
from server.events import Event, parse_event

AGENT = {"kind": "agent", "name": "echo"}
HUB = {"kind": "hub", "name": "hub"}
ADA = {"kind": "client", "name": "ada", "client": "tui"}
BOB = {"kind": "client", "name": "Bob", "client": "slack", "principal": "slackbot"}


class Log:
    """Makes wire events with dense seqs."""

    def __init__(self) -> None:
        self.seqs = itertools.count(1)

    def __call__(self, type_: str, data: dict[str, Any], source: dict[str, Any] = AGENT,
                 turn: str | None = "t1", **extra: Any) -> dict[str, Any]:
        seq = next(self.seqs)
        event = {"seq": seq, "ts": seq * 1000, "type": type_, "source": source, "data": data,
                 **extra}
        if turn is not None:
            event["turnId"] = turn
        return event


def no_refs(event: dict[str, Any]) -> str | None:
    """An adapter that published nothing itself."""
    return None


def view_of(events: Iterable[Event | dict[str, Any]], own_ref: Any = no_refs,
            max_chars: int = 3500) -> SessionView:
    """A view with ``events`` applied."""
    view = SessionView("s", own_ref, max_chars)
    for event in events:
        view.apply(event)
    return view


def a_turn(log: Log) -> list[dict[str, Any]]:
    """A message from ada, then a turn: a tool call and its update, a plan, two chunks and
    the whole message, and the end of the turn."""
    return [
        log("session.created", {"title": "t"}, HUB, None),
        log("user.message", {"text": "hi"}, ADA, None),
        log("turn.started", {"turnId": "t1", "triggerSeq": 2}, HUB, None),
        log("tool.call", {"toolCallId": "c1", "title": "Read a", "kind": "read",
                          "status": "pending"}),
        log("tool.update", {"toolCallId": "c1", "status": "completed"}),
        log("plan", {"entries": [{"content": "look", "priority": "high",
                                  "status": "completed"}]}),
        log("agent.message.chunk", {"messageId": "m", "text": "Hel"}),
        log("agent.message.chunk", {"messageId": "m", "text": "lo"}),
        log("agent.message", {"messageId": "m", "text": "Hello"}),
        log("turn.completed", {"turnId": "t1", "stopReason": "end_turn"}, HUB, None),
    ]


def test_a_turn_becomes_a_user_item_a_status_block_and_the_agent_message() -> None:
    """A message from another client, the turn's tools and plan, and the agent's answer are
    one item each, in order, all done once the turn ends."""
    view = view_of(a_turn(Log()))
    assert view.take_new() == ["user:2", "status:4", "msg:m:0"]
    user, status, message = view.items.values()
    assert (user.kind, user.body) == ("user", {"text": "hi", "name": "ada", "client": "tui"})
    assert status.body == {"tools": [{"id": "c1", "title": "Read a", "kind": "read",
                                      "status": "completed"}],
                           "plan": [{"content": "look", "status": "completed"}]}
    assert message.body == {"text": "Hello", "agent": "echo"}
    assert all(item.done for item in view.items.values())


def test_reactions_follow_the_turn_on_the_message_that_started_it() -> None:
    """The trigger gets working while the turn runs, then done; its own message (a ref) is
    reacted on when the adapter published it."""
    log = Log()
    events = a_turn(log)
    view = view_of(events[:3], own_ref=lambda e: "ts-1" if e["seq"] == 2 else None)
    assert view.take_reactions() == {(("ref", "ts-1"), WORKING): True}
    assert view.take_new() == []  # the user's own message is in the thread already
    for event in events[3:]:
        view.apply(event)
    assert view.take_reactions() == {(("ref", "ts-1"), WORKING): False,
                                     (("ref", "ts-1"), DONE): True}


def test_a_failed_turn_adds_a_failure_and_reacts_failed() -> None:
    """turn.failed adds a failure item with the reason and message, and marks the trigger."""
    log = Log()
    view = view_of([*a_turn(log)[:3],
                    log("turn.failed", {"turnId": "t1", "reason": "crashed",
                                        "error": {"message": "exit code 3"}}, HUB, None)])
    failure = view.items["fail:t1"]
    assert (failure.kind, failure.body) == ("failure", {"reason": "crashed",
                                                        "message": "exit code 3"})
    reactions = view.take_reactions()
    assert reactions[(("item", "user:2"), FAILED)] is True
    assert reactions[(("item", "user:2"), WORKING)] is False


def test_a_suspended_agent_is_shown_on_the_last_turn_until_the_next_one() -> None:
    """agent.status suspended reacts on the last turn's trigger; the next turn clears it."""
    log = Log()
    view = view_of([*a_turn(log), log("agent.status", {"state": "suspended"}, HUB, None)])
    view.take_reactions()
    view.apply(log("user.message", {"text": "again"}, ADA, None))
    view.apply(log("turn.started", {"turnId": "t2", "triggerSeq": 12}, HUB, None))
    reactions = view.take_reactions()
    assert reactions[(("item", "user:2"), SUSPENDED)] is False
    assert reactions[(("item", "user:12"), WORKING)] is True


def test_a_long_message_continues_in_new_items_and_earlier_parts_are_done() -> None:
    """Past max_chars an agent message goes on in a new item; each part before the last is
    done as soon as the next one starts."""
    log = Log()
    view = view_of(a_turn(log)[:3], max_chars=10)
    view.take_new()
    view.apply(log("agent.message.chunk", {"messageId": "m", "text": "aaaa bbbb "}))
    view.apply(log("agent.message.chunk", {"messageId": "m", "text": "cccc"}))
    assert view.take_new() == ["msg:m:0", "msg:m:1"]
    first, second = view.items["msg:m:0"], view.items["msg:m:1"]
    assert (first.body["text"], first.done) == ("aaaa bbbb ", True)
    assert (second.body["text"], second.done) == ("cccc", False)
    assert second.first == first.created  # both are built from the message's first chunk


def test_a_permission_answered_elsewhere_shows_who_answered() -> None:
    """A permission card gets its options; an answer from another client (a person on
    whose behalf a bridge published) closes it with their name and the option's name."""
    log = Log()
    view = view_of([
        *a_turn(log)[:3],
        log("permission.request", {"requestId": "r1",
                                   "toolCall": {"title": "Write a", "kind": "edit"},
                                   "options": [{"optionId": "ok", "name": "Allow",
                                                "kind": "allow_once"},
                                               {"optionId": "no", "name": "Reject",
                                                "kind": "reject_once"}]}),
        log("permission.response", {"requestId": "r1", "optionId": "ok"}, BOB, None),
        log("permission.response", {"requestId": "r1", "outcome": "cancelled"}, HUB, None),
    ])
    card = view.items["perm:r1"]
    assert card.done and card.body["title"] == "Write a" and card.body["kind"] == "edit"
    assert [o["name"] for o in card.body["options"]] == ["Allow", "Reject"]
    assert card.body["answer"] == {"name": "Bob", "client": "slack", "optionId": "ok",
                                   "option": "Allow"}


def test_a_cancelled_permission_says_cancelled() -> None:
    """A cancelled request closes its card with no option, answered by the hub."""
    log = Log()
    view = view_of([
        log("permission.request", {"requestId": "r1", "toolCall": {}, "options": []}),
        log("permission.response", {"requestId": "r1", "outcome": "cancelled"}, HUB, None),
    ])
    card = view.items["perm:r1"]
    assert card.body["kind"] == "other"
    assert card.body["answer"] == {"name": "hub", "client": "hub", "optionId": None,
                                   "option": "cancelled"}


def test_application_events_are_notices_and_hub_bookkeeping_is_not() -> None:
    """An application's event is a notice with its data; unknown reserved types and
    state changes are not shown."""
    log = Log()
    view = view_of([
        log("ci.build_failed", {"job": "lint"}, {"kind": "client", "name": "ci",
                                                 "client": "cli"}, None),
        log("hub.something_new", {}, HUB, None),
        log("state.changed", {"statements": [{"sql": "INSERT"}], "changes": 1}, AGENT),
    ])
    assert view.take_new() == ["event:1"]
    assert view.items["event:1"].body == {"type": "ci.build_failed", "name": "ci",
                                          "client": "cli", "data": {"job": "lint"}}


def test_an_event_is_applied_once() -> None:
    """An event at or below the last seq applied changes nothing (a resumed feed)."""
    log = Log()
    events = a_turn(log)
    view = view_of(events)
    view.take_new()
    view.take_changed()
    view.take_reactions()
    for event in events:
        view.apply(event)
    assert (view.take_new(), view.take_changed(), view.take_reactions()) == ([], set(), {})


def test_replay_yields_identical_items() -> None:
    """The same events applied again, to a new view, one by one or parsed, give the same
    items (what lets an adapter restart and carry on)."""
    log = Log()
    events = [*a_turn(log),
              log("permission.request", {"requestId": "r", "toolCall": {"title": "x"},
                                         "options": [{"optionId": "y", "name": "Yes",
                                                      "kind": "allow_once"}]}, turn="t2"),
              log("ci.tick", {"n": 1}, ADA, None)]
    first = view_of(events)
    again = view_of([parse_event(e) for e in events])
    assert again.items == first.items
    assert list(again.items) == list(first.items)
