"""Background work survives its errors: it logs, counts in /metrics, and carries on (the
idle-close janitor, catalog writes, the registry's listeners, the catalog's reconcile).

A full disk cannot be made on demand here, so the catalog write that fails is the real
catalog's method made to raise SQLite's own "database or disk is full" once."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from server.catalog import Catalog
from server.protocol import SessionInfo
from tests.server.session_helpers import (
    PAUL,
    TIMEOUT,
    close_registry,
    new_session,
    open_registry,
    publish,
)

DISK_FULL = sqlite3.OperationalError("database or disk is full")


def fail_update_heads(catalog: Catalog, times: int) -> list[list[str]]:
    """Make the catalog's next ``times`` head writes fail as on a full disk; returns the
    ids of every write tried."""
    real = catalog.update_heads
    tried: list[list[str]] = []
    left = [times]

    async def update_heads(infos: Iterable[SessionInfo], *, dirty: bool) -> None:
        infos = list(infos)
        tried.append([i.session_id for i in infos])
        if left[0] > 0:
            left[0] -= 1
            raise DISK_FULL
        await real(infos, dirty=dirty)

    catalog.update_heads = update_heads  # type: ignore[method-assign]
    return tried


async def until(condition: Callable[[], bool]) -> None:
    """Wait (polling the loop) until ``condition`` holds, at most TIMEOUT seconds."""
    async with asyncio.timeout(TIMEOUT):
        while not condition():
            await asyncio.sleep(0.01)


async def test_idle_close_goes_on_after_a_failed_catalog_write(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """A catalog write failing while an idle session closes is logged and counted; the
    janitor goes on closing idle sessions, the closed one is still described with its real
    head, and the catalog gets that head once it can write again."""
    registry = await open_registry(tmp_path / "hub", session_idle_close=0.1)
    try:
        first = await new_session(registry, "first")
        await publish(first, 2)
        tried = fail_update_heads(registry.catalog, 1)
        await until(lambda: bool(tried) and "first" not in registry._closing)
        assert "first" not in registry.open

        second = await new_session(registry, "second")
        await publish(second, 1)
        await until(lambda: "second" not in registry.open)
        assert registry.metrics.background_errors == 1
        assert "database or disk is full" in caplog.text
        await until(lambda: ["first"] in tried[1:])  # the janitor wrote it again
        assert (await registry.info("first")).head_seq == 3
        row = await registry.catalog.get("first")
        assert row is not None and row.head_seq == 3
        assert (await registry.info("second")).head_seq == 2
    finally:
        await close_registry(registry)


async def test_a_failed_write_of_agent_states_is_retried(tmp_path: Path) -> None:
    """When writing changed sessions into the catalog fails, they stay marked changed, and
    the next write stores them."""
    registry = await open_registry(tmp_path / "hub")
    try:
        session = await new_session(registry, "s")
        await publish(session, 4)
        fail_update_heads(registry.catalog, 1)
        with pytest.raises(sqlite3.OperationalError):
            await registry.flush_catalog()
        assert session.catalog_stale
        await registry.flush_catalog()
        row = await registry.catalog.get("s")
        assert row is not None and row.head_seq == 5
    finally:
        await close_registry(registry)


async def test_a_failing_listener_does_not_stop_the_session(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """A listener of committed events that raises is logged once in full and counted;
    the session's writer goes on committing and telling the other listeners."""
    registry = await open_registry(tmp_path / "hub")
    heard: list[int] = []

    def broken(session: Any, events: list[tuple[int, bytes]]) -> None:
        raise RuntimeError("listener bug")

    registry.on_committed.append(broken)
    registry.on_committed.append(lambda session, events: heard.extend(q for q, _ in events))
    try:
        session = await new_session(registry, "s")
        async with asyncio.timeout(TIMEOUT):
            assert await publish(session, 2) == [2, 3]
            assert await publish(session, 1) == [4]
        assert heard == [2, 3, 4]
        assert registry.metrics.background_errors == 2
        assert caplog.text.count("Traceback") == 1
    finally:
        await close_registry(registry)


async def test_a_failed_reconcile_leaves_the_catalog_serving(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """If reconciling the catalog with the files fails, that is logged and counted, and
    catalog reads still answer (they used to raise the reconcile's error forever)."""
    data = tmp_path / "hub"
    registry = await open_registry(data)
    await registry.create(PAUL, "kept")
    await close_registry(registry)

    (data / "sessions" / "kept.db").rename(data / "sessions" / "moved")  # a row to drop
    con = sqlite3.connect(data / "hub.db")  # and dropping it fails, as on a full disk
    try:
        con.execute("CREATE TRIGGER no_drop BEFORE DELETE ON sessions"
                    " BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END")
    finally:
        con.close()
    catalog = Catalog(data)
    await catalog.open()
    try:
        await catalog.ready()
        assert catalog.metrics.background_errors == 1
        assert "reconciling the catalog" in caplog.text
        assert (await catalog.get("kept")) is not None
        infos, _ = await catalog.list(10, None, None)
        assert [i.session_id for i in infos] == ["kept"]
    finally:
        await catalog.close()


@pytest.fixture(autouse=True)
def _capture_errors(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="axtui")
