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

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from axtui.terminal import safe_value
from server.events import (
    AgentStatus,
    AgentText,
    Event,
    EventData,
    Json,
    PermissionOption,
    PermissionRequest,
    PermissionResponse,
    Plan,
    PlanEntry,
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

QUIET_STATUS = {
    "starting": "agent starting",
    "ready": "agent ready",
    "suspended": "agent suspended",
    "exited": "agent exited",
}
# How an agent came back (agent.status ready's resumeMode), in the user's words.
RESUME_WORDS = {
    "new": "new conversation",
    "resume": "conversation resumed",
    "load": "conversation reloaded",
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
        self.last_seq = event.seq


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
    content: list[Json] = field(default_factory=list)


@dataclass
class PlanBlock(Block):
    """The agent's plan for a turn, shown as a checklist (updated in place)."""

    entries: tuple[PlanEntry, ...] = ()


@dataclass
class PermissionBlock(Block):
    """A question to a person; ``answer`` says what was chosen, by whom and from where."""

    request_id: str = ""
    title: str = ""
    tool_kind: str = ""
    input: Any = None
    options: tuple[PermissionOption, ...] = ()
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

    statements: tuple[Statement, ...] = ()
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
    data: Json = field(default_factory=dict)


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

    def apply_all(self, events: Iterable[Event | Mapping[str, Any]]) -> None:
        """Apply a batch of events in order."""
        for event in events:
            self.apply(event)

    def apply(self, event: Event | Mapping[str, Any]) -> None:
        """Fold one event (parsed, or as the hub sent it) into the blocks; events at or
        below ``last_seq`` are ignored."""
        # Every string a block shows comes from here: made safe for the terminal once.
        raw = event.raw if isinstance(event, Event) else event
        clean = safe_value(raw)
        event = event if clean is raw and isinstance(event, Event) else as_event(clean)
        if event.seq <= self.last_seq:
            return
        self.last_seq = event.seq
        _HANDLERS.get(event.type, Conversation._other)(self, event, event.data)
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
        self._add(NoticeBlock(f"ev:{event.seq}", event.seq, event.ts, text=text,
                              failure=failure), event)

    def _session_created(self, event: Event, data: SessionCreated) -> None:
        by = event.source.label()
        self._notice(event, f"session “{data.title or 'untitled'}” created by {by}"
                     + (f" with agent {data.agent}" if data.agent else " (no agent)"))

    def _session_forked(self, event: Event, data: SessionForked) -> None:
        self._notice(event, f"forked from {data.from_session_id} at seq {data.at_seq}")

    def _user_message(self, event: Event, data: UserMessage) -> None:
        self._add(UserBlock(f"ev:{event.seq}", event.seq, event.ts, text=data.text,
                            name=event.source.name, client=event.source.client or ""), event)

    def _agent_status(self, event: Event, data: AgentStatus) -> None:
        reason = f": {data.reason}" if data.reason else ""
        if data.state == "crashed":
            self._notice(event, "agent crashed" + reason, failure=True)
        elif data.state == "failed":
            self._notice(event, "agent failed to start" + reason, failure=True)
        else:
            text = QUIET_STATUS.get(data.state, f"agent {data.state}")
            if data.state == "ready" and data.resume_mode:
                text += f" ({RESUME_WORDS.get(data.resume_mode, data.resume_mode)})"
            self._notice(event, text)

    def _turn_started(self, event: Event, data: TurnStarted) -> None:
        self.running_turn = data.turn_id or None

    def _turn_completed(self, event: Event, data: TurnCompleted) -> None:
        self._end_turn(event, data.turn_id or None)
        if data.stop_reason != "end_turn":
            self._notice(event, f"turn ended: {data.stop_reason}")

    def _turn_failed(self, event: Event, data: TurnFailed) -> None:
        self._end_turn(event, data.turn_id or None)
        message = f": {data.message}" if data.message else ""
        self._notice(event, f"turn failed ({data.reason}){message}", failure=True)

    def _end_turn(self, event: Event, turn_id: str | None) -> None:
        if self.running_turn == turn_id:
            self.running_turn = None
        for block in self.blocks.values():
            if isinstance(block, PermissionBlock) and block.open and block.turn_id == turn_id:
                block.answer = "closed: the turn ended"
                block.touch(event)

    def _text(self, event: Event, data: AgentText) -> None:
        """Every agent message or thought, whole or a chunk (the shape says which)."""
        prefix = "thought" if data.thought else "msg"
        key = f"{prefix}:{data.message_id or event.seq}"
        block = self.blocks.get(key)
        if block is None:
            self._add(TextBlock(key, event.seq, event.ts, text=data.text,
                                agent=event.source.name, thought=data.thought,
                                complete=data.complete), event)
            return
        assert isinstance(block, TextBlock)
        block.text = data.text if data.complete else block.text + data.text
        block.complete = block.complete or data.complete
        block.touch(event)

    def _tool(self, event: Event, data: ToolCall) -> None:
        """A tool call, or an update of the fields that changed."""
        key = f"tool:{data.tool_call_id or event.seq}"
        block = self.blocks.get(key)
        if not isinstance(block, ToolBlock):
            block = ToolBlock(key, event.seq, event.ts, tool_call_id=data.tool_call_id)
            self.blocks[key] = block
        if data.title is not None:
            block.title = data.title
        if data.kind is not None:
            block.kind = data.kind
        if data.status is not None:
            block.status = data.status
        if data.has_input:
            block.input = data.input
        if data.content is not None:
            block.content = data.content
        block.touch(event)

    def _plan(self, event: Event, data: Plan) -> None:
        turn = event.turn_id or self.running_turn
        key = self._turn_plans.get(turn or "") or f"plan:{event.seq}"
        if turn:
            self._turn_plans[turn] = key
        block = self.blocks.get(key)
        if isinstance(block, PlanBlock):
            block.entries = data.entries
            block.touch(event)
        else:
            self._add(PlanBlock(key, event.seq, event.ts, entries=data.entries), event)

    def _permission_request(self, event: Event, data: PermissionRequest) -> None:
        self._add(PermissionBlock(
            f"perm:{data.request_id}", event.seq, event.ts, request_id=data.request_id,
            title=data.title, tool_kind=data.tool_kind, input=data.tool_call.get("rawInput"),
            options=data.options, turn_id=event.turn_id), event)

    def _permission_response(self, event: Event, data: PermissionResponse) -> None:
        block = self.blocks.get(f"perm:{data.request_id}")
        if not isinstance(block, PermissionBlock) or not block.open:
            return
        if data.option_id is None:
            block.answer = "cancelled"
        else:
            names = {o.option_id: o.name for o in block.options}
            block.answer = names.get(data.option_id) or data.option_id
        block.answered_by = event.source.name
        block.answered_via = event.source.client
        block.touch(event)

    def _state_changed(self, event: Event, data: StateChanged) -> None:
        self._add(StateBlock(f"ev:{event.seq}", event.seq, event.ts,
                             statements=data.statements, changes=data.changes,
                             by=event.source.label()), event)

    def _other(self, event: Event, data: EventData) -> None:
        """An application's event; a hub or agent type this version does not know (a
        future addition) is not shown."""
        if event.type.startswith(("agent.", "turn.", "tool.", "session.", "hub.")):
            return
        self._add(EventBlock(f"ev:{event.seq}", event.seq, event.ts, type=event.type,
                             by=event.source.label(), data=event.fields), event)


# Each handler is given the data shape of its type (server.events.SHAPE_OF).
_Handler = Callable[[Conversation, Event, Any], None]
_HANDLERS: dict[str, _Handler] = {
    "session.created": Conversation._session_created,
    "session.forked": Conversation._session_forked,
    "user.message": Conversation._user_message,
    "agent.status": Conversation._agent_status,
    "turn.started": Conversation._turn_started,
    "turn.completed": Conversation._turn_completed,
    "turn.failed": Conversation._turn_failed,
    "agent.message.chunk": Conversation._text,
    "agent.message": Conversation._text,
    "agent.thought.chunk": Conversation._text,
    "agent.thought": Conversation._text,
    "tool.call": Conversation._tool,
    "tool.update": Conversation._tool,
    "plan": Conversation._plan,
    "permission.request": Conversation._permission_request,
    "permission.response": Conversation._permission_response,
    "state.changed": Conversation._state_changed,
}
