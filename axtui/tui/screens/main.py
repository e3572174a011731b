"""The main screen: the session sidebar, the open conversation, and the message input."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.dom import DOMNode
from textual.screen import Screen
from textual.widgets import Footer, Static
from textual.worker import Worker, WorkerCancelled, WorkerFailed

from axtui.client import HubClient, ProtocolError, Subscription
from axtui.terminal import safe_text
from axtui.tui.hubapp import hub_app
from axtui.tui.messages import Connection, SessionDeleted, SessionEvents, SessionUpdated
from axtui.tui.model import Conversation
from axtui.tui.waiting import oldest_waiting
from axtui.tui.widgets.blocks import BlockWidget, PermissionPrompt
from axtui.tui.widgets.composer import Composer
from axtui.tui.widgets.conversation import ConversationView
from axtui.tui.widgets.sessions import SessionList, state_mark, state_word
from axtui.tui.widgets.status import StatusBar
from server.events import parse_event

OPEN_WINDOW = 1000  # events read when a session opens; older ones are for replay/inspector
CANCEL_WINDOW = 1.5  # seconds within which a second Esc cancels the turn
CONFIRM_WINDOW = 3.0  # seconds within which a second F5 (or F8) goes ahead


class MainScreen(Screen[None]):
    """Sessions on the left; the open session's conversation and input on the right."""

    CSS_PATH = "main.tcss"
    AUTO_FOCUS = "#session-options"  # the list, not the filter: typing must not vanish

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f1", "help", "Help"),
        Binding("ctrl+n", "new_session", "New"),
        Binding("ctrl+f", "filter", "Filter", show=False),  # the box says ctrl+f
        Binding("ctrl+l", "sessions", "Sessions", show=False),
        # Not in the footer, so that it fits 100 columns: in F1 help and the palette.
        Binding("ctrl+t", "toggle_thoughts", "Thoughts", show=False),
        Binding("ctrl+o", "answer", "Answer", show=True),
        Binding("f2", "state", "State"),
        Binding("f3", "inspect", "Inspect"),
        Binding("f4", "replay", "Replay"),
        Binding("f5", "fork", "Fork"),
        Binding("f8", "delete", "Delete"),
        Binding("escape", "cancel_turn", "Cancel turn (twice)", show=False),
    ]

    def __init__(self, initial_session: str | None = None) -> None:
        super().__init__()
        self.initial_session = initial_session
        self.session_id: str | None = None
        self.session: dict[str, Any] | None = None
        self.conversation = Conversation()
        self.subscription: Subscription | None = None
        self.window_start = 0
        self._last_escape = 0.0
        self._sync_pending = False
        self._unsubscribing: Worker[None] | None = None
        self._prompted: set[str] = set()  # permission requests already brought forward
        self._answer_on_open = False  # Ctrl+O opened this session: focus its request
        self._armed: tuple[str, str, float] | None = None  # action, session, when (F5, F8)
        self._deleting: set[str] = set()  # deleted from here: no "was deleted" warning

    # --- layout ---------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Horizontal(id="body"):
            yield SessionList(id="sessions")
            with Vertical(id="session-pane"):
                yield Static(id="session-header")
                yield ConversationView(id="conversation")
                yield Composer(id="composer")
        yield StatusBar(id="status")
        yield Footer()

    def on_mount(self) -> None:
        self._draw_header()

    @property
    def client(self) -> HubClient | None:
        """The app's hub client, once connected."""
        return hub_app(self).client

    @property
    def view(self) -> ConversationView:
        """The conversation pane."""
        return self.query_one(ConversationView)

    @property
    def sidebar(self) -> SessionList:
        """The session list."""
        return self.query_one(SessionList)

    # --- the hub ----------------------------------------------------------------------------

    def on_connection(self, message: Connection) -> None:
        if not message.connected:
            return
        self._load_sessions()
        if self.session_id is not None:
            self.notify(f"Reconnected; {self.session_id} resumes after seq "
                        f"{self.conversation.last_seq} with nothing missed.", timeout=3)
        elif self.initial_session:
            self.open_session(self.initial_session)
            self.initial_session = None

    @work(group="sessions", exclusive=True)
    async def _load_sessions(self) -> None:
        client = self.client
        if client is None:
            return
        try:
            await client.call("sessions/watch")
            self.sidebar.set_sessions([s async for s in client.list_sessions()])
        except (ProtocolError, ConnectionError) as exc:
            self.notify(f"Could not list sessions: {exc}", severity="error")

    def on_session_updated(self, message: SessionUpdated) -> None:
        self.sidebar.update_session(message.session)
        if message.session["sessionId"] == self.session_id:
            self.session = message.session
            self._draw_header()

    def on_session_deleted(self, message: SessionDeleted) -> None:
        self.sidebar.remove_session(message.session_id)
        if message.session_id == self.session_id:
            if message.session_id not in self._deleting:
                self.notify(f"Session {message.session_id} was deleted.", severity="warning")
            self._close_session()

    # --- opening a session ------------------------------------------------------------------

    @on(SessionList.Selected)
    def _selected(self, message: SessionList.Selected) -> None:
        self.open_session(message.session_id)

    def open_session(self, session_id: str) -> None:
        """Show ``session_id``: its latest events, then live ones as they come."""
        self._close_session()
        self._answer_on_open = False
        self.session_id = session_id
        self.sidebar.open(session_id)
        self._follow(session_id)

    def _close_session(self) -> None:
        self.workers.cancel_group(self, "follow")
        if self.subscription is not None:
            sub, self.subscription = self.subscription, None
            self._unsubscribing = self.run_worker(sub.close(), group="unsubscribe")
        self.session_id = None
        self.session = None
        self.conversation = Conversation()
        self.view.reset()
        self._draw_header()

    @work(group="follow", exclusive=True)
    async def _follow(self, session_id: str) -> None:
        client = self.client
        if client is None:
            return
        try:
            session = await client.get_session(session_id)
        except (ProtocolError, ConnectionError) as exc:
            self.notify(f"Cannot open {session_id}: {exc}", severity="error")
            return
        self.session = session
        self.window_start = max(0, session["headSeq"] - OPEN_WINDOW)
        self.sidebar.update_session(session)
        self._draw_header()
        self.query_one(Composer).focus()
        if self._unsubscribing is not None:
            with contextlib.suppress(WorkerCancelled, WorkerFailed):
                await self._unsubscribing.wait()  # reopening the same session waits for it
        sub = client.subscribe(session_id, after_seq=self.window_start, epoch=session["epoch"])
        self.subscription = sub
        try:
            while True:
                batch = await sub.next_batch()
                self.post_message(SessionEvents(session_id, [parse_event(e) for e in batch]))
        except StopAsyncIteration:
            return
        except (ProtocolError, ConnectionError) as exc:
            self.notify(f"Stopped following {session_id}: {exc}", severity="error")

    def on_session_events(self, message: SessionEvents) -> None:
        """Fold the open session's events in; the message then goes on up to the app,
        which tells the other screens (the inspector, the state view)."""
        if message.session_id != self.session_id:
            return
        self.conversation.apply_all(message.events)
        self.sidebar.mark_read(message.session_id, self.conversation.last_seq)
        if not self._sync_pending:
            # Events can arrive hundreds a second: redraw once per frame, not once a batch.
            self._sync_pending = True
            self.call_after_refresh(self._sync)

    def _sync(self) -> None:
        self._sync_pending = False
        earlier = (f"events 1–{self.window_start} are in replay (F4) and the inspector (F3)"
                   if self.window_start else None)
        self.view.sync(self.conversation, earlier)
        self._draw_header()
        asking = {p.request_id for p in self.conversation.open_permissions()}
        if asking and self._answer_on_open:
            self._answer_on_open = False
            self._prompted |= asking
            self.call_after_refresh(self._focus_open_request)
        elif asking - self._prompted:
            self._prompted |= asking
            composer = self.query_one(Composer)
            if self.focused is composer and not composer.text:
                self.call_after_refresh(self._focus_open_request)
            else:
                self.notify("Permission requested: ctrl+o to answer.", timeout=4)

    def _draw_header(self) -> None:
        header = self.query_one("#session-header", Static)
        session = self.session
        if session is None:
            header.update(Text("No session open: pick one on the left, or ctrl+n for a new "
                               "one.", style="dim"))
            self.query_one(StatusBar).set_note("")
            return
        state = session.get("agentState", "none")
        line = Text.assemble(state_mark(state), " ",
                             (safe_text(session.get("title") or session["sessionId"]), "bold"),
                             (f"  {session.get('agent') or 'no agent'} · {state_word(state)}",
                              "dim"))
        if self.conversation.running_turn:
            line.append("  ·  Esc Esc cancels", style="italic")
        header.update(line)
        self.query_one(StatusBar).set_note(
            f"{session['sessionId']} · seq {self.conversation.last_seq}")

    # --- taking part ------------------------------------------------------------------------

    @on(Composer.Submitted)
    def _send(self, message: Composer.Submitted) -> None:
        if self.session_id is None:
            self.notify("Open or create a session first (ctrl+n).", severity="warning")
            self.query_one(Composer).load_text(message.text)
            return
        self._publish_message(self.session_id, message.text)

    @work(group="publish")
    async def _publish_message(self, session_id: str, text: str) -> None:
        if not await self._publish(session_id, "user.message", {"text": text}):
            composer = self.query_one(Composer)
            if not composer.text:
                composer.load_text(text)  # nothing is lost: the text comes back to edit

    async def _publish(self, session_id: str, type_: str, data: dict[str, Any]) -> bool:
        client = self.client
        if client is None:
            self.notify("Not connected to the hub yet.", severity="error")
            return False
        try:
            await client.publish(session_id, type_, data, idempotency_key=str(uuid.uuid4()))
        except (ProtocolError, ConnectionError) as exc:
            self.notify(f"Not sent: {exc}", severity="error")
            return False
        return True

    @on(PermissionPrompt.Answered)
    def _answered(self, message: PermissionPrompt.Answered) -> None:
        if self.session_id is not None:
            self.run_worker(self._publish(self.session_id, "permission.response", {
                "requestId": message.request_id, "optionId": message.option_id}),
                group="publish")

    def action_answer(self) -> None:
        """Go to the permission request that has waited longest, in any session."""
        self._go_to_oldest_request()

    @work(group="answer", exclusive=True)
    async def _go_to_oldest_request(self) -> None:
        here = self.conversation.open_permissions()
        open_here = (self.session_id, here[0].ts) if here and self.session_id else None
        client = self.client
        target = open_here[0] if open_here else None
        if client is not None:
            target = await oldest_waiting(client, list(self.sidebar.sessions.values()),
                                          open_here)
        if target is None:
            self.notify("No permission request is waiting.", timeout=2)
        elif target == self.session_id:
            self._focus_open_request()
        else:
            self.open_session(target)
            self._answer_on_open = True

    def _focus_open_request(self) -> None:
        """Focus the open session's oldest open permission request."""
        for block in self.conversation.open_permissions():
            widget = self.view.widget_at(block.key)
            if widget is not None:
                widget.focus()
                widget.scroll_visible()
                return

    def busy_reason(self, every_session: bool) -> str | None:
        """What quitting now would leave: a permission waiting or a turn running in the open
        session (in any session when ``every_session``), in words; None: nothing."""
        title = self._title(self.session)
        if self.session is not None and self.conversation.open_permissions():
            return f"{title} is waiting for permission"
        if self.session is not None and self.conversation.running_turn:
            return f"a turn is running in {title}"
        if every_session:
            for session in self.sidebar.sessions.values():
                if session.get("agentState") == "waiting":
                    return f"{self._title(session)} is waiting for permission"
            for session in self.sidebar.sessions.values():
                if session.get("agentState") == "running":
                    return f"a turn is running in {self._title(session)}"
        return None

    @staticmethod
    def _title(session: dict[str, Any] | None) -> str:
        if session is None:
            return ""
        return f"“{safe_text(session.get('title') or session['sessionId'])}”"

    def _confirmed(self, action: str, session_id: str, question: str) -> bool:
        """Whether this press of ``action``'s key is the second one for ``session_id``
        within :data:`CONFIRM_WINDOW`; the first one only asks ``question``."""
        now = time.monotonic()
        if self._armed is not None and self._armed[:2] == (action, session_id) \
                and now - self._armed[2] <= CONFIRM_WINDOW:
            self._armed = None
            return True
        self._armed = (action, session_id, now)
        self.notify(question, severity="warning", timeout=CONFIRM_WINDOW)
        return False

    def action_cancel_turn(self) -> None:
        """Esc twice within a moment cancels the running turn."""
        now = time.monotonic()
        if now - self._last_escape > CANCEL_WINDOW:
            self._last_escape = now
            if self.session_id and self.conversation.running_turn:
                self.notify("Press Esc again to cancel the turn.", timeout=CANCEL_WINDOW)
            return
        self._last_escape = 0.0
        if self.session_id and self.conversation.running_turn:
            self._cancel(self.session_id)

    @work(group="publish")
    async def _cancel(self, session_id: str) -> None:
        client = self.client
        if client is None:
            return
        try:
            await client.call("session/cancel", {"sessionId": session_id})
            self.notify("Cancelling the turn…", timeout=2)
        except (ProtocolError, ConnectionError) as exc:
            self.notify(f"Cannot cancel: {exc}", severity="error")

    # --- other actions --------------------------------------------------------------------

    def action_filter(self) -> None:
        """Filter the session list."""
        self.sidebar.focus_filter()

    def action_sessions(self) -> None:
        """Move to the session list."""
        self.sidebar.options.focus()

    def action_toggle_thoughts(self) -> None:
        """Hide or show the agents' thoughts everywhere."""
        self.app.toggle_class("-hide-thoughts")
        hidden = self.app.has_class("-hide-thoughts")
        self.notify("Thoughts hidden." if hidden else "Thoughts shown.", timeout=1.5)

    def action_help(self) -> None:
        """Show the keys and what each part of the screen is."""
        from axtui.tui.screens.help import HelpScreen

        self.app.push_screen(HelpScreen())

    def action_new_session(self) -> None:
        """Create a session, choosing its agent."""
        if self.client is None:
            self.notify("Not connected to the hub yet.", severity="error")
            return
        from axtui.tui.screens.new_session import NewSessionScreen

        self.app.push_screen(NewSessionScreen(self.client), self._created)

    def _created(self, session: dict[str, Any] | None) -> None:
        if session is not None:
            self.sidebar.update_session(session)
            self.open_session(session["sessionId"])

    def _needs_session(self) -> tuple[HubClient, str] | None:
        if self.client is None or self.session_id is None:
            self.notify("Open a session first.", severity="warning")
            return None
        return self.client, self.session_id

    def action_state(self) -> None:
        """The session's tables, and a SQL box."""
        if (target := self._needs_session()) is not None:
            from axtui.tui.screens.state import StateScreen

            self.app.push_screen(StateScreen(*target))

    def action_inspect(self) -> None:
        """Every event's raw JSON (and fork at one)."""
        if (target := self._needs_session()) is not None:
            from axtui.tui.screens.inspector import InspectorScreen

            self.app.push_screen(InspectorScreen(*target, seq=self._focused_seq()),
                                 self._forked)

    def action_replay(self) -> None:
        """Play the session's history."""
        if (target := self._needs_session()) is not None:
            from axtui.tui.screens.replay import ReplayScreen

            self.app.push_screen(ReplayScreen(*target))

    def action_fork(self) -> None:
        """Fork the session at its latest event (the inspector forks at any event); the
        first press asks."""
        if (target := self._needs_session()) is not None and self._confirmed(
                "fork", target[1], f"Fork {self._title(self.session)} at its latest event "
                f"(seq {self.conversation.last_seq})? Press F5 again to fork."):
            self._fork(*target)

    def action_delete(self) -> None:
        """Delete a session, the list's highlighted one or else the open one: the first
        press asks, the second asks again in a dialog."""
        options = self.sidebar.options
        highlighted = options.highlighted_option if self.focused is options else None
        session_id = highlighted.id if highlighted is not None else self.session_id
        client = self.client
        if client is None or session_id is None:
            self.notify("Open a session first, or highlight one in the list.",
                        severity="warning")
            return
        title = self._title(self.sidebar.sessions.get(session_id)) or session_id
        if not self._confirmed("delete", session_id,
                               f"Delete {title}? Press F8 again to confirm."):
            return
        from axtui.tui.screens.confirm import ConfirmScreen

        question = (f"Delete {title} ({session_id})? Its whole history and state are "
                    "removed for everyone, and cannot be brought back.")

        def answered(yes: bool | None) -> None:
            if yes:
                self._delete(client, session_id, title)

        self.app.push_screen(ConfirmScreen(question, "Delete", "Delete the session?"),
                             answered)

    @work(group="publish")
    async def _delete(self, client: HubClient, session_id: str, title: str) -> None:
        self._deleting.add(session_id)
        try:
            await client.call("session/delete", {"sessionId": session_id})
        except (ProtocolError, ConnectionError) as exc:
            self._deleting.discard(session_id)
            self.notify(f"Not deleted: {exc}", severity="error")
            return
        self.notify(f"Deleted {title}.", timeout=3)
        self.on_session_deleted(SessionDeleted(session_id))

    @work(group="publish")
    async def _fork(self, client: HubClient, session_id: str) -> None:
        try:
            result = await client.call("session/fork", {"sessionId": session_id})
        except (ProtocolError, ConnectionError) as exc:
            self.notify(f"Cannot fork: {exc}", severity="error")
            return
        self._forked(result["session"])

    def _forked(self, session: dict[str, Any] | None) -> None:
        if session is not None:
            self.notify(f"Forked into {session['sessionId']}.", timeout=3)
            self._created(session)

    def _focused_seq(self) -> int | None:
        node: DOMNode | None = self.focused
        while node is not None and not isinstance(node, BlockWidget):
            node = node.parent
        return node.seq if isinstance(node, BlockWidget) else None

    def system_commands(self) -> Iterator[SystemCommand]:
        """Every action of this screen, for the command palette."""
        for binding in self.BINDINGS:
            assert isinstance(binding, Binding)
            method = getattr(self, f"action_{binding.action}")
            yield SystemCommand(binding.description.replace(" (twice)", ""),
                                (method.__doc__ or "").strip(), method)

