"""Running until a signal (server/runner.py), with real signals sent to this process."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

import pytest

from server.runner import LOG_FORMAT, log_formatter, on_signals, run_until_signal


def send_soon(sig: signal.Signals, delay: float = 0.05) -> None:
    """Send ``sig`` to this process after ``delay`` seconds."""
    asyncio.get_running_loop().call_later(delay, os.kill, os.getpid(), sig)


async def test_waits_for_sigterm() -> None:
    """Without a job it returns when SIGTERM arrives, and puts the handlers back."""
    send_soon(signal.SIGTERM)
    await asyncio.wait_for(run_until_signal(), 5)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


async def test_a_signal_cancels_the_job_and_waits_for_its_cleanup() -> None:
    """SIGINT cancels the job; run_until_signal returns once the job's cleanup is done."""
    cleaned: list[str] = []

    async def job() -> None:
        try:
            await asyncio.sleep(30)
        finally:
            await asyncio.sleep(0.01)
            cleaned.append("done")

    send_soon(signal.SIGINT)
    await asyncio.wait_for(run_until_signal(job()), 5)
    assert cleaned == ["done"]


async def test_the_jobs_end_and_error_come_first() -> None:
    """A job that ends returns at once; its exception propagates."""
    await asyncio.wait_for(run_until_signal(asyncio.sleep(0)), 5)

    async def failing() -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await run_until_signal(failing())


async def test_on_signals_calls_back_in_the_loop() -> None:
    """on_signals calls the callback for each signal while in the block."""
    got = asyncio.Event()
    with on_signals(got.set, [signal.SIGUSR1]):
        send_soon(signal.SIGUSR1, 0)
        await asyncio.wait_for(got.wait(), 5)


def test_log_formatter_uses_the_one_format() -> None:
    """The formatter writes time, level, logger and message."""
    record = logging.LogRecord("axtui.x", logging.INFO, __file__, 1, "hi %s", ("there",), None)
    line = log_formatter().format(record)
    assert log_formatter()._fmt == LOG_FORMAT and line.endswith(" INFO axtui.x: hi there")
