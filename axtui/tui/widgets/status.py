"""The line that always shows the connection to the hub."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from axtui.tui.hubapp import hub_app


class StatusBar(Static):
    """Connected or not, to which hub and as whom, on every screen (it follows the app's
    ``connection_changed`` signal); plus a note from its screen."""

    DEFAULT_CSS = """
    StatusBar { height: 1; padding: 0 1; background: $panel; color: $text-muted; }
    StatusBar.-down { background: $error 30%; color: $text; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.connected = False
        self.text = "connecting…"
        self.note = ""

    def on_mount(self) -> None:
        app = hub_app(self)
        app.connection_changed.subscribe(self, lambda state: self.set_connection(*state))
        if app.connection is not None:
            self.set_connection(*app.connection)
        else:
            self.display = False  # hosted by an app that has no hub connection of its own

    def set_connection(self, connected: bool, text: str) -> None:
        """Show the connection state."""
        self.connected = connected
        self.text = text
        self.set_class(not connected, "-down")
        self._draw()

    def set_note(self, note: str) -> None:
        """Show ``note`` after the connection text (the open session's position)."""
        self.note = note
        self._draw()

    def _draw(self) -> None:
        mark = ("● ", "bold green") if self.connected else ("○ ", "bold red")
        line = Text.assemble(mark, self.text)
        if self.note:
            line.append(f"  ·  {self.note}", style="dim")
        self.update(line)
