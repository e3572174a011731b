"""The main screen's keys against a real hub: Ctrl+O across sessions, Ctrl+Q, delete, fork,
the input's new-line key, the footer, the new-session dialog on a small terminal, help."""

from __future__ import annotations

import itertools

from textual._xterm_parser import XTermParser
from textual.widgets import Button, Footer, Markdown
from textual.widgets._footer import FooterKey

from axtui.client import NotFound
from axtui.tui.screens.confirm import ConfirmScreen
from axtui.tui.screens.help import HELP, HelpScreen
from axtui.tui.screens.new_session import NewSessionScreen
from axtui.tui.screenshots import turn
from axtui.tui.widgets.blocks import PermissionPrompt
from axtui.tui.widgets.composer import Composer
from axtui.tui.widgets.status import StatusBar
from tests.axtui.tui.conftest import wait_until
from tests.axtui.tui.tui_helpers import client_on, open_session, running_app, settle
from tests.conftest import HubFactory, restart


def notes(app: object) -> list[str]:
    """The texts of the notifications shown so far."""
    return [n.message for n in app._notifications]  # type: ignore[attr-defined]


# --- Ctrl+O ------------------------------------------------------------------------------------

async def test_ctrl_o_goes_to_the_oldest_waiting_request_in_any_session(
        hub_factory: HubFactory) -> None:
    """With another session open, Ctrl+O opens the session whose permission request has
    waited longest and focuses its prompt."""
    hub = await hub_factory()
    other = await client_on(hub)
    await other.create_session(sessionId="old", title="Old", agent="echo")
    await turn(other, "old", "permission", None)
    await other.create_session(sessionId="new", title="New", agent="echo")
    await turn(other, "new", "permission", None)
    await other.create_session(sessionId="here", title="Here")
    async with running_app(hub) as (app, pilot):
        await open_session(app, pilot, "here")
        sidebar = app.main.sidebar
        await settle(pilot, lambda: all(sidebar.sessions[s]["agentState"] == "waiting"
                                        for s in ("old", "new")), "both waiting")
        await pilot.press("ctrl+o")
        await settle(pilot, lambda: app.main.session_id == "old"
                     and isinstance(app.focused, PermissionPrompt), "the oldest request")
        assert app.focused.request_id == app.main.conversation.open_permissions()[0].request_id  # type: ignore[union-attr]
    await other.close()


async def test_ctrl_o_with_nothing_waiting_says_so(hub_factory: HubFactory) -> None:
    """Ctrl+O when no session waits for permission only says so."""
    hub = await hub_factory()
    other = await client_on(hub)
    await other.create_session(sessionId="calm")
    async with running_app(hub) as (app, pilot):
        await open_session(app, pilot, "calm")
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: "No permission request is waiting." in notes(app),
                         "the note")
        assert app.main.session_id == "calm"
    await other.close()


# --- Ctrl+Q ------------------------------------------------------------------------------------

async def test_ctrl_q_with_a_turn_running_asks_once_before_quitting(
        hub_factory: HubFactory) -> None:
    """Ctrl+Q while a turn runs only warns; a second Ctrl+Q quits."""
    hub = await hub_factory()
    other = await client_on(hub)
    await other.create_session(sessionId="slow", title="Slow", agent="echo")
    async with running_app(hub, session_id="slow") as (app, pilot):
        await settle(pilot, lambda: isinstance(app.focused, Composer), "the input")
        await pilot.press(*"sleep 30", "enter")
        await settle(pilot, lambda: app.main.conversation.running_turn, "the turn to start")
        await pilot.press("ctrl+q")
        await pilot.pause(0.2)
        assert app.return_code is None
        assert any("Ctrl+Q again" in n for n in notes(app))
        await pilot.press("ctrl+q")
        await wait_until(pilot, lambda: app.return_code == 0, "the app to quit")
    await other.call("session/cancel", {"sessionId": "slow"})
    await other.close()


async def test_ctrl_q_with_a_permission_waiting_elsewhere_asks(
        hub_factory: HubFactory) -> None:
    """On the app's own hub (axtui up) a permission waiting in any session makes Ctrl+Q ask."""
    hub = await hub_factory()
    other = await client_on(hub)
    await other.create_session(sessionId="ask", agent="echo")
    await turn(other, "ask", "permission", None)
    await other.create_session(sessionId="calm")
    async with running_app(hub, session_id="calm") as (app, pilot):
        app.owns_hub = True
        await settle(pilot, lambda: app.main.sidebar.sessions["ask"]["agentState"] == "waiting",
                     "the waiting session")
        await pilot.press("ctrl+q")
        await pilot.pause(0.2)
        assert app.return_code is None
        assert any("waiting for permission" in n for n in notes(app))
    await other.close()


async def test_ctrl_q_with_nothing_running_quits_at_once(hub_factory: HubFactory) -> None:
    """Ctrl+Q with no turn running and nothing waiting quits straight away."""
    hub = await hub_factory()
    async with running_app(hub) as (app, pilot):
        await pilot.press("ctrl+q")
        await wait_until(pilot, lambda: app.return_code == 0, "the app to quit")


# --- delete and fork ---------------------------------------------------------------------------

async def test_delete_asks_twice_then_deletes_the_session(hub_factory: HubFactory) -> None:
    """F8 first warns, the second F8 opens a confirmation naming the session, and only its
    Delete button deletes it (session/delete); the list and the pane let go of it."""
    hub = await hub_factory()
    other = await client_on(hub)
    await other.create_session(sessionId="gone", title="Old experiment")
    async with running_app(hub) as (app, pilot):
        await open_session(app, pilot, "gone")
        await pilot.press("f8")
        await wait_until(pilot, lambda: any("F8 again" in n for n in notes(app)), "the warning")
        assert not isinstance(app.screen, ConfirmScreen)
        await pilot.press("f8")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
        assert "Old experiment" in app.screen.question
        assert isinstance(app.focused, Button) and app.focused.id == "no"  # not the default
        await pilot.click("#yes")
        await settle(pilot, lambda: "gone" not in app.main.sidebar.sessions, "the deletion")
        assert app.main.session_id is None
    try:
        await other.get_session("gone")
        raise AssertionError("the session is still there")
    except NotFound:
        pass
    await other.close()


async def test_delete_cancelled_keeps_the_session(hub_factory: HubFactory) -> None:
    """Esc at the confirmation keeps the session."""
    hub = await hub_factory()
    other = await client_on(hub)
    await other.create_session(sessionId="keep")
    async with running_app(hub) as (app, pilot):
        await open_session(app, pilot, "keep")
        await pilot.press("f8", "f8")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is app.main, "the main screen")
        await pilot.press("f8")  # the earlier warning does not carry over
        await pilot.pause(0.1)
        assert app.screen is app.main
    assert (await other.get_session("keep"))["sessionId"] == "keep"
    await other.close()


async def test_delete_by_a_participant_is_refused_with_the_hubs_reason(
        hub_factory: HubFactory) -> None:
    """session/delete is for admins: a participant's delete is refused, the session stays."""
    hub = await hub_factory(tokens=True)
    admin = await client_on(hub, "admin-token")
    await admin.create_session(sessionId="theirs")
    async with running_app(hub, "participant-token", session_id="theirs") as (app, pilot):
        await settle(pilot, lambda: app.main.session is not None, "the session")
        await pilot.press("f8", "f8")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
        await pilot.click("#yes")
        await wait_until(pilot, lambda: any(n.startswith("Not deleted") for n in notes(app)),
                         "the refusal")
    assert (await admin.get_session("theirs"))["sessionId"] == "theirs"
    await admin.close()


async def test_fork_at_head_asks_once_and_a_fork_of_a_fork_keeps_one_suffix(
        hub_factory: HubFactory) -> None:
    """F5 first asks; the second F5 forks and opens the fork, titled "X (fork)"; forking
    that fork again does not make "X (fork) (fork)"."""
    hub = await hub_factory()
    other = await client_on(hub)
    await other.create_session(sessionId="orig", title="Release")
    async with running_app(hub) as (app, pilot):
        await open_session(app, pilot, "orig")
        await pilot.press("f5")
        await wait_until(pilot, lambda: any("F5 again" in n for n in notes(app)), "the question")
        assert app.main.session_id == "orig"
        await pilot.press("f5")
        await settle(pilot, lambda: app.main.session is not None
                     and app.main.session_id != "orig", "the fork")
        first = app.main.session_id
        assert app.main.session["title"] == "Release (fork)"
        await pilot.press("f5", "f5")
        await settle(pilot, lambda: app.main.session is not None
                     and app.main.session_id not in ("orig", first), "the fork's fork")
        assert app.main.session["title"] == "Release (fork)"
    await other.close()


# --- what the screen says ----------------------------------------------------------------------

async def test_the_input_advertises_the_new_line_key_every_terminal_sends(
        hub_factory: HubFactory) -> None:
    """The input says Ctrl+J makes a new line (a terminal sends "\\n" for it, which Textual
    reads as ctrl+j everywhere), not Shift+Enter; Ctrl+J and Shift+Enter both insert one."""
    parsed = [getattr(e, "key", None) for e in XTermParser().feed("\n")]
    assert parsed == ["ctrl+j"]
    hub = await hub_factory()
    other = await client_on(hub)
    await other.create_session(sessionId="chat")
    async with running_app(hub, session_id="chat") as (app, pilot):
        composer = app.main.query_one(Composer)
        await settle(pilot, lambda: app.focused is composer, "the input")
        assert "Ctrl+J for a new line" in composer.placeholder
        assert "Shift+Enter" not in composer.placeholder
        await pilot.press("a", "ctrl+j", "b", "shift+enter", "c")
        assert composer.text == "a\nb\nc"
    await other.close()


async def test_no_hub_says_how_to_start_one(hub_factory: HubFactory) -> None:
    """With no hub listening the status line says how to start one."""
    hub = await hub_factory()
    url = hub.url
    await hub.stop()
    from axtui.tui.app import AxtuiApp

    app = AxtuiApp(url, label="test hub")
    async with app.run_test() as pilot:
        status = app.main.query_one(StatusBar)
        await wait_until(pilot, lambda: "cannot reach" in status.text, "the failure")
        assert "axtui up" in status.text and "axtui serve" in status.text


async def test_a_hub_shutting_down_is_said_in_words(hub_factory: HubFactory) -> None:
    """When the hub stops (close code 1001), the status line says the hub is shutting down,
    not the close code."""
    hub = await hub_factory()
    async with running_app(hub) as (app, pilot):
        status = app.main.query_one(StatusBar)
        texts: list[str] = []
        app.connection_changed.subscribe(app.main, lambda state: texts.append(state[1]))
        hub = await restart(hub_factory, hub)
        await wait_until(pilot, lambda: texts, "the drop to show")
        assert "the hub is shutting down" in texts[0]
        assert "close code" not in texts[0]
        await wait_until(pilot, lambda: status.connected, "the reconnection", timeout=30)


async def test_the_footer_fits_in_100_columns(hub_factory: HubFactory) -> None:
    """At 100 columns every key the footer shows is whole: on screen, and not under the
    command palette's key (docked at the right)."""
    hub = await hub_factory()
    async with running_app(hub, size=(100, 30)) as (app, pilot):
        await pilot.pause()
        keys = sorted(app.main.query_one(Footer).query(FooterKey), key=lambda k: k.region.x)
        assert len(keys) >= 8
        for key, after in itertools.pairwise(keys):
            assert key.region.width > 0 and key.region.right <= after.region.x, key.description
        assert keys[-1].region.right <= 100


async def test_the_new_session_dialog_keeps_its_buttons_on_a_60x15_terminal(
        hub_factory: HubFactory) -> None:
    """At 60x15 the new-session dialog shows its title, agent and both buttons whole."""
    hub = await hub_factory()
    async with running_app(hub, size=(60, 15)) as (app, pilot):
        await pilot.press("ctrl+n")
        await wait_until(pilot, lambda: isinstance(app.screen, NewSessionScreen), "the dialog")
        await pilot.pause()
        for selector in ("#title", "#agent", "#create", "#cancel"):
            region = app.screen.query_one(selector).region
            assert region.height >= 1 and region.bottom <= 15 and region.right <= 60, selector
        assert app.screen.query_one("#create").region.height == 3


async def test_help_says_how_to_close_it_and_lists_every_screens_keys(
        hub_factory: HubFactory) -> None:
    """F1 help names the keys that close it, the inspector's and state screen's keys and how
    to fold out a tool call, with the keys named as they are bound (g, not G)."""
    for words in ("Esc, F1 or q closes this help", "## Inspector (F3)", "## State (F2)",
                  "tool call", "`g`", "F8"):
        assert words in HELP, words
    assert " G " not in HELP
    hub = await hub_factory()
    async with running_app(hub) as (app, pilot):
        await pilot.press("f1")
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen), "help")
        assert "Esc" in str(app.screen.query_one("VerticalScroll").border_subtitle)
        assert app.screen.query(Markdown)
