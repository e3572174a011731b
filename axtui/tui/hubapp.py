"""``HubApp``: what a screen may ask of the app it runs in (attributes down, messages up).

Screens do not find each other. The hub client and the connection are attributes of the
app; what happens on the hub reaches screens as signals of the app, which a screen
subscribes to in ``on_mount`` (Textual drops the subscription when the screen is removed):

- ``connection_changed``: connected or not, and a line to show (every status line);
- ``session_events``: a batch of a session's events, as the screen that follows the open
  session posted it (:class:`~axtui.tui.messages.SessionEvents` bubbles up from that screen
  to the app, which publishes it); the inspector and the state view listen.
"""

from __future__ import annotations

from textual.app import App
from textual.dom import DOMNode
from textual.signal import Signal

from axtui.client import HubClient
from axtui.tui.messages import SessionEvents


class HubApp(App[None]):
    """The base of an app on one hub, as its screens and widgets see it.

    ``client`` is ``None`` until connected, ``connection`` is ``None`` in an app that has
    no connection of its own (a host for one screen, in tests).
    """

    def __init__(self) -> None:
        super().__init__()
        self.client: HubClient | None = None
        self.connection: tuple[bool, str] | None = None
        self.connection_changed: Signal[tuple[bool, str]] = Signal(self, "connection")
        self.session_events: Signal[SessionEvents] = Signal(self, "session-events")

    def on_session_events(self, message: SessionEvents) -> None:
        """Tell every subscribed screen of a session's events (the main screen has folded
        them into its conversation already: it saw the message first)."""
        self.session_events.publish(message)


def hub_app(node: DOMNode) -> HubApp:
    """The :class:`HubApp` that ``node`` runs in."""
    app = node.app
    if not isinstance(app, HubApp):
        raise TypeError(f"{type(node).__name__} needs a HubApp, not {type(app).__name__}")
    return app
