"""Replay: a session's history played through the same widgets as the live view."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.screen import ModalScreen, Screen
from textual.timer import Timer
from textual.widgets import Footer, Input, Label, Static

from axtui.client import HubClient, ProtocolError
from axtui.terminal import safe_text
from axtui.tui.model import Conversation
from axtui.tui.widgets.conversation import ConversationView
from axtui.tui.widgets.scrubbar import ScrubBar
from axtui.tui.widgets.status import StatusBar

SPEEDS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 64.0)
MAX_GAP = 2.0  # seconds: a longer pause in the recording is shortened to this (at 1×)
FRAME = 1 / 30  # events due within one frame are applied together
PAGE = 5000  # events per history call (the protocol's maximum)


class Replay:
    """The position in a recorded event list, and the conversation up to it (no Textual)."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events
        self.position = 0  # how many events have been applied
        self.conversation = Conversation()

    @property
    def at_end(self) -> bool:
        """True when every event has been applied."""
        return self.position >= len(self.events)

    @property
    def current(self) -> dict[str, Any] | None:
        """The last event applied."""
        return self.events[self.position - 1] if self.position else None

    def forward(self, count: int = 1) -> None:
        """Apply the next ``count`` events."""
        stop = min(len(self.events), self.position + count)
        self.conversation.apply_all(self.events[self.position:stop])
        self.position = stop

    def seek(self, position: int) -> bool:
        """Move to ``position``; returns True when the conversation had to be rebuilt."""
        position = max(0, min(len(self.events), position))
        if position >= self.position:
            self.forward(position - self.position)
            return False
        self.conversation = Conversation()
        self.position = 0
        self.forward(position)
        return True

    def position_of(self, seq: int) -> int:
        """The position at which the event ``seq`` (or the last one before it) is shown."""
        return sum(1 for e in self.events if e["seq"] <= seq)

    def delay_to_next(self, speed: float) -> float:
        """Seconds to wait before the next event, at ``speed`` times the recorded pace."""
        if self.position == 0 or self.at_end:
            return 0.0
        gap = (int(self.events[self.position]["ts"])
               - int(self.events[self.position - 1]["ts"])) / 1000
        return min(max(gap, 0.0), MAX_GAP) / speed


class ReplayScreen(Screen[None]):
    """Plays a session's events at a chosen speed; pause, step, jump; Esc goes back."""

    DEFAULT_CSS = """
    ReplayScreen #replay-header { height: 1; padding: 0 1; background: $boost; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("space", "toggle_play", "Play/pause"),
        Binding("right", "step(1)", "Step", priority=True),
        Binding("left", "step(-1)", "Back", priority=True),
        Binding("home", "jump_start", "Start", show=False, priority=True),
        Binding("end", "jump_end", "End", show=False, priority=True),
        Binding("plus,equals_sign", "speed(1)", "Faster"),
        Binding("minus", "speed(-1)", "Slower"),
        Binding("g", "goto", "Go to seq"),
        Binding("escape", "app.pop_screen", "Back to live"),
    ]

    def __init__(self, client: HubClient, session_id: str, *, start_seq: int = 0,
                 speed: float = 1.0, autoplay: bool = True) -> None:
        super().__init__()
        self.client = client
        self.session_id = session_id
        self.start_seq = start_seq
        self.speed = speed
        self.autoplay = autoplay
        self.replay = Replay([])
        self.playing = False
        self.loaded = False
        self.title_text = session_id
        self._timer: Timer | None = None

    def compose(self) -> ComposeResult:
        yield Static(Text(f"Replay · {self.session_id} · loading…"), id="replay-header")
        yield ConversationView(id="replay-conversation", interactive=False)
        yield ScrubBar(id="scrub")
        yield StatusBar()
        yield Footer()

    def on_mount(self) -> None:
        self._load()

    @work(exclusive=True)
    async def _load(self) -> None:
        events: list[dict[str, Any]] = []
        after = 0
        try:
            session = await self.client.get_session(self.session_id)
            while True:
                page = await self.client.history(self.session_id, afterSeq=after, limit=PAGE)
                events.extend(page["events"])
                if not page["events"] or events[-1]["seq"] >= page["headSeq"]:
                    break
                after = events[-1]["seq"]
                self._header(f"loading… {len(events)} events")
        except (ProtocolError, ConnectionError) as exc:
            self._header(f"cannot load: {exc}")
            return
        self.title_text = safe_text(session.get("title") or self.session_id)
        self.replay = Replay(events)
        self.loaded = True
        self._seek(self.replay.position_of(self.start_seq) if self.start_seq else 1)
        if self.autoplay:
            self.action_toggle_play()

    def _header(self, note: str) -> None:
        self.query_one("#replay-header", Static).update(
            Text.assemble(("Replay", "bold"), f" · {self.session_id} · ", (note, "dim")))

    def _draw(self, rebuilt: bool = False) -> None:
        view = self.query_one(ConversationView)
        if rebuilt:
            view.reset()
        view.sync(self.replay.conversation)
        current = self.replay.current
        self.query_one(ScrubBar).show(
            position=self.replay.position, total=len(self.replay.events),
            seq=current["seq"] if current else 0,
            head_seq=self.replay.events[-1]["seq"] if self.replay.events else 0,
            ts=current["ts"] if current else None, playing=self.playing, speed=self.speed)
        self._header(f"{self.title_text} · {len(self.replay.events)} events")

    def _seek(self, position: int) -> None:
        self._draw(rebuilt=self.replay.seek(position))

    # --- playing ----------------------------------------------------------------------------

    def action_toggle_play(self) -> None:
        """Play or pause."""
        if not self.loaded:
            return
        if self.playing:
            self._pause()
        else:
            if self.replay.at_end:
                self._seek(1)
            self.playing = True
            self._schedule()
            self._draw()

    def _pause(self) -> None:
        self.playing = False
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        self._draw()

    def _schedule(self) -> None:
        # Textual timers need a positive interval.
        self._timer = self.set_timer(max(self.replay.delay_to_next(self.speed), 0.001),
                                     self._tick)

    def _tick(self) -> None:
        if not self.playing:
            return
        self.replay.forward()
        due = 0.0
        while not self.replay.at_end:
            due += self.replay.delay_to_next(self.speed)
            if due > FRAME:
                break
            self.replay.forward()
        if self.replay.at_end:
            self.playing = False
            self._timer = None
        else:
            self._schedule()
        self._draw()

    def action_step(self, step: int) -> None:
        """Step one event forward or back (pauses)."""
        if self.loaded:
            self.playing = False
            if self._timer is not None:
                self._timer.stop()
            self._seek(self.replay.position + step)

    def action_jump_start(self) -> None:
        """Back to the first event."""
        if self.loaded:
            self._seek(1)

    def action_jump_end(self) -> None:
        """To the last event."""
        if self.loaded:
            self._seek(len(self.replay.events))

    def action_speed(self, step: int) -> None:
        """Play faster or slower."""
        index = min(range(len(SPEEDS)), key=lambda i: abs(SPEEDS[i] - self.speed))
        self.speed = SPEEDS[max(0, min(len(SPEEDS) - 1, index + step))]
        self._draw()

    def action_goto(self) -> None:
        """Jump to an event by its seq."""
        if self.loaded:
            self.app.push_screen(SeqPrompt(), self._goto)

    def _goto(self, seq: int | None) -> None:
        if seq is not None:
            self._seek(self.replay.position_of(seq))

    @on(ScrubBar.Seek)
    def _scrubbed(self, message: ScrubBar.Seek) -> None:
        if self.loaded:
            self._seek(max(1, round(message.fraction * len(self.replay.events))))


class SeqPrompt(ModalScreen[int | None]):
    """Asks for a seq to jump to."""

    DEFAULT_CSS = """
    SeqPrompt { align: center middle; }
    SeqPrompt > Horizontal { width: 40; height: auto; padding: 1 2; border: thick $primary;
                             background: $surface; }
    SeqPrompt Label { padding: 1 1 0 0; }
    SeqPrompt Input { width: 1fr; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss(None)", "Cancel")]

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield Label("Go to seq")
            yield Input(type="integer", id="seq")

    @on(Input.Submitted)
    def _submitted(self, message: Input.Submitted) -> None:
        value = message.value.strip()
        self.dismiss(int(value) if value.lstrip("-").isdigit() else None)
