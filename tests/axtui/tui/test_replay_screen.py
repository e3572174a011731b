"""Replay mode: a session's history played through the live view's widgets."""

from __future__ import annotations

from axtui.tui.model import UserBlock
from axtui.tui.screens.replay import MAX_GAP, Replay, ReplayScreen
from axtui.tui.widgets.scrubbar import ScrubBar
from tests.axtui.tui.conftest import wait_until
from tests.axtui.tui.tui_helpers import client_on, open_session, running_app
from tests.conftest import HubFactory


def recorded(count: int, gap_ms: int = 100) -> list[dict]:
    """``count`` user messages ``gap_ms`` apart, after session.created."""
    created = {"seq": 1, "ts": 0, "type": "session.created", "source": {"kind": "hub"},
               "data": {"title": "t"}}
    return [created] + [{"seq": n + 2, "ts": (n + 1) * gap_ms, "type": "user.message",
                         "source": {"kind": "client", "name": "a"}, "data": {"text": str(n)}}
                        for n in range(count)]


def test_stepping_back_rebuilds_the_conversation_up_to_the_position() -> None:
    """Seeking backwards gives exactly the blocks of the events before the position."""
    replay = Replay(recorded(5))
    replay.seek(6)
    assert [b.text for b in replay.conversation.blocks.values()
            if isinstance(b, UserBlock)] == ["0", "1", "2", "3", "4"]
    assert replay.seek(3) is True
    assert [b.text for b in replay.conversation.blocks.values()
            if isinstance(b, UserBlock)] == ["0", "1"]
    assert replay.current is not None and replay.current["seq"] == 3
    assert replay.position_of(4) == 4


def test_recorded_gaps_are_scaled_by_speed_and_capped() -> None:
    """The wait before an event is its recorded gap over the speed, long pauses shortened."""
    replay = Replay(recorded(3, gap_ms=500))
    replay.seek(2)
    assert replay.delay_to_next(1.0) == 0.5
    assert replay.delay_to_next(4.0) == 0.125
    long = Replay(recorded(2, gap_ms=60_000))
    long.seek(2)
    assert long.delay_to_next(1.0) == MAX_GAP


async def test_replay_plays_to_the_end_and_steps_and_jumps(hub_factory: HubFactory) -> None:
    """F4 plays the session from the start through the same widgets; left/right step,
    g jumps to a seq, + changes the speed; the scrub bar follows."""
    hub = await hub_factory()
    other = await client_on(hub)
    await other.create_session(sessionId="rp", title="Replayed")
    for n in range(8):
        await other.publish("rp", "user.message", {"text": f"m{n}"})
    async with running_app(hub) as (app, pilot):
        await open_session(app, pilot, "rp")
        await pilot.press("f4")
        await wait_until(pilot, lambda: isinstance(app.screen, ReplayScreen), "replay")
        screen = app.screen
        assert isinstance(screen, ReplayScreen)
        await wait_until(pilot, lambda: screen.loaded and screen.replay.at_end, "the end",
                         timeout=30)
        users = [b for b in screen.replay.conversation.blocks.values()
                 if isinstance(b, UserBlock)]
        assert [b.text for b in users] == [f"m{n}" for n in range(8)]
        bar = screen.query_one(ScrubBar)
        assert (bar.seq, bar.head_seq, bar.playing) == (9, 9, False)
        await pilot.press("left", "left")
        assert bar.seq == 7
        assert len(screen.query("UserMessage")) == 6
        await pilot.press("right")
        assert bar.seq == 8
        await pilot.press("g")
        await pilot.press(*"3", "enter")
        await wait_until(pilot, lambda: bar.seq == 3, "the jump")
        assert len(screen.query("UserMessage")) == 2
        await pilot.press("plus")
        assert screen.speed == 2.0
        await pilot.press("space")
        await wait_until(pilot, lambda: bar.seq == 9 and not screen.playing,
                         "the replay to play on to the end")
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is app.main, "back to live")
    await other.close()
