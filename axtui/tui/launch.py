"""``axtui up``: a hub on the local data dir in a background thread, and the TUI on it."""

from __future__ import annotations

import asyncio
import os
import sys
import threading

from axtui.embedded import HubAlreadyRunning, embedded_hub
from axtui.exitcodes import ExitCode
from axtui.headless import CommandError
from axtui.tui.theme import ThemeChoice, ThemeMemory, choose_theme
from server.config import Config


class HubThread(threading.Thread):
    """An embedded hub running on its own event loop while the TUI owns the main thread.

    The hub and the UI then never wait on each other: a long redraw does not delay a
    commit, and a burst of events does not freeze the screen.
    """

    def __init__(self, config: Config) -> None:
        super().__init__(name="axtui hub", daemon=True)
        self.config = config
        self.url = ""
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._shutdown: asyncio.Event | None = None

    def run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        try:
            async with embedded_hub(self.config, self.config.hub.port,
                                    self.config.hub.http_port) as url:
                self.url = url
                self._loop = asyncio.get_running_loop()
                self._shutdown = asyncio.Event()
                self._ready.set()
                await self._shutdown.wait()
        except BaseException as exc:  # handed to the main thread, which reports it
            self.error = exc
        finally:
            self._ready.set()

    def start_and_wait(self, timeout: float = 30.0) -> str:
        """Start the hub; returns its URL, or raises what stopped it from starting."""
        self.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"the hub did not start within {timeout:g} s")
        if self.error is not None:
            raise self.error
        return self.url

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the hub (clients get 1001, agents are stopped) and wait for it."""
        if self._loop is not None and self._shutdown is not None:
            self._loop.call_soon_threadsafe(self._shutdown.set)
        self.join(timeout)


def theme_for(config: Config, memory: ThemeMemory) -> ThemeChoice:
    """The theme to start with: ``$AXTUI_THEME``, ``tui.theme``, the last choice, the
    default (see :mod:`axtui.tui.theme`)."""
    return choose_theme(os.environ, config.tui.theme, memory)


def open_tui(config: Config, server: str | None, token: str | None,
             session_id: str | None) -> int:
    """``axtui tui``: the app on the hub at ``server`` (or the config's); the exit code."""
    from axtui.headless import resolve_target
    from axtui.tui.app import AxtuiApp

    try:
        target = resolve_target(config, server, token)
    except CommandError as exc:
        print(f"axtui: {exc.message}", file=sys.stderr)
        return exc.code
    memory = ThemeMemory()
    AxtuiApp(target.url, target.token, session_id=session_id,
             theme=theme_for(config, memory), theme_memory=memory).run()
    return ExitCode.OK


def open_up(config: Config) -> int:
    """``axtui up``: a hub in a thread and the app on it; the hub stops with the app."""
    from axtui.tui.app import AxtuiApp

    hub = HubThread(config)
    try:
        url = hub.start_and_wait()
    except HubAlreadyRunning:
        print(f"axtui: a hub already runs on {config.hub.data_dir}; opening the TUI on "
              f"{config.client.server}", file=sys.stderr)
        return open_tui(config, None, None, None)
    except (OSError, CommandError) as exc:
        print(f"axtui: cannot start the hub: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return ExitCode.USAGE
    memory = ThemeMemory()
    try:
        AxtuiApp(url, None, label=f"local hub {url}", owns_hub=True,
                 theme=theme_for(config, memory), theme_memory=memory).run()
    finally:
        hub.stop()
    return ExitCode.OK
