"""``AxtuiApp``: the terminal UI on a hub (``axtui tui``, and ``axtui up`` on its own hub)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from textual.app import SystemCommand
from textual.screen import Screen
from textual.theme import Theme

from axtui.backoff import Backoff
from axtui.client import HubAuthError, HubClient, HubUnavailable
from axtui.tui.hubapp import HubApp
from axtui.tui.messages import Connection, SessionDeleted, SessionUpdated
from axtui.tui.screens.main import MainScreen
from axtui.tui.theme import DEFAULT_THEME, ThemeChoice, ThemeMemory

QUIT_WINDOW = 3.0  # seconds within which a second Ctrl+Q quits while something runs
# The websocket close codes a user can meet, in words (see server.protocol.CloseCode).
CLOSE_WORDS = {
    "1001": "the hub is shutting down",
    "1006": "the connection dropped",
    "1009": "a message was too big for the hub",
    "1011": "the hub hit an internal error",
    "4401": "the hub did not accept the token",
    "4408": "the hub timed out waiting for this TUI",
    "4429": "this TUI fell too far behind",
}


def plain_status(text: str) -> str:
    """A connection status line with close codes said in words."""
    return re.sub(r"close code (\d+)",
                  lambda m: CLOSE_WORDS.get(m[1], f"the hub closed the connection ({m[1]})"),
                  text)


class AxtuiApp(HubApp):
    """Sessions, live conversations, permissions, replay, state and audit, on one hub.

    The app owns the :class:`HubClient`; it connects in the background (retrying until the
    hub answers) and turns the client's callbacks into messages for the main screen. The
    main screen follows the open session; its events reach the other screens through the
    app's ``session_events`` signal (see :mod:`axtui.tui.hubapp`).
    """

    TITLE = "axtui"
    CSS_PATH = Path(__file__).with_name("app.tcss")  # absolute: subclasses live elsewhere

    def __init__(self, server: str, token: str | None = None, *,
                 session_id: str | None = None, label: str | None = None,
                 owns_hub: bool = False, theme: ThemeChoice | None = None,
                 theme_memory: ThemeMemory | None = None) -> None:
        super().__init__()
        self.server = server
        self.label = label or server  # how the status line names the hub
        self.token = token
        self.owns_hub = owns_hub  # axtui up: quitting stops the hub and its agents
        self.connection = (False, "connecting…")
        self.main = MainScreen(initial_session=session_id)
        self.theme_choice = theme or ThemeChoice(DEFAULT_THEME, "the default")
        self.theme_memory = theme_memory  # None: a choice made here is not kept
        self._theme_shown = ""
        self._quit_asked = 0.0

    def get_default_screen(self) -> Screen[Any]:
        return self.main

    def on_mount(self) -> None:
        self._apply_theme(self.theme_choice)
        self.theme_changed_signal.subscribe(self, self._theme_changed)
        self.connect()

    def _apply_theme(self, choice: ThemeChoice) -> None:
        if choice.name in self.available_themes:
            self.theme = choice.name
        else:
            self.theme = DEFAULT_THEME
            self.notify(f"There is no theme {choice.name!r} (from {choice.origin}); using "
                        f"{DEFAULT_THEME}. Ctrl+P, then \"theme\", lists them.",
                        severity="warning", timeout=8)
        self._theme_shown = self.theme

    def _theme_changed(self, theme: Theme) -> None:
        # The signal also comes for the theme set at start: only a change is a choice.
        if theme.name != self._theme_shown:
            self._theme_shown = theme.name
            if self.theme_memory is not None:
                self.theme_memory.save(theme.name)

    async def action_quit(self) -> None:
        """Quit; while a turn runs or a permission waits, only a second Ctrl+Q quits."""
        reason = self.main.busy_reason(every_session=self.owns_hub)
        now = time.monotonic()
        if reason is not None and now - self._quit_asked > QUIT_WINDOW:
            self._quit_asked = now
            after = ("quitting stops the hub and its agents" if self.owns_hub
                     else "it carries on on the hub without you")
            self.notify(f"{reason}: {after}. Press Ctrl+Q again to quit.",
                        severity="warning", timeout=QUIT_WINDOW)
            return
        self.exit()

    def connect(self) -> None:
        """Connect to the hub in the background, retrying until it answers."""
        self.run_worker(self._connect(), name="connect", group="connect", exclusive=True)

    async def on_unmount(self) -> None:
        if self.client is not None:
            await self.client.close()

    async def _connect(self) -> None:
        backoff = Backoff(0.2, 5.0)
        unreachable = False
        while True:
            client = HubClient(self.server, token=self.token, name="axtui-tui", kind="tui")
            client.on_status = self._on_status
            client.on_notification = self._on_notification
            try:
                await client.start()
            except HubAuthError as exc:
                self._connection(False, f"{exc}: check the token")
                return
            except HubUnavailable as exc:
                # The status line has one row: the way out first; why, once, in a note.
                self._connection(False, f"cannot reach the hub at {self.server}: start one "
                                        "with `axtui up` or `axtui serve`; retrying")
                if not unreachable:
                    unreachable = True
                    self.notify(f"{exc}. No hub running? `axtui up` runs a hub and the TUI "
                                "together; `axtui serve` runs a hub alone.",
                                severity="warning", timeout=10)
                await asyncio.sleep(backoff.next())
                continue
            self.client = client
            principal = client.principal
            self._connection(
                True, f"{self.label} as {principal.get('name')} ({principal.get('role')})")
            return

    def _on_status(self, text: str) -> None:
        connected = text == "reconnected"
        self._connection(connected, self.label if connected else plain_status(text))

    def _connection(self, connected: bool, text: str) -> None:
        """Tell every status line, and the main screen (which reloads on reconnect)."""
        self.connection = (connected, text)
        self.connection_changed.publish((connected, text))
        self.main.post_message(Connection(connected, text))

    def _on_notification(self, method: str, params: Any) -> None:
        if method != "session/updated":
            return
        if params.get("deleted"):
            self.main.post_message(SessionDeleted(params["sessionId"]))
        elif "session" in params:
            self.main.post_message(SessionUpdated(params["session"]))

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        if isinstance(screen, MainScreen):
            yield from screen.system_commands()
