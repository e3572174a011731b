"""What the TUI sends to the terminal holds no escape sequence from a session: messages,
agent Markdown, tool calls, app events, titles, the inspector and state cells."""

from __future__ import annotations

import re
from typing import Any

from textual.app import App

from axtui.client import HubClient
from axtui.tui.screens.inspector import InspectorScreen
from axtui.tui.screens.state import StateScreen, format_cell
from tests.axtui.tui.conftest import ScreenHost, wait_until
from tests.axtui.tui.tui_helpers import client_on, open_session, running_app
from tests.conftest import HubFactory

HOSTILE = "hi\x1b]0;pwned\x07 \x1b[2Jthere \x9b31m\u202eevil\u202c \x1bPq\x1b\\end"
CLEAN = "hi there evil end"
UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def screen_text(app: App[Any]) -> str:
    """The text of every segment the screen sends to the terminal now (styles are sent as
    separate codes by the driver; a segment's text goes out as it is)."""
    update = app.screen._compositor.render_update(full=True)
    return "".join(segment.text for strips in update.strips for strip in strips
                   for segment in strip)


def squeeze(text: str) -> str:
    """Runs of spaces as one (the screen pads and wraps)."""
    return re.sub(r" +", " ", text)


async def seed(client: HubClient, sid: str = "h") -> None:
    """A session whose title, messages, app events and state hold escape sequences."""
    await client.create_session(sessionId=sid, title=f"T {HOSTILE}")
    await client.publish(sid, "user.message", {"text": HOSTILE})
    await client.publish(sid, "ci.build_failed", {"log": HOSTILE})
    await client.exec(sid, [{"sql": "CREATE TABLE notes (body TEXT)"},
                            {"sql": "INSERT INTO notes VALUES (?)", "params": [HOSTILE]}])


async def test_the_main_screen_sends_no_control_sequences(hub_factory: HubFactory) -> None:
    """The sidebar, the header and the conversation show the text without its escapes."""
    hub = await hub_factory()
    other = await client_on(hub)
    try:
        await seed(other)
        async with running_app(hub, size=(160, 50)) as (app, pilot):
            await open_session(app, pilot, "h")
            await pilot.pause()
            text = screen_text(app)
            assert not UNSAFE.search(text), repr(text)
            assert "pwned" not in text
            assert CLEAN in squeeze(text)
    finally:
        await other.close()


async def test_the_inspector_sends_no_control_sequences(hub_factory: HubFactory) -> None:
    """The event table and the JSON pane show escapes as text, never raw."""
    hub = await hub_factory()
    client = await client_on(hub)
    try:
        await seed(client)
        app = ScreenHost(InspectorScreen(client, "h", seq=2))
        async with app.run_test(size=(160, 40)) as pilot:
            await wait_until(pilot, lambda: isinstance(app.screen, InspectorScreen)
                             and not app.screen.busy, "the inspector")
            await pilot.pause()
            text = screen_text(app)
            assert not UNSAFE.search(text), repr(text)
            assert "\\u001b]0;pwned" in text  # the JSON pane shows what is stored
    finally:
        await client.close()


async def test_the_state_screen_sends_no_control_sequences(hub_factory: HubFactory) -> None:
    """A state cell holding escape sequences shows only its text."""
    assert not UNSAFE.search(format_cell(HOSTILE).plain)
    hub = await hub_factory()
    client = await client_on(hub)
    try:
        await seed(client)
        app = ScreenHost(StateScreen(client, "h"))
        async with app.run_test(size=(160, 40)) as pilot:
            await wait_until(pilot, lambda: isinstance(app.screen, StateScreen)
                             and "hi" in screen_text(app), "the state screen")
            await pilot.pause()
            text = screen_text(app)
            assert not UNSAFE.search(text), repr(text)
    finally:
        await client.close()
