"""Background tasks that nobody awaits, kept alive until they end.

The event loop holds only a weak reference to a task, so a task created and forgotten
can be garbage-collected mid-flight, and an exception in it is reported (if at all) as
"Task exception was never retrieved" long after, without context. A :class:`TaskSet`
keeps a reference to each task until it is done and logs an unexpected exception once,
with the task's name; a cancelled task is not an error.

    tasks = TaskSet(log, "agent of session a")
    tasks.spawn(run.shutdown(record=True), name="suspend")
    ...
    tasks.cancel_all()
    await tasks.wait()
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


class TaskSet:
    """Tasks run in the background on behalf of one owner (``what``, for the log)."""

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self._log = logger
        self._what = what
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[asyncio.Task[Any]]:
        return iter(list(self._tasks))

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
        """Run ``coro`` as a task, keeping a reference until it ends; returns the task."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._log.error("%s of %s failed", task.get_name(), self._what,
                            exc_info=(type(exc), exc, exc.__traceback__))

    def cancel_all(self) -> None:
        """Cancel every task still running (it ends at its next ``await``)."""
        for task in self._tasks:
            task.cancel()

    async def wait(self) -> None:
        """Wait until every task has ended, including tasks spawned meanwhile (not from one
        of the set's own tasks: it would wait for itself). What a task raised is logged,
        not raised here."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))
