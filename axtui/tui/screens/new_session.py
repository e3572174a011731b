"""A small dialog to create a session: its title and its agent."""

from __future__ import annotations

from typing import Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select

from axtui.client import HubClient, ProtocolError

NO_AGENT = "__none__"


class NewSessionScreen(ModalScreen[dict[str, Any] | None]):
    """Asks for a title and an agent, creates the session, and returns it (None: cancelled)."""

    DEFAULT_CSS = """
    NewSessionScreen { align: center middle; }
    NewSessionScreen > VerticalScroll { width: 60; max-width: 100%; height: auto;
                                        max-height: 100%; padding: 1 2;
                                        border: thick $primary; background: $surface; }
    NewSessionScreen Label { margin-top: 1; color: $text-muted; }
    NewSessionScreen .error { color: $error; }
    NewSessionScreen Horizontal { height: auto; margin-top: 1; align-horizontal: right; }
    NewSessionScreen Button { margin-left: 1; }
    /* A short terminal: no spacing, so that the buttons stay on screen. */
    NewSessionScreen.-short > VerticalScroll { padding: 0 1; }
    NewSessionScreen.-short Label, NewSessionScreen.-short Horizontal { margin-top: 0; }
    """
    VERTICAL_BREAKPOINTS = [(0, "-short"), (24, "-tall")]  # noqa: RUF012 (as Textual types it)

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, client: HubClient) -> None:
        super().__init__()
        self.client = client

    def compose(self) -> ComposeResult:
        with VerticalScroll() as dialog:
            dialog.border_title = "New session"
            yield Label("Title")
            yield Input(placeholder="What is this session about?", id="title")
            yield Label("Agent")
            yield Select[str]([], prompt="loading agents…", id="agent", allow_blank=True)
            yield Label("", classes="error", id="error")
            with Horizontal():
                yield Button("Cancel", id="cancel")
                yield Button("Create", variant="primary", id="create")

    def on_mount(self) -> None:
        self.query_one("#error", Label).display = False
        self.query_one("#title", Input).focus()
        self._load_agents()

    @work(exclusive=True)
    async def _load_agents(self) -> None:
        select = self.query_one("#agent", Select)
        try:
            result = await self.client.call("agents/list")
        except (ProtocolError, ConnectionError) as exc:
            self._error(f"Cannot list agents: {exc}")
            return
        agents = result.get("agents", [])
        options = [(f"{a['id']} — {a.get('description') or a.get('protocol', '')}", a["id"])
                   for a in agents]
        select.set_options([*options, ("no agent", NO_AGENT)])
        select.prompt = "choose an agent"
        if options:
            preferred = next((a["id"] for a in agents if a["id"] == "demo"), options[0][1])
            select.value = preferred

    @on(Input.Submitted, "#title")
    @on(Button.Pressed, "#create")
    def _create_pressed(self) -> None:
        self._create()

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        """Close without creating anything."""
        self.dismiss(None)

    @work(exclusive=True, group="create")
    async def _create(self) -> None:
        params: dict[str, Any] = {}
        title = self.query_one("#title", Input).value.strip()
        if title:
            params["title"] = title
        agent = self.query_one("#agent", Select).value
        if isinstance(agent, str) and agent != NO_AGENT:
            params["agent"] = agent
        try:
            session = await self.client.create_session(**params)
        except (ProtocolError, ConnectionError) as exc:
            self._error(f"Not created: {exc}")
            return
        self.dismiss(session)

    def _error(self, text: str) -> None:
        error = self.query_one("#error", Label)
        error.update(text)
        error.display = bool(text)
