"""Damaged, copied, locked and deleted session files, and a damaged catalog: one bad file
is set aside or fails alone, and every other session keeps working (real hubs, real
files; a real ``axtui serve`` process for the catalog)."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from axtui.client import HubClient
from server.hub import Hub
from tests.conftest import HubFactory, Raw, RawFactory
from tests.server.hubproc import AXTUI
from tests.server.raw_helpers import INTERNAL_ERROR, NOT_FOUND
from tests.server.test_http import http_get

GARBAGE = b"this is not a database, whatever its name says\n" * 200


async def make_sessions(hub_factory: HubFactory, data_dir: Path, *ids: str) -> None:
    """Create ``ids`` (each with one more event) on a hub over ``data_dir``, then stop it."""
    hub = await hub_factory(data_dir)
    async with HubClient(hub.url, kind="test") as client:
        for sid in ids:
            await client.create_session(sessionId=sid, title=sid)
            await client.publish(sid, "note", {})
    await hub.stop()


async def metric(hub: Hub, name: str) -> str:
    """The value of one metric in /metrics."""
    status, body = await http_get(hub, "/metrics")
    assert status == 200
    values = dict(line.rsplit(" ", 1) for line in body.splitlines() if not line.startswith("#"))
    return values[name]


async def assert_works(raw: Raw, sid: str, head: int) -> None:
    """``sid`` answers history with ``head`` events and takes one more."""
    history = await raw.call("session/history", {"sessionId": sid})
    assert [e["seq"] for e in history["events"]] == list(range(1, head + 1))
    result = await raw.call("session/publish", {"sessionId": sid, "type": "note", "data": {}})
    assert result["seq"] == head + 1


def listed(result: dict[str, object]) -> set[str]:
    """The ids in a session/list result."""
    sessions = result["sessions"]
    assert isinstance(sessions, list)
    return {s["sessionId"] for s in sessions}


def set_dirty(data_dir: Path, sid: str) -> None:
    """Mark the catalog row of ``sid`` as a crash leaves it (open, head not final)."""
    con = sqlite3.connect(data_dir / "hub.db")
    try:
        with con:
            con.execute("UPDATE sessions SET dirty = 1 WHERE session_id = ?", (sid,))
    finally:
        con.close()


# --- set aside at start --------------------------------------------------------------------

async def test_a_copy_under_another_name_is_set_aside_and_every_session_works(
    hub_factory: HubFactory, tmp_path: Path, raw_factory: RawFactory,
) -> None:
    """alpha.db copied to alpha-backup.db is refused into quarantine with a reason naming
    both; alpha and beta are listed and work; /metrics and /healthz say one file is set
    aside."""
    data = tmp_path / "data"
    await make_sessions(hub_factory, data, "alpha", "beta")
    shutil.copy(data / "sessions" / "alpha.db", data / "sessions" / "alpha-backup.db")

    hub = await hub_factory(data)
    raw = await raw_factory(hub)
    assert listed(await raw.call("session/list")) == {"alpha", "beta"}
    await assert_works(raw, "alpha", 2)
    await assert_works(raw, "beta", 2)
    err = await raw.error("session/get", {"sessionId": "alpha-backup"})
    assert err["code"] == NOT_FOUND
    assert not (data / "sessions" / "alpha-backup.db").exists()
    reason = (data / "quarantine" / "alpha-backup.db.reason").read_text()
    assert "holds session 'alpha', not 'alpha-backup'" in reason
    assert (data / "quarantine" / "alpha-backup.db").read_bytes()[:16] == b"SQLite format 3\0"
    assert await metric(hub, "axtui_quarantined_files") == "1"
    status, body = await http_get(hub, "/healthz")
    assert status == 200 and body.startswith("ok\n1 session file set aside")


@pytest.mark.parametrize("content", [GARBAGE, b""], ids=["garbage", "empty"])
async def test_a_file_that_is_not_a_session_is_set_aside(
    hub_factory: HubFactory, tmp_path: Path, raw_factory: RawFactory, content: bytes,
) -> None:
    """A junk or empty .db in sessions/ is quarantined at start; the others work."""
    data = tmp_path / "data"
    await make_sessions(hub_factory, data, "alpha")
    (data / "sessions" / "junk.db").write_bytes(content)

    hub = await hub_factory(data)
    raw = await raw_factory(hub)
    assert listed(await raw.call("session/list")) == {"alpha"}
    await assert_works(raw, "alpha", 2)
    assert (data / "quarantine" / "junk.db").read_bytes() == content
    assert "is not an axtui session file" in (data / "quarantine" / "junk.db.reason").read_text()
    assert await metric(hub, "axtui_quarantined_files") == "1"


async def test_a_damaged_file_of_a_session_left_open_by_a_crash_is_set_aside(
    hub_factory: HubFactory, tmp_path: Path, raw_factory: RawFactory,
) -> None:
    """A session whose row a crash left dirty and whose file is now "not a database" is
    set aside and forgotten; every other call works (it used to fail them all)."""
    data = tmp_path / "data"
    await make_sessions(hub_factory, data, "alpha", "broken")
    set_dirty(data, "broken")
    (data / "sessions" / "broken.db").write_bytes(GARBAGE)

    hub = await hub_factory(data)
    raw = await raw_factory(hub)
    assert listed(await raw.call("session/list")) == {"alpha"}
    await assert_works(raw, "alpha", 2)
    assert (await raw.error("session/get", {"sessionId": "broken"}))["code"] == NOT_FOUND
    assert (data / "quarantine" / "broken.db").exists()
    assert await metric(hub, "axtui_quarantined_files") == "1"


async def test_a_file_damaged_while_the_hub_was_stopped_is_set_aside_when_opened(
    hub_factory: HubFactory, tmp_path: Path, raw_factory: RawFactory,
) -> None:
    """A catalogued session whose file was damaged meanwhile fails with -32603 saying it
    was set aside, is then unknown (-32004), and watchers hear it is gone."""
    data = tmp_path / "data"
    await make_sessions(hub_factory, data, "alpha", "broken")
    (data / "sessions" / "broken.db").write_bytes(GARBAGE)

    hub = await hub_factory(data)
    raw = await raw_factory(hub)
    await raw.call("sessions/watch")
    err = await raw.error("session/history", {"sessionId": "broken"})
    assert err["code"] == INTERNAL_ERROR
    assert "is not an axtui session file" in err["message"]
    assert "quarantine" in err["message"]
    assert (await raw.error("session/history", {"sessionId": "broken"}))["code"] == NOT_FOUND
    assert listed(await raw.call("session/list")) == {"alpha"}
    await assert_works(raw, "alpha", 2)
    async with asyncio.timeout(5):
        while not any(m.get("params", {}).get("sessionId") == "broken"
                      and m["params"].get("deleted") for m in raw.notifications):
            raw.notifications.append(await raw.recv())
    assert (data / "quarantine" / "broken.db").exists()


# --- locked by another program -----------------------------------------------------------

LOCKER = """
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("PRAGMA locking_mode=EXCLUSIVE")
con.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
"""


async def test_a_locked_file_fails_alone_and_never_holds_up_the_hub(
    hub_factory: HubFactory, tmp_path: Path, raw_factory: RawFactory,
) -> None:
    """While another process holds a session file locked, requests for it fail with a
    clear error, and pings and other sessions are answered at once meanwhile; the file
    is not set aside, and works once the lock is gone."""
    data = tmp_path / "data"
    await make_sessions(hub_factory, data, "alpha", "locked")
    locker = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(data / "sessions" / "locked.db")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert locker.stdout is not None
        assert await asyncio.to_thread(locker.stdout.readline) == "locked\n"
        hub = await hub_factory(data)
        raw = await raw_factory(hub)
        other = await raw_factory(hub)
        blocked = asyncio.ensure_future(
            raw.request("session/history", {"sessionId": "locked"}, timeout=30)
        )
        started = time.monotonic()
        await asyncio.sleep(0.2)  # the open of locked.db is under way (SQLite waits 5 s)
        assert not blocked.done()
        assert await other.call("ping") == {}
        await assert_works(other, "alpha", 2)
        assert time.monotonic() - started < 2.0  # not the 5 s the lock holds the open
        err = (await blocked)["error"]
        assert err["code"] == INTERNAL_ERROR
        assert "locked by another program" in err["message"]
        assert (data / "sessions" / "locked.db").exists()
        assert not (data / "quarantine").exists()
    finally:
        if locker.stdin is not None:
            locker.stdin.close()
        await asyncio.to_thread(locker.wait, 10)
    await assert_works(other, "locked", 2)


# --- deleted while open ------------------------------------------------------------------

async def test_a_file_deleted_while_open_is_noticed_before_acknowledging(
    hub: Hub, raw_factory: RawFactory,
) -> None:
    """A publish to a session whose file was deleted under the hub is not acknowledged:
    it fails saying so, subscribers hear session/deleted, the session is gone after, and
    another session works on."""
    raw = await raw_factory(hub)
    for sid in ("alpha", "gone"):
        await raw.call("session/create", {"sessionId": sid})
    await raw.call("session/subscribe", {"sessionId": "gone"})
    await raw.events("gone", 1)
    (hub.config.hub.data_dir / "sessions" / "gone.db").unlink()

    msg = await raw.request("session/publish", {"sessionId": "gone", "type": "note"})
    assert "error" in msg, msg
    assert "was deleted while the session was open" in msg["error"]["message"]
    async with asyncio.timeout(5):
        while not any(m.get("method") == "session/deleted" for m in raw.notifications):
            raw.notifications.append(await raw.recv())
    err = await raw.error("session/publish", {"sessionId": "gone", "type": "note"})
    assert err["code"] == NOT_FOUND
    assert listed(await raw.call("session/list")) == {"alpha"}
    await assert_works(raw, "alpha", 1)


async def test_a_file_replaced_while_open_is_served_from_the_new_file(
    hub: Hub, raw_factory: RawFactory,
) -> None:
    """A session file moved over by another one while open: the next write fails, the
    subscriber is cut off to resume (1011), and the session then serves the new file."""
    raw = await raw_factory(hub)
    sessions = hub.config.hub.data_dir / "sessions"
    await raw.call("session/create", {"sessionId": "swap"})
    for _ in range(3):
        await raw.call("session/publish", {"sessionId": "swap", "type": "note"})
    snapshot = sessions / "snapshot"
    con = sqlite3.connect(sessions / "swap.db")
    try:
        con.execute(f"VACUUM INTO '{snapshot}'")  # a whole copy of its 4 events
    finally:
        con.close()
    await raw.call("session/publish", {"sessionId": "swap", "type": "note"})
    watcher = await raw_factory(hub)
    await watcher.call("session/subscribe", {"sessionId": "swap"})
    # Its catch-up over first: else the catch-up's own read may be what notices the swap.
    assert [e["seq"] for e in await watcher.events("swap", 5)] == [1, 2, 3, 4, 5]
    snapshot.rename(sessions / "swap.db")

    msg = await raw.request("session/publish", {"sessionId": "swap", "type": "note"})
    assert "replaced by another file" in msg["error"]["message"]
    assert await watcher.closed() == 1011
    assert (await raw.call("session/history", {"sessionId": "swap"}))["headSeq"] == 4


# --- the catalog itself ------------------------------------------------------------------

@pytest.mark.parametrize("content", [GARBAGE, b"SQLite format 3\0" + b"\xff" * 4000],
                         ids=["garbage", "bad-header"])
def test_a_damaged_catalog_exits_2_at_once_with_one_line(tmp_path: Path, content: bytes) -> None:
    """`axtui serve` on a data dir whose hub.db is damaged exits 2 within seconds, saying
    so on one line of stderr with no traceback (it used to hang)."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "hub.db").write_bytes(content)
    started = time.monotonic()
    done = subprocess.run([*AXTUI, "serve", "--port", "0", "--http-port", "0", "--data-dir",
                           str(data)],
                          capture_output=True, text=True, timeout=20, check=False)
    assert time.monotonic() - started < 10
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("axtui: ") and "hub.db is not a readable catalog" in lines[0]
    assert "move it aside" in lines[0]
