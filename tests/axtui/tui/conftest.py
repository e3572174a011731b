"""Fixtures and helpers for the TUI tests: a host app for one screen, waiting, a fixed clock."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.screen import Screen

from axtui.client import HubClient
from axtui.tui.hubapp import HubApp
from server import protocol
from server.wiring import build_hub
from tests.conftest import make_config

# --- screen host (state and inspector screens) -----------------------------------------------


class ScreenHost(HubApp):
    """A bare app that pushes one screen and keeps what it is dismissed with (a
    :class:`HubApp` with no connection of its own: the screen's status line hides).

    ``cleanups`` are awaited when the app unmounts: snapshot tests start their hub inside the
    app's own event loop (``snap_compare`` runs the app itself) and stop it there.
    """

    def __init__(self, screen: Screen[Any] | None = None) -> None:
        super().__init__()
        self.first_screen = screen
        self.dismissed: list[Any] = []
        self.cleanups: list[Callable[[], Awaitable[Any]]] = []

    def on_mount(self) -> None:
        """Push the screen under test, if given already."""
        if self.first_screen is not None:
            self.show(self.first_screen)

    def show(self, screen: Screen[Any]) -> None:
        """Push ``screen``; its dismiss value is appended to :attr:`dismissed`."""
        self.push_screen(screen, self.dismissed.append)

    async def on_unmount(self) -> None:
        """Run the cleanups, last first."""
        for cleanup in reversed(self.cleanups):
            await cleanup()


def snapshot_host(
    data_dir: Path, seed: Callable[[HubClient], Awaitable[Any]],
    make_screen: Callable[[HubClient], Screen[Any]], loaded: Callable[[Any], object],
    clock: FixedClock, keys: tuple[str, ...] = (), ready: Callable[[Any], object] | None = None,
) -> tuple[ScreenHost, Callable[[Pilot[Any]], Awaitable[None]]]:
    """A host app and a ``run_before`` for ``snap_compare`` (which runs the app itself): in
    the app's own loop it starts a local hub on ``data_dir``, seeds it (under the test's
    fixed clock), pushes the screen, waits until ``loaded(screen)``, then presses ``keys``
    and waits until ``ready(screen)``. The hub and client stop when the app unmounts."""
    app = ScreenHost()

    async def run_before(pilot: Pilot[Any]) -> None:
        hub = build_hub(make_config(data_dir / "hub"))
        await hub.start()
        app.cleanups.append(hub.stop)
        client = HubClient(hub.url, name="alice", kind="tui")
        await client.start()
        app.cleanups.append(client.close)
        await seed(client)
        clock.now += 1500
        screen = make_screen(client)
        app.show(screen)
        await wait_until(pilot, lambda: loaded(screen), "the screen to load")
        await pilot.press(*keys)
        if ready is not None:
            await wait_until(pilot, lambda: ready(screen), "the screen after the keys")
        await pilot.pause()

    return app, run_before


async def wait_until(pilot: Pilot[Any], condition: Callable[[], object], what: str,
                     timeout: float = 15.0) -> None:
    """Let the app run until ``condition()`` is true; fail with ``what`` after ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.02)


# --- deterministic hub clock for snapshots ---------------------------------------------------

FIXED_START_MS = 1_767_254_400_000  # 2026-01-01 08:00:00 UTC


class FixedClock:
    """The hub's clock in snapshot tests: ``now`` ms, moved on by the test, never by time."""

    def __init__(self) -> None:
        self.now = FIXED_START_MS
        self._ids = itertools.count(1)

    def now_ms(self) -> int:
        """The fixed time."""
        return self.now

    def new_event_id(self) -> str:
        """Counted ids in the UUID shape (the hub makes them in a fixed order)."""
        return f"00000000-0000-7000-8000-{next(self._ids):012d}"


@pytest.fixture
def fixed_hub_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[FixedClock]:
    """Make the hub's timestamps and event ids deterministic, and local time UTC, so that
    screenshots are the same on every run."""
    clock = FixedClock()
    monkeypatch.setattr(protocol, "now_ms", clock.now_ms)
    monkeypatch.setattr(protocol, "new_event_id", clock.new_event_id)
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield clock
    monkeypatch.undo()
    time.tzset()
