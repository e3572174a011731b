"""How the headless commands show events: a readable line (or a few) per event, or JSON Lines.

The pretty form is what someone debugging an agent run wants to read::

      5 14:03:07.123 paul/cli       user.message         Customer reports CSV export timeout
      7 14:03:07.410 demo           tool.call            Look up related tickets [search] pending

seq, the local time with milliseconds, the source (``name/client`` for clients, the agent
id for agents, ``hub``), the type, and a body made for the type (text for messages,
title and status for tools, plan entries, state statements, permission options). An event
a bridge published on someone's behalf shows the person as the name and ends with
``(sent by <principal>)``, the token that published it::

     12 14:05:01.004 Bob/slack      user.message         Is the export fixed? (sent by slackbot)

Colours only on a terminal (rich decides). The JSON Lines form is one event per line, exactly as
the hub sent it. Neither form lets an event drive the terminal: the pretty form goes through
:func:`axtui.terminal.safe_text` (escape sequences and control characters removed), the JSON
Lines write what JSON leaves raw as ``\\u`` escapes (:func:`axtui.terminal.safe_json_line`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

import orjson
from rich.console import Console
from rich.text import Text

from axtui.terminal import safe_json_line, safe_value
from server.events import (
    AgentStatus,
    AgentText,
    Event,
    EventData,
    PermissionRequest,
    PermissionResponse,
    Plan,
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
)
from server.sources import Source

CHUNK_TYPES = ("agent.message.chunk", "agent.thought.chunk")
TYPE_STYLES = {
    "user.message": "bold cyan", "agent.message": "bold green", "agent.message.chunk": "green",
    "agent.thought": "dim", "agent.thought.chunk": "dim", "turn.started": "magenta",
    "turn.completed": "magenta", "turn.failed": "bold red", "permission.request": "bold yellow",
    "permission.response": "yellow", "tool.call": "blue", "tool.update": "blue",
    "plan": "cyan", "state.changed": "yellow", "agent.status": "dim",
}
BODY_INDENT = 55  # where the body starts (seq, time, source, type), for continuation lines


def clock(ts: int) -> str:
    """``HH:MM:SS.mmm`` in local time for a millisecond timestamp."""
    return time.strftime("%H:%M:%S", time.localtime(ts / 1000)) + f".{ts % 1000:03d}"


def principal_note(source: Source) -> str:
    """`` (sent by <principal>)`` when a client published on someone's behalf, else ``""``."""
    return f" (sent by {source.principal})" if source.principal else ""


def _compact(value: Any, limit: int = 300) -> str:
    text = orjson.dumps(value).decode()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _statements(statements: tuple[Statement, ...]) -> list[str]:
    return [s.sql + (f"  {_compact(s.params)}" if s.params else "") for s in statements]


def safe_event(event: Event | Mapping[str, Any]) -> Event:
    """The event (parsed, or as the hub sent it) with every string made safe to print."""
    return as_event(safe_value(event.raw if isinstance(event, Event) else event))


def body_lines(event: Event | Mapping[str, Any]) -> list[str]:
    """The readable body of an event (parsed, or as the hub sent it), one or a few lines,
    safe to print (:func:`safe_event`)."""
    return _body_lines(safe_event(event))


def _body_lines(event: Event) -> list[str]:
    lines = _BODIES.get(event.type, _custom)(event, event.data)
    return lines + [f"state: {line}" for line in _statements(event.state)]


# --- bodies, one per event type --------------------------------------------------------------

def _text(event: Event, data: UserMessage | AgentText) -> list[str]:
    return data.text.splitlines() or [""]


def _session_created(event: Event, data: SessionCreated) -> list[str]:
    return [f"title {data.title!r}, agent {data.agent or 'none'}"]


def _session_forked(event: Event, data: SessionForked) -> list[str]:
    agent = f", agent {data.agent}" if data.agent else ""
    return [f"from {data.from_session_id} at seq {data.at_seq}{agent}"]


def _agent_status(event: Event, data: AgentStatus) -> list[str]:
    extra = [f"{name} {value}" for name, value in (
        ("resumeMode", data.resume_mode), ("pid", data.pid), ("reason", data.reason)) if value]
    return [" ".join([data.state or "?", *extra])]


def _turn_started(event: Event, data: TurnStarted) -> list[str]:
    retry = f" (retry of {data.retry_of})" if data.retry_of else ""
    return [f"turn {data.turn_id} for seq {data.trigger_seq}{retry}"]


def _turn_completed(event: Event, data: TurnCompleted) -> list[str]:
    return [data.stop_reason]


def _turn_failed(event: Event, data: TurnFailed) -> list[str]:
    return f"{data.reason}: {data.message}".rstrip(": ").splitlines() or [""]


def _tool_call(event: Event, data: ToolCall) -> list[str]:
    return [f"{data.title} [{data.kind}] {data.status}", *_tool_content(data)]


def _tool_update(event: Event, data: ToolCall) -> list[str]:
    changed = [f"{name} {value}" for name, value in (("title", data.title),
                                                     ("status", data.status))
               if value is not None]
    return [" ".join([data.tool_call_id, *changed]), *_tool_content(data)]


def _tool_content(data: ToolCall) -> list[str]:
    return [line for text in data.texts for line in text.splitlines()]


def _plan(event: Event, data: Plan) -> list[str]:
    return [f"[{e.status}] {e.content}" for e in data.entries] or ["(empty plan)"]


def _permission_request(event: Event, data: PermissionRequest) -> list[str]:
    options = ", ".join(f"{o.option_id} ({o.kind})" for o in data.options)
    return [f"{data.title}: {options}"]


def _permission_response(event: Event, data: PermissionResponse) -> list[str]:
    return [f"{data.request_id} → {data.option_id or 'cancelled'}"]


def _state_changed(event: Event, data: StateChanged) -> list[str]:
    return [*_statements(data.statements), f"({data.changes} rows changed)"]


def _custom(event: Event, data: EventData) -> list[str]:
    """An application's event, or a type this version does not know: its data as JSON."""
    return [_compact(event.fields)]


# Each body is given the data shape of its type (server.events.SHAPE_OF).
_BODIES: dict[str, Callable[[Event, Any], list[str]]] = {
    "user.message": _text, "agent.message": _text, "agent.message.chunk": _text,
    "agent.thought": _text, "agent.thought.chunk": _text,
    "session.created": _session_created, "session.forked": _session_forked,
    "agent.status": _agent_status, "turn.started": _turn_started,
    "turn.completed": _turn_completed, "turn.failed": _turn_failed,
    "tool.call": _tool_call, "tool.update": _tool_update, "plan": _plan,
    "permission.request": _permission_request, "permission.response": _permission_response,
    "state.changed": _state_changed,
}


class EventPrinter:
    """Prints events to stdout, pretty or as JSON Lines, flushing each one (so a killed
    process has printed everything it received).

    With ``stream_chunks`` (``axtui exec``), message and thought chunks are written as
    they come, on one growing line, and the complete ``agent.message`` that follows is
    not printed again; otherwise chunks are printed like any other event.
    """

    def __init__(self, *, jsonl: bool, stream_chunks: bool = False,
                 file: TextIO | None = None) -> None:
        self.jsonl = jsonl
        self.stream_chunks = stream_chunks
        self.file = file
        self.console = Console(file=file, highlight=False, soft_wrap=True)
        self._streaming: str | None = None  # messageId of the message being streamed
        self._streamed: set[str] = set()

    def print(self, event: Event | Mapping[str, Any]) -> None:
        """Show one event (parsed, or as the hub sent it)."""
        if self.jsonl:
            out = self.file or sys.stdout
            encoded = orjson.dumps(event.raw if isinstance(event, Event) else event).decode()
            out.write(safe_json_line(encoded) + "\n")
            out.flush()
            return
        event = safe_event(event)
        kind, data = event.type, event.data
        style = TYPE_STYLES.get(kind, "")
        if isinstance(data, AgentText) and self.stream_chunks and not data.complete:
            if self._streaming != data.message_id:
                self._end_stream()
                self.console.print(self._head(event, kind.removesuffix(".chunk")), end="")
                self._streaming = data.message_id
                self._streamed.add(data.message_id)
            text = data.text.replace("\n", "\n" + " " * BODY_INDENT)
            self.console.print(Text(text, style), end="")
            self.console.file.flush()
            return
        self._end_stream()
        if isinstance(data, AgentText) and self.stream_chunks \
                and data.message_id in self._streamed:
            self._streamed.discard(data.message_id)
            return  # its text is on the screen already
        lines = _body_lines(event)
        line = self._head(event, kind)
        line.append(lines[0], style)
        line.append(principal_note(event.source), "dim")
        for more in lines[1:]:
            line.append("\n" + " " * BODY_INDENT + more, style)
        self.console.print(line)
        self.console.file.flush()

    def _head(self, event: Event, kind: str) -> Text:
        head = Text()
        head.append(f"{event.seq:>5} ", "bold")
        head.append(clock(event.ts) + " ", "dim")
        head.append(f"{event.source.label(via='/', clients_only=True)[:14]:<14} ")
        head.append(f"{kind[:20]:<20} ", TYPE_STYLES.get(kind, ""))
        return head

    def _end_stream(self) -> None:
        if self._streaming is not None:
            self._streaming = None
            self.console.print()

    def close(self) -> None:
        """End a line left open by streaming."""
        if not self.jsonl:
            self._end_stream()
