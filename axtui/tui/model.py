"""A session's conversation as a list of blocks, folded from its events (no Textual, no I/O).

The TUI renders a session by folding its events, in seq order, into blocks: a user message,
an agent message being streamed, a thought, a tool call with its updates, a plan, a
permission request and who answered it, a state change, a quiet lifecycle line, a failure.
History and live events go through the same :meth:`Conversation.apply`, so a session
looks the same whether it was opened, replayed or watched as it happened.

Blocks have stable keys (the message id, tool call id, request id, ...) and a version that
changes whenever the block does, so a view only touches the widgets of blocks that
changed. The model keeps at most ``max_blocks`` blocks (the oldest are dropped), which
bounds the memory of a session watched for hours.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Event = dict[str, Any]

QUIET_STATUS = {
    "starting": "agent starting",
    "ready": "agent ready",
    "suspended": "agent suspended",
    "exited": "agent exited",
}


@dataclass
class Block:
    """One thing shown in a conversation; ``version`` grows on every change."""

    key: str
    seq: int
    ts: int
    version: int = 0
    last_seq: int = 0

    def touch(self, event: Event) -> None:
        """Record that ``event`` changed this block."""
        self.version += 1
        self.last_seq = event["seq"]


@dataclass
class UserBlock(Block):
    """A message from a person (or a script), with who sent it and from which client."""

    text: str = ""
    name: str = ""
    client: str = ""


@dataclass
class TextBlock(Block):
    """An agent's message or thought; ``complete`` once the whole text has arrived."""

    text: str = ""
    agent: str = ""
    thought: bool = False
    complete: bool = False


@dataclass
class ToolBlock(Block):
    """A tool call and its latest status, input and content (text, diffs, terminals)."""

    tool_call_id: str = ""
    title: str = ""
    kind: str = ""
    status: str = ""
    input: Any = None
    content: list[Any] = field(default_factory=list)


@dataclass
class PlanBlock(Block):
    """The agent's plan for a turn, shown as a checklist (updated in place)."""

    entries: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class PermissionBlock(Block):
    """A question to a person; ``answer`` says what was chosen, by whom and from where."""

    request_id: str = ""
    title: str = ""
    tool_kind: str = ""
    input: Any = None
    options: list[dict[str, Any]] = field(default_factory=list)
    turn_id: str | None = None
    answer: str | None = None
    answered_by: str | None = None
    answered_via: str | None = None

    @property
    def open(self) -> bool:
        """True while nobody has answered and the turn that asked is still running."""
        return self.answer is None


@dataclass
class StateBlock(Block):
    """A change to the session's state: the statements run and the rows they changed."""

    statements: list[dict[str, Any]] = field(default_factory=list)
    changes: int | None = None
    by: str = ""


@dataclass
class NoticeBlock(Block):
    """A quiet line (lifecycle: created, started, suspended, turn done) or a failure."""

    text: str = ""
    failure: bool = False


@dataclass
class EventBlock(Block):
    """An application-defined event (``ci.build_failed``): its type, source and data."""

    type: str = ""
    by: str = ""
    data: dict[str, Any] = field(default_factory=dict)


def source_label(source: dict[str, Any]) -> str:
    """``alice via slack``, ``demo`` (an agent) or ``hub``: who produced an event."""
    name = str(source.get("name") or source.get("kind") or "?")
    client = source.get("client")
    return f"{name} via {client}" if client else name


class Conversation:
    """The blocks of one session, folded from its events in seq order."""

    def __init__(self, max_blocks: int = 2000) -> None:
        self.max_blocks = max_blocks
        self.blocks: dict[str, Block] = {}
        self.last_seq = 0
        self.dropped = 0  # blocks dropped from the front to stay within max_blocks
        self.running_turn: str | None = None
        self._turn_plans: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self.blocks)

    def apply_all(self, events: list[Event]) -> None:
        """Apply a batch of events in order."""
        for event in events:
            self.apply(event)

    def apply(self, event: Event) -> None:
        """Fold one event into the blocks (events at or below ``last_seq`` are ignored)."""
        seq = event["seq"]
        if seq <= self.last_seq:
            return
        self.last_seq = seq
        handler = _HANDLERS.get(event["type"], Conversation._other)
        handler(self, event)
        while len(self.blocks) > self.max_blocks:
            del self.blocks[next(iter(self.blocks))]
            self.dropped += 1

    def open_permissions(self) -> list[PermissionBlock]:
        """Permission requests still waiting for an answer, oldest first."""
        return [b for b in self.blocks.values() if isinstance(b, PermissionBlock) and b.open]

    # --- handlers, one per event type -------------------------------------------------------

    def _add(self, block: Block, event: Event) -> Block:
        existing = self.blocks.get(block.key)
        if existing is not None:
            existing.touch(event)
            return existing
        block.touch(event)
        self.blocks[block.key] = block
        return block

    def _notice(self, event: Event, text: str, failure: bool = False) -> None:
        self._add(NoticeBlock(f"ev:{event['seq']}", event["seq"], event["ts"], text=text,
                              failure=failure), event)

    def _session_created(self, event: Event) -> None:
        data = event["data"]
        title = data.get("title") or "untitled"
        agent = data.get("agent")
        by = source_label(event["source"])
        self._notice(event, f"session “{title}” created by {by}"
                     + (f" with agent {agent}" if agent else " (no agent)"))

    def _session_forked(self, event: Event) -> None:
        data = event["data"]
        self._notice(event, f"forked from {data.get('fromSessionId')} at seq {data.get('atSeq')}")

    def _user_message(self, event: Event) -> None:
        source = event["source"]
        self._add(UserBlock(f"ev:{event['seq']}", event["seq"], event["ts"],
                            text=str(event["data"].get("text", "")),
                            name=str(source.get("name", "")),
                            client=str(source.get("client", ""))), event)

    def _agent_status(self, event: Event) -> None:
        data = event["data"]
        state = data.get("state", "")
        if state == "crashed":
            reason = data.get("reason")
            self._notice(event, "agent crashed" + (f": {reason}" if reason else ""), failure=True)
        elif state == "failed":
            reason = data.get("reason") or data.get("error", {}).get("message")
            self._notice(event, "agent failed to start" + (f": {reason}" if reason else ""),
                         failure=True)
        else:
            text = QUIET_STATUS.get(state, f"agent {state}")
            if state == "ready" and data.get("resumeMode"):
                text += f" (conversation restored by {data['resumeMode']})"
            self._notice(event, text)

    def _turn_started(self, event: Event) -> None:
        self.running_turn = event["data"].get("turnId")

    def _turn_ended(self, event: Event) -> None:
        data = event["data"]
        turn_id = data.get("turnId")
        if self.running_turn == turn_id:
            self.running_turn = None
        for block in self.blocks.values():
            if isinstance(block, PermissionBlock) and block.open and block.turn_id == turn_id:
                block.answer = "closed: the turn ended"
                block.touch(event)
        if event["type"] == "turn.failed":
            reason = data.get("reason", "error")
            message = (data.get("error") or {}).get("message")
            self._notice(event, f"turn failed ({reason})" + (f": {message}" if message else ""),
                         failure=True)
        elif data.get("stopReason") not in (None, "end_turn"):
            self._notice(event, f"turn ended: {data['stopReason']}")

    def _text(self, event: Event, thought: bool, complete: bool) -> None:
        data = event["data"]
        prefix = "thought" if thought else "msg"
        key = f"{prefix}:{data.get('messageId') or event['seq']}"
        block = self.blocks.get(key)
        text = str(data.get("text", ""))
        if block is None:
            self._add(TextBlock(key, event["seq"], event["ts"], text=text,
                                agent=str(event["source"].get("name", "")), thought=thought,
                                complete=complete), event)
            return
        assert isinstance(block, TextBlock)
        block.text = text if complete else block.text + text
        block.complete = block.complete or complete
        block.touch(event)

    def _agent_message_chunk(self, event: Event) -> None:
        self._text(event, thought=False, complete=False)

    def _agent_message(self, event: Event) -> None:
        self._text(event, thought=False, complete=True)

    def _thought_chunk(self, event: Event) -> None:
        self._text(event, thought=True, complete=False)

    def _thought(self, event: Event) -> None:
        self._text(event, thought=True, complete=True)

    def _tool(self, event: Event) -> None:
        data = event["data"]
        key = f"tool:{data.get('toolCallId') or event['seq']}"
        block = self.blocks.get(key)
        if not isinstance(block, ToolBlock):
            block = ToolBlock(key, event["seq"], event["ts"],
                              tool_call_id=str(data.get("toolCallId", "")))
            self.blocks[key] = block
        for name in ("title", "kind", "status"):
            if data.get(name) is not None:
                setattr(block, name, str(data[name]))
        if "input" in data:
            block.input = data["input"]
        if isinstance(data.get("content"), list):
            block.content = data["content"]
        block.touch(event)

    def _plan(self, event: Event) -> None:
        turn = event.get("turnId") or self.running_turn
        key = self._turn_plans.get(turn or "") or f"plan:{event['seq']}"
        if turn:
            self._turn_plans[turn] = key
        block = self.blocks.get(key)
        entries = list(event["data"].get("entries") or [])
        if isinstance(block, PlanBlock):
            block.entries = entries
            block.touch(event)
        else:
            self._add(PlanBlock(key, event["seq"], event["ts"], entries=entries), event)

    def _permission_request(self, event: Event) -> None:
        data = event["data"]
        tool = data.get("toolCall") or {}
        self._add(PermissionBlock(
            f"perm:{data.get('requestId')}", event["seq"], event["ts"],
            request_id=str(data.get("requestId", "")), title=str(tool.get("title", "")),
            tool_kind=str(tool.get("kind", "")), input=tool.get("rawInput"),
            options=list(data.get("options") or []),
            turn_id=event.get("turnId")), event)

    def _permission_response(self, event: Event) -> None:
        data = event["data"]
        block = self.blocks.get(f"perm:{data.get('requestId')}")
        if not isinstance(block, PermissionBlock) or not block.open:
            return
        if data.get("outcome") == "cancelled":
            block.answer = "cancelled"
        else:
            names = {o.get("optionId"): o.get("name") for o in block.options}
            option = data.get("optionId")
            block.answer = str(names.get(option) or option)
        source = event["source"]
        block.answered_by = str(source.get("name", ""))
        block.answered_via = source.get("client")
        block.touch(event)

    def _state_changed(self, event: Event) -> None:
        data = event["data"]
        self._add(StateBlock(f"ev:{event['seq']}", event["seq"], event["ts"],
                             statements=list(data.get("statements") or []),
                             changes=data.get("changes"),
                             by=source_label(event["source"])), event)

    def _other(self, event: Event) -> None:
        etype = event["type"]
        if etype.startswith(("agent.", "turn.", "tool.", "session.", "hub.")):
            return  # a hub or agent type this client does not show (future additions)
        self._add(EventBlock(f"ev:{event['seq']}", event["seq"], event["ts"], type=etype,
                             by=source_label(event["source"]),
                             data=dict(event.get("data") or {})), event)


_HANDLERS = {
    "session.created": Conversation._session_created,
    "session.forked": Conversation._session_forked,
    "user.message": Conversation._user_message,
    "agent.status": Conversation._agent_status,
    "turn.started": Conversation._turn_started,
    "turn.completed": Conversation._turn_ended,
    "turn.failed": Conversation._turn_ended,
    "agent.message.chunk": Conversation._agent_message_chunk,
    "agent.message": Conversation._agent_message,
    "agent.thought.chunk": Conversation._thought_chunk,
    "agent.thought": Conversation._thought,
    "tool.call": Conversation._tool,
    "tool.update": Conversation._tool,
    "plan": Conversation._plan,
    "permission.request": Conversation._permission_request,
    "permission.response": Conversation._permission_response,
    "state.changed": Conversation._state_changed,
}
