"""Snapshots of the main app's screens, each from a real hub with a fixed clock."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from textual.pilot import Pilot

from axtui.client import HubClient
from axtui.tui.app import AxtuiApp
from axtui.tui.screens.help import HelpScreen
from axtui.tui.screens.new_session import NewSessionScreen
from axtui.tui.screens.replay import ReplayScreen
from axtui.tui.screenshots import turn
from axtui.tui.widgets.blocks import PermissionPrompt
from server.hub import Hub
from server.wiring import build_hub
from tests.axtui.tui.conftest import FixedClock, wait_until
from tests.conftest import make_config

SIZE = (110, 32)
Stage = Callable[[HubClient], Awaitable[None]]
Drive = Callable[[AxtuiApp, Pilot[None]], Awaitable[None]]


class SnapshotApp(AxtuiApp):
    """The app, connecting only once the test's hub runs in its own loop; stops the hub."""

    def __init__(self) -> None:
        super().__init__("ws://unset", label="local hub")
        self.hub: Hub | None = None

    def on_mount(self) -> None:
        self.theme = "tokyo-night"

    def connect(self) -> None:
        """Connect once the hub runs (Textual also runs AxtuiApp.on_mount, which connects)."""
        if self.hub is not None:
            super().connect()

    async def on_unmount(self) -> None:
        await super().on_unmount()
        if self.hub is not None:
            await self.hub.stop()


def snapshot(tmp_path: Path, stage: Stage, drive: Drive) -> tuple[SnapshotApp, Any]:
    """An app and a ``run_before`` that starts a hub, stages sessions, connects, drives."""
    app = SnapshotApp()

    async def run_before(pilot: Pilot[None]) -> None:
        app.hub = build_hub(make_config(tmp_path / "hub"))
        await app.hub.start()
        async with HubClient(app.hub.url, name="script", kind="cli") as client:
            await stage(client)
        app.server = app.hub.url
        app.connect()
        await wait_until(pilot, lambda: app.main.sidebar.loaded, "the session list")
        await drive(app, pilot)
        await pilot.pause()

    return app, run_before


async def sessions(client: HubClient) -> None:
    """Three sessions: an echo exchange, a CI event, a finished demo turn."""
    await client.create_session(sessionId="nightly", title="Nightly build #1287")
    await client.publish("nightly", "ci.build_failed", {"job": "integration", "failed": 3})
    await client.create_session(sessionId="login", title="Login page slow", agent="echo")
    await turn(client, "login", "Login takes 9 s since Monday's deploy", None)
    await client.create_session(sessionId="csv", title="CSV export timeout", agent="demo")
    await turn(client, "csv", "Customer reports CSV export timeout", "allow")


async def waiting(client: HubClient) -> None:
    """A demo turn waiting for permission."""
    await client.create_session(sessionId="release", title="Release checklist", agent="demo")
    await turn(client, "release", "Draft the release notes for 2.4", None)


async def open_and_wait(app: AxtuiApp, pilot: Pilot[None], sid: str) -> None:
    """Open ``sid`` and wait until its whole backlog is on screen."""
    app.main.open_session(sid)
    await wait_until(pilot, lambda: app.main.session is not None
                     and app.main.conversation.last_seq >= app.main.session["headSeq"], sid)
    await pilot.pause(0.2)


def test_snapshot_conversation(snap_compare: Any, tmp_path: Path,
                               fixed_hub_clock: FixedClock) -> None:
    """You should see three sessions on the left (CSV export timeout open and highlighted),
    and its finished demo turn: the plan all ticked, a folded thought and tool call, the
    permission answered "Allow — answered by script via cli", the state change and the
    Markdown answer "Ticket #1 filed."; the status line says "local hub as local (admin)"."""
    async def drive(app: AxtuiApp, pilot: Pilot[None]) -> None:
        await open_and_wait(app, pilot, "csv")

    app, run_before = snapshot(tmp_path, sessions, drive)
    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_snapshot_permission_prompt(snap_compare: Any, tmp_path: Path,
                                    fixed_hub_clock: FixedClock) -> None:
    """You should see the Release checklist session waiting for permission: the header says
    "waiting for permission", and the focused prompt "Write ticket to the tickets table"
    shows its input and the buttons "1 Allow" and "2 Reject"."""
    async def drive(app: AxtuiApp, pilot: Pilot[None]) -> None:
        await open_and_wait(app, pilot, "release")
        await wait_until(pilot, lambda: isinstance(app.focused, PermissionPrompt), "focus")

    app, run_before = snapshot(tmp_path, waiting, drive)
    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_snapshot_replay(snap_compare: Any, tmp_path: Path,
                         fixed_hub_clock: FixedClock) -> None:
    """You should see replay of CSV export timeout paused at seq 13 of 28: the conversation
    up to the tool call, the scrub bar a little under half full, and the replay keys."""
    async def drive(app: AxtuiApp, pilot: Pilot[None]) -> None:
        await open_and_wait(app, pilot, "csv")
        assert app.client is not None
        app.push_screen(ReplayScreen(app.client, "csv", start_seq=13, autoplay=False))
        await wait_until(pilot, lambda: isinstance(app.screen, ReplayScreen)
                         and app.screen.loaded, "replay")
        await pilot.pause(0.2)

    app, run_before = snapshot(tmp_path, sessions, drive)
    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_snapshot_new_session_dialog(snap_compare: Any, tmp_path: Path,
                                     fixed_hub_clock: FixedClock) -> None:
    """You should see the New session dialog over the main screen, the title typed and the
    demo agent chosen."""
    async def drive(app: AxtuiApp, pilot: Pilot[None]) -> None:
        await pilot.press("ctrl+n")
        await wait_until(pilot, lambda: isinstance(app.screen, NewSessionScreen), "dialog")
        await wait_until(pilot, lambda: app.screen.query_one("#agent").value == "demo",
                         "the agents")
        await pilot.press(*"Flaky login test")

    app, run_before = snapshot(tmp_path, sessions, drive)
    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_snapshot_help(snap_compare: Any, tmp_path: Path, fixed_hub_clock: FixedClock) -> None:
    """You should see the help over the main screen: what a session is and a table of keys."""
    async def drive(app: AxtuiApp, pilot: Pilot[None]) -> None:
        await pilot.press("f1")
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen), "help")

    app, run_before = snapshot(tmp_path, sessions, drive)
    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_snapshot_small_terminal(snap_compare: Any, tmp_path: Path,
                                 fixed_hub_clock: FixedClock) -> None:
    """You should see the whole main screen at 80x24: the list, the end of the CSV export
    conversation, the input, the status line and the footer keys from f1 Help to f5 (at
    this width the palette key covers the last ones; at 100 columns they all fit)."""
    async def drive(app: AxtuiApp, pilot: Pilot[None]) -> None:
        await open_and_wait(app, pilot, "csv")

    app, run_before = snapshot(tmp_path, sessions, drive)
    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)
