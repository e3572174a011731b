"""How an agent's ACP ``session/update`` notifications become events in the log (no I/O).

| ACP update | event |
|---|---|
| ``agent_message_chunk`` | ``agent.message.chunk`` {messageId, text}, then ``agent.message`` |
| ``agent_thought_chunk`` | ``agent.thought.chunk`` {messageId, text}, then ``agent.thought`` |
| ``tool_call`` | ``tool.call`` {toolCallId, title, kind, status, input?, content?} |
| ``tool_call_update`` | ``tool.update`` {toolCallId, and the fields that changed} |
| ``plan`` | ``plan`` {entries} |
| ``user_message_chunk`` and anything else | nothing (the log has the user's messages) |

A message is the run of consecutive chunks of one kind; it is complete when an update of
another kind arrives, a chunk carries another ACP ``messageId`` than the chunks before it
(agents that send ids mark where one message ends and the next begins), or the turn ends.
The hub mints its own ``messageId`` for each message (an agent's ids need not be unique in
the session).

No event is larger than ``hub.max_event_bytes``. A message whose text would pass it is
recorded as several messages, in order, nothing lost: the first has its own
``messageId``; each next part has a new ``messageId``, ``continuationOf`` (the first
part's ``messageId``) and ``part`` (2, 3, …), on its chunks and its whole event alike; the
whole event of every part but the last carries ``"continued": true``. A view that knows
nothing of parts shows them as consecutive messages. A ``tool.call``, ``tool.update`` or
``plan`` that would pass the limit has its largest fields replaced by a note saying how
many bytes were left out.

The data are built with the shapes of :mod:`server.events`, except a ``tool.update``'s:
it carries whatever fields the agent said changed, including ones the shape does not
name (``rawOutput``, ``locations``), so that no client loses them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from server import protocol
from server.events import (
    AgentMessage,
    AgentMessageChunk,
    AgentText,
    AgentThought,
    AgentThoughtChunk,
    Plan,
    ToolCall,
)

Event = tuple[str, dict[str, Any]]  # (type, data)

ENVELOPE_BYTES = 512  # of an event's data, kept for the keys and ids around the text
MIN_TEXT_BYTES = 64  # text per event even under a tiny hub.max_event_bytes

# An ACP chunk kind: the shape of its chunks, and of the whole message.
CHUNK_SHAPES: dict[str, tuple[type[AgentText], type[AgentText]]] = {
    "agent_message_chunk": (AgentMessageChunk, AgentMessage),
    "agent_thought_chunk": (AgentThoughtChunk, AgentThought),
}


def content_text(content: Any) -> str:
    """The text of an ACP content block (or list of blocks); other kinds are skipped."""
    if isinstance(content, list):
        return "".join(content_text(c) for c in content)
    if isinstance(content, dict) and content.get("type") == "text":
        text = content.get("text")
        return text if isinstance(text, str) else ""
    return ""


@dataclass
class UpdateMapper:
    """Turns one turn's updates into events, assembling messages from their chunks; no
    event's data passes ``max_bytes`` (see the module's docstring)."""

    max_bytes: int = 1024 * 1024
    _whole: type[AgentText] | None = None  # the shape of the open message, while one is open
    _agent_id: str | None = None  # the agent's messageId of the open message, if it sent one
    _first_id: str = ""  # the hub's messageId of the open message's first part
    _message_id: str = ""  # ... and of its current part
    _part: int = 1
    _parts: list[str] = field(default_factory=list)
    _size: int = 0  # the encoded size of the current part's text

    @property
    def _budget(self) -> int:
        """Bytes of encoded text one event may hold (the rest is ids and keys)."""
        return max(MIN_TEXT_BYTES, self.max_bytes - ENVELOPE_BYTES)

    def map(self, update: dict[str, Any]) -> list[Event]:
        """The events for one ``session/update``'s ``update`` object."""
        kind = update.get("sessionUpdate")
        if isinstance(kind, str) and kind in CHUNK_SHAPES:
            return self._chunk(update, *CHUNK_SHAPES[kind])
        events = self.finish()
        if kind == "tool_call":
            call_id: Any = update.get("toolCallId")  # as the agent sent it
            events.append(("tool.call", self._fit(ToolCall(
                call_id, update.get("title", ""), update.get("kind", "other"),
                update.get("status", "pending"), update.get("rawInput"), "rawInput" in update,
                update.get("content"),
            ).to_json())))
        elif kind == "tool_call_update":
            data = {k: v for k, v in update.items() if k not in ("sessionUpdate", "rawInput")}
            if "rawInput" in update:
                data["input"] = update["rawInput"]
            events.append(("tool.update", self._fit(data)))
        elif kind == "plan":
            plan = Plan.from_json({"entries": update.get("entries")})
            events.append((plan.TYPES[0], self._fit(plan.to_json())))
        return events

    def _chunk(self, update: dict[str, Any], chunk: type[AgentText],
               whole: type[AgentText]) -> list[Event]:
        agent_id = update.get("messageId")
        agent_id = agent_id if isinstance(agent_id, str) else None
        another = (agent_id is not None and self._agent_id is not None
                   and agent_id != self._agent_id)
        events = self.finish() if whole is not self._whole or another else []
        if self._whole is None:
            self._whole, self._agent_id = whole, agent_id
            self._first_id = self._message_id = protocol.new_event_id()
            self._part = 1
        text = content_text(update.get("content"))
        while True:
            piece, text = _take(text, self._budget - self._size)
            if piece or not text:  # (an empty chunk is recorded as the agent sent it)
                self._parts.append(piece)
                self._size += _encoded(piece)
                events.append((chunk.TYPES[0], self._text(piece)))
            if not text:
                return events
            events.append(self._close_part(continued=True))  # full: the rest goes on
            self._part += 1
            self._message_id = protocol.new_event_id()

    def finish(self) -> list[Event]:
        """Close the open message, if any: its whole text as one event (per part)."""
        if self._whole is None:
            return []
        event = self._close_part(continued=False)
        self._whole = self._agent_id = None
        return [event]

    def _close_part(self, *, continued: bool) -> Event:
        assert self._whole is not None
        data = self._text("".join(self._parts))
        if continued:
            data["continued"] = True
        self._parts, self._size = [], 0
        return self._whole.TYPES[0], data

    def _text(self, text: str) -> dict[str, Any]:
        data: dict[str, Any] = {"messageId": self._message_id, "text": text}
        if self._part > 1:
            data["continuationOf"], data["part"] = self._first_id, self._part
        return data

    def _fit(self, data: dict[str, Any]) -> dict[str, Any]:
        """``data`` within ``max_bytes``: its largest fields replaced by a note, as needed."""
        size = len(orjson.dumps(data))
        if size <= self.max_bytes:
            return data
        data = dict(data)
        sizes = sorted(((len(orjson.dumps(v)), k) for k, v in data.items()
                        if k != "toolCallId"), reverse=True)
        for field_size, key in sizes:
            data[key] = (f"(left out by the hub: {field_size} bytes, over"
                         f" hub.max_event_bytes {self.max_bytes})")
            if len(orjson.dumps(data)) <= self.max_bytes:
                break
        return data


def _encoded(text: str) -> int:
    """The bytes ``text`` takes in JSON (escapes are per character, so sizes add up)."""
    return len(orjson.dumps(text)) - 2


def _take(text: str, room: int) -> tuple[str, str]:
    """The longest start of ``text`` that takes at most ``room`` bytes in JSON, and the rest."""
    if _encoded(text) <= room:
        return text, ""
    low, high = 0, min(len(text), max(room, 0))  # every character takes a byte at least
    while low < high:
        mid = (low + high + 1) // 2
        if _encoded(text[:mid]) <= room:
            low = mid
        else:
            high = mid - 1
    return text[:low], text[low:]
