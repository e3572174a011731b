"""Messages from the hub connection to the screens (attributes down, messages up)."""

from __future__ import annotations

from typing import Any

from textual.message import Message

from server.events import Event


class Connection(Message):
    """The connection to the hub changed: ``connected`` and a short ``text`` to show."""

    def __init__(self, connected: bool, text: str) -> None:
        super().__init__()
        self.connected = connected
        self.text = text


class SessionUpdated(Message):
    """A session was created or changed (``session/updated``)."""

    def __init__(self, session: dict[str, Any]) -> None:
        super().__init__()
        self.session = session


class SessionDeleted(Message):
    """A session was deleted."""

    def __init__(self, session_id: str) -> None:
        super().__init__()
        self.session_id = session_id


class SessionEvents(Message):
    """A batch of events of the open session, parsed, in seq order (history or live alike).

    The main screen posts it to itself; it then bubbles up to the app, which publishes it
    to the other screens (:attr:`~axtui.tui.hubapp.HubApp.session_events`).
    """

    def __init__(self, session_id: str, events: list[Event]) -> None:
        super().__init__()
        self.session_id = session_id
        self.events = events
