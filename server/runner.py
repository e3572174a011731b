"""Running a process until it is told to stop: the one log line format and signal handling.

The hub (``axtui serve``), the embedded hub of ``axtui exec``, the Slack adapter and any
other long-running ``axtui`` process log the same line format and stop the same way, on
SIGINT or SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def log_formatter() -> logging.Formatter:
    """A formatter for :data:`LOG_FORMAT`, the one log line format."""
    return logging.Formatter(LOG_FORMAT)


@contextlib.contextmanager
def on_signals(callback: Callable[[], None],
               signals: Iterable[signal.Signals] = STOP_SIGNALS) -> Iterator[None]:
    """Call ``callback`` in the running loop on each of ``signals`` while in the block.

    Only the main thread receives signals: elsewhere (a hub run in a test's thread, say)
    nothing is installed and the block runs as it would without.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    installed = list(signals)
    for sig in installed:
        loop.add_signal_handler(sig, callback)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


async def run_until_signal(job: Awaitable[object] | None = None,
                           signals: Iterable[signal.Signals] = STOP_SIGNALS) -> None:
    """Wait for SIGINT or SIGTERM (``signals``).

    With ``job``, return when it ends, or, when a signal comes first, cancel it and return
    once it has finished cleaning up. An exception of ``job`` propagates.
    """
    stop = asyncio.Event()
    with on_signals(stop.set, signals):
        if job is None:
            await stop.wait()
            return
        task = asyncio.ensure_future(job)
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if not task.cancelled():
            task.result()
