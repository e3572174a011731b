"""The watchdog of tests/watchdog.py ends a hang that pytest-timeout's alarm cannot."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

HANGS = '''
import asyncio, time
import pytest

@pytest.mark.timeout(1)
async def test_hangs():
    async def busy():  # holds the loop, so the alarm lands in this task and is swallowed
        while True:
            time.sleep(0.01)
            await asyncio.sleep(0)
    asyncio.get_running_loop().create_task(busy())
    await asyncio.Event().wait()

def test_after():
    pass
'''


def test_a_hang_the_alarm_cannot_end_is_reported_and_cancelled(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hanging test fails with its stacks printed, and the next test still runs."""
    monkeypatch.setenv("AXTUI_TEST_WATCHDOG_GRACE", "1")
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the plugin, from the pytester directory
    pytester.makepyfile(test_hang=HANGS)
    pytester.makeini("[pytest]\nasyncio_mode = auto\n")
    result = pytester.runpytest_subprocess("-p", "tests.watchdog", timeout=60)
    result.assert_outcomes(passed=1, failed=1)
    result.stderr.fnmatch_lines(["*watchdog: test_hang.py::test_hangs still runs 1 s after"
                                 " its 1 s timeout*"])
    assert "await asyncio.Event().wait()" in result.stderr.str()  # the hung task's stack
