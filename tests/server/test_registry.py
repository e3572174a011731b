"""The session registry without websockets: create, fork, import, delete and idle close,
on real SQLite files in a temp data dir."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from server import protocol
from server.protocol import Conflict, InvalidParams, NotFound, SessionInfo
from server.registry import SessionRegistry
from server.sessions import Session, Subscription
from server.writes import CommitResult, PendingEvent
from tests.server.session_helpers import (
    PAUL,
    TIMEOUT,
    RecordingSink,
    close_registry,
    new_session,
    open_registry,
    publish,
)


class Heard:
    """What the registry's callbacks were told."""

    def __init__(self, registry: SessionRegistry) -> None:
        self.changed: list[SessionInfo] = []
        self.deleted: list[str] = []
        registry.on_changed.append(self.changed.append)
        registry.on_deleted.append(self.deleted.append)


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[SessionRegistry]:
    """A registry on a temp data dir."""
    reg = await open_registry(tmp_path / "hub")
    yield reg
    await close_registry(reg)


def session_files(registry: SessionRegistry) -> list[str]:
    """The names of the session databases in the data dir."""
    return sorted(p.name for p in registry.catalog.session_path("x").parent.glob("*.db"))


async def events(session: Session) -> list[dict[str, Any]]:
    """Every event of ``session``, decoded."""
    return [orjson.loads(r) for r in await session.db.history(0, None, 1000, None)]


async def exec_sql(session: Session, *sql: str) -> CommitResult:
    """Run statements on the session's state (one ``state.changed`` event)."""
    raw = [{"sql": s} for s in sql]
    future: asyncio.Future[CommitResult] = asyncio.get_running_loop().create_future()
    return await session.submit(PendingEvent(
        "state.changed", PAUL.to_json(), None, future,
        statements=protocol.parse_statements(raw, "statements"),
        recorded_statements=orjson.dumps(raw),
    ))


async def test_create_writes_the_file_and_the_catalog(registry: SessionRegistry) -> None:
    """A new session is open, in the catalog, with session.created as seq 1; watchers hear."""
    heard = Heard(registry)
    info = await registry.create(PAUL, "s", title="Hello", metadata={"k": 1})
    assert info.head_seq == 1 and info.title == "Hello" and info.metadata == {"k": 1}
    assert "s" in registry.open and session_files(registry) == ["s.db"]
    stored = await registry.catalog.get("s")
    assert stored is not None and stored.epoch == info.epoch
    assert [i.session_id for i in heard.changed] == ["s"]
    first = (await events(registry.open["s"]))[0]
    assert first["type"] == "session.created" and first["source"]["name"] == "paul"


async def test_create_refuses_a_taken_id_and_an_unknown_agent(registry: SessionRegistry) -> None:
    """An id in use is a conflict; an agent that is not configured is not found."""
    await registry.create(PAUL, "s")
    with pytest.raises(Conflict):
        await registry.create(PAUL, "s")
    with pytest.raises(NotFound):
        await registry.create(PAUL, "t", agent="nobody")
    assert session_files(registry) == ["s.db"]


async def test_a_fork_copies_events_and_state_up_to_its_seq(registry: SessionRegistry) -> None:
    """A fork at seq N holds events 1..N, the state they built, then session.forked."""
    session = await new_session(registry)
    await exec_sql(session, "CREATE TABLE t (x)", "INSERT INTO t VALUES (1)")  # seq 2
    await publish(session, 2)  # seqs 3, 4
    await exec_sql(session, "INSERT INTO t VALUES (2)")  # seq 5
    info = await registry.fork(PAUL, "s", 4, "f", None)
    assert info.head_seq == 5 and info.epoch != session.info.epoch
    assert info.title == "(fork)"
    fork = await registry.get("f")
    got = await events(fork)
    assert [e["seq"] for e in got] == [1, 2, 3, 4, 5]
    assert got[-1]["type"] == "session.forked"
    assert got[-1]["data"] == {"fromSessionId": "s", "atSeq": 4}
    _, rows, _ = await fork.db.query("SELECT x FROM t", [], 10)
    assert rows == [[1]]
    with pytest.raises(InvalidParams):
        await registry.fork(PAUL, "s", 9, "g", None)


async def test_import_rebuilds_a_session_from_recorded_events(registry: SessionRegistry) -> None:
    """Imported events keep their seq, type and data in a new session with a new epoch."""
    session = await new_session(registry)
    await exec_sql(session, "CREATE TABLE t (x)", "INSERT INTO t VALUES (7)")
    await publish(session, 3)
    recorded = await events(session)
    info = await registry.import_events("copy", "Copy", None, {}, recorded)
    assert info.head_seq == len(recorded) and info.epoch != session.info.epoch
    copy = await registry.get("copy")
    assert [(e["seq"], e["type"], e["data"]) for e in await events(copy)] == [
        (e["seq"], e["type"], e["data"]) for e in recorded
    ]
    _, rows, _ = await copy.db.query("SELECT x FROM t", [], 10)
    assert rows == [[7]]


async def test_a_bad_import_stores_nothing(registry: SessionRegistry) -> None:
    """An import with no events, or with a broken one, is refused and leaves no file."""
    session = await new_session(registry)
    recorded = await events(session)
    with pytest.raises(InvalidParams):
        await registry.import_events("copy", "", None, {}, [])
    with pytest.raises(InvalidParams):
        await registry.import_events("copy", "", None, {}, [*recorded, {"seq": 9}])
    assert session_files(registry) == ["s.db"]
    assert await registry.catalog.get("copy") is None


async def test_delete_ends_subscriptions_and_removes_the_file(registry: SessionRegistry) -> None:
    """Deleting a session tells its subscribers and on_deleted; it is gone for good."""
    heard = Heard(registry)
    session = await new_session(registry)
    sink = RecordingSink()
    Subscription(session, sink, 0).start()
    await sink.wait_for_seq(1)
    await registry.delete("s")
    assert heard.deleted == ["s"]
    assert [sid for sid, _ in sink.ended] == ["s"]
    ended = sink.ended[0][1]
    assert ended is not None and orjson.loads(ended)["method"] == "session/deleted"
    assert session_files(registry) == [] and await registry.catalog.get("s") is None
    with pytest.raises(NotFound):
        await registry.get("s")
    with pytest.raises(NotFound):
        session.enqueue("test.note", {}, PAUL)


async def test_an_idle_session_is_closed_and_reopens(tmp_path: Path) -> None:
    """After hub.session_idle_close an unused session is closed (a subscribed one stays
    open), and the next get opens it again with its head."""
    registry = await open_registry(tmp_path / "hub", session_idle_close=0.05)
    try:
        idle = await new_session(registry, "idle")
        await publish(idle, 2)
        busy = await new_session(registry, "busy")
        Subscription(busy, RecordingSink(), 1).start()
        closed = asyncio.Event()
        close = idle.close

        async def close_and_tell(**kwargs: Any) -> None:
            await close(**kwargs)
            closed.set()

        idle.close = close_and_tell  # type: ignore[method-assign]
        await asyncio.wait_for(closed.wait(), TIMEOUT)
        assert "idle" not in registry.open and "busy" in registry.open
        assert registry.metrics.sessions_open == 1
        again = await registry.get("idle")
        assert again is not idle and again.info.head_seq == 3
    finally:
        await close_registry(registry)


async def test_a_session_being_closed_is_described_and_reopened_with_its_head(
    tmp_path: Path,
) -> None:
    """While an idle close is under way, info and list give the session's real head (not
    the catalog's older one), and a get waits for the close before opening the file."""
    registry = await open_registry(tmp_path / "hub", session_idle_close=0.05)
    try:
        session = await new_session(registry, "closing")
        await publish(session, 4)
        entered, release = asyncio.Event(), asyncio.Event()
        close = session.close

        async def slow_close(**kwargs: Any) -> None:
            entered.set()
            await release.wait()
            await close(**kwargs)

        session.close = slow_close  # type: ignore[method-assign]
        await asyncio.wait_for(entered.wait(), TIMEOUT)
        assert "closing" not in registry.open
        assert (await registry.info("closing")).head_seq == 5
        listed, _ = await registry.list(10, None, None)
        assert [i.head_seq for i in listed if i.session_id == "closing"] == [5]
        reopening = asyncio.ensure_future(registry.get("closing"))
        await asyncio.sleep(0)  # let the get reach the wait for the close
        assert not reopening.done()
        release.set()
        again = await asyncio.wait_for(reopening, TIMEOUT)
        assert again is not session and again.info.head_seq == 5
        assert (await publish(again, 1)) == [6]
    finally:
        await close_registry(registry)
