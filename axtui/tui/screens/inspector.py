"""The event inspector: every event of a session with its raw JSON, and fork at an event.

The main app pushes ``InspectorScreen(client, session_id, seq=None)``; the screen hears of
live events through the app's ``session_events`` signal (:meth:`InspectorScreen.add_events`
takes them). It is dismissed with ``None`` (escape) or
with the new session's dict after a fork (``f`` twice), which the app then opens.

The window: a session may hold 100k events, so the table holds a window of at most
:data:`MAX_ROWS` of them. Opening loads :data:`PAGE` events before the selected seq and
:data:`PAGE` from it on (two ``session/history`` calls); when the cursor comes within
:data:`EDGE` rows of either end and there is more that way, the next :data:`PAGE` events
are loaded on that side and as many are dropped from the far side as needed to stay
within :data:`MAX_ROWS`. ``g`` jumps to a seq and ``t`` filters by type; both load a new
window, ``[`` and ``]`` jump to the first and the latest event.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.highlight import highlight
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Static

from axtui.client import HubClient
from axtui.terminal import safe_json_line, safe_text
from axtui.tui.hubapp import hub_app
from axtui.tui.messages import SessionEvents
from axtui.tui.widgets.status import StatusBar
from server.events import (
    AgentStatus,
    Event,
    EventData,
    Json,
    PermissionRequest,
    PermissionResponse,
    Plan,
    SessionCreated,
    SessionForked,
    StateChanged,
    ToolCall,
    TurnCompleted,
    TurnFailed,
    as_event,
    parse_event,
)
from server.protocol import ProtocolError
from server.sources import Source
from server.typepattern import TypeFilter, TypePattern

PAGE = 500  # events per history call
MAX_ROWS = 1500  # the most events the table holds at once
EDGE = 40  # rows from either end of the window at which the next page is loaded
SUMMARY_CHARS = 80

def format_time(ts: int) -> str:
    """``ts`` (ms since the epoch) as local ``HH:MM:SS.mmm``."""
    return datetime.fromtimestamp(ts / 1000).strftime("%H:%M:%S.") + f"{ts % 1000:03d}"


def event_json(event: Event) -> str:
    """The event as stored, pretty-printed (keys in the hub's order)."""
    return safe_json_line(json.dumps(event.raw, indent=2, ensure_ascii=False))


def event_source(source: Source) -> str:
    """Who published: ``name·client`` for a client, ``agent name`` for an agent, ``hub``."""
    if source.kind == "client":
        return source.label(via="·")
    if source.kind == "agent":
        return f"agent {source.name}"
    return source.kind


def _one_line(text: str, chars: int = SUMMARY_CHARS) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= chars else text[: chars - 1] + "…"


def _joined(*parts: object) -> str:
    return _one_line(" · ".join(str(p) for p in parts if p))


def event_summary(event: Event | Mapping[str, Any]) -> str:
    """A short one-line account of an event's data, by type (compact JSON otherwise)."""
    event = as_event(event)
    return _SUMMARIES.get(event.type, _fields)(event.data, event.fields)


# --- summaries, by type (given the type's data shape and the data as stored); messages and
# thoughts read as their text, like any other event with a text field ----------------------

def _state_changed(data: StateChanged, fields: Json) -> str:
    sqls = [statement.sql for statement in data.statements]
    more = f" (+{len(sqls) - 1})" if len(sqls) > 1 else ""
    changes = 0 if data.changes is None else data.changes
    return _one_line(f"{changes} changed · {sqls[0] if sqls else ''}{more}")


def _tool(data: ToolCall, fields: Json) -> str:
    return _joined(data.title, data.status, data.tool_call_id)


def _permission_request(data: PermissionRequest, fields: Json) -> str:
    return _one_line(f"asks: {data.title or data.request_id}")


def _permission_response(data: PermissionResponse, fields: Json) -> str:
    return _one_line(f"{data.option_id or 'cancelled'} for {data.request_id}")


def _plan(data: Plan, fields: Json) -> str:
    done = sum(1 for entry in data.entries if entry.status == "completed")
    return f"{len(data.entries)} entries, {done} done"


def _session_forked(data: SessionForked, fields: Json) -> str:
    return f"from {data.from_session_id} at seq {data.at_seq}"


def _session_created(data: SessionCreated, fields: Json) -> str:
    agent = f" · agent {data.agent}" if data.agent else ""
    return _one_line(f"{data.title or '(no title)'}{agent}")


def _turn_completed(data: TurnCompleted, fields: Json) -> str:
    return _joined(data.stop_reason)


def _turn_failed(data: TurnFailed, fields: Json) -> str:
    return _joined(data.reason, data.message)


def _agent_status(data: AgentStatus, fields: Json) -> str:
    return _joined(data.state, data.reason)


def _fields(data: EventData, fields: Json) -> str:
    """Any other event: its ``text`` if it has one, else its data as compact JSON."""
    if isinstance(fields.get("text"), str):
        return _one_line(fields["text"])
    return _one_line(json.dumps(fields, ensure_ascii=False, separators=(",", ":")))


_SUMMARIES: dict[str, Callable[[Any, Json], str]] = {
    "state.changed": _state_changed, "tool.call": _tool, "tool.update": _tool,
    "permission.request": _permission_request, "permission.response": _permission_response,
    "plan": _plan, "session.forked": _session_forked, "session.created": _session_created,
    "turn.completed": _turn_completed, "turn.failed": _turn_failed,
    "agent.status": _agent_status,
}


class InspectorScreen(Screen[dict[str, Any] | None]):
    """A table of a session's events beside the selected event's raw JSON.

    Keys: ``g`` jump to a seq, ``t`` filter by type, ``[``/``]`` first/latest event,
    ``c`` copy the JSON, ``f`` (twice) fork the session at the selected event, escape close.
    """

    CSS_PATH = "inspector.tcss"
    AUTO_FOCUS = "#inspector-events"
    # Below 110 columns the JSON pane goes under the table (see inspector.tcss).
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]  # noqa: RUF012 (as Textual types it)
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close"),
        Binding("g", "prompt('jump')", "Go to"),
        Binding("t", "prompt('filter')", "Filter"),
        Binding("left_square_bracket", "first", "First"),
        Binding("right_square_bracket", "latest", "Latest"),
        Binding("c", "copy", "Copy"),
        Binding("f", "fork", "Fork"),
    ]

    def __init__(self, client: HubClient, session_id: str, seq: int | None = None) -> None:
        super().__init__()
        self.client = client
        self.session_id = session_id
        self.initial_seq = seq
        self.events: list[Event] = []  # the window, ascending by seq, as rows of the table
        self.selected_seq: int | None = None
        self.head_seq = 0
        self.types: list[str] = []  # the type filter, as session/history's types
        self.more_before = False
        self.more_after = False
        self.busy = True  # a history call is under way
        self._titled = False
        self._prompt_mode = ""
        self._fork_armed: int | None = None  # the seq that a second f forks at
        self._notice: tuple[Text, bool, bool] | None = None  # kept until the cursor moves
        self._live_backlog: list[Event] = []  # live events that came during a load
        # With a type filter: the matching events in all and before the window (None:
        # unknown), so that "showing x–y of z" counts what the filter shows.
        self.matches: tuple[int, int] | None = None

    def compose(self) -> ComposeResult:
        """Header, events table beside the JSON pane, status line, prompt, footer."""
        yield Header()
        with Horizontal(id="inspector-body"):
            yield DataTable(id="inspector-events", cursor_type="row", zebra_stripes=True)
            with VerticalScroll(id="inspector-raw"):
                yield Static("", id="inspector-json")
        yield Static("", id="inspector-status")
        yield Input(id="inspector-prompt")
        yield StatusBar()
        yield Footer()

    def on_mount(self) -> None:
        """Set up columns and the title; load the window around the wanted seq; listen
        for the session's live events."""
        hub_app(self).session_events.subscribe(self, self._session_events)
        self.title = f"Events · {self.session_id}"
        table = self.query_one("#inspector-events", DataTable)
        for label in ("seq", "time", "source", "type", "summary"):
            table.add_column(label, key=label)
        self._open(self.initial_seq)

    # --- public --------------------------------------------------------------------------

    def add_events(self, events: Iterable[Event | Mapping[str, Any]]) -> None:
        """Live events of this session (ascending, parsed or as the hub sent them). They
        are appended when the window reaches the head and they pass the type filter;
        otherwise only the count moves."""
        if self.busy:
            self._live_backlog.extend(map(as_event, events))
            return
        fresh = [e for e in map(as_event, events) if e.seq > self.head_seq]
        if not fresh:
            return
        self.head_seq = fresh[-1].seq
        if self.more_after:
            self._show_status()
            return
        types = TypeFilter.of(self.types)
        fresh = [e for e in fresh if types.matches(e.type)]
        table = self.query_one("#inspector-events", DataTable)
        following = table.row_count == 0 or table.cursor_row == table.row_count - 1
        cursor = table.cursor_row
        for event in fresh:
            self.events.append(event)
            table.add_row(*self._cells(event), key=str(event.seq))
        overflow = max(0, len(self.events) - MAX_ROWS)
        if overflow:
            for event in self.events[:overflow]:
                table.remove_row(str(event.seq))
            del self.events[:overflow]
            self.more_before = True
        if self.matches is not None:
            total, before = self.matches
            self.matches = (total + len(fresh), before + overflow)
        if self.events:
            # Follow the head from the last row; elsewhere stay on the same event.
            row = len(self.events) - 1 if following else max(0, cursor - overflow)
            table.move_cursor(row=row, animate=False)
        self._show_status()

    def _session_events(self, message: SessionEvents) -> None:
        if message.session_id == self.session_id:
            self.add_events(message.events)

    # --- loading -------------------------------------------------------------------------

    @work(exclusive=True, group="inspector-load")
    async def _open(self, seq: int | None, asked: bool = False) -> None:
        """Load a fresh window around ``seq`` (``None``: the latest event); ``asked``: the
        user typed ``seq``, so say so when it is not there."""
        self._begin_loading()
        try:
            if not self._titled:
                session = await self.client.get_session(self.session_id)
                self.title = safe_text(f"Events · {session.get('title') or self.session_id}")
                self.sub_title = self.session_id if session.get("title") else ""
                self._titled = True
            filt = {"types": self.types} if self.types else {}
            head = await self.client.history(self.session_id, beforeSeq=1, limit=1, **filt)
            self.head_seq = head["headSeq"]
            target = self.head_seq if seq is None else max(1, min(seq, self.head_seq))
            before = await self.client.history(self.session_id, beforeSeq=target + 1,
                                               limit=PAGE, **filt)
            after = await self.client.history(self.session_id, afterSeq=target,
                                              limit=PAGE, **filt)
        except (ProtocolError, ConnectionError) as exc:
            self._end_loading()
            self._show_status(Text(_message(exc)), error=True)
            return
        self.head_seq = max(self.head_seq, after["headSeq"])
        self.events = [parse_event(e) for e in before["events"] + after["events"]]
        self.more_before = len(before["events"]) == PAGE
        self.more_after = len(after["events"]) == PAGE
        await self._count_matches()
        # The selected event is the wanted one, or the nearest one before it that the
        # filter lets through (or after it, when nothing before does).
        at = len(before["events"]) - 1 if before["events"] else 0
        self._rebuild(at)
        self._end_loading()
        if asked and self.events and self.selected_seq != seq:
            self._show_status(Text(f"No event {seq} here; showing {self.selected_seq}"))

    @work(exclusive=True, group="inspector-load")
    async def _extend(self, older: bool) -> None:
        """Load the next page on one side of the window and drop rows from the other."""
        if not self.events:
            return
        self._begin_loading()
        filt = {"types": self.types} if self.types else {}
        try:
            if older:
                page = await self.client.history(self.session_id,
                                                 beforeSeq=self.events[0].seq,
                                                 limit=PAGE, **filt)
            else:
                page = await self.client.history(self.session_id,
                                                 afterSeq=self.events[-1].seq,
                                                 limit=PAGE, **filt)
        except (ProtocolError, ConnectionError) as exc:
            self._end_loading()
            self._show_status(Text(_message(exc)), error=True)
            return
        self.head_seq = max(self.head_seq, page["headSeq"])
        got = [parse_event(e) for e in page["events"]]
        keep = self.selected_seq
        if older:
            self.more_before = len(got) == PAGE
            self.events = got + self.events
            if len(self.events) > MAX_ROWS:
                self.events = self.events[:MAX_ROWS]
                self.more_after = True
        else:
            self.more_after = len(got) == PAGE
            self.events = self.events + got
            if len(self.events) > MAX_ROWS:
                self.events = self.events[-MAX_ROWS:]
                self.more_before = True
        await self._count_matches()
        seqs = [e.seq for e in self.events]
        self._rebuild(seqs.index(keep) if keep in seqs else 0)
        self._end_loading()

    async def _count_matches(self) -> None:
        """With a type filter, count the matching events in all and before the window
        (through the events view); left unknown when the hub does not answer."""
        self.matches = None
        if not self.types or not self.events:
            return
        globs = [TypePattern(p).sqlite_glob for p in self.types]
        where = " OR ".join("type GLOB ?" for _ in globs)
        sql = f"SELECT count(*), coalesce(sum(seq < ?), 0) FROM events WHERE {where}"
        try:
            answer = await self.client.query(self.session_id, sql, [self.events[0].seq, *globs])
            total, before = answer["rows"][0]
        except (ProtocolError, ConnectionError, LookupError, ValueError):
            return
        self.matches = (int(total), int(before))

    def _begin_loading(self) -> None:
        self.busy = True
        self._notice = None
        self.query_one("#inspector-events", DataTable).loading = not self.events
        self._show_status()

    def _end_loading(self) -> None:
        self.busy = False
        self.query_one("#inspector-events", DataTable).loading = False
        backlog, self._live_backlog = self._live_backlog, []
        if backlog:
            self.add_events(backlog)
        self._show_status()

    def _rebuild(self, cursor: int) -> None:
        """Fill the table with the window and put the cursor on row ``cursor``."""
        table = self.query_one("#inspector-events", DataTable)
        table.clear()
        for event in self.events:
            table.add_row(*self._cells(event), key=str(event.seq))
        if self.events:
            table.move_cursor(row=cursor, animate=False)
            self._select(self.events[cursor])
        else:
            self._select(None)

    # --- selection and the JSON pane -----------------------------------------------------

    @on(DataTable.RowHighlighted, "#inspector-events")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        # Where the cursor is now, not where the message says: a rebuild posts one for
        # row 0 (clear) before the one for the row it restores.
        table = self.query_one("#inspector-events", DataTable)
        index = table.cursor_row
        if not 0 <= index < len(self.events) or table.row_count != len(self.events):
            return
        self._select(self.events[index])
        if self.busy:
            return
        if index < EDGE and self.more_before:
            self._extend(older=True)
        elif index >= len(self.events) - EDGE and self.more_after:
            self._extend(older=False)

    def _select(self, event: Event | None) -> None:
        seq = event.seq if event is not None else None
        if seq != self.selected_seq:
            self._fork_armed = None
            self._notice = None
        self.selected_seq = seq
        pane = self.query_one("#inspector-json", Static)
        pane.update(highlight(event_json(event), language="json") if event is not None else "")
        self._show_status()

    # --- actions -------------------------------------------------------------------------

    def action_close(self) -> None:
        """Close the prompt or a pending fork, else the screen (with ``None``)."""
        if self._prompt_mode:
            self._close_prompt()
        elif self._fork_armed is not None:
            self._fork_armed = self._notice = None
            self._show_status()
        else:
            self.dismiss(None)

    def action_prompt(self, mode: str) -> None:
        """Open the small input to jump to a seq or to set the type filter."""
        prompt = self.query_one("#inspector-prompt", Input)
        self._prompt_mode = mode
        if mode == "jump":
            prompt.placeholder = f"Go to seq (1 to {self.head_seq}), Enter to go, Esc to cancel"
            prompt.value = ""
        else:
            prompt.placeholder = "Types, e.g. user.* agent.message (empty: all), Enter to apply"
            prompt.value = " ".join(self.types)
        prompt.add_class("-open")
        prompt.focus()

    @on(Input.Submitted, "#inspector-prompt")
    def _prompt_submitted(self, event: Input.Submitted) -> None:
        mode, text = self._prompt_mode, event.value.strip()
        if mode == "jump":
            try:
                seq = int(text.lstrip("#"))
            except ValueError:
                self._show_status(Text(f"Not a seq: {text!r} (type a number)"), error=True)
                return
            self._close_prompt()
            self._open(seq, asked=True)
        else:
            self._close_prompt()
            self.types = [p for p in re.split(r"[\s,]+", text) if p]
            self._open(self.selected_seq)

    def _close_prompt(self) -> None:
        self._prompt_mode = ""
        self.query_one("#inspector-prompt", Input).remove_class("-open")
        self.query_one("#inspector-events", DataTable).focus()

    def action_first(self) -> None:
        """Show the first event (of those passing the filter)."""
        self._open(1)

    def action_latest(self) -> None:
        """Show the latest event."""
        self._open(None)

    def action_copy(self) -> None:
        """Copy the selected event's JSON to the clipboard."""
        event = self._selected_event()
        if event is None:
            return
        self.app.copy_to_clipboard(event_json(event))
        self.notify(f"Copied event {event.seq} as JSON")

    def action_fork(self) -> None:
        """Fork the session at the selected event: the first press asks, the second forks."""
        if self.selected_seq is None or self.busy:
            return
        if self._fork_armed != self.selected_seq:
            self._fork_armed = self.selected_seq
            self._show_status(Text.assemble(
                (f"Fork {self.session_id} at seq {self.selected_seq}? ", "bold"),
                "Press f again to fork, Esc to cancel."), warning=True)
            return
        self._fork_armed = None
        self._fork(self.selected_seq)

    @work(exclusive=True, group="inspector-fork")
    async def _fork(self, seq: int) -> None:
        self._show_status(Text(f"Forking at seq {seq}…", style="italic"))
        try:
            result = await self.client.call(
                "session/fork", {"sessionId": self.session_id, "atSeq": seq}
            )
        except (ProtocolError, ConnectionError) as exc:
            self._show_status(Text(f"Fork failed: {_message(exc)}"), error=True)
            return
        self.dismiss(result["session"])

    # --- helpers -------------------------------------------------------------------------

    def _selected_event(self) -> Event | None:
        for event in self.events:
            if event.seq == self.selected_seq:
                return event
        return None

    @staticmethod
    def _cells(event: Event) -> tuple[Text, ...]:
        return (
            Text(str(event.seq), justify="right"),
            Text(format_time(event.ts), style="dim"),
            Text(safe_text(event_source(event.source))),
            Text(event.type, style="bold"),
            Text(safe_text(event_summary(event))),
        )

    def _show_status(self, text: Text | None = None, *, error: bool = False,
                     warning: bool = False) -> None:
        """The status line: ``text`` if given (kept until the selection changes), else
        where the window is."""
        status = self.query_one("#inspector-status", Static)
        if text is not None:
            self._notice = (text, error, warning)
        if self._notice is not None:
            text, error, warning = self._notice
        else:
            text = self._window_text()
        status.update(text)
        status.set_class(error, "-error")
        status.set_class(warning, "-warning")

    def _window_text(self) -> Text:
        if self.busy and not self.events:
            return Text("Loading events…", style="italic")
        text = Text()
        if self.selected_seq is not None:
            text.append(f"seq {self.selected_seq}", style="bold")
            text.append(" · ")
        if self.events and self.types and self.matches is not None:
            total, before = self.matches
            text.append(f"showing {before + 1}\N{EN DASH}{before + len(self.events)} of "
                        f"{total} matching · {self.head_seq} in all")
        elif self.events and self.types:
            text.append(f"showing {len(self.events)} matching (seq {self.events[0].seq}"
                        f"\N{EN DASH}{self.events[-1].seq}) · {self.head_seq} in all")
        elif self.events:
            text.append(f"showing {self.events[0].seq}\N{EN DASH}{self.events[-1].seq} "
                        f"of {self.head_seq}")
        else:
            text.append(f"no events{' match' if self.types else ''} of {self.head_seq}")
        if self.types:
            text.append(" · types ", style="dim")
            text.append(" ".join(self.types))
        if self.busy:
            text.append(" · loading…", style="italic")
        return text


def _message(exc: BaseException) -> str:
    """The sentence to show for a failed call: the hub's message, or the connection's."""
    if isinstance(exc, ProtocolError):
        return exc.message
    return str(exc) or type(exc).__name__
