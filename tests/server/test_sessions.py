"""Open sessions without websockets: group commit, fan-out, and subscriptions catching up
then going live, on real session files in a temp data dir."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from server.protocol import NotFound, Overloaded
from server.registry import SessionRegistry
from server.sessions import Subscription
from tests.server.session_helpers import (
    PAUL,
    RecordingSink,
    close_registry,
    new_session,
    open_registry,
    publish,
)


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[SessionRegistry]:
    """A registry on a temp data dir."""
    reg = await open_registry(tmp_path / "hub")
    yield reg
    await close_registry(reg)


async def test_events_queued_together_commit_in_order(registry: SessionRegistry) -> None:
    """Events queued one after another get consecutive seqs in the order queued."""
    session = await new_session(registry)
    assert await publish(session, 20) == list(range(2, 22))
    assert session.info.head_seq == 21
    raws = await session.db.history(1, None, 100, None)
    assert [orjson.loads(r)["data"]["n"] for r in raws] == list(range(20))


async def test_a_group_commit_is_encoded_once_for_every_subscriber(
    registry: SessionRegistry,
) -> None:
    """Live subscribers get a batch committed together as one frame, the same bytes each."""
    session = await new_session(registry)
    sinks = [RecordingSink(), RecordingSink()]
    for sink in sinks:
        Subscription(session, sink, 0).start()
    for sink in sinks:  # caught up to the head, so live: see the sessions module's docstring
        await sink.wait_for_seq(1)
    await publish(session, 10)
    for sink in sinks:
        await sink.wait_for_seq(11)
        assert sink.seqs == list(range(1, 12))
    assert len(sinks[0].frames) == 2 and sinks[0].frames[1] is sinks[1].frames[1]


async def test_a_subscription_catches_up_then_goes_live(registry: SessionRegistry) -> None:
    """A subscriber from seq 3 gets 4 to the head from memory, then live events, with no gap
    and nothing twice."""
    session = await new_session(registry)
    await publish(session, 9)
    sink = RecordingSink()
    Subscription(session, sink, 3).start()
    await publish(session, 5, start=9)
    await sink.wait_for_seq(15)
    assert sink.seqs == list(range(4, 16))
    assert not sink.failed


async def test_catch_up_reads_the_file_of_a_reopened_session(tmp_path: Path) -> None:
    """After the hub restarts (nothing in memory) a subscriber catches up from the file."""
    first = await open_registry(tmp_path / "hub")
    await publish(await new_session(first), 30)
    await close_registry(first)
    registry = await open_registry(tmp_path / "hub")
    try:
        session = await registry.get("s")
        assert session.tail_from(2, 1 << 20) is None
        sink = RecordingSink()
        Subscription(session, sink, 0).start()
        await sink.wait_for_seq(31)
        await publish(session, 2, start=30)
        await sink.wait_for_seq(33)
        assert sink.seqs == list(range(1, 34))
    finally:
        await close_registry(registry)


async def test_a_stopped_subscription_gets_nothing_more(registry: SessionRegistry) -> None:
    """Once stopped, a subscription is out of the session and is sent no new events."""
    session = await new_session(registry)
    sink, other = RecordingSink(), RecordingSink()
    sub = Subscription(session, sink, 0)
    sub.start()
    Subscription(session, other, 0).start()
    await sink.wait_for_seq(1)
    sub.stop()
    assert sub not in session.subscribers
    await publish(session, 3)
    await other.wait_for_seq(4)
    assert sink.seqs == [1]


async def test_the_host_hears_of_every_commit(registry: SessionRegistry) -> None:
    """The registry's on_committed gets each committed batch, and on_changed the new head."""
    session = await new_session(registry)
    committed: list[list[int]] = []
    heads: list[int] = []
    registry.on_committed.append(lambda s, events: committed.append([q for q, _ in events]))
    registry.on_changed.append(lambda info: heads.append(info.head_seq))
    await publish(session, 3)
    assert committed == [[2, 3, 4]] and heads == [4]


async def test_a_full_queue_is_overloaded(tmp_path: Path) -> None:
    """Past hub.max_queue waiting events a submit is refused (and counted) at once."""
    registry = await open_registry(tmp_path / "hub", max_queue=2)
    try:
        session = await new_session(registry)
        futures = [session.enqueue("test.note", {}, PAUL) for _ in range(2)]
        with pytest.raises(Overloaded):
            session.enqueue("test.note", {}, PAUL)
        assert registry.metrics.overloaded == 1
        await asyncio.gather(*futures)
    finally:
        await close_registry(registry)


async def test_a_closed_session_refuses_writes(registry: SessionRegistry) -> None:
    """Writing to a session that was closed is NotFound; what was queued was committed."""
    session = await new_session(registry)
    future = session.enqueue("test.note", {}, PAUL)
    await session.close()
    assert (await future).seq == 2
    with pytest.raises(NotFound):
        session.enqueue("test.note", {}, PAUL)
