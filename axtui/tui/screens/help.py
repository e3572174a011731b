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

*Esc, F1 or q closes this help.*

A **session** is a durable, ordered log of events shared by everyone watching it: people
here, in Slack or on the command line, and the session's **agent**, which wakes when a
message arrives and sleeps when idle.

## Main screen
| key | what it does |
|---|---|
| Enter | send the message (Up/Down: what you sent before) |
| Ctrl+J | a new line (Shift+Enter too, where the terminal tells it from Enter) |
| Esc Esc | cancel the agent's running turn |
| Ctrl+O | go to the request that has waited longest, in any session; 1–9 answers |
| Ctrl+N | new session, choosing its agent |
| Ctrl+F | filter the list (Enter opens the only match, Esc clears); Ctrl+L: the list |
| Ctrl+T | hide or show the agents' thoughts |
| F2 | the session's state: its tables and a SQL box |
| F3 | the event inspector: the raw JSON of every event; fork at any event |
| F4 | replay the session from the start or from any seq |
| F5 | fork the session at its latest event (press twice) |
| F8 | delete the session: the list's highlighted one, or the open one (press twice, then confirm) |
| Ctrl+P | the command palette: every action by name, and the theme |
| Tab | move between the list, the conversation and the input |
| Ctrl+Q | quit (press twice while a turn runs or a permission waits) |

A tool call shows its title, kind and status: click its title, or Tab to it and press
Enter, to fold out its input, output and diffs. Thoughts fold the same way.

## Replay (F4)
Space plays or pauses, ← and → step, Home and End jump to the ends, `+` and `-` change
the speed, `g` jumps to a seq, Esc goes back.

## Inspector (F3)
| key | what it does |
|---|---|
| ↑ ↓ | move through the events; the JSON pane shows the selected one |
| `g` | go to a seq |
| `t` | filter by type (`user.*`, several separated by spaces; empty: all) |
| `[` `]` | the first, the latest event |
| `c` | copy the selected event's JSON |
| `f` `f` | fork the session at the selected event (the first `f` asks) |
| Esc | close the prompt, or the inspector |

## State (F2)
| key | what it does |
|---|---|
| Enter | show the highlighted table, or run the SQL typed in the box |
| ↑ ↓ in the SQL box | the queries run before |
| Ctrl+L, Ctrl+T | go to the SQL box, to the list of tables |
| `r` | run the query again and reload the tables |
| Esc | back to the conversation |

Queries only read; the agent changes the state with its tools.

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
        with VerticalScroll() as scroll:
            scroll.border_title = "Help"
            scroll.border_subtitle = "Esc, F1 or q closes"
            yield Markdown(HELP)
