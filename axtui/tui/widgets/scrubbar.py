"""The replay's scrub bar: where the replay is, in seq and time; click to jump."""

from __future__ import annotations

from datetime import datetime

from rich.text import Text
from textual import events
from textual.message import Message
from textual.widget import Widget


def precise_clock(ts: int) -> str:
    """``HH:MM:SS.mmm`` local time of an event."""
    return datetime.fromtimestamp(ts / 1000).strftime("%H:%M:%S.%f")[:-3]


class ScrubBar(Widget):
    """``▶ 2× seq 45/128 12:03:04.123`` and a bar; a click posts :class:`ScrubBar.Seek`."""

    DEFAULT_CSS = """
    ScrubBar { height: 2; padding: 0 1; background: $panel; }
    """

    time_format = staticmethod(precise_clock)

    class Seek(Message):
        """The user clicked at ``fraction`` (0 to 1) of the bar."""

        def __init__(self, fraction: float) -> None:
            super().__init__()
            self.fraction = fraction

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.position = 0
        self.total = 0
        self.seq = 0
        self.head_seq = 0
        self.ts: int | None = None
        self.playing = False
        self.speed = 1.0

    def show(self, *, position: int, total: int, seq: int, head_seq: int, ts: int | None,
             playing: bool, speed: float) -> None:
        """Update what the bar shows."""
        self.position, self.total, self.seq, self.head_seq = position, total, seq, head_seq
        self.ts, self.playing, self.speed = ts, playing, speed
        self.refresh()

    def render(self) -> Text:
        width = max(10, self.size.width - 2)
        state = ("▶ playing", "bold green") if self.playing else ("‖ paused", "bold yellow")
        line = Text.assemble(state, (f"  {self.speed:g}×", "bold"),
                             f"  seq {self.seq}/{self.head_seq}")
        if self.ts is not None:
            line.append(f"  {self.time_format(self.ts)}", style="dim")
        filled = round(width * self.position / self.total) if self.total else 0
        accent = self.app.theme_variables.get("accent", "cyan")
        bar = Text("━" * filled, style=f"bold {accent}")
        bar.append("─" * (width - filled), style="dim")
        return Text("\n").join([line, bar])

    def on_click(self, event: events.Click) -> None:
        if event.y == 1 and self.size.width > 2:
            self.post_message(self.Seek(min(1.0, max(0.0, (event.x - 1) / (self.size.width
                                                                              - 2)))))
