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
the hub sent it.
"""

from __future__ import annotations

import re
import sys
import time
from typing import Any, TextIO

import orjson
from rich.console import Console
from rich.text import Text

CHUNK_TYPES = ("agent.message.chunk", "agent.thought.chunk")
TYPE_STYLES = {
    "user.message": "bold cyan", "agent.message": "bold green", "agent.message.chunk": "green",
    "agent.thought": "dim", "agent.thought.chunk": "dim", "turn.started": "magenta",
    "turn.completed": "magenta", "turn.failed": "bold red", "permission.request": "bold yellow",
    "permission.response": "yellow", "tool.call": "blue", "tool.update": "blue",
    "plan": "cyan", "state.changed": "yellow", "agent.status": "dim",
}
BODY_INDENT = 55  # where the body starts (seq, time, source, type), for continuation lines


def type_matcher(patterns: list[str] | None) -> re.Pattern[str] | None:
    """A regex for protocol type patterns (only ``*`` is special), or None for all types."""
    if not patterns:
        return None
    return re.compile("|".join(".*".join(map(re.escape, p.split("*"))) for p in patterns))


def clock(ts: int) -> str:
    """``HH:MM:SS.mmm`` in local time for a millisecond timestamp."""
    return time.strftime("%H:%M:%S", time.localtime(ts / 1000)) + f".{ts % 1000:03d}"


def source_label(source: Any) -> str:
    """``name/client`` for a client, the agent id for an agent, ``hub`` for the hub."""
    if not isinstance(source, dict):
        return "?"
    name = str(source.get("name", "?"))
    if source.get("kind") == "client" and source.get("client"):
        return f"{name}/{source['client']}"
    return name


def principal_note(source: Any) -> str:
    """`` (sent by <principal>)`` when a client published on someone's behalf, else ``""``."""
    if isinstance(source, dict) and source.get("principal"):
        return f" (sent by {source['principal']})"
    return ""


def _compact(value: Any, limit: int = 300) -> str:
    text = orjson.dumps(value).decode()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _statements(stmts: Any) -> list[str]:
    if not isinstance(stmts, list):
        return []
    lines = []
    for stmt in stmts:
        if isinstance(stmt, dict):
            params = stmt.get("params")
            lines.append(str(stmt.get("sql", "")) + (f"  {_compact(params)}" if params else ""))
    return lines


def body_lines(event: dict[str, Any]) -> list[str]:
    """The readable body of an event, one or a few lines."""
    kind = event.get("type", "")
    data = event.get("data") or {}
    lines: list[str]
    if kind in ("user.message", "agent.message", "agent.thought", *CHUNK_TYPES):
        lines = str(data.get("text", "")).splitlines() or [""]
    elif kind == "session.created":
        lines = [f"title {data.get('title')!r}, agent {data.get('agent') or 'none'}"]
    elif kind == "session.forked":
        agent = f", agent {data['agent']}" if data.get("agent") else ""
        lines = [f"from {data.get('fromSessionId')} at seq {data.get('atSeq')}{agent}"]
    elif kind == "agent.status":
        extra = [f"{k} {data[k]}" for k in ("resumeMode", "pid", "reason") if data.get(k)]
        lines = [" ".join([str(data.get("state", "?")), *extra])]
    elif kind == "turn.started":
        retry = f" (retry of {data['retryOf']})" if data.get("retryOf") else ""
        lines = [f"turn {data.get('turnId')} for seq {data.get('triggerSeq')}{retry}"]
    elif kind == "turn.completed":
        lines = [f"{data.get('stopReason')}"]
    elif kind == "turn.failed":
        message = str((data.get("error") or {}).get("message", ""))
        lines = [f"{data.get('reason')}: {message}".rstrip(": ")]
        lines = lines[0].splitlines() or [""]
    elif kind == "tool.call":
        lines = [f"{data.get('title')} [{data.get('kind')}] {data.get('status')}"]
        lines += _tool_content(data)
    elif kind == "tool.update":
        changed = [f"{k} {data[k]}" for k in ("title", "status") if k in data]
        lines = [" ".join([str(data.get("toolCallId")), *changed]), *_tool_content(data)]
    elif kind == "plan":
        lines = [f"[{e.get('status')}] {e.get('content')}" for e in data.get("entries") or []
                 if isinstance(e, dict)] or ["(empty plan)"]
    elif kind == "permission.request":
        title = (data.get("toolCall") or {}).get("title", "")
        options = ", ".join(f"{o.get('optionId')} ({o.get('kind')})"
                            for o in data.get("options") or [] if isinstance(o, dict))
        lines = [f"{title}: {options}"]
    elif kind == "permission.response":
        answer = data.get("optionId") or data.get("outcome")
        lines = [f"{data.get('requestId')} → {answer}"]
    elif kind == "state.changed":
        lines = [*_statements(data.get("statements")), f"({data.get('changes')} rows changed)"]
    else:
        lines = [_compact(data)]
    return lines + [f"state: {line}" for line in _statements(event.get("state"))]


def _tool_content(data: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for block in data.get("content") or []:
        inner = block.get("content") if isinstance(block, dict) else None
        if isinstance(inner, dict) and isinstance(inner.get("text"), str):
            lines += inner["text"].splitlines()
    return lines


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

    def print(self, event: dict[str, Any]) -> None:
        """Show one event."""
        if self.jsonl:
            out = self.file or sys.stdout
            out.write(orjson.dumps(event).decode() + "\n")
            out.flush()
            return
        kind = event.get("type", "")
        data = event.get("data") or {}
        message_id = data.get("messageId")
        if self.stream_chunks and kind in CHUNK_TYPES:
            if self._streaming != message_id:
                self._end_stream()
                self.console.print(self._head(event, kind.removesuffix(".chunk")), end="")
                self._streaming = message_id
                self._streamed.add(str(message_id))
            text = str(data.get("text", "")).replace("\n", "\n" + " " * BODY_INDENT)
            self.console.print(Text(text, TYPE_STYLES.get(kind, "")), end="")
            self.console.file.flush()
            return
        self._end_stream()
        if self.stream_chunks and message_id is not None and message_id in self._streamed:
            self._streamed.discard(message_id)
            return  # its text is on the screen already
        lines = body_lines(event)
        line = self._head(event, kind)
        line.append(lines[0], TYPE_STYLES.get(kind, ""))
        line.append(principal_note(event.get("source")), "dim")
        for more in lines[1:]:
            line.append("\n" + " " * BODY_INDENT + more, TYPE_STYLES.get(kind, ""))
        self.console.print(line)
        self.console.file.flush()

    def _head(self, event: dict[str, Any], kind: str) -> Text:
        head = Text()
        head.append(f"{event.get('seq', 0):>5} ", "bold")
        head.append(clock(int(event.get("ts", 0))) + " ", "dim")
        head.append(f"{source_label(event.get('source'))[:14]:<14} ")
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
