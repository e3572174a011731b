"""``AxtuiApp``: the terminal UI on a hub (``axtui tui``, and ``axtui up`` on its own hub)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from textual.app import SystemCommand
from textual.screen import Screen

from axtui.backoff import Backoff
from axtui.client import HubAuthError, HubClient, HubUnavailable
from axtui.tui.hubapp import HubApp
from axtui.tui.messages import Connection, SessionDeleted, SessionUpdated
from axtui.tui.screens.main import MainScreen


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
                 session_id: str | None = None, label: str | None = None) -> None:
        super().__init__()
        self.server = server
        self.label = label or server  # how the status line names the hub
        self.token = token
        self.connection = (False, "connecting…")
        self.main = MainScreen(initial_session=session_id)

    def get_default_screen(self) -> Screen[Any]:
        return self.main

    def on_mount(self) -> None:
        self.theme = "tokyo-night"
        self.connect()

    def connect(self) -> None:
        """Connect to the hub in the background, retrying until it answers."""
        self.run_worker(self._connect(), name="connect", group="connect", exclusive=True)

    async def on_unmount(self) -> None:
        if self.client is not None:
            await self.client.close()

    async def _connect(self) -> None:
        backoff = Backoff(0.2, 5.0)
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
                self._connection(False, f"{exc}; retrying")
                await asyncio.sleep(backoff.next())
                continue
            self.client = client
            principal = client.principal
            self._connection(
                True, f"{self.label} as {principal.get('name')} ({principal.get('role')})")
            return

    def _on_status(self, text: str) -> None:
        connected = text == "reconnected"
        self._connection(connected, self.label if connected else text)

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
