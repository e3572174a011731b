"""How an agent's ACP ``session/update`` notifications become events in the log (no I/O).

| ACP update | event |
|---|---|
| ``agent_message_chunk`` | ``agent.message.chunk`` {messageId, text}, then ``agent.message`` |
| ``agent_thought_chunk`` | ``agent.thought.chunk`` {messageId, text}, then ``agent.thought`` |
| ``tool_call`` | ``tool.call`` {toolCallId, title, kind, status, input?, content?} |
| ``tool_call_update`` | ``tool.update`` {toolCallId, and the fields that changed} |
| ``plan`` | ``plan`` {entries} |
| ``user_message_chunk`` and anything else | nothing (the log has the user's messages) |

ACP chunks carry no message id, so a message is the run of consecutive chunks of one
kind: it is complete when an update of another kind arrives, or the turn ends.

The data are built with the shapes of :mod:`server.events`, except a ``tool.update``'s:
it carries whatever fields the agent said changed, including ones the shape does not
name (``rawOutput``, ``locations``), so that no client loses them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
    """Turns one turn's updates into events, assembling messages from their chunks."""

    _whole: type[AgentText] | None = None  # the shape of the open message, while one is open
    _message_id: str = ""
    _parts: list[str] = field(default_factory=list)

    def map(self, update: dict[str, Any]) -> list[Event]:
        """The events for one ``session/update``'s ``update`` object."""
        kind = update.get("sessionUpdate")
        if isinstance(kind, str) and kind in CHUNK_SHAPES:
            chunk, whole = CHUNK_SHAPES[kind]
            events = self.finish() if whole is not self._whole else []
            if self._whole is None:
                self._whole, self._message_id = whole, protocol.new_event_id()
            text = content_text(update.get("content"))
            self._parts.append(text)
            events.append(_event(chunk(self._message_id, text)))
            return events
        events = self.finish()
        if kind == "tool_call":
            call_id: Any = update.get("toolCallId")  # as the agent sent it
            events.append(("tool.call", ToolCall(
                call_id, update.get("title", ""), update.get("kind", "other"),
                update.get("status", "pending"), update.get("rawInput"), "rawInput" in update,
                update.get("content"),
            ).to_json()))
        elif kind == "tool_call_update":
            data = {k: v for k, v in update.items() if k not in ("sessionUpdate", "rawInput")}
            if "rawInput" in update:
                data["input"] = update["rawInput"]
            events.append(("tool.update", data))
        elif kind == "plan":
            events.append(_event(Plan.from_json({"entries": update.get("entries")})))
        return events

    def finish(self) -> list[Event]:
        """Close the open message, if any: its whole text as one event."""
        if self._whole is None:
            return []
        event = _event(self._whole(self._message_id, "".join(self._parts)))
        self._whole, self._parts = None, []
        return [event]


def _event(data: AgentText | Plan) -> Event:
    return data.TYPES[0], data.to_json()
