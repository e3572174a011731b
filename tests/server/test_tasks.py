"""TaskSet: background tasks kept alive until done, failures logged once with context."""

from __future__ import annotations

import asyncio
import logging

import pytest

from server.tasks import TaskSet

log = logging.getLogger("tests.tasks")


async def test_a_task_is_kept_until_it_ends() -> None:
    """The set holds each task while it runs and lets go of it when it ends."""
    tasks = TaskSet(log, "a test")
    release = asyncio.Event()
    task = tasks.spawn(release.wait(), name="waiter")
    assert len(tasks) == 1 and task.get_name() == "waiter"
    release.set()
    assert await task is True
    await tasks.wait()
    assert len(tasks) == 0


async def test_an_exception_is_logged_once_with_its_context(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A task that raises is logged once, naming the task and its owner, with the traceback."""
    tasks = TaskSet(log, "session s1")

    async def fail() -> None:
        raise RuntimeError("boom")

    tasks.spawn(fail(), name="suspend")
    with caplog.at_level(logging.ERROR, logger="tests.tasks"):
        await tasks.wait()
    [record] = caplog.records
    assert record.getMessage() == "suspend of session s1 failed"
    assert record.exc_info is not None and "boom" in str(record.exc_info[1])


async def test_cancel_all_is_not_an_error(caplog: pytest.LogCaptureFixture) -> None:
    """cancel_all cancels what runs; a cancelled task is not logged."""
    tasks = TaskSet(log, "a test")
    never = asyncio.Event()
    task = tasks.spawn(never.wait())
    tasks.cancel_all()
    with caplog.at_level(logging.ERROR, logger="tests.tasks"):
        await tasks.wait()
    assert task.cancelled() and caplog.records == [] and len(tasks) == 0


async def test_wait_includes_tasks_spawned_meanwhile() -> None:
    """wait returns only when the tasks spawned by other tasks have ended too."""
    tasks = TaskSet(log, "a test")
    done: list[str] = []

    async def child() -> None:
        done.append("child")

    async def parent() -> None:
        tasks.spawn(child(), name="child")
        done.append("parent")

    tasks.spawn(parent(), name="parent")
    await tasks.wait()
    assert done == ["parent", "child"]
