"""Running the hub as a process: logging, the event loop, signals."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from server.config import Config
from server.hub import Hub

log = logging.getLogger("axtui")


def setup_logging(config: Config) -> None:
    """Log to stderr and to ``data_dir/logs/hub.log``."""
    level = getattr(logging, config.hub.log_level.upper(), logging.INFO)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = logging.getLogger("axtui")
    root.setLevel(level)
    root.handlers.clear()
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(fmt)
    root.addHandler(console)
    logs = config.hub.data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    file = logging.FileHandler(logs / "hub.log")
    file.setFormatter(fmt)
    root.addHandler(file)


async def serve_until_stopped(
    config: Config, ready: Callable[[Hub], Coroutine[Any, Any, None]] | None = None
) -> None:
    """Run a hub until SIGINT or SIGTERM (or until ``ready`` returns, if given)."""
    hub = Hub(config)
    await hub.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        if ready is not None:
            job = asyncio.create_task(ready(hub))
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait({job, stopper}, return_when=asyncio.FIRST_COMPLETED)
            for task in (job, stopper):
                task.cancel()
        else:
            await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        log.info("shutting down")
        await hub.stop()


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop when it is installed, else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)
