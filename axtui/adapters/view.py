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

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from server.protocol import is_reserved_type

Event = dict[str, Any]
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


def who(event: Event) -> tuple[str, str]:
    """(name, client) of the event's author: ``source.name``, which is the person when a
    bridge published on their behalf (``onBehalfOf``)."""
    source = event.get("source") or {}
    name = str(source.get("name", "?"))
    client = str(source.get("client") or source.get("kind") or "?")
    return name, client


class SessionView:
    """Applies a session's events, in seq order, to its items and reactions.

    ``own_ref(event)`` returns the platform's id of the message an event came from when
    this adapter published it (it is already in the thread), else ``None``. After
    :meth:`apply`, :meth:`take_new` gives the keys of items to post (in order),
    :meth:`take_changed` the keys whose content or ``done`` may have changed, and
    :meth:`take_reactions` the reactions to set or clear.
    """

    def __init__(self, session_id: str, own_ref: Callable[[Event], str | None],
                 max_chars: int = MAX_CHARS) -> None:
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

    def apply(self, event: Event) -> None:
        """Apply one event (events must come in seq order, each once)."""
        seq = int(event["seq"])
        if seq <= self.applied:
            return
        self.applied = seq
        kind = str(event.get("type", ""))
        data = event.get("data") or {}
        handler = _HANDLERS.get(kind)
        if handler is not None:
            handler(self, seq, event, data)
        elif not is_reserved_type(kind) and kind not in _QUIET:
            name, client = who(event)
            self._status = None
            self._add(Item(f"event:{seq}", "notice", seq, seq, done=True, body={
                "type": kind, "name": name, "client": client, "data": data}))

    def _add(self, item: Item) -> Item:
        self.items[item.key] = item
        self._new.append(item.key)
        return item

    def _touch(self, item: Item) -> None:
        self._changed.add(item.key)

    def _react(self, target: Target | None, reaction: str, on: bool) -> None:
        if target is not None:
            self._reactions[(target, reaction)] = on

    def _user_message(self, seq: int, event: Event, data: dict[str, Any]) -> None:
        self._status = None
        ref = self.own_ref(event)
        if ref is not None:
            target: Target = ("ref", ref)
        else:
            name, client = who(event)
            item = self._add(Item(f"user:{seq}", "user", seq, seq, done=True, body={
                "text": str(data.get("text", "")), "name": name, "client": client}))
            target = ("item", item.key)
        self._triggers[seq] = target
        self._last_trigger = target

    def _turn_started(self, seq: int, event: Event, data: dict[str, Any]) -> None:
        target = self._triggers.get(int(data.get("triggerSeq") or 0))
        self._turns[str(data.get("turnId"))] = target
        self._react(self._suspended_on, SUSPENDED, False)
        self._suspended_on = None
        self._last_turn_target = target
        self._react(target, WORKING, True)

    def _turn_ended(self, seq: int, event: Event, data: dict[str, Any]) -> None:
        turn_id = str(data.get("turnId"))
        target = self._turns.pop(turn_id, None)
        self._react(target, WORKING, False)
        self._status = None
        if event["type"] == "turn.failed":
            error = (data.get("error") or {}).get("message") or ""
            self._add(Item(f"fail:{turn_id}", "failure", seq, seq, done=True, turn_id=turn_id,
                           body={"reason": str(data.get("reason", "error")),
                                 "message": str(error)}))
            self._react(target, FAILED, True)
        else:
            stop = str(data.get("stopReason", "end_turn"))
            if stop != "end_turn":
                self._add(Item(f"stop:{turn_id}", "notice", seq, seq, done=True,
                               turn_id=turn_id, body={"stopReason": stop}))
            self._react(target, DONE, True)
        for item in self.items.values():
            if item.turn_id == turn_id and not item.done:
                item.done = True
                self._touch(item)
        for stream in self._streams.values():
            if stream.turn_id == turn_id:
                stream.done = True

    def _agent_status(self, seq: int, event: Event, data: dict[str, Any]) -> None:
        state = data.get("state")
        if state == "failed":
            self._add(Item(f"agent-failed:{seq}", "failure", seq, seq, done=True, body={
                "reason": "the agent could not be started",
                "message": str(data.get("reason", ""))}))
            self._react(self._last_trigger, FAILED, True)
        elif state == "suspended" and self._last_turn_target is not None:
            self._suspended_on = self._last_turn_target
            self._react(self._suspended_on, SUSPENDED, True)

    def _message(self, seq: int, event: Event, data: dict[str, Any]) -> None:
        self._status = None
        message_id = str(data.get("messageId"))
        stream = self._streams.get(message_id)
        if stream is None:
            stream = self._streams[message_id] = _Stream(message_id, seq, event.get("turnId"))
        if stream.done:
            return
        if event["type"] == "agent.message":
            stream.text, stream.done = str(data.get("text", "")), True
        else:
            stream.text += str(data.get("text", ""))
        name = str((event.get("source") or {}).get("name", "agent"))
        for index, text in enumerate(split_text(stream.text, self.max_chars)):
            if index < len(stream.parts):
                item = self.items[stream.parts[index]]
                if item.body["text"] != text:
                    item.body["text"] = text
                    self._touch(item)
            else:
                item = self._add(Item(f"msg:{message_id}:{index}", "agent", seq, stream.first,
                                      turn_id=stream.turn_id, body={"text": text,
                                                                     "agent": name}))
                stream.parts.append(item.key)
        for index, key in enumerate(stream.parts):
            item = self.items[key]
            done = stream.done or index < len(stream.parts) - 1
            if done and not item.done:
                item.done = True
                self._touch(item)

    def _status_block(self, seq: int, event: Event) -> Item:
        block = self.items.get(self._status) if self._status else None
        if block is None:
            block = self._add(Item(f"status:{seq}", "status", seq, seq,
                                   turn_id=event.get("turnId"),
                                   body={"tools": [], "plan": None}))
            self._status = block.key
        return block

    def _tool_call(self, seq: int, event: Event, data: dict[str, Any]) -> None:
        block = self._status_block(seq, event)
        call_id = str(data.get("toolCallId"))
        block.body["tools"].append({"id": call_id, "title": str(data.get("title", "")),
                                    "kind": str(data.get("kind", "other")),
                                    "status": str(data.get("status", "pending"))})
        self._tool_block[call_id] = block.key
        self._touch(block)

    def _tool_update(self, seq: int, event: Event, data: dict[str, Any]) -> None:
        call_id = str(data.get("toolCallId"))
        block = self.items.get(self._tool_block.get(call_id, ""))
        if block is None or block.done:
            return  # a tool call from before the part of the log this view has seen
        for tool in block.body["tools"]:
            if tool["id"] == call_id:
                tool.update({k: str(data[k]) for k in ("title", "status", "kind") if k in data})
        self._touch(block)

    def _plan(self, seq: int, event: Event, data: dict[str, Any]) -> None:
        block = self._status_block(seq, event)
        block.body["plan"] = [
            {"content": str(e.get("content", "")), "status": str(e.get("status", "pending"))}
            for e in data.get("entries", []) if isinstance(e, dict)]
        self._touch(block)

    def _permission_request(self, seq: int, event: Event, data: dict[str, Any]) -> None:
        self._status = None
        request_id = str(data.get("requestId"))
        tool = data.get("toolCall") or {}
        self._add(Item(f"perm:{request_id}", "permission", seq, seq, turn_id=event.get("turnId"),
                       body={"requestId": request_id, "title": str(tool.get("title", "")),
                             "kind": str(tool.get("kind", "other")),
                             "options": [{"optionId": str(o.get("optionId")),
                                          "name": str(o.get("name", o.get("optionId"))),
                                          "kind": str(o.get("kind", ""))}
                                         for o in data.get("options", [])
                                         if isinstance(o, dict)],
                             "answer": None}))

    def _permission_response(self, seq: int, event: Event, data: dict[str, Any]) -> None:
        card = self.items.get(f"perm:{data.get('requestId')}")
        if card is None or card.done:
            return
        name, client = who(event)
        option_id = data.get("optionId")
        names = {o["optionId"]: o["name"] for o in card.body["options"]}
        card.body["answer"] = {
            "name": name, "client": client, "optionId": option_id,
            "option": "cancelled" if option_id is None else names.get(option_id, option_id)}
        card.done = True
        self._touch(card)


_Handler = Callable[[SessionView, int, Event, dict[str, Any]], None]
_HANDLERS: dict[str, _Handler] = {
    "user.message": SessionView._user_message,
    "turn.started": SessionView._turn_started,
    "turn.completed": SessionView._turn_ended,
    "turn.failed": SessionView._turn_ended,
    "agent.status": SessionView._agent_status,
    "agent.message.chunk": SessionView._message,
    "agent.message": SessionView._message,
    "tool.call": SessionView._tool_call,
    "tool.update": SessionView._tool_update,
    "plan": SessionView._plan,
    "permission.request": SessionView._permission_request,
    "permission.response": SessionView._permission_response,
}
