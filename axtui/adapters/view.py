"""``SessionView``: a session's events turned into chat messages and reactions (no I/O).

A chat thread shows a session as a list of *items*, each one chat message the adapter
posts and then edits in place: a user message from another client, a part of an agent
message, a block of status lines (tool calls, the plan), a permission card, a failure, a
notice. Every item has a stable ``key`` and its content is a function of the events seen so
far, so replaying the same events rebuilds the same items: that is what lets an adapter
restart, read back what it posted, and carry on without posting anything twice.

Agent state is shown as reactions (``working``, ``done``, ``suspended``, ``failed``) on the
message that started the turn: the user's own message when it came from this platform,
otherwise the item the adapter posted for it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from server.events import (
    AgentStatus,
    AgentText,
    Event,
    Json,
    PermissionRequest,
    PermissionResponse,
    Plan,
    ToolCall,
    TurnCompleted,
    TurnFailed,
    TurnStarted,
    UserMessage,
    as_event,
)
from server.protocol import is_reserved_type

OwnRef = Callable[[Json], str | None]  # the platform id of an event's message, if ours
Target = tuple[str, str]  # ("ref", platform message id) or ("item", item key)

MAX_CHARS = 3500  # an agent message continues in a new chat message past this length

WORKING, DONE, SUSPENDED, FAILED = "working", "done", "suspended", "failed"

# Types that are the hub's or an agent's bookkeeping, or shown some other way.
_QUIET = {"user.message", "permission.response", "state.changed"}


@dataclass
class Item:
    """One chat message: what it shows (``body``) and where it stands in the log.

    ``created`` is the seq of the event that made it, ``first`` the seq from which its
    content is built (for the parts of a long agent message: the message's first chunk),
    and ``done`` says no later event will change it.
    """

    key: str
    kind: str  # user | agent | status | permission | failure | notice
    created: int
    first: int
    done: bool = False
    turn_id: str | None = None
    body: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Stream:
    """An agent message being streamed, and the item keys of its parts."""

    message_id: str
    first: int
    turn_id: str | None
    text: str = ""
    parts: list[str] = field(default_factory=list)
    done: bool = False


def split_text(text: str, limit: int = MAX_CHARS) -> list[str]:
    """Split ``text`` into parts of at most ``limit`` characters, at a paragraph, line or
    word break when one is in the second half of the window.

    Each cut depends only on the ``limit`` characters before it, so as streamed text grows
    the earlier parts never change: a part once complete stays complete.
    """
    parts: list[str] = []
    while len(text) > limit:
        window = text[:limit]
        cut = 0
        for sep in ("\n\n", "\n", " "):
            at = window.rfind(sep)
            if at >= limit // 2:
                cut = at + len(sep)
                break
        cut = cut or limit
        parts.append(text[:cut])
        text = text[cut:]
    parts.append(text)
    return parts


class SessionView:
    """Applies a session's events, in seq order, to its items and reactions.

    ``own_ref(event)`` (given the event as the hub sent it) returns the platform's id of
    the message an event came from when this adapter published it (it is already in the
    thread), else ``None``. After
    :meth:`apply`, :meth:`take_new` gives the keys of items to post (in order),
    :meth:`take_changed` the keys whose content or ``done`` may have changed, and
    :meth:`take_reactions` the reactions to set or clear.
    """

    def __init__(self, session_id: str, own_ref: OwnRef, max_chars: int = MAX_CHARS) -> None:
        self.session_id = session_id
        self.own_ref = own_ref
        self.max_chars = max_chars
        self.items: dict[str, Item] = {}
        self.applied = 0  # seq of the last event applied
        self._new: list[str] = []
        self._changed: set[str] = set()
        self._reactions: dict[tuple[Target, str], bool] = {}
        self._streams: dict[str, _Stream] = {}
        self._status: str | None = None  # the status block tool calls go to, if still open
        self._tool_block: dict[str, str] = {}  # toolCallId -> status block key
        self._triggers: dict[int, Target] = {}  # seq of a user.message -> its message
        self._turns: dict[str, Target | None] = {}
        self._last_trigger: Target | None = None
        self._last_turn_target: Target | None = None
        self._suspended_on: Target | None = None

    # --- what the outbox takes ------------------------------------------------------------

    def take_new(self) -> list[str]:
        """Keys of items created since the last call, in creation order."""
        new, self._new = self._new, []
        return new

    def take_changed(self) -> set[str]:
        """Keys of items changed since the last call."""
        changed, self._changed = self._changed, set()
        return changed

    def take_reactions(self) -> dict[tuple[Target, str], bool]:
        """Reactions to set (True) or clear (False) since the last call, last change wins."""
        reactions, self._reactions = self._reactions, {}
        return reactions

    # --- applying events --------------------------------------------------------------------

    def apply(self, event: Event | Mapping[str, Any]) -> None:
        """Apply one event, parsed or as the hub sent it (events must come in seq order,
        each once)."""
        event = as_event(event)
        if event.seq <= self.applied:
            return
        self.applied = event.seq
        handler = _HANDLERS.get(event.type)
        if handler is not None:
            handler(self, event, event.data)
        elif not is_reserved_type(event.type) and event.type not in _QUIET:
            self._status = None
            self._add(Item(f"event:{event.seq}", "notice", event.seq, event.seq, done=True,
                           body={"type": event.type, "name": event.source.name,
                                 "client": event.source.via, "data": event.fields}))

    def _add(self, item: Item) -> Item:
        self.items[item.key] = item
        self._new.append(item.key)
        return item

    def _touch(self, item: Item) -> None:
        self._changed.add(item.key)

    def _react(self, target: Target | None, reaction: str, on: bool) -> None:
        if target is not None:
            self._reactions[(target, reaction)] = on

    def _user_message(self, event: Event, data: UserMessage) -> None:
        self._status = None
        ref = self.own_ref(event.raw)
        if ref is not None:
            target: Target = ("ref", ref)
        else:
            item = self._add(Item(f"user:{event.seq}", "user", event.seq, event.seq, done=True,
                                  body={"text": data.text, "name": event.source.name,
                                        "client": event.source.via}))
            target = ("item", item.key)
        self._triggers[event.seq] = target
        self._last_trigger = target

    def _turn_started(self, event: Event, data: TurnStarted) -> None:
        target = self._triggers.get(data.trigger_seq)
        self._turns[data.turn_id] = target
        self._react(self._suspended_on, SUSPENDED, False)
        self._suspended_on = None
        self._last_turn_target = target
        self._react(target, WORKING, True)

    def _turn_completed(self, event: Event, data: TurnCompleted) -> None:
        target = self._turn_ending(data.turn_id)
        if data.stop_reason != "end_turn":
            self._add(Item(f"stop:{data.turn_id}", "notice", event.seq, event.seq, done=True,
                           turn_id=data.turn_id, body={"stopReason": data.stop_reason}))
        self._react(target, DONE, True)
        self._turn_ended(data.turn_id)

    def _turn_failed(self, event: Event, data: TurnFailed) -> None:
        target = self._turn_ending(data.turn_id)
        self._add(Item(f"fail:{data.turn_id}", "failure", event.seq, event.seq, done=True,
                       turn_id=data.turn_id,
                       body={"reason": data.reason, "message": data.message}))
        self._react(target, FAILED, True)
        self._turn_ended(data.turn_id)

    def _turn_ending(self, turn_id: str) -> Target | None:
        """The turn's trigger, no longer working; the status block is closed."""
        target = self._turns.pop(turn_id, None)
        self._react(target, WORKING, False)
        self._status = None
        return target

    def _turn_ended(self, turn_id: str) -> None:
        """Nothing of the turn changes any more: its items and streams are done."""
        for item in self.items.values():
            if item.turn_id == turn_id and not item.done:
                item.done = True
                self._touch(item)
        for stream in self._streams.values():
            if stream.turn_id == turn_id:
                stream.done = True

    def _agent_status(self, event: Event, data: AgentStatus) -> None:
        if data.state == "failed":
            self._add(Item(f"agent-failed:{event.seq}", "failure", event.seq, event.seq,
                           done=True, body={"reason": "the agent could not be started",
                                            "message": data.reason or ""}))
            self._react(self._last_trigger, FAILED, True)
        elif data.state == "suspended" and self._last_turn_target is not None:
            self._suspended_on = self._last_turn_target
            self._react(self._suspended_on, SUSPENDED, True)

    def _message(self, event: Event, data: AgentText) -> None:
        """A chunk of an agent's message, or the whole of it."""
        self._status = None
        stream = self._streams.get(data.message_id)
        if stream is None:
            stream = self._streams[data.message_id] = _Stream(data.message_id, event.seq,
                                                               event.turn_id)
        if stream.done:
            return
        if data.complete:
            stream.text, stream.done = data.text, True
        else:
            stream.text += data.text
        for index, text in enumerate(split_text(stream.text, self.max_chars)):
            if index < len(stream.parts):
                item = self.items[stream.parts[index]]
                if item.body["text"] != text:
                    item.body["text"] = text
                    self._touch(item)
            else:
                item = self._add(Item(f"msg:{data.message_id}:{index}", "agent", event.seq,
                                      stream.first, turn_id=stream.turn_id,
                                      body={"text": text, "agent": event.source.name}))
                stream.parts.append(item.key)
        for index, key in enumerate(stream.parts):
            item = self.items[key]
            done = stream.done or index < len(stream.parts) - 1
            if done and not item.done:
                item.done = True
                self._touch(item)

    def _status_block(self, event: Event) -> Item:
        block = self.items.get(self._status) if self._status else None
        if block is None:
            block = self._add(Item(f"status:{event.seq}", "status", event.seq, event.seq,
                                   turn_id=event.turn_id, body={"tools": [], "plan": None}))
            self._status = block.key
        return block

    def _tool_call(self, event: Event, data: ToolCall) -> None:
        block = self._status_block(event)
        block.body["tools"].append({"id": data.tool_call_id, "title": data.title or "",
                                    "kind": data.kind or "other",
                                    "status": data.status or "pending"})
        self._tool_block[data.tool_call_id] = block.key
        self._touch(block)

    def _tool_update(self, event: Event, data: ToolCall) -> None:
        block = self.items.get(self._tool_block.get(data.tool_call_id, ""))
        if block is None or block.done:
            return  # a tool call from before the part of the log this view has seen
        changed = {"title": data.title, "status": data.status, "kind": data.kind}
        for tool in block.body["tools"]:
            if tool["id"] == data.tool_call_id:
                tool.update({k: v for k, v in changed.items() if v is not None})
        self._touch(block)

    def _plan(self, event: Event, data: Plan) -> None:
        block = self._status_block(event)
        block.body["plan"] = [{"content": e.content, "status": e.status} for e in data.entries]
        self._touch(block)

    def _permission_request(self, event: Event, data: PermissionRequest) -> None:
        self._status = None
        self._add(Item(f"perm:{data.request_id}", "permission", event.seq, event.seq,
                       turn_id=event.turn_id, body={
                           "requestId": data.request_id, "title": data.title,
                           "kind": data.tool_kind or "other",
                           "options": [{"optionId": o.option_id, "name": o.name or o.option_id,
                                        "kind": o.kind} for o in data.options],
                           "answer": None}))

    def _permission_response(self, event: Event, data: PermissionResponse) -> None:
        card = self.items.get(f"perm:{data.request_id}")
        if card is None or card.done:
            return
        names = {o["optionId"]: o["name"] for o in card.body["options"]}
        card.body["answer"] = {
            "name": event.source.name, "client": event.source.via, "optionId": data.option_id,
            "option": "cancelled" if data.cancelled else names.get(data.option_id,
                                                                    data.option_id)}
        card.done = True
        self._touch(card)


# Each handler is given the data shape of its type (server.events.SHAPE_OF).
_Handler = Callable[[SessionView, Event, Any], None]
_HANDLERS: dict[str, _Handler] = {
    "user.message": SessionView._user_message,
    "turn.started": SessionView._turn_started,
    "turn.completed": SessionView._turn_completed,
    "turn.failed": SessionView._turn_failed,
    "agent.status": SessionView._agent_status,
    "agent.message.chunk": SessionView._message,
    "agent.message": SessionView._message,
    "tool.call": SessionView._tool_call,
    "tool.update": SessionView._tool_update,
    "plan": SessionView._plan,
    "permission.request": SessionView._permission_request,
    "permission.response": SessionView._permission_response,
}
