"""The event inspector against a real hub: raw JSON, jump, filter, window, live, fork."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from axtui.client import HubClient
from axtui.tui.screens.inspector import MAX_ROWS, InspectorScreen, event_source, event_summary
from server.hub import Hub
from server.sources import Source
from tests.axtui.tui.conftest import FixedClock, ScreenHost, snapshot_host, wait_until
from tests.conftest import HubFactory

SESSION = "triage-42"


async def seed(client: HubClient, clock: FixedClock | None = None) -> None:
    """Seven events: created, a message with a key, state, a CI event, three notes."""
    def tick() -> None:
        if clock is not None:
            clock.now += 1234

    await client.create_session(sessionId=SESSION, title="CSV export timeout")
    tick()
    await client.publish(SESSION, "user.message",
                         {"text": "Customer reports a CSV export timeout"},
                         idempotency_key="slack:Ev1")
    tick()
    await client.exec(SESSION, [
        {"sql": "CREATE TABLE tickets (id TEXT PRIMARY KEY, status TEXT)"},
        {"sql": "INSERT INTO tickets VALUES (?, ?)", "params": ["T-42", "open"]},
    ])
    tick()
    await client.publish(SESSION, "ci.build_failed", {"job": "export-tests", "attempt": 2})
    for i in range(3):
        tick()
        await client.publish(SESSION, "note", {"n": i})


@pytest.fixture
async def inspector_client(hub: Hub) -> AsyncIterator[HubClient]:
    """A client on a local hub holding the seeded session."""
    async with HubClient(hub.url, name="alice", kind="tui") as client:
        await seed(client)
        yield client


def inspector(app: ScreenHost) -> InspectorScreen:
    """The screen under test."""
    screen = app.screen
    assert isinstance(screen, InspectorScreen)
    return screen


def status_text(app: ScreenHost) -> str:
    """The status line's text."""
    return str(inspector(app).query_one("#inspector-status", Static).content)


def pane_json(app: ScreenHost) -> Any:
    """The JSON pane's text, parsed."""
    return json.loads(str(inspector(app).query_one("#inspector-json", Static).content))


async def loaded(pilot: Pilot[Any], app: ScreenHost) -> InspectorScreen:
    """Wait until the screen is shown and its window loaded."""
    await wait_until(pilot, lambda: isinstance(app.screen, InspectorScreen)
                     and not app.screen.busy, "the window")
    await pilot.pause()
    return inspector(app)


async def test_opens_at_seq_with_raw_json(inspector_client: HubClient) -> None:
    """Opened at seq 2, the event's raw JSON is shown with every field as stored."""
    app = ScreenHost(InspectorScreen(inspector_client, SESSION, seq=2))
    async with app.run_test(size=(120, 30)) as pilot:
        screen = await loaded(pilot, app)
        assert screen.selected_seq == 2
        stored = (await inspector_client.history(SESSION, afterSeq=1, limit=1))["events"][0]
        shown = pane_json(app)
        assert shown == stored
        assert list(shown) == ["seq", "id", "ts", "type", "source", "data", "idempotencyKey",
                               "turnId"]
        assert shown["idempotencyKey"] == "slack:Ev1"
        table = screen.query_one("#inspector-events", DataTable)
        assert table.row_count == 7
        row = [str(cell) for cell in table.get_row_at(1)]
        assert row[0] == "2" and row[2] == "local·tui" and row[3] == "user.message"
        assert row[4] == "Customer reports a CSV export timeout"
        assert screen.title == "Events · CSV export timeout"


async def test_state_field_is_shown_for_publishes_with_state(
    inspector_client: HubClient,
) -> None:
    """A publish that carried state statements shows its top-level state field."""
    ack = await inspector_client.publish(
        SESSION, "note", {"n": 9}, state=[{"sql": "UPDATE tickets SET status = 'closed'"}])
    app = ScreenHost(InspectorScreen(inspector_client, SESSION))
    async with app.run_test(size=(120, 30)) as pilot:
        screen = await loaded(pilot, app)
        assert screen.selected_seq == ack["seq"]  # the latest by default
        assert pane_json(app)["state"] == [{"sql": "UPDATE tickets SET status = 'closed'"}]


async def test_jump_to_seq(inspector_client: HubClient) -> None:
    """g, a seq and Enter select that event; a seq past the head selects the latest."""
    app = ScreenHost(InspectorScreen(inspector_client, SESSION, seq=1))
    async with app.run_test(size=(120, 30)) as pilot:
        screen = await loaded(pilot, app)
        await pilot.press("g", "5", "enter")
        await wait_until(pilot, lambda: screen.selected_seq == 5 and not screen.busy, "seq 5")
        assert pane_json(app)["seq"] == 5
        await pilot.press("g", "9", "9", "enter")
        await wait_until(pilot, lambda: screen.selected_seq == 7 and not screen.busy, "seq 7")
        assert "No event 99 here; showing 7" in status_text(app)
        await pilot.press("g", "x", "enter")
        assert "Not a seq" in status_text(app)


async def test_type_filter(inspector_client: HubClient) -> None:
    """t with a glob shows only events of matching types; an empty filter shows all."""
    app = ScreenHost(InspectorScreen(inspector_client, SESSION, seq=1))
    async with app.run_test(size=(120, 30)) as pilot:
        screen = await loaded(pilot, app)
        table = screen.query_one("#inspector-events", DataTable)
        await pilot.press("t", "n", "o", "*", "enter")
        await wait_until(pilot, lambda: screen.types == ["no*"] and not screen.busy, "filter")
        assert [e.type for e in screen.events] == ["note"] * 3
        assert table.row_count == 3
        assert "types no*" in status_text(app)
        assert "showing 1\N{EN DASH}3 of 3 matching" in status_text(app)
        await pilot.press("t", "ctrl+u", "enter")
        await wait_until(pilot, lambda: table.row_count == 7 and not screen.busy, "all again")


async def test_window_on_a_long_session(hub: Hub) -> None:
    """On 3,000 events the table holds a bounded window, and the cursor reaches the first
    and the last event by paging through it."""
    async with HubClient(hub.url) as client:
        await client.create_session(sessionId="long")
        for start in range(0, 3000, 250):
            await asyncio.gather(*(client.publish("long", "note", {"i": i})
                                   for i in range(start, start + 250)))
        head = (await client.get_session("long"))["headSeq"]
        assert head == 3001
        app = ScreenHost(InspectorScreen(client, "long", seq=1500))
        async with app.run_test(size=(100, 30)) as pilot:
            screen = await loaded(pilot, app)
            table = screen.query_one("#inspector-events", DataTable)
            assert screen.selected_seq == 1500 and table.row_count == 1000
            for key, target in (("ctrl+end", head), ("ctrl+home", 1)):
                for _ in range(20):
                    if screen.selected_seq == target:
                        break
                    await pilot.press(key)
                    await wait_until(pilot, lambda: not screen.busy, "a page")
                    await pilot.pause()
                    assert table.row_count <= MAX_ROWS
                assert screen.selected_seq == target
                assert pane_json(app)["seq"] == target
            await pilot.press("right_square_bracket")
            await wait_until(pilot, lambda: screen.selected_seq == head and not screen.busy,
                             "the latest")
            await pilot.press("left_square_bracket")
            await wait_until(pilot, lambda: screen.selected_seq == 1 and not screen.busy,
                             "the first")


async def test_a_filtered_window_counts_the_matching_events(hub: Hub) -> None:
    """With a type filter on a long session, "showing x–y of z" counts matching events:
    where the window starts among them and how many match in all (live ones included)."""
    async with HubClient(hub.url) as client:
        await client.create_session(sessionId="mixed")
        for start in range(0, 1200, 200):
            await asyncio.gather(*(client.publish("mixed", "note" if i % 2 else "ci.tick",
                                                  {"i": i}) for i in range(start, start + 200)))
        app = ScreenHost(InspectorScreen(client, "mixed"))
        async with app.run_test(size=(120, 30)) as pilot:
            screen = await loaded(pilot, app)
            await pilot.press("t", *"note", "enter")
            await wait_until(pilot, lambda: screen.types == ["note"] and not screen.busy,
                             "the filter")
            assert len(screen.events) == 500  # the newest page of the 600 notes
            assert "showing 101\N{EN DASH}600 of 600 matching · 1201 in all" in status_text(app)
            screen.add_events([{"seq": 1202, "ts": 1, "type": "note", "data": {},
                                "source": {"kind": "client", "name": "x"}}])
            await pilot.pause()
            assert "showing 101\N{EN DASH}601 of 601 matching" in status_text(app)


async def test_live_events_are_appended_at_the_head(inspector_client: HubClient) -> None:
    """add_events appends live events when the window reaches the head, and the cursor
    follows when it was on the last row."""
    app = ScreenHost(InspectorScreen(inspector_client, SESSION))
    async with app.run_test(size=(120, 30)) as pilot:
        screen = await loaded(pilot, app)
        sub = inspector_client.subscribe(SESSION, after_seq=7)
        await inspector_client.publish(SESSION, "user.message", {"text": "live one"})
        event = await asyncio.wait_for(sub.__anext__(), 10)
        await sub.close()
        screen.add_events([event])
        screen.add_events([event])  # again (as after a resume): shown once
        await pilot.pause()
        table = screen.query_one("#inspector-events", DataTable)
        assert table.row_count == 8
        assert screen.selected_seq == 8 and pane_json(app)["data"] == {"text": "live one"}


async def test_fork_at_selected_event(inspector_client: HubClient) -> None:
    """f twice forks at the selected seq and dismisses with the new session, whose head is
    that seq + 1 (session.forked)."""
    app = ScreenHost(InspectorScreen(inspector_client, SESSION, seq=3))
    async with app.run_test(size=(120, 30)) as pilot:
        screen = await loaded(pilot, app)
        await pilot.press("f")
        assert "Press f again" in status_text(app) and not app.dismissed
        await pilot.press("f")
        await wait_until(pilot, lambda: bool(app.dismissed), "the fork")
    forked = app.dismissed[0]
    assert forked["headSeq"] == 4 and forked["sessionId"] != SESSION
    last = (await inspector_client.history(forked["sessionId"], afterSeq=3))["events"]
    assert [e["type"] for e in last] == ["session.forked"]
    assert last[0]["data"] == {"fromSessionId": SESSION, "atSeq": 3}
    assert screen.selected_seq == 3


async def test_fork_is_cancelled_by_escape_or_moving(inspector_client: HubClient) -> None:
    """After one f, escape or moving the cursor cancels; escape again closes with None."""
    app = ScreenHost(InspectorScreen(inspector_client, SESSION, seq=3))
    async with app.run_test(size=(120, 30)) as pilot:
        screen = await loaded(pilot, app)
        await pilot.press("f", "escape")
        assert "Press f again" not in status_text(app) and not app.dismissed
        await pilot.press("f", "down", "f")
        assert "Press f again" in status_text(app) and screen.selected_seq == 4
        await pilot.press("escape", "escape")
        await wait_until(pilot, lambda: app.dismissed == [None], "the dismissal")
    assert [s["sessionId"] async for s in inspector_client.list_sessions()] == [SESSION]


async def test_viewer_fork_shows_forbidden(hub_factory: HubFactory) -> None:
    """A viewer's fork shows the hub's Forbidden message and the screen stays open."""
    hub = await hub_factory(tokens=True)
    async with HubClient(hub.url, token="participant-token") as owner:
        await owner.create_session(sessionId=SESSION)
    async with HubClient(hub.url, token="viewer-token") as viewer:
        app = ScreenHost(InspectorScreen(viewer, SESSION))
        async with app.run_test(size=(120, 30)) as pilot:
            screen = await loaded(pilot, app)
            await pilot.press("f", "f")
            status = screen.query_one("#inspector-status", Static)
            await wait_until(pilot, lambda: status.has_class("-error"), "the refusal")
            assert status_text(app).startswith("Fork failed: ")
            assert "needs the participant role" in status_text(app)
            assert app.dismissed == [] and app.screen is screen


async def test_copy_puts_the_json_on_the_clipboard(inspector_client: HubClient) -> None:
    """c copies the selected event's pretty JSON to the clipboard."""
    app = ScreenHost(InspectorScreen(inspector_client, SESSION, seq=4))
    async with app.run_test(size=(120, 30)) as pilot:
        await loaded(pilot, app)
        await pilot.press("c")
        assert json.loads(app.clipboard)["type"] == "ci.build_failed"


def test_sources_and_summaries_read_as_one_line() -> None:
    """Sources read name·client, agent name or hub; summaries are one short line."""
    def source(obj: dict[str, str]) -> str:
        return event_source(Source.from_json(obj))

    assert source({"kind": "client", "name": "alice", "client": "slack"}) == "alice·slack"
    assert source({"kind": "agent", "name": "demo"}) == "agent demo"
    assert source({"kind": "hub"}) == "hub"
    text = {"type": "agent.message", "data": {"text": "line one\n\nline two " + "x" * 200}}
    summary = event_summary(text)
    assert summary.startswith("line one line two") and len(summary) == 80
    assert event_summary({"type": "session.forked", "data": {"fromSessionId": "a",
                                                             "atSeq": 3}}) == "from a at seq 3"


def test_snapshot_inspector_screen(snap_compare: Any, tmp_path: Path,
                                   fixed_hub_clock: FixedClock) -> None:
    """You should see "Events · CSV export timeout" in the header, seven events from
    08:00:00.000 to 08:00:07.404 (local·tui) with seq 2 (user.message) selected, and its
    JSON on the right: seq, id, ts, type, source, data, idempotencyKey "slack:Ev1", turnId."""
    app, run_before = snapshot_host(
        tmp_path, lambda client: seed(client, fixed_hub_clock),
        lambda client: InspectorScreen(client, SESSION, seq=2),
        loaded=lambda screen: not screen.busy and screen.selected_seq == 2,
        clock=fixed_hub_clock)
    assert snap_compare(app, terminal_size=(120, 30), run_before=run_before)
