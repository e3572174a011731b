"""A watchdog behind pytest-timeout, for the hang it cannot end.

pytest-timeout's signal method raises its failure in whatever Python code runs when the
alarm comes. In an asyncio test that may be a background task's step: the task stores the
failure as its result, and the test goes on waiting for good, with no second alarm. So,
per test:

- ``GRACE`` seconds after the test's own timeout, if it is still running: every thread's
  stack and every asyncio task's stack go to stderr, and every task of a running loop is
  cancelled, so the test fails and the run goes on;
- ``GRACE`` seconds after that, faulthandler dumps the threads again and ends the run
  (exit code 1), rather than leaving CI to be killed with nothing said.
"""

from __future__ import annotations

import asyncio
import faulthandler
import gc
import os
import threading
from collections.abc import Iterator

import pytest

GRACE = float(os.environ.get("AXTUI_TEST_WATCHDOG_GRACE", "30"))
# The terminal's stderr, kept before pytest captures fd 2: what it says must be seen even
# when the run is ended.
_ERR = os.fdopen(os.dup(2), "w")


def _timeout_of(item: pytest.Item) -> float:
    """The test's pytest-timeout limit (its marker, else the ini value)."""
    marker = item.get_closest_marker("timeout")
    if marker is not None and marker.args:
        return float(marker.args[0])
    return float(item.config.getini("timeout") or 0)


def _running_loops() -> list[asyncio.AbstractEventLoop]:
    return [o for o in gc.get_objects()
            if isinstance(o, asyncio.AbstractEventLoop) and o.is_running()]


def _unstick(nodeid: str, limit: float) -> None:
    """Say where a test hangs past its timeout, and cancel its tasks."""
    err = _ERR
    print(f"\nwatchdog: {nodeid} still runs {GRACE:.0f} s after its {limit:.0f} s timeout;"
          " threads and tasks follow, then its tasks are cancelled", file=err, flush=True)
    faulthandler.dump_traceback(file=err, all_threads=True)
    for loop in _running_loops():
        for task in asyncio.all_tasks(loop):
            task.print_stack(limit=8, file=err)
            loop.call_soon_threadsafe(task.cancel)
    err.flush()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    """Arm both stages around one test (setup, call and teardown)."""
    limit = _timeout_of(item)
    if limit <= 0:
        yield
        return
    timer = threading.Timer(limit + GRACE, _unstick, (item.nodeid, limit))
    timer.daemon = True
    timer.start()
    faulthandler.dump_traceback_later(limit + 2 * GRACE, exit=True, file=_ERR)
    try:
        yield
    finally:
        timer.cancel()
        faulthandler.cancel_dump_traceback_later()
