"""F1: what is on the screen and every key."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# axtui

A **session** is a durable, ordered log of events shared by everyone watching it: people
here, in Slack or on the command line, and the session's **agent**, which wakes when a
message arrives and sleeps when idle.

## Main screen
| key | what it does |
|---|---|
| Enter | send the message (Shift+Enter or Ctrl+J: new line; Up/Down: history) |
| Esc Esc | cancel the agent's running turn |
| Ctrl+O | answer the waiting permission request (then 1–9 picks an option) |
| Ctrl+N | new session, choosing its agent |
| Ctrl+F | filter the session list (Esc clears); Ctrl+L moves to the list |
| Ctrl+T | hide or show the agents' thoughts |
| F2 | the session's state: its tables and a SQL box |
| F3 | the event inspector: the raw JSON of every event; fork at any event |
| F4 | replay the session from the start or from any seq |
| F5 | fork the session at its latest event |
| Ctrl+P | the command palette: every action by name |
| Tab | move between the list, the conversation and the input |
| Ctrl+Q | quit |

## Replay
Space plays or pauses, ← and → step, Home and End jump to the ends, + and − change the
speed, G jumps to a seq, Esc goes back.

## The status line
The bottom line shows the connection to the hub. When it drops, axtui reconnects by
itself and resumes every open session after the last event it showed: nothing is lost
and nothing is shown twice.
"""


class HelpScreen(ModalScreen[None]):
    """The help text; Esc or F1 closes it."""

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 90%; max-width: 100; height: 90%;
                                  border: thick $primary; background: $surface; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,f1,q", "dismiss", "Close"),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Markdown(HELP)
