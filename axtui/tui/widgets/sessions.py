"""The session sidebar: every session, most recent activity first, kept live."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from axtui.terminal import safe_text

STATE_MARKS: dict[str, tuple[str, str]] = {
    "none": ("·", "dim"),
    "suspended": ("○", "dim"),
    "starting": ("◌", "yellow"),
    "idle": ("●", "green"),
    "running": ("◐", "yellow"),
    "waiting": ("?", "bold magenta"),
    "failed": ("✗", "bold red"),
}

STATE_WORDS = {"waiting": "waiting for permission", "none": "no agent"}


def state_mark(state: str) -> Text:
    """The coloured mark for an agent state."""
    mark, style = STATE_MARKS.get(state, ("•", ""))
    return Text(mark, style=style)


def state_word(state: str) -> str:
    """An agent state in words (``waiting for permission``)."""
    return STATE_WORDS.get(state, state)


class SessionList(Vertical):
    """Sessions newest activity first, with agent state and unread counts; filterable.

    Fed with whole session objects (from ``session/list`` and ``session/updated``); posts
    :class:`SessionList.Selected` when the user opens one (Enter on a row, or Enter in the
    filter when one session is left). A session's unread count is the number of events that
    arrived since this app first saw it, until it is opened.
    """

    DEFAULT_CSS = """
    SessionList { width: 30%; min-width: 22; max-width: 36; border-right: tall $panel; }
    SessionList > Input { margin: 0; border: none; height: 1; padding: 0 1;
                          background: $surface; }
    SessionList > Input:focus { border: none; background: $boost; }
    SessionList > OptionList { height: 1fr; border: none; padding: 0; background: $surface; }
    SessionList > .empty { padding: 0 1; color: $text-muted; text-style: italic; }
    SessionList > OptionList:focus { border: none; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "clear_filter", "Clear filter", show=False),
    ]

    class Selected(Message):
        """The user opened the session ``session_id``."""

        def __init__(self, session_id: str) -> None:
            super().__init__()
            self.session_id = session_id

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.sessions: dict[str, dict[str, Any]] = {}
        self.current: str | None = None
        self._seen: dict[str, int] = {}
        self._order: list[str] = []
        self._dirty = False
        self.loaded = False  # true once the first full list has arrived
        self._follow_current = False

    def compose(self) -> ComposeResult:
        yield Input(placeholder="filter sessions (ctrl+f)", id="session-filter")
        yield Static(classes="empty", id="session-empty")
        yield OptionList(id="session-options")

    def on_mount(self) -> None:
        self.query_one("#session-empty", Static).display = False

    @property
    def options(self) -> OptionList:
        """The list itself."""
        return self.query_one(OptionList)

    def set_sessions(self, sessions: list[dict[str, Any]]) -> None:
        """Replace the whole list (after connecting or reconnecting)."""
        self.sessions = {s["sessionId"]: s for s in sessions}
        self.loaded = True
        for sid, session in self.sessions.items():
            self._seen.setdefault(sid, session["headSeq"])
        self._schedule()

    def update_session(self, session: dict[str, Any]) -> None:
        """A session was created or changed."""
        sid = session["sessionId"]
        self._seen.setdefault(sid, 0 if sid not in self.sessions else session["headSeq"])
        self.sessions[sid] = session
        if sid == self.current:
            self._seen[sid] = session["headSeq"]
        self._schedule()

    def remove_session(self, session_id: str) -> None:
        """A session was deleted."""
        self.sessions.pop(session_id, None)
        self._seen.pop(session_id, None)
        self._schedule()

    def open(self, session_id: str | None) -> None:
        """``session_id`` is now the open session: highlight it."""
        self.current = session_id
        self._follow_current = True
        self._schedule()

    def mark_read(self, session_id: str, seq: int) -> None:
        """Everything up to ``seq`` of ``session_id`` has been seen (no redraw: the open
        session shows no unread count anyway)."""
        self._seen[session_id] = max(seq, self._seen.get(session_id, 0))

    def unread(self, session_id: str) -> int:
        """Events of ``session_id`` not yet seen."""
        session = self.sessions.get(session_id)
        if session is None or session_id == self.current:
            return 0
        head = int(session["headSeq"])
        return max(0, head - self._seen.get(session_id, head))

    def focus_filter(self) -> None:
        """Put the cursor in the filter box."""
        self.query_one(Input).focus()

    def action_clear_filter(self) -> None:
        self.query_one(Input).value = ""
        self.options.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self._schedule()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        shown = self._shown()
        if len(shown) == 1:
            self.post_message(self.Selected(shown[0]["sessionId"]))
        else:
            self.options.focus()

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        # The list gets the focus with a row highlighted, so Enter opens something.
        options = self.options
        if event.widget is options and options.highlighted is None and options.option_count:
            options.highlighted = 0

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option.id:
            self.post_message(self.Selected(event.option.id))

    def _schedule(self) -> None:
        # Updates arrive in bursts (up to ~10 a second per session): redraw once per frame.
        if not self._dirty:
            self._dirty = True
            self.call_after_refresh(self._redraw)

    def _shown(self) -> list[dict[str, Any]]:
        """The sessions the filter lets through, latest activity first."""
        needle = self.query_one(Input).value.strip().lower()
        ordered = sorted(self.sessions.values(),
                         key=lambda s: (s.get("updatedAt", 0), s["sessionId"]), reverse=True)
        return [s for s in ordered if not needle or needle in _haystack(s)]

    def _redraw(self) -> None:
        self._dirty = False
        shown = self._shown()
        needle = self.query_one(Input).value.strip()
        empty = self.query_one("#session-empty", Static)
        empty.display = bool(needle) and not shown
        if empty.display:
            empty.update(Text(f"no sessions match {needle!r}"))
        options = self.options
        highlighted = options.highlighted_option.id if options.highlighted_option else None
        options.clear_options()
        options.add_options([Option(self._label(s), id=s["sessionId"]) for s in shown])
        self._order = [s["sessionId"] for s in shown]
        target = self.current if self._follow_current else highlighted
        self._follow_current = False
        if target in self._order:
            options.highlighted = self._order.index(target)
        elif self._order and options.has_focus:
            options.highlighted = 0

    def _label(self, session: dict[str, Any]) -> Text:
        sid = session["sessionId"]
        state = session.get("agentState", "none")
        title = safe_text(session.get("title") or sid)
        line = Text.assemble(state_mark(state), " ")
        line.append(title[:26] + ("…" if len(title) > 26 else ""),
                    style="bold" if sid == self.current else "")
        unread = self.unread(sid)
        if unread:
            line.append(f" {unread}", style="bold reverse")
        agent = session.get("agent")
        line.append(f"\n  {agent} · {state_word(state)}" if agent else "\n  no agent",
                    style="dim")
        return line


def _haystack(session: dict[str, Any]) -> str:
    return " ".join(str(session.get(k) or "") for k in ("sessionId", "title", "agent",
                                                         "agentState")).lower()
