"""Write the TUI's screenshots (SVG, and PNG when cairosvg is installed) from a real hub.

    python -m axtui.tui.screenshots [--out screenshots] [--size 120x36]

A hub with the bundled agents starts on a temporary data dir; the script creates a few
sessions, runs real ``demo`` and ``echo`` turns, and drives the app through its screens:
the session list, a conversation mid-stream, a permission prompt, replay, the state view
and the event inspector.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from textual.pilot import Pilot

from axtui.client import HubClient
from axtui.embedded import embedded_hub
from axtui.tui.app import AxtuiApp
from axtui.tui.model import TextBlock
from axtui.tui.screens.inspector import InspectorScreen
from axtui.tui.screens.replay import ReplayScreen
from axtui.tui.screens.state import StateScreen
from axtui.tui.widgets.blocks import PermissionPrompt
from server.config import load_config


async def until(pilot: Pilot[None], condition: Callable[[], object], what: str,
                timeout: float = 30.0) -> None:
    """Let the app run until ``condition()`` holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


async def turn(client: HubClient, session_id: str, text: str, answer: str | None = None) -> None:
    """Publish ``text`` and wait until its turn ends, answering a permission request with
    ``answer``, or stopping at the request when ``answer`` is None."""
    head = (await client.get_session(session_id))["headSeq"]
    await client.publish(session_id, "user.message", {"text": text})
    subscription = client.subscribe(session_id, after_seq=head)
    async for event in subscription:
        if event["type"] == "permission.request":
            if answer is None:
                break
            await client.publish(session_id, "permission.response", {
                "requestId": event["data"]["requestId"], "optionId": answer})
        if event["type"] in ("turn.completed", "turn.failed"):
            break
    await subscription.close()


async def stage(client: HubClient) -> None:
    """Sessions with some history, so the list and the views have something to show."""
    await client.create_session(sessionId="nightly-build", title="Nightly build #1287")
    await client.publish("nightly-build", "ci.build_failed",
                         {"job": "integration", "commit": "4be1c0d", "failed": 3})
    await client.create_session(sessionId="login-slow", title="Login page slow", agent="echo")
    await turn(client, "login-slow", "Login takes 9 s since Monday's deploy")
    await client.create_session(sessionId="csv-export", title="CSV export timeout",
                                agent="demo")
    await turn(client, "csv-export", "Customer reports CSV export timeout on large accounts",
               answer="allow")


async def shoot(url: str, out: Path, size: tuple[int, int]) -> list[Path]:
    """Drive the app through each view; returns the SVG files written."""
    written: list[Path] = []
    app = AxtuiApp(url, label="local hub")

    def save(name: str) -> None:
        written.append(Path(app.save_screenshot(f"{name}.svg", str(out))))

    async with app.run_test(size=size) as pilot:
        await until(pilot, lambda: app.client is not None, "the connection")
        client = app.client
        assert client is not None
        await stage(client)
        await until(pilot, lambda: len(app.main.sidebar.sessions) >= 3, "the sessions")
        app.main.open_session("csv-export")
        await until(pilot, lambda: app.main.conversation.last_seq > 20, "the conversation")
        await pilot.pause(0.5)
        save("sessions")

        await client.create_session(sessionId="release", title="Release checklist",
                                    agent="demo")
        app.main.open_session("release")
        await until(pilot, lambda: app.main.session is not None, "the new session")
        await pilot.press(*"Draft the release notes for 2.4", "enter")
        await until(pilot, lambda: isinstance(app.focused, PermissionPrompt), "the prompt")
        await pilot.pause(0.3)
        save("permission")
        await pilot.press("1")
        await until(pilot, lambda: any(not b.thought and not b.complete and len(b.text) > 60
                                       for b in app.main.conversation.blocks.values()
                                       if isinstance(b, TextBlock)), "the answer streaming")
        save("streaming")
        await until(pilot, lambda: app.main.conversation.running_turn is None, "the turn")

        app.main.open_session("csv-export")
        await until(pilot, lambda: app.main.conversation.last_seq > 20, "the conversation")
        await pilot.press("f4")
        await until(pilot, lambda: isinstance(app.screen, ReplayScreen) and app.screen.loaded,
                    "replay")
        replay = app.screen
        assert isinstance(replay, ReplayScreen)
        await pilot.press("space", "g", *"17", "enter")
        await until(pilot, lambda: replay.replay.position == 17, "the jump")
        await pilot.pause(0.3)
        save("replay")
        await pilot.press("escape")

        await pilot.press("f2")
        await until(pilot, lambda: isinstance(app.screen, StateScreen), "the state view")
        await pilot.pause(1.0)
        await pilot.press("down", "enter")
        await pilot.pause(1.0)
        save("state")
        await pilot.press("escape")

        await pilot.press("f3")
        await until(pilot, lambda: isinstance(app.screen, InspectorScreen), "the inspector")
        await pilot.pause(1.0)
        await pilot.press("up", "up", "up", "up")
        await pilot.pause(0.5)
        save("inspector")
        await pilot.press("escape")
    return written


def to_png(svg: Path) -> Path | None:
    """Render ``svg`` to PNG with cairosvg or rsvg-convert, whichever is here."""
    png = svg.with_suffix(".png")
    try:
        import cairosvg  # type: ignore[import-not-found, import-untyped, unused-ignore]
    except ImportError:
        if shutil.which("rsvg-convert") is None:
            return None
        subprocess.run(["rsvg-convert", "-o", str(png), str(svg)], check=True)
        return png
    cairosvg.svg2png(url=str(svg), write_to=str(png))
    return png


async def main(out: Path, size: tuple[int, int]) -> None:
    """Start a hub on a fresh data dir and write every screenshot into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="axtui-shots-") as data_dir:
        config = load_config(None).with_overrides(data_dir=Path(data_dir))
        demo = config.agents["demo"]
        slow_demo = replace(demo, env={**demo.env, "AXTUI_DEMO_PAUSE": "0.25"})
        config = replace(config, agents={**config.agents, "demo": slow_demo})
        async with embedded_hub(config) as url:
            written = await shoot(url, out, size)
    for svg in written:
        png = to_png(svg)
        print(f"wrote {svg}" + (f" and {png.name}" if png else " (no PNG: pip install cairosvg)"))


def parse_size(text: str) -> tuple[int, int]:
    """``120x36`` as (columns, rows)."""
    columns, rows = text.lower().split("x")
    return int(columns), int(rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("screenshots"))
    parser.add_argument("--size", type=parse_size, default=(120, 36))
    args: Any = parser.parse_args()
    asyncio.run(main(args.out, args.size))
