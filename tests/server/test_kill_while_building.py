"""A hub SIGKILLed while it builds a new session (an import, a fork) leaves no empty
session behind: the new file is built under a temporary name and moved into place whole
(real ``axtui serve`` processes on a temp data dir)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from axtui.client import HubClient
from server.protocol import NotFound
from server.sessionfile import remove_files
from tests.server.hubproc import HubProcess

EVENTS = 6000


def recorded(count: int) -> list[dict[str, Any]]:
    """An export's events: session.created, a table, then notes that each insert a row
    (so that building the session takes a while)."""
    source = {"kind": "client", "name": "local", "client": "test"}
    events: list[dict[str, Any]] = [
        {"seq": 1, "ts": 1, "type": "session.created", "source": source,
         "data": {"title": "big"}},
        {"seq": 2, "ts": 2, "type": "state.changed", "source": source,
         "data": {"statements": [{"sql": "CREATE TABLE t (n INTEGER)"}], "changes": 0}},
    ]
    for seq in range(3, count + 1):
        events.append({"seq": seq, "ts": seq, "type": "note", "source": source,
                       "data": {"n": seq},
                       "state": [{"sql": "INSERT INTO t VALUES (?)", "params": [seq]}]})
    return events


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """The hubs' data dir."""
    yield tmp_path / "data"


KILL_AFTER = 0.1  # seconds after the new file shows up: the build takes about 0.5 s


def kill_when_a_file_appears(hub: HubProcess, sessions: Path, known: set[str]) -> threading.Thread:
    """A thread that SIGKILLs ``hub`` shortly after a file not in ``known`` shows up, while
    the new session is being filled."""
    def watch() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if set(os.listdir(sessions)) - known:
                time.sleep(KILL_AFTER)
                hub.kill()
                return
            time.sleep(0.0005)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


async def head_or_gone(url: str, sid: str) -> int | None:
    """The session's head, or ``None`` if the hub does not know it."""
    async with HubClient(url, kind="test") as client:
        try:
            return int((await client.get_session(sid))["headSeq"])
        except NotFound:
            return None


async def start(data_dir: Path) -> HubProcess:
    """A hub process on ``data_dir``, ready."""
    return await asyncio.to_thread(HubProcess(data_dir).start)


async def test_a_kill_during_an_import_leaves_no_empty_session(data_dir: Path) -> None:
    """Killed while importing, the hub restarts without the session (or with all of it),
    never with an empty one holding the id; nothing is left half built."""
    hub = await start(data_dir)
    sessions = data_dir / "sessions"
    try:
        assert hub.url is not None
        known = set(os.listdir(sessions))
        killer = kill_when_a_file_appears(hub, sessions, known)
        with pytest.raises(Exception):  # noqa: B017 - the hub dies under the request
            async with HubClient(hub.url, kind="test", reconnect=False) as client:
                await client.call("session/import", {"newSessionId": "imp",
                                                     "events": recorded(EVENTS)})
        await asyncio.to_thread(killer.join, 30)
        assert not hub.alive()
    finally:
        hub.stop()

    again = await start(data_dir)
    try:
        assert again.url is not None
        head = await head_or_gone(again.url, "imp")
        assert head in (None, EVENTS)
        assert [n for n in os.listdir(sessions) if n.startswith(".new-")] == []
        assert not (data_dir / "quarantine").exists()
        if head is None:  # the id is free: the import can be made again
            async with HubClient(again.url, kind="test") as client:
                await client.call("session/import", {"newSessionId": "imp",
                                                     "events": recorded(EVENTS)})
            assert await head_or_gone(again.url, "imp") == EVENTS
    finally:
        again.stop()


async def test_a_kill_during_a_fork_leaves_no_empty_session(data_dir: Path) -> None:
    """Killed while forking, the hub restarts with the origin whole and the fork either
    absent or complete (its last event session.forked), never empty."""
    hub = await start(data_dir)
    sessions = data_dir / "sessions"
    try:
        assert hub.url is not None
        async with HubClient(hub.url, kind="test") as client:
            await client.call("session/import", {"newSessionId": "origin",
                                                 "events": recorded(EVENTS)})
        known = set(os.listdir(sessions))
        killer = kill_when_a_file_appears(hub, sessions, known)
        with pytest.raises(Exception):  # noqa: B017 - the hub dies under the request
            async with HubClient(hub.url, kind="test", reconnect=False) as client:
                await client.call("session/fork", {"sessionId": "origin",
                                                   "newSessionId": "fork"})
        await asyncio.to_thread(killer.join, 30)
        assert not hub.alive()
    finally:
        hub.stop()

    again = await start(data_dir)
    try:
        assert again.url is not None
        assert await head_or_gone(again.url, "origin") == EVENTS
        head = await head_or_gone(again.url, "fork")
        assert head in (None, EVENTS + 1)
        assert [n for n in os.listdir(sessions) if n.startswith(".new-")] == []
        if head is None:  # the id is free: the fork can be made again
            async with HubClient(again.url, kind="test") as client:
                await client.call("session/fork", {"sessionId": "origin",
                                                   "newSessionId": "fork"})
            assert await head_or_gone(again.url, "fork") == EVENTS + 1
    finally:
        again.stop()


async def test_a_wal_left_by_a_deletion_cut_short_is_not_replayed_into_a_new_session(
    data_dir: Path,
) -> None:
    """If a hub died between deleting a session's file and its WAL, a session created
    again under that id starts empty: the old WAL is not replayed into it (SQLite ignores
    a WAL beside an empty file, but a new file is moved into place whole)."""
    hub = await start(data_dir)
    sessions = data_dir / "sessions"
    try:
        assert hub.url is not None
        async with HubClient(hub.url, kind="test") as client:
            await client.create_session(sessionId="again")
            for i in range(5):
                await client.publish("again", "note", {"i": i})
    finally:
        hub.kill()  # no clean stop: the session's commits are still in its WAL
    wal = (sessions / "again.db-wal").read_bytes()
    assert wal
    remove_files(sessions / "again.db")
    (sessions / "again.db-wal").write_bytes(wal)  # as a deletion cut short leaves it
    _forget(data_dir, "again")

    again = await start(data_dir)
    try:
        assert again.url is not None
        async with HubClient(again.url, kind="test") as client:
            await client.create_session(sessionId="again")
            history = await client.history("again")
            assert [e["type"] for e in history["events"]] == ["session.created"]
    finally:
        again.stop()


def _forget(data_dir: Path, sid: str) -> None:
    con = sqlite3.connect(data_dir / "hub.db")
    try:
        with con:
            con.execute("DELETE FROM sessions WHERE session_id = ?", (sid,))
    finally:
        con.close()
