"""The event vocabulary: shapes parsed from the wire, lenient defaults, the JSON each shape
writes, type patterns and filters, and who an event comes from."""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson
import pytest

from server.events import (
    AgentMessage,
    AgentMessageChunk,
    AgentStatus,
    AgentThought,
    AgentThoughtChunk,
    Custom,
    EventData,
    PermissionOption,
    PermissionRequest,
    PermissionResponse,
    Plan,
    PlanEntry,
    SessionCreated,
    SessionForked,
    StateChanged,
    Statement,
    ToolCall,
    TurnCompleted,
    TurnFailed,
    TurnStarted,
    UserMessage,
    as_event,
    loads_event,
    parse_data,
    parse_event,
)
from server.sources import UNKNOWN_SOURCE, Source
from server.typepattern import TypeFilter, TypePattern

# (type, data as the hub writes it, the shape it parses to)
WIRE: list[tuple[str, dict[str, Any], EventData]] = [
    ("session.created", {"title": "CSV export", "agent": "demo", "metadata": {"ticket": 42}},
     SessionCreated("CSV export", "demo", {"ticket": 42})),
    ("session.created", {"title": "", "agent": None, "metadata": {}}, SessionCreated()),
    ("session.forked", {"fromSessionId": "a", "atSeq": 3}, SessionForked("a", 3)),
    ("session.forked", {"fromSessionId": "a", "atSeq": 3, "agent": "other"},
     SessionForked("a", 3, "other")),
    ("user.message", {"text": "hi"}, UserMessage("hi")),
    ("agent.status", {"state": "ready", "resumeMode": "load", "pid": 4242},
     AgentStatus("ready", "load", 4242)),
    ("agent.status", {"state": "failed", "reason": "no such command"},
     AgentStatus("failed", reason="no such command")),
    ("turn.started", {"turnId": "t1", "triggerSeq": 2}, TurnStarted("t1", 2)),
    ("turn.started", {"turnId": "t2", "triggerSeq": 2, "retryOf": "t1"},
     TurnStarted("t2", 2, "t1")),
    ("turn.completed", {"turnId": "t1", "stopReason": "cancelled"},
     TurnCompleted("t1", "cancelled")),
    ("turn.failed", {"turnId": "t1", "reason": "crashed", "error": {"message": "exit 3"}},
     TurnFailed("t1", "crashed", "exit 3")),
    ("agent.message.chunk", {"messageId": "m", "text": "Hel"}, AgentMessageChunk("m", "Hel")),
    ("agent.message", {"messageId": "m", "text": "Hello"}, AgentMessage("m", "Hello")),
    ("agent.thought.chunk", {"messageId": "n", "text": "hm"}, AgentThoughtChunk("n", "hm")),
    ("agent.thought", {"messageId": "n", "text": "hmm"}, AgentThought("n", "hmm")),
    ("tool.call", {"toolCallId": "c", "title": "Run", "kind": "execute", "status": "pending",
                   "input": None, "content": [{"type": "content"}]},
     ToolCall("c", "Run", "execute", "pending", None, True, [{"type": "content"}])),
    ("tool.update", {"toolCallId": "c", "status": "completed"},
     ToolCall("c", status="completed")),
    ("plan", {"entries": [{"content": "look", "priority": "high", "status": "in_progress"}]},
     Plan((PlanEntry("look", "high", "in_progress"),))),
    ("permission.request", {"requestId": "r", "toolCall": {"title": "Write a", "kind": "edit"},
                            "options": [{"optionId": "ok", "name": "Allow",
                                         "kind": "allow_once"}]},
     PermissionRequest("r", {"title": "Write a", "kind": "edit"},
                       (PermissionOption("ok", "Allow", "allow_once"),))),
    ("permission.response", {"requestId": "r", "optionId": "ok"}, PermissionResponse("r", "ok")),
    ("permission.response", {"requestId": "r", "outcome": "cancelled"}, PermissionResponse("r")),
    ("state.changed", {"statements": [{"sql": "CREATE TABLE t (x)"},
                                      {"sql": "INSERT INTO t VALUES (?)", "params": [1]}],
                       "changes": 1},
     StateChanged((Statement("CREATE TABLE t (x)"), Statement("INSERT INTO t VALUES (?)", [1])),
                  1)),
    ("ci.build_failed", {"job": "lint", "attempt": 2}, Custom({"job": "lint", "attempt": 2})),
]


@pytest.mark.parametrize(("event_type", "data", "shape"), WIRE,
                         ids=[f"{t}-{i}" for i, (t, _, _) in enumerate(WIRE)])
def test_each_shape_parses_from_the_wire(event_type: str, data: dict[str, Any],
                                         shape: EventData) -> None:
    """The data of every reserved type (and an application's) parses to its shape."""
    assert parse_data(event_type, data) == shape
    assert event_type in type(shape).TYPES or isinstance(shape, Custom)


@pytest.mark.parametrize(("event_type", "data", "shape"), WIRE,
                         ids=[f"{t}-{i}" for i, (t, _, _) in enumerate(WIRE)])
def test_to_json_is_the_json_the_hub_writes(event_type: str, data: dict[str, Any],
                                            shape: EventData) -> None:
    """A shape encodes to exactly the stored JSON it was read from (keys in the same order)."""
    assert orjson.dumps(shape.to_json()) == orjson.dumps(data)
    assert parse_data(event_type, shape.to_json()) == shape


def test_missing_fields_read_as_their_defaults() -> None:
    """Data with nothing in it (or no data at all) reads as the shape's defaults."""
    assert parse_data("turn.completed", {}) == TurnCompleted("", "end_turn")
    assert parse_data("turn.failed", None) == TurnFailed("", "error", "")
    assert parse_data("plan", {}) == Plan(())
    assert parse_data("tool.update", {"toolCallId": "c"}) == ToolCall("c")
    assert not ToolCall("c").has_input
    response = parse_data("permission.response", {"requestId": "r"})
    assert isinstance(response, PermissionResponse) and response.cancelled


def test_mistyped_fields_are_coerced_or_dropped() -> None:
    """Scalars of the wrong type read as text, objects where text is expected and
    non-integers where a number is expected read as defaults, bad list items are skipped."""
    assert parse_data("user.message", {"text": 5}) == UserMessage("5")
    assert parse_data("user.message", {"text": {"a": 1}}) == UserMessage("")
    assert parse_data("session.forked", {"fromSessionId": "a", "atSeq": "3"}) == \
        SessionForked("a", 0)
    assert parse_data("agent.status", {"state": "ready", "pid": True}) == AgentStatus("ready")
    assert parse_data("plan", {"entries": ["x", {"content": "y"}]}) == \
        Plan((PlanEntry("y", "", "pending"),))
    request = parse_data("permission.request", {"toolCall": "x", "options": [1, {}]})
    assert request == PermissionRequest("", {}, (PermissionOption(),))
    assert parse_data("tool.call", {"content": "text"}) == ToolCall(content=None)


def test_an_agent_status_without_a_reason_takes_the_error_message() -> None:
    """An older hub's ``error.message`` reads as the reason."""
    data = parse_data("agent.status", {"state": "failed", "error": {"message": "boom"}})
    assert data == AgentStatus("failed", reason="boom")


def test_an_event_parses_with_its_envelope_and_keeps_the_raw_object() -> None:
    """seq, ts, type, source, turn id, id, idempotency key and state are read; ``raw`` is the
    object itself and ``fields`` its data as stored."""
    obj = {"seq": 5, "ts": 1700, "type": "user.message", "id": "e5", "turnId": "t1",
           "idempotencyKey": "slack:Ev1", "data": {"text": "hi", "slack": {"ts": "1.2"}},
           "source": {"kind": "client", "name": "Bob", "client": "slack",
                      "principal": "slackbot"},
           "state": [{"sql": "INSERT INTO t VALUES (1)"}]}
    event = parse_event(obj)
    assert (event.seq, event.ts, event.type, event.id, event.turn_id, event.idempotency_key) \
        == (5, 1700, "user.message", "e5", "t1", "slack:Ev1")
    assert event.source == Source("client", "Bob", "slack", "slackbot")
    assert event.data == UserMessage("hi")
    assert event.state == (Statement("INSERT INTO t VALUES (1)"),)
    assert event.raw is obj and event.fields == obj["data"]
    assert loads_event(orjson.dumps(obj)) == event
    assert as_event(event) is event and as_event(obj) == event


def test_a_broken_envelope_reads_as_defaults() -> None:
    """No seq, no source, a source that is not an object: zeros and an unknown author."""
    event = parse_event({"type": "note", "source": "x"})
    assert (event.seq, event.ts, event.turn_id, event.state) == (0, 0, None, ())
    assert event.source == UNKNOWN_SOURCE and event.data == Custom({})
    assert loads_event(b"[1, 2]").type == ""


def test_source_labels() -> None:
    """A client reads ``name via client`` (or with another joiner), an agent or the hub by
    name; ``clients_only`` names an agent alone even when it has a client kind."""
    alice = Source("client", "alice", "slack")
    agent = Source("agent", "demo", "unknown")
    assert alice.label() == "alice via slack" and alice.label(via="/") == "alice/slack"
    assert alice.label(via="/", clients_only=True) == "alice/slack"
    assert Source("agent", "demo").label() == "demo" and Source("hub", "hub").label() == "hub"
    assert agent.label() == "demo via unknown" and agent.label(clients_only=True) == "demo"
    assert Source("client", "ci").label(via="/", clients_only=True) == "ci"
    assert (alice.via, Source("agent", "demo").via) == ("slack", "agent")


def test_source_from_json_fills_the_name_and_drops_empty_fields() -> None:
    """A source without a name is named by its kind; empty client and principal are None;
    to_json writes only what is set."""
    assert Source.from_json({"kind": "hub"}) == Source("hub", "hub")
    assert Source.from_json({"kind": "client", "name": "a", "client": "", "principal": 3}) \
        == Source("client", "a")
    bob = Source("client", "Bob", "slack", "slackbot")
    assert orjson.loads(bob.to_json()) == {"kind": "client", "name": "Bob", "client": "slack",
                                           "principal": "slackbot"}
    assert Source.from_json(orjson.loads(bob.to_json())) == bob
    assert orjson.loads(Source("agent", "demo").to_json()) == {"kind": "agent", "name": "demo"}


def test_star_matches_any_run_and_nothing_else_is_special() -> None:
    """``*`` matches any run of characters (empty, across dots); ``?``, ``[`` and ``.`` are
    literal; a pattern matches the whole type."""
    assert TypePattern("agent.*").matches("agent.message.chunk")
    assert TypePattern("agent.*").matches("agent.")
    assert TypePattern("*.chunk").matches("agent.thought.chunk")
    assert TypePattern("a*b*c").matches("abc") and TypePattern("a*b*c").matches("a-b-b-c")
    assert not TypePattern("agent.*").matches("user.message")
    assert not TypePattern("agent").matches("agent.message")  # the whole type
    assert not TypePattern("user.message").matches("userxmessage")  # . is a dot
    assert TypePattern("ci.build?").matches("ci.build?")
    assert not TypePattern("ci.build?").matches("ci.builds")
    assert TypePattern("ci.[x]").matches("ci.[x]") and not TypePattern("ci.[x]").matches("ci.x")


@pytest.mark.parametrize(("pattern", "matching", "other"), [
    ("agent.*", "agent.message", "user.message"),
    ("ci.build?", "ci.build?", "ci.builds"),
    ("ci.[x]*", "ci.[x]y", "ci.x"),
    ("*", "anything", None),
])
def test_sqlite_glob_matches_what_the_pattern_matches(pattern: str, matching: str,
                                                      other: str | None) -> None:
    """The pattern as an SQLite GLOB, with ``?`` and ``[`` escaped, agrees with the pattern."""
    glob = TypePattern(pattern).sqlite_glob
    db = sqlite3.connect(":memory:")
    try:
        for event_type in (matching, other):
            if event_type is None:
                continue
            [(globbed,)] = db.execute("SELECT ? GLOB ?", (event_type, glob)).fetchall()
            assert bool(globbed) == TypePattern(pattern).matches(event_type) \
                == (event_type == matching)
    finally:
        db.close()
    assert TypePattern("a?[b]*").sqlite_glob == "a[?][[]b]*"


def test_type_filters() -> None:
    """A filter matches a type that one of its patterns matches; an empty one (or None)
    matches every type and is false."""
    wanted = TypeFilter.of(["user.*", "plan"])
    assert wanted and wanted.matches("user.message") and wanted.matches("plan")
    assert not wanted.matches("planned")
    for everything in (TypeFilter.of(None), TypeFilter.of([]), TypeFilter()):
        assert not everything and everything.matches("anything.at.all")


def test_helpers_of_the_shapes() -> None:
    """Tool call texts, permission titles and option names, and a response's outcome."""
    call = ToolCall.from_json({"toolCallId": "c", "content": [
        {"type": "content", "content": {"type": "text", "text": "3 passed"}},
        {"type": "diff", "path": "a"}, {"type": "content", "content": {"text": 5}}]})
    assert call.texts == ["3 passed"]
    request = PermissionRequest.from_json({
        "requestId": "r", "toolCall": {"title": "Write a", "kind": "edit"},
        "options": [{"optionId": "ok", "name": "Allow"}, {"optionId": "no"}]})
    assert (request.title, request.tool_kind) == ("Write a", "edit")
    assert [request.option_name(o) for o in ("ok", "no", "zz", None)] == ["Allow", "no", "zz", ""]
    assert PermissionResponse("r").cancelled and not PermissionResponse("r", "ok").cancelled
