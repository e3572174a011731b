"""Running the hub as a process: logging, the event loop, signals."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from server.config import Config
from server.hub import Hub
from server.redact import protect_logs
from server.runner import log_formatter, run_until_signal
from server.wiring import build_hub

log = logging.getLogger("axtui")

PR_SET_DUMPABLE = 4  # from <linux/prctl.h>


def setup_logging(config: Config) -> None:
    """Log to stderr and to ``data_dir/logs/hub.log``, with every token masked.

    The websockets server's own records (handshake failures, and at ``debug`` connections
    opening and closing) go to the same place, but never its DEBUG lines: those dump every
    header and every frame, which would copy all sessions' data into the log.
    """
    level = getattr(logging, config.hub.log_level.upper(), logging.INFO)
    fmt = log_formatter()
    console = logging.StreamHandler(sys.stderr)
    logs = config.hub.data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    file = logging.FileHandler(logs / "hub.log")
    handlers: list[logging.Handler] = [console, file]
    for handler in handlers:
        handler.setFormatter(fmt)
    protect_logs([t.token for t in config.tokens], handlers)
    # At INFO websockets says "connection open/closed" for every client: only in debug.
    ws_level = logging.INFO if level <= logging.DEBUG else max(level, logging.WARNING)
    for name, at in (("axtui", level), ("websockets.server", ws_level)):
        logger = logging.getLogger(name)
        logger.setLevel(at)
        logger.handlers[:] = handlers


async def serve_until_stopped(
    config: Config, ready: Callable[[Hub], Coroutine[Any, Any, None]] | None = None
) -> None:
    """Run a hub until SIGINT or SIGTERM (or until ``ready`` returns, if given)."""
    protect_process()
    hub = build_hub(config)
    await hub.start()
    try:
        await run_until_signal(None if ready is None else ready(hub))
    finally:
        log.info("shutting down")
        await hub.stop()


def protect_process() -> None:
    """Make the hub's process not dumpable (``PR_SET_DUMPABLE`` 0, Linux only).

    Then processes of the same user, agents among them, can neither read its
    ``/proc/<pid>/environ`` (which holds whatever secrets the config's ``${VAR}`` came
    from) or its memory, nor attach a debugger to it. Its children are not affected: the
    flag is reset when a process executes a program.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        failed = libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0
    except (OSError, AttributeError):
        failed = True
    if failed:
        log.warning("could not make the hub's process undumpable (prctl PR_SET_DUMPABLE"
                    " failed: %s): processes of its user can read its environment",
                    os.strerror(ctypes.get_errno()) or "no prctl")


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop when it is installed, else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)
