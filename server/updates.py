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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from server import protocol

Event = tuple[str, dict[str, Any]]  # (type, data)

CHUNK_TYPES = {
    "agent_message_chunk": "agent.message",
    "agent_thought_chunk": "agent.thought",
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

    _kind: str | None = None  # "agent.message" or "agent.thought" while one is open
    _message_id: str = ""
    _parts: list[str] = field(default_factory=list)

    def map(self, update: dict[str, Any]) -> list[Event]:
        """The events for one ``session/update``'s ``update`` object."""
        kind = update.get("sessionUpdate")
        if kind in CHUNK_TYPES:
            base = CHUNK_TYPES[kind]
            events = self.finish() if base != self._kind else []
            if self._kind is None:
                self._kind, self._message_id = base, protocol.new_event_id()
            text = content_text(update.get("content"))
            self._parts.append(text)
            events.append((f"{base}.chunk", {"messageId": self._message_id, "text": text}))
            return events
        events = self.finish()
        if kind == "tool_call":
            data = {
                "toolCallId": update.get("toolCallId"),
                "title": update.get("title", ""),
                "kind": update.get("kind", "other"),
                "status": update.get("status", "pending"),
            }
            if "rawInput" in update:
                data["input"] = update["rawInput"]
            if "content" in update:
                data["content"] = update["content"]
            events.append(("tool.call", data))
        elif kind == "tool_call_update":
            data = {k: v for k, v in update.items() if k != "sessionUpdate"}
            if "rawInput" in data:
                data["input"] = data.pop("rawInput")
            events.append(("tool.update", data))
        elif kind == "plan":
            events.append(("plan", {"entries": update.get("entries", [])}))
        return events

    def finish(self) -> list[Event]:
        """Close the open message, if any: its whole text as one event."""
        if self._kind is None:
            return []
        event = (self._kind, {"messageId": self._message_id, "text": "".join(self._parts)})
        self._kind, self._parts = None, []
        return [event]
