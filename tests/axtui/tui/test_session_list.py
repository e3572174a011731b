"""The session list against a real hub: focus at start, the filter, opening from it."""

from __future__ import annotations

from textual.widgets import Input, OptionList, Static

from axtui.tui.widgets.composer import Composer
from tests.axtui.tui.tui_helpers import client_on, running_app, settle
from tests.conftest import HubFactory


async def two_sessions(hub_factory: HubFactory):  # type: ignore[no-untyped-def]
    """A hub with two sessions, "CSV export timeout" (s1) and "Login page slow" (s2)."""
    hub = await hub_factory()
    other = await client_on(hub)
    await other.create_session(sessionId="s1", title="CSV export timeout")
    await other.create_session(sessionId="s2", title="Login page slow")
    await other.close()
    return hub


async def test_the_list_has_the_focus_at_start_with_its_first_row_highlighted(
        hub_factory: HubFactory) -> None:
    """With no session asked for, the list (not the filter) has the focus, its newest row
    highlighted, so Enter opens it at once."""
    hub = await two_sessions(hub_factory)
    async with running_app(hub) as (app, pilot):
        options = app.main.sidebar.options
        await settle(pilot, lambda: options.option_count == 2, "both sessions")
        assert app.focused is options
        assert options.highlighted == 0
        await pilot.press("enter")
        await settle(pilot, lambda: app.main.session_id == "s2", "the newest session to open")


async def test_the_focused_filter_keeps_its_text_visible(hub_factory: HubFactory) -> None:
    """Ctrl+F focuses the filter and what is typed there stays on screen (no tall border
    squeezing out the text row)."""
    hub = await two_sessions(hub_factory)
    async with running_app(hub) as (app, pilot):
        await pilot.press("ctrl+f", *"csv")
        box = app.main.query_one("#session-filter", Input)
        await settle(pilot, lambda: app.main.sidebar._order == ["s1"], "the filter")
        assert app.focused is box
        assert box.region.height == 1 and box.content_region.height == 1
        assert box.content_region.width >= len("csv")


async def test_a_filter_that_matches_nothing_says_so(hub_factory: HubFactory) -> None:
    """When the filter leaves no session, the list says "no sessions match 'x'"; clearing
    it brings them back and the note goes."""
    hub = await two_sessions(hub_factory)
    async with running_app(hub) as (app, pilot):
        sidebar = app.main.sidebar
        await pilot.press("ctrl+f", *"zzz")
        note = sidebar.query_one("#session-empty", Static)
        await settle(pilot, lambda: note.display, "the note")
        assert str(note.render()) == "no sessions match 'zzz'"
        await pilot.press("escape")
        await settle(pilot, lambda: not note.display and len(sidebar._order) == 2, "all again")


async def test_enter_in_the_filter_with_one_match_opens_it(hub_factory: HubFactory) -> None:
    """Enter in the filter opens the only session left; with several left it moves to the
    list with the first one highlighted."""
    hub = await two_sessions(hub_factory)
    async with running_app(hub) as (app, pilot):
        await pilot.press("ctrl+f", *"csv", "enter")
        await settle(pilot, lambda: app.main.session_id == "s1", "s1 to open")
        await settle(pilot, lambda: isinstance(app.focused, Composer), "the input")
        await pilot.press("ctrl+f", "ctrl+u", *"o", "enter")  # both titles have an "o"
        options = app.main.sidebar.options
        await settle(pilot, lambda: app.focused is options, "the list")
        assert app.main.session_id == "s1"
        assert options.highlighted is not None


async def test_the_list_highlights_its_first_row_when_it_gets_the_focus(
        hub_factory: HubFactory) -> None:
    """Moving to the list (Ctrl+L) when no row is highlighted highlights the first one."""
    hub = await two_sessions(hub_factory)
    async with running_app(hub) as (app, pilot):
        options = app.main.sidebar.options
        await pilot.press("ctrl+f", *"zzz")
        await settle(pilot, lambda: options.option_count == 0, "the list to empty")
        await pilot.press("backspace", "backspace", "backspace")
        await settle(pilot, lambda: options.option_count == 2, "the list to refill")
        options.highlighted = None
        await pilot.press("ctrl+l")
        await settle(pilot, lambda: app.focused is options, "the list")
        assert isinstance(app.focused, OptionList)
        assert options.highlighted == 0
