"""The TUI's main screen against a real hub with real agents, driven with Pilot."""

from __future__ import annotations

import asyncio
from pathlib import Path

from textual.widgets import OptionList

from axtui.tui.model import NoticeBlock, PermissionBlock, TextBlock, ToolBlock, UserBlock
from axtui.tui.screens.help import HelpScreen
from axtui.tui.screens.inspector import InspectorScreen
from axtui.tui.screens.new_session import NewSessionScreen
from axtui.tui.screens.state import StateScreen
from axtui.tui.widgets.blocks import (
    AgentMessage,
    PermissionPrompt,
    PlanView,
    StateChange,
    Thought,
    ToolCall,
    UserMessage,
)
from axtui.tui.widgets.composer import Composer
from axtui.tui.widgets.status import StatusBar
from tests.axtui.tui.conftest import wait_until
from tests.axtui.tui.tui_helpers import blocks_of, client_on, open_session, running_app, settle
from tests.conftest import HubFactory, restart


async def test_sidebar_lists_sessions_newest_first_and_follows_changes(
        hub_factory: HubFactory) -> None:
    """The sidebar shows every session, latest activity first, and re-orders live with
    unread counts when another client writes."""
    hub = await hub_factory()
    other = await client_on(hub)
    for name in ("alpha", "beta", "gamma"):
        await other.create_session(sessionId=name, title=name.title())
    async with running_app(hub) as (app, pilot):
        sidebar = app.main.sidebar
        await settle(pilot, lambda: sidebar._order == ["gamma", "beta", "alpha"], "the order")
        await other.publish("alpha", "user.message", {"text": "bump"})
        await settle(pilot, lambda: sidebar._order[0] == "alpha", "alpha to move up")
        assert sidebar.unread("alpha") == 1
        await other.create_session(sessionId="delta", title="Delta")
        await settle(pilot, lambda: sidebar._order[0] == "delta", "a new session to appear")
        await other.call("session/delete", {"sessionId": "beta"})
        await settle(pilot, lambda: "beta" not in sidebar._order, "a deleted one to go")
    await other.close()


async def test_filter_narrows_the_session_list(hub_factory: HubFactory) -> None:
    """Typing in the filter (ctrl+f) keeps only sessions whose title, id or agent match."""
    hub = await hub_factory()
    other = await client_on(hub)
    await other.create_session(sessionId="s1", title="CSV export timeout")
    await other.create_session(sessionId="s2", title="Login page slow")
    async with running_app(hub) as (app, pilot):
        await settle(pilot, lambda: len(app.main.sidebar._order) == 2, "both sessions")
        await pilot.press("ctrl+f", *"csv")
        await settle(pilot, lambda: app.main.sidebar._order == ["s1"], "the filter to apply")
        await pilot.press("escape")
        await settle(pilot, lambda: len(app.main.sidebar._order) == 2, "the filter to clear")
    await other.close()


async def test_new_session_dialog_creates_a_session_with_the_chosen_agent(
        hub_factory: HubFactory) -> None:
    """ctrl+n asks for a title and an agent, creates the session and opens it."""
    hub = await hub_factory()
    async with running_app(hub) as (app, pilot):
        await pilot.press("ctrl+n")
        await wait_until(pilot, lambda: isinstance(app.screen, NewSessionScreen), "the dialog")
        dialog = app.screen
        await wait_until(pilot, lambda: dialog.query_one("#agent").value == "demo",
                         "the agents to load")
        dialog.query_one("#agent").value = "echo"
        await pilot.press(*"Nightly build", "enter")
        await settle(pilot, lambda: app.main.session is not None, "the new session to open")
        assert app.main.session["title"] == "Nightly build"
        assert app.main.session["agent"] == "echo"
        assert app.main.session_id in app.main.sidebar.sessions
        assert isinstance(app.focused, Composer)


async def test_a_message_wakes_the_agent_and_its_answer_streams_in(
        hub_factory: HubFactory) -> None:
    """Enter publishes a user.message from the TUI; the echo agent's answer is shown."""
    hub = await hub_factory()
    other = await client_on(hub)
    await other.create_session(sessionId="chat", agent="echo")
    async with running_app(hub, session_id="chat") as (app, pilot):
        await settle(pilot, lambda: isinstance(app.focused, Composer), "the input to focus")
        await pilot.press(*"hello", "shift+enter", *"world", "enter")
        await settle(pilot, lambda: any(b.complete for b in blocks_of(app, TextBlock)),
                     "the agent's answer")
        user = blocks_of(app, UserBlock)[0]
        assert (user.text, user.name, user.client) == ("hello\nworld", "local", "tui")
        answer = blocks_of(app, TextBlock)[0]
        assert answer.text.startswith("echo: hello\nworld")
        assert app.main.query(AgentMessage) and app.main.query(UserMessage)
        assert app.main.query_one(Composer).text == ""
        await pilot.press("up")
        assert app.main.query_one(Composer).text == "hello\nworld"
    history = await other.history("chat", types=["user.message"])
    assert history["events"][0]["source"]["client"] == "tui"
    await other.close()


async def test_every_kind_of_demo_event_gets_its_widget(hub_factory: HubFactory) -> None:
    """A demo turn shows a plan, a thought, a tool call, a permission prompt, the state
    change and the Markdown answer; ctrl+t hides the thoughts."""
    hub = await hub_factory()
    other = await client_on(hub)
    await other.create_session(sessionId="demo", agent="demo")
    async with running_app(hub, session_id="demo") as (app, pilot):
        await settle(pilot, lambda: isinstance(app.focused, Composer), "the input")
        await pilot.press(*"Customer reports CSV export timeout", "enter")
        await settle(pilot, lambda: isinstance(app.focused, PermissionPrompt),
                     "the permission prompt to take focus", timeout=30)
        await pilot.press("1")
        await settle(pilot, lambda: app.main.conversation.running_turn is None
                     and blocks_of(app, NoticeBlock) and any(
                         b.complete and not b.thought for b in blocks_of(app, TextBlock)),
                     "the turn to finish", timeout=30)
        screen = app.main
        for widget in (PlanView, Thought, ToolCall, PermissionPrompt, StateChange,
                       AgentMessage):
            assert screen.query(widget), widget.__name__
        tool = blocks_of(app, ToolBlock)[0]
        assert (tool.title, tool.status) == ("Look up related tickets", "completed")
        answer = next(b for b in blocks_of(app, TextBlock) if not b.thought)
        assert "Ticket #1 filed" in answer.text
        thought = screen.query_one(Thought)
        assert thought.display and thought.styles.display == "block"
        await pilot.press("ctrl+t")
        await pilot.pause()
        assert thought.styles.display == "none"
        await pilot.press("ctrl+t")
        await pilot.pause()
        assert thought.styles.display == "block"
    await other.close()


async def test_permission_answered_inline_records_who_and_from_where(
        hub_factory: HubFactory, tmp_path: Path) -> None:
    """Pressing an option's number answers the request as this user via the TUI."""
    hub = await hub_factory(tokens=True)
    other = await client_on(hub, "participant-token")
    await other.create_session(sessionId="p", agent="echo")
    async with running_app(hub, "admin-token", session_id="p") as (app, pilot):
        await settle(pilot, lambda: isinstance(app.focused, Composer), "the input")
        await pilot.press(*"permission", "enter")
        await settle(pilot, lambda: isinstance(app.focused, PermissionPrompt), "the prompt")
        await pilot.press("2")
        await settle(pilot, lambda: blocks_of(app, PermissionBlock)[0].answer == "Reject",
                     "the answer")
        block = blocks_of(app, PermissionBlock)[0]
        assert (block.answered_by, block.answered_via) == ("ada", "tui")
        prompt = app.main.query_one(PermissionPrompt)
        assert not prompt.query_one(".options").display
    responses = await other.history("p", types=["permission.response"])
    assert responses["events"][0]["data"]["optionId"] == "reject"
    await other.close()


async def test_permission_answered_elsewhere_shows_who_answered(
        hub_factory: HubFactory) -> None:
    """When another client answers first, the prompt closes and names them and their client."""
    hub = await hub_factory(tokens=True)
    slack = await client_on(hub, "participant-token", kind="slack")
    await slack.create_session(sessionId="p", agent="echo")
    async with running_app(hub, "admin-token", session_id="p") as (app, pilot):
        await settle(pilot, lambda: isinstance(app.focused, Composer), "the input")
        await pilot.press(*"permission", "enter")
        await settle(pilot, lambda: blocks_of(app, PermissionBlock), "the request")
        request_id = blocks_of(app, PermissionBlock)[0].request_id
        await slack.publish("p", "permission.response",
                            {"requestId": request_id, "optionId": "allow"})
        await settle(pilot, lambda: not blocks_of(app, PermissionBlock)[0].open, "the answer")
        block = blocks_of(app, PermissionBlock)[0]
        assert (block.answer, block.answered_by, block.answered_via) == ("Allow", "paul",
                                                                         "slack")
        text = str(app.main.query_one(PermissionPrompt).query_one(".answer").render())
        assert "answered by paul via slack" in text
    await slack.close()


async def test_escape_twice_cancels_the_running_turn(hub_factory: HubFactory) -> None:
    """Esc once only warns; Esc twice cancels the turn (the agent stops with cancelled)."""
    hub = await hub_factory()
    other = await client_on(hub)
    await other.create_session(sessionId="slow", agent="echo")
    async with running_app(hub, session_id="slow") as (app, pilot):
        await settle(pilot, lambda: isinstance(app.focused, Composer), "the input")
        await pilot.press(*"sleep 30", "enter")
        await settle(pilot, lambda: app.main.conversation.running_turn, "the turn to start")
        await pilot.press("escape")
        await pilot.pause(0.1)
        assert app.main.conversation.running_turn
        await pilot.press("escape")
        await settle(pilot, lambda: app.main.conversation.running_turn is None,
                     "the turn to end")
    done = await other.history("slow", types=["turn.completed"])
    assert done["events"][0]["data"]["stopReason"] == "cancelled"
    await other.close()


async def test_reconnect_resumes_with_nothing_lost_or_twice(hub_factory: HubFactory) -> None:
    """The hub restarts under the app: the status line says so, and the open session
    continues after the last seq it showed, every message exactly once."""
    hub = await hub_factory()
    other = await client_on(hub)
    await other.create_session(sessionId="r")
    for n in range(3):
        await other.publish("r", "user.message", {"text": f"before {n}"})
    await other.close()
    async with running_app(hub, session_id="r") as (app, pilot):
        await settle(pilot, lambda: len(blocks_of(app, UserBlock)) == 3, "the backlog")
        status = app.main.query_one(StatusBar)
        hub = await restart(hub_factory, hub)
        await wait_until(pilot, lambda: not status.connected, "the drop to show")
        writer = await client_on(hub)
        for n in range(3):
            await writer.publish("r", "user.message", {"text": f"after {n}"})
        await settle(pilot, lambda: len(blocks_of(app, UserBlock)) == 6, "the new messages",
                     timeout=30)
        await wait_until(pilot, lambda: status.connected, "the status to recover")
        texts = [b.text for b in blocks_of(app, UserBlock)]
        assert texts == [f"before {n}" for n in range(3)] + [f"after {n}" for n in range(3)]
        assert app.main.conversation.last_seq == 7
        await writer.close()


async def test_unreachable_hub_is_retried_until_it_answers(hub_factory: HubFactory,
                                                           tmp_path: Path) -> None:
    """With no hub listening the status line says so; when one starts, the app connects."""
    hub = await hub_factory()
    url, config = hub.url, hub.config
    await hub.stop()
    from axtui.tui.app import AxtuiApp

    app = AxtuiApp(url, label="test hub")
    async with app.run_test() as pilot:
        status = app.main.query_one(StatusBar)
        await wait_until(pilot, lambda: "cannot reach" in status.text, "the failure")
        assert not status.connected
        assert "axtui up" in status.text
        from dataclasses import replace

        await hub_factory(config=replace(config, hub=replace(config.hub,
                                                             port=int(url.split(":")[2][:-3]))))
        await wait_until(pilot, lambda: status.connected, "the connection", timeout=20)


async def test_a_refused_message_comes_back_to_the_input(hub_factory: HubFactory) -> None:
    """A viewer cannot publish: the error is shown and the text is put back, not lost."""
    hub = await hub_factory(tokens=True)
    admin = await client_on(hub, "admin-token")
    await admin.create_session(sessionId="ro")
    async with running_app(hub, "viewer-token", session_id="ro") as (app, pilot):
        await settle(pilot, lambda: isinstance(app.focused, Composer), "the input")
        await pilot.press(*"let me in", "enter")
        composer = app.main.query_one(Composer)
        await settle(pilot, lambda: composer.text == "let me in", "the text to come back")
    assert (await admin.get_session("ro"))["headSeq"] == 1
    await admin.close()


async def test_fork_opens_a_copy_at_the_latest_event(hub_factory: HubFactory) -> None:
    """F5 twice forks the open session at its head and opens the fork."""
    hub = await hub_factory()
    other = await client_on(hub)
    await other.create_session(sessionId="orig")
    await other.publish("orig", "user.message", {"text": "keep me"})
    async with running_app(hub) as (app, pilot):
        await open_session(app, pilot, "orig")
        await pilot.press("f5", "f5")
        await settle(pilot, lambda: app.main.session_id not in (None, "orig"), "the fork")
        await settle(pilot, lambda: blocks_of(app, UserBlock), "the copied message")
        assert blocks_of(app, UserBlock)[0].text == "keep me"
        assert any("forked from orig at seq 2" in b.text for b in blocks_of(app, NoticeBlock))
    await other.close()


async def test_function_keys_open_state_inspector_replay_and_help(
        hub_factory: HubFactory) -> None:
    """F2, F3 and F1 open the state view, the inspector and help; Esc returns."""
    hub = await hub_factory()
    other = await client_on(hub)
    await other.create_session(sessionId="keys")
    async with running_app(hub) as (app, pilot):
        await open_session(app, pilot, "keys")
        for key, screen in (("f2", StateScreen), ("f3", InspectorScreen), ("f1", HelpScreen)):
            await pilot.press(key)
            await wait_until(pilot, lambda s=screen: isinstance(app.screen, s), screen.__name__)
            await pilot.press("escape")
            await wait_until(pilot, lambda: app.screen is app.main, "the main screen")
    await other.close()


async def test_the_inspector_and_the_state_view_hear_of_live_events(
        hub_factory: HubFactory) -> None:
    """Over the main screen, the inspector (F3) shows a new event of the open session as it
    comes, and the state view (F2) shows a new table without a key press: both through the
    app's session_events signal."""
    hub = await hub_factory()
    other = await client_on(hub)
    await other.create_session(sessionId="live")
    async with running_app(hub) as (app, pilot):
        await open_session(app, pilot, "live")
        await pilot.press("f3")
        await wait_until(pilot, lambda: isinstance(app.screen, InspectorScreen)
                         and not app.screen.busy, "the inspector")
        inspector = app.screen
        assert isinstance(inspector, InspectorScreen)
        await other.publish("live", "user.message", {"text": "while inspecting"})
        await settle(pilot, lambda: [e.type for e in inspector.events][-1:] == ["user.message"],
                     "the live event in the inspector")
        assert inspector.selected_seq == inspector.events[-1].seq == 2
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is app.main, "the main screen")
        await pilot.press("f2")
        await wait_until(pilot, lambda: isinstance(app.screen, StateScreen), "the state view")
        tables = app.screen.query_one("#state-tables", OptionList)
        await other.exec("live", [{"sql": "CREATE TABLE tickets (id TEXT)"}])
        await settle(pilot, lambda: any(tables.get_option_at_index(i).id == "tickets"
                                        for i in range(tables.option_count)), "the new table")
    await other.close()


async def test_every_main_screen_action_is_in_the_command_palette(
        hub_factory: HubFactory) -> None:
    """The command palette offers each key's action by name."""
    hub = await hub_factory()
    async with running_app(hub) as (app, _pilot):
        titles = {c.title for c in app.get_system_commands(app.main)}
        for name in ("Help", "New", "Filter", "Thoughts", "Answer", "State", "Inspect",
                     "Replay", "Fork", "Delete", "Cancel turn"):
            assert name in titles, name


async def test_a_live_stream_keeps_the_widget_tree_bounded(hub_factory: HubFactory) -> None:
    """Thousands of live events: every one is folded in, but only the newest blocks are
    mounted as widgets."""
    hub = await hub_factory()
    other = await client_on(hub)
    await other.create_session(sessionId="busy")
    async with running_app(hub, session_id="busy") as (app, pilot):
        await settle(pilot, lambda: app.main.session is not None, "the session")
        for start in range(0, 1500, 100):
            await asyncio.gather(*(other.publish("busy", "ci.tick", {"n": n})
                                   for n in range(start, start + 100)))
        await settle(pilot, lambda: app.main.conversation.last_seq == 1501, "every event")
        view = app.main.view
        await wait_until(pilot, lambda: view.shown == view.max_widgets, "the view to catch up")
        assert len(app.main.conversation) == 1501
        assert len(view.query(".block")) == view.max_widgets
    await other.close()


async def test_a_large_session_opens_at_its_latest_events(hub_factory: HubFactory) -> None:
    """A 10,000-event session opens on its newest events: the window read is bounded and
    the last event is on screen."""
    hub = await hub_factory()
    other = await client_on(hub)
    await other.create_session(sessionId="big")
    for start in range(0, 10_000, 100):
        await asyncio.gather(*(other.publish("big", "ci.tick", {"n": n})
                               for n in range(start, start + 100)))
    async with running_app(hub) as (app, pilot):
        await open_session(app, pilot, "big")
        assert app.main.conversation.last_seq == 10_001
        assert app.main.window_start == 10_001 - 1000
        assert len(app.main.conversation) == 1000
        view = app.main.view
        await wait_until(pilot, lambda: view.shown == view.max_widgets, "the view")
        assert "events 1–9001 are in replay" in str(view._earlier.render())
    await other.close()
