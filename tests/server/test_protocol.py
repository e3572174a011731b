"""The protocol core, with no I/O: ids, types, params, frames."""

from __future__ import annotations

import orjson
import pytest

from server import protocol
from server.protocol import Forbidden, InvalidParams, Params, ParseError


@pytest.mark.parametrize("sid", ["a", "triage-42", "A.b_c-9", "x" * 128])
def test_valid_session_ids(sid: str) -> None:
    """Ids matching the contract's pattern are accepted."""
    assert protocol.check_session_id(sid) == sid


@pytest.mark.parametrize("sid", ["", ".", "..", "../x", "a/b", "-a", "x" * 129, "a\x00b", 5])
def test_invalid_session_ids(sid: object) -> None:
    """Path tricks, empty, too long and non-strings are invalid params."""
    with pytest.raises(InvalidParams):
        protocol.check_session_id(sid)


def test_generated_ids_are_valid_and_unique() -> None:
    """The hub's session ids match the pattern; event ids are distinct UUIDv7s."""
    assert protocol.SESSION_ID_RE.fullmatch(protocol.new_session_id())
    ids = {protocol.new_event_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(i[14] == "7" for i in ids)


@pytest.mark.parametrize("event_type", ["agent.message", "turn.started", "tool.call",
                                        "session.created", "hub.x", "plan",
                                        "permission.request", "state.changed"])
def test_reserved_types_forbidden_for_clients(event_type: str) -> None:
    """Clients may not publish the reserved types; the hub may."""
    with pytest.raises(Forbidden):
        protocol.check_event_type(event_type, client=True)
    assert protocol.check_event_type(event_type, client=False) == event_type


@pytest.mark.parametrize("event_type", ["", "A", "a..b", "a.", "1a", "a-b", "a" * 65, None])
def test_malformed_types(event_type: object) -> None:
    """Types must match the contract's pattern and length."""
    with pytest.raises(InvalidParams):
        protocol.check_event_type(event_type, client=True)


def test_params_typed_access() -> None:
    """Params checks types and bounds and applies defaults."""
    p = Params({"a": 5, "s": "x", "o": {}, "b": True})
    assert p.integer("a", lo=1, hi=10) == 5
    assert p.integer("missing", 7) == 7
    assert p.string("s") == "x" and p.mapping("o") == {}
    for bad in (lambda: p.integer("b"), lambda: p.integer("a", hi=4), lambda: p.string("a"),
                lambda: p.string("missing"), lambda: Params({"n": 2**64}).integer("n")):
        with pytest.raises(InvalidParams):
            bad()
    with pytest.raises(InvalidParams):
        Params([1, 2])


def test_events_frame_splices_encoded_events() -> None:
    """A session/events frame is valid JSON holding the events as encoded."""
    raw = protocol.encode_event(seq=1, event_id="e", ts=2, event_type="note",
                                source=b'{"kind":"hub","name":"hub"}', data=b'{"x":1}')
    frame = orjson.loads(protocol.events_frame("s", [raw, raw]))
    assert frame["params"]["sessionId"] == "s"
    assert frame["params"]["events"][0] == orjson.loads(raw)


def test_loads_reports_parse_errors() -> None:
    """Invalid JSON is a ParseError with a clear message."""
    with pytest.raises(ParseError):
        protocol.loads("{nope")
