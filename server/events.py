"""The event vocabulary, with no I/O: every reserved event's ``data`` as a typed shape,
who an event comes from, the agent's states, type patterns, and one parser.

Producers (the registry, the supervisor, :mod:`server.updates`) build a shape and call
its ``to_json``; consumers (the TUI's model, the chat adapters' view, the headless
printer, the supervisor reading the log) call :func:`parse_event` and dispatch on the
class of ``event.data``. Parsing is lenient on purpose: an event in a log was valid when it
was stored, and a client written against an older hub must still show it, so a missing
or mistyped field becomes its default rather than an error.

Adding an event type is one shape here (a class with ``TYPES`` and ``from_json``, listed
in :data:`SHAPES`) plus one handler in each view that shows it (see docs/architecture.md).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

import orjson

from server.sources import Source

Json = dict[str, Any]


# --- states --------------------------------------------------------------------------------

class AgentState(enum.StrEnum):
    """A session's ``agentState``: what its agent is doing now."""

    NONE = "none"
    SUSPENDED = "suspended"
    STARTING = "starting"
    IDLE = "idle"
    RUNNING = "running"
    WAITING = "waiting"
    FAILED = "failed"

    @classmethod
    def parse(cls, text: str) -> AgentState:
        """The state named ``text``; an unknown name (a newer hub's) reads as ``none``."""
        try:
            return cls(text)
        except ValueError:
            return cls.NONE

    @property
    def active(self) -> bool:
        """Whether a process was (or may have been) running: what a restart recovers."""
        return self in (AgentState.STARTING, AgentState.IDLE, AgentState.RUNNING,
                        AgentState.WAITING)


class ProcessState(enum.StrEnum):
    """The ``state`` of an ``agent.status`` event: what happened to the agent's process."""

    STARTING = "starting"
    READY = "ready"
    SUSPENDED = "suspended"
    CRASHED = "crashed"
    EXITED = "exited"
    FAILED = "failed"


class TurnFailure(enum.StrEnum):
    """The ``reason`` of a ``turn.failed`` event."""

    CRASHED = "crashed"
    INTERRUPTED = "interrupted"
    TIMEOUT = "timeout"
    ERROR = "error"


# --- lenient field readers -----------------------------------------------------------------

def _str(value: object, default: str = "") -> str:
    """A string field: strings as they are, other scalars as text, nothing as ``default``."""
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, dict | list):
        return default
    return str(value)


def _opt_str(value: object) -> str | None:
    return None if value is None else _str(value) or None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _dict(value: object) -> Json:
    return dict(value) if isinstance(value, Mapping) else {}


def _dicts(value: object) -> list[Json]:
    return [dict(v) for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def _omit_none(**fields: Any) -> Json:
    return {k: v for k, v in fields.items() if v is not None}


# --- the shapes of data --------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class EventData:
    """Base of every event's data; ``TYPES`` are the event types a shape is the data of."""

    TYPES: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_json(cls, data: Json) -> Self:
        """Read the data of a stored event (lenient: see the module docstring); each shape
        with fields reads them itself."""
        return cls()

    def to_json(self) -> Json:
        """The ``data`` object to store."""
        return {_camel(f.name): getattr(self, f.name) for f in dataclasses.fields(self)}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w.title() for w in rest)


@dataclass(frozen=True, slots=True)
class SessionCreated(EventData):
    """``session.created``: always seq 1."""

    TYPES: ClassVar[tuple[str, ...]] = ("session.created",)
    title: str = ""
    agent: str | None = None
    metadata: Json = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Json) -> Self:
        return cls(_str(data.get("title")), _opt_str(data.get("agent")),
                   _dict(data.get("metadata")))


@dataclass(frozen=True, slots=True)
class SessionForked(EventData):
    """``session.forked``: follows the copied events; ``agent`` when the fork has another."""

    TYPES: ClassVar[tuple[str, ...]] = ("session.forked",)
    from_session_id: str = ""
    at_seq: int = 0
    agent: str | None = None

    @classmethod
    def from_json(cls, data: Json) -> Self:
        return cls(_str(data.get("fromSessionId")), _int(data.get("atSeq")) or 0,
                   _opt_str(data.get("agent")))

    def to_json(self) -> Json:
        return _omit_none(fromSessionId=self.from_session_id, atSeq=self.at_seq,
                          agent=self.agent)


@dataclass(frozen=True, slots=True)
class UserMessage(EventData):
    """``user.message``: what a person (or a script) said."""

    TYPES: ClassVar[tuple[str, ...]] = ("user.message",)
    text: str = ""

    @classmethod
    def from_json(cls, data: Json) -> Self:
        return cls(_str(data.get("text")))


@dataclass(frozen=True, slots=True)
class AgentStatus(EventData):
    """``agent.status``: the agent's process started, is ready, stopped, crashed, ..."""

    TYPES: ClassVar[tuple[str, ...]] = ("agent.status",)
    state: str = ""  # a ProcessState, kept as text so that a newer hub's states still read
    resume_mode: str | None = None
    pid: int | None = None
    reason: str | None = None

    @classmethod
    def from_json(cls, data: Json) -> Self:
        reason = data.get("reason")
        if reason is None and isinstance(data.get("error"), Mapping):
            reason = data["error"].get("message")
        return cls(_str(data.get("state")), _opt_str(data.get("resumeMode")),
                   _int(data.get("pid")), _opt_str(reason))

    def to_json(self) -> Json:
        return _omit_none(state=str(self.state), resumeMode=self.resume_mode, pid=self.pid,
                          reason=self.reason)


@dataclass(frozen=True, slots=True)
class TurnStarted(EventData):
    """``turn.started``: the agent works on the event at ``trigger_seq``."""

    TYPES: ClassVar[tuple[str, ...]] = ("turn.started",)
    turn_id: str = ""
    trigger_seq: int = 0
    retry_of: str | None = None

    @classmethod
    def from_json(cls, data: Json) -> Self:
        return cls(_str(data.get("turnId")), _int(data.get("triggerSeq")) or 0,
                   _opt_str(data.get("retryOf")))

    def to_json(self) -> Json:
        return _omit_none(turnId=self.turn_id, triggerSeq=self.trigger_seq,
                          retryOf=self.retry_of)


@dataclass(frozen=True, slots=True)
class TurnCompleted(EventData):
    """``turn.completed``: the agent ended the turn (``end_turn``, ``cancelled``, ...)."""

    TYPES: ClassVar[tuple[str, ...]] = ("turn.completed",)
    turn_id: str = ""
    stop_reason: str = "end_turn"

    @classmethod
    def from_json(cls, data: Json) -> Self:
        return cls(_str(data.get("turnId")), _str(data.get("stopReason"), "end_turn"))


@dataclass(frozen=True, slots=True)
class TurnFailed(EventData):
    """``turn.failed``: the turn ended without the agent ending it (a TurnFailure)."""

    TYPES: ClassVar[tuple[str, ...]] = ("turn.failed",)
    turn_id: str = ""
    reason: str = "error"
    message: str = ""

    @classmethod
    def from_json(cls, data: Json) -> Self:
        return cls(_str(data.get("turnId")), _str(data.get("reason"), "error"),
                   _str(_dict(data.get("error")).get("message")))

    def to_json(self) -> Json:
        return {"turnId": self.turn_id, "reason": str(self.reason),
                "error": {"message": self.message}}


@dataclass(frozen=True, slots=True)
class AgentText(EventData):
    """A piece (``.chunk``) or the whole of an agent's message or thought."""

    thought: ClassVar[bool] = False
    complete: ClassVar[bool] = False
    message_id: str = ""
    text: str = ""

    @classmethod
    def from_json(cls, data: Json) -> Self:
        return cls(_str(data.get("messageId")), _str(data.get("text")))


@dataclass(frozen=True, slots=True)
class AgentMessageChunk(AgentText):
    """``agent.message.chunk``: a piece of a message (chunks may be coalesced)."""

    TYPES: ClassVar[tuple[str, ...]] = ("agent.message.chunk",)


@dataclass(frozen=True, slots=True)
class AgentMessage(AgentText):
    """``agent.message``: the whole message, once it is complete."""

    TYPES: ClassVar[tuple[str, ...]] = ("agent.message",)
    complete: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class AgentThoughtChunk(AgentText):
    """``agent.thought.chunk``: a piece of a thought."""

    TYPES: ClassVar[tuple[str, ...]] = ("agent.thought.chunk",)
    thought: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class AgentThought(AgentText):
    """``agent.thought``: the whole thought."""

    TYPES: ClassVar[tuple[str, ...]] = ("agent.thought",)
    thought: ClassVar[bool] = True
    complete: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class ToolCall(EventData):
    """``tool.call`` and ``tool.update``: a tool call, or the fields of it that changed
    (in an update a field that did not change is ``None``; ``has_input`` tells an input
    that is null from one that was not sent)."""

    TYPES: ClassVar[tuple[str, ...]] = ("tool.call", "tool.update")
    tool_call_id: str = ""
    title: str | None = None
    kind: str | None = None
    status: str | None = None
    input: Any = None
    has_input: bool = False
    content: list[Json] | None = None

    @classmethod
    def from_json(cls, data: Json) -> Self:
        content = data.get("content")
        return cls(_str(data.get("toolCallId")), _opt_str(data.get("title")),
                   _opt_str(data.get("kind")), _opt_str(data.get("status")),
                   data.get("input"), "input" in data,
                   _dicts(content) if isinstance(content, list) else None)

    def to_json(self) -> Json:
        out = _omit_none(toolCallId=self.tool_call_id, title=self.title, kind=self.kind,
                         status=self.status)
        if self.has_input:
            out["input"] = self.input
        if self.content is not None:
            out["content"] = self.content
        return out

    @property
    def texts(self) -> list[str]:
        """The text of its ``content`` blocks (diffs and terminals are not text)."""
        out = []
        for block in self.content or []:
            inner = block.get("content")
            if isinstance(inner, Mapping) and isinstance(inner.get("text"), str):
                out.append(inner["text"])
        return out


@dataclass(frozen=True, slots=True)
class PlanEntry:
    """One line of a plan."""

    content: str = ""
    priority: str = ""
    status: str = "pending"


@dataclass(frozen=True, slots=True)
class Plan(EventData):
    """``plan``: the agent's plan for the turn, whole each time it changes."""

    TYPES: ClassVar[tuple[str, ...]] = ("plan",)
    entries: tuple[PlanEntry, ...] = ()

    @classmethod
    def from_json(cls, data: Json) -> Self:
        return cls(tuple(
            PlanEntry(_str(e.get("content")), _str(e.get("priority")),
                      _str(e.get("status"), "pending"))
            for e in _dicts(data.get("entries"))
        ))

    def to_json(self) -> Json:
        return {"entries": [dataclasses.asdict(e) for e in self.entries]}


@dataclass(frozen=True, slots=True)
class PermissionOption:
    """One answer a person may give to a permission request."""

    option_id: str = ""
    name: str = ""
    kind: str = ""

    def to_json(self) -> Json:
        """The wire form."""
        return {"optionId": self.option_id, "name": self.name, "kind": self.kind}


@dataclass(frozen=True, slots=True)
class PermissionRequest(EventData):
    """``permission.request``: an agent asks to run ``tool_call``; any participant answers."""

    TYPES: ClassVar[tuple[str, ...]] = ("permission.request",)
    request_id: str = ""
    tool_call: Json = field(default_factory=dict)
    options: tuple[PermissionOption, ...] = ()

    @classmethod
    def from_json(cls, data: Json) -> Self:
        return cls(_str(data.get("requestId")), _dict(data.get("toolCall")), tuple(
            PermissionOption(_str(o.get("optionId")), _str(o.get("name")), _str(o.get("kind")))
            for o in _dicts(data.get("options"))
        ))

    def to_json(self) -> Json:
        return {"requestId": self.request_id, "toolCall": self.tool_call,
                "options": [o.to_json() for o in self.options]}

    @property
    def title(self) -> str:
        """The title of the tool call asked about."""
        return _str(self.tool_call.get("title"))

    @property
    def tool_kind(self) -> str:
        """The kind of the tool call asked about (``edit``, ``execute``, ...)."""
        return _str(self.tool_call.get("kind"))

    def option_name(self, option_id: str | None) -> str:
        """The name of an option (its id if it has none or is unknown)."""
        for option in self.options:
            if option.option_id == option_id:
                return option.name or option.option_id
        return option_id or ""


@dataclass(frozen=True, slots=True)
class PermissionResponse(EventData):
    """``permission.response``: the chosen ``option_id``, or cancelled (``option_id`` None)."""

    TYPES: ClassVar[tuple[str, ...]] = ("permission.response",)
    request_id: str = ""
    option_id: str | None = None

    @property
    def cancelled(self) -> bool:
        """Whether the request was closed without an answer."""
        return self.option_id is None

    @classmethod
    def from_json(cls, data: Json) -> Self:
        option = None if data.get("outcome") == "cancelled" else _opt_str(data.get("optionId"))
        return cls(_str(data.get("requestId")), option)

    def to_json(self) -> Json:
        if self.option_id is None:
            return {"requestId": self.request_id, "outcome": "cancelled"}
        return {"requestId": self.request_id, "optionId": self.option_id}


@dataclass(frozen=True, slots=True)
class Statement:
    """One SQL statement and its parameters, as recorded."""

    sql: str = ""
    params: list[Any] | Json | None = None

    def to_json(self) -> Json:
        """The wire form (``params`` only when there are some, as clients send it)."""
        return _omit_none(sql=self.sql, params=self.params)


def _statements(value: object) -> tuple[Statement, ...]:
    return tuple(
        Statement(_str(s.get("sql")), s.get("params") if isinstance(s.get("params"), list | dict)
                  else None)
        for s in _dicts(value)
    )


@dataclass(frozen=True, slots=True)
class StateChanged(EventData):
    """``state.changed``: statements run on the session's state, and the rows changed."""

    TYPES: ClassVar[tuple[str, ...]] = ("state.changed",)
    statements: tuple[Statement, ...] = ()
    changes: int | None = None

    @classmethod
    def from_json(cls, data: Json) -> Self:
        return cls(_statements(data.get("statements")), _int(data.get("changes")))

    def to_json(self) -> Json:
        return {"statements": [s.to_json() for s in self.statements], "changes": self.changes}


@dataclass(frozen=True, slots=True)
class Custom(EventData):
    """An application's own event (``ci.build_failed``), or a reserved type this version
    does not know: its data as it is."""

    fields: Json = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Json) -> Self:
        return cls(data)

    def to_json(self) -> Json:
        return self.fields


SHAPES: tuple[type[EventData], ...] = (
    SessionCreated, SessionForked, UserMessage, AgentStatus, TurnStarted, TurnCompleted,
    TurnFailed, AgentMessageChunk, AgentMessage, AgentThoughtChunk, AgentThought, ToolCall,
    Plan, PermissionRequest, PermissionResponse, StateChanged,
)
SHAPE_OF: dict[str, type[EventData]] = {t: shape for shape in SHAPES for t in shape.TYPES}


# --- events --------------------------------------------------------------------------------

@dataclass(slots=True)
class Event:
    """One event of a session's log, parsed; ``raw`` is the object as the hub sent it.

    Read-only by convention: not frozen, since a frozen dataclass's ``__init__`` costs
    more than the parsing itself, and a TUI parses every event it shows."""

    seq: int
    ts: int
    type: str
    source: Source
    data: EventData
    turn_id: str | None = None
    id: str = ""
    idempotency_key: str | None = None
    state: tuple[Statement, ...] = ()
    raw: Json = field(default_factory=dict, repr=False, compare=False)

    @property
    def fields(self) -> Json:
        """The event's ``data`` object as it was stored."""
        return _dict(self.raw.get("data"))


def parse_data(event_type: str, data: object) -> EventData:
    """The typed ``data`` of an event of ``event_type``."""
    return SHAPE_OF.get(event_type, Custom).from_json(_dict(data))


def parse_event(obj: Mapping[str, Any]) -> Event:
    """Parse one event object (as in ``session/events`` or a history page)."""
    raw = obj if isinstance(obj, dict) else dict(obj)
    event_type = _str(raw.get("type"))
    return Event(
        seq=_int(raw.get("seq")) or 0, ts=_int(raw.get("ts")) or 0, type=event_type,
        source=Source.from_json(raw.get("source")), data=parse_data(event_type, raw.get("data")),
        turn_id=_opt_str(raw.get("turnId")), id=_str(raw.get("id")),
        idempotency_key=_opt_str(raw.get("idempotencyKey")),
        state=_statements(raw.get("state")), raw=raw,
    )


def as_event(obj: Event | Mapping[str, Any]) -> Event:
    """``obj`` parsed, unless it is an :class:`Event` already (for consumers that take both
    the wire object and a parsed event)."""
    return obj if isinstance(obj, Event) else parse_event(obj)


def loads_event(raw: bytes | str) -> Event:
    """Parse one encoded event."""
    obj = orjson.loads(raw)
    return parse_event(obj if isinstance(obj, dict) else {})
