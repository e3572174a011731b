"""Helpers for the main app's tests: a hub with the bundled agents and the app on it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from textual.pilot import Pilot

from axtui.client import HubClient
from axtui.tui.app import AxtuiApp
from axtui.tui.model import Block
from server.hub import Hub
from tests.axtui.tui.conftest import wait_until

SIZE = (110, 34)


@asynccontextmanager
async def running_app(hub: Hub, token: str | None = None, session_id: str | None = None,
                      size: tuple[int, int] = SIZE,
                      ) -> AsyncIterator[tuple[AxtuiApp, Pilot[None]]]:
    """The app on ``hub``, connected, with its session list loaded."""
    app = AxtuiApp(hub.url, token, session_id=session_id, label="test hub")
    async with app.run_test(size=size) as pilot:
        await wait_until(pilot, lambda: app.client is not None, "the app to connect")
        await wait_until(pilot, lambda: app.main.sidebar.loaded, "the session list")
        yield app, pilot


async def open_session(app: AxtuiApp, pilot: Pilot[None], session_id: str) -> None:
    """Open ``session_id`` and wait until its backlog is shown."""
    app.main.open_session(session_id)
    await wait_until(pilot, lambda: app.main.session is not None
                     and app.main.conversation.last_seq >= app.main.session["headSeq"],
                     f"session {session_id} to open")


def blocks_of(app: AxtuiApp, kind: type[Block]) -> list[Any]:
    """The open conversation's blocks of one kind."""
    return [b for b in app.main.conversation.blocks.values() if isinstance(b, kind)]


async def settle(pilot: Pilot[None], condition: Callable[[], object], what: str,
                 timeout: float = 20.0) -> None:
    """Wait for ``condition`` and then for the screen to catch up with it."""
    await wait_until(pilot, condition, what, timeout)
    await pilot.pause()


async def client_on(hub: Hub, token: str | None = None, kind: str = "cli") -> HubClient:
    """A started HubClient on ``hub`` (close it after)."""
    client = HubClient(hub.url, token=token, kind=kind, name=kind)
    await client.start()
    return client
