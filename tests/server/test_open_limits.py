"""Limits no client can get around: the sessions one connection keeps open by subscribing
(``hub.max_connection_sessions``) and the sessions open in the hub
(``hub.max_open_sessions``, least recently used idle one closed first), so that files and
threads stay bounded (real hubs on port 0, real files)."""

from __future__ import annotations

import os
import threading

import pytest

from server import registry as registry_module
from tests.conftest import HubFactory, Raw, RawFactory
from tests.server.raw_helpers import OVERLOADED


@pytest.fixture
def no_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let a session used a moment ago be closed for room (the tests run in milliseconds;
    the hub spares sessions used in the last second)."""
    monkeypatch.setattr(registry_module, "EVICT_GRACE", 0.0, raising=False)


async def create(raw: Raw, *ids: str) -> None:
    """Create sessions."""
    for sid in ids:
        await raw.call("session/create", {"sessionId": sid})


async def test_the_least_recently_used_idle_session_is_closed_for_room(
    hub_factory: HubFactory, raw_factory: RawFactory, no_grace: None,
) -> None:
    """With hub.max_open_sessions 3 open, opening a fourth closes the session used least
    recently; every session still answers (reopened when needed) and at most 3 are open."""
    hub = await hub_factory(max_open_sessions=3)
    raw = await raw_factory(hub)
    await create(raw, "a", "b", "c")
    await raw.call("session/history", {"sessionId": "a"})  # b is now the least recent
    await create(raw, "d")
    assert set(hub.sessions.open) == {"a", "c", "d"}
    assert hub.metrics.sessions_open == 3
    for sid in ("b", "a", "c", "d", "b"):
        history = await raw.call("session/history", {"sessionId": sid})
        assert [e["type"] for e in history["events"]] == ["session.created"]
        assert len(hub.sessions.open) <= 3


async def test_when_every_open_session_is_in_use_opening_another_is_overloaded(
    hub_factory: HubFactory, raw_factory: RawFactory, no_grace: None,
) -> None:
    """Subscribed sessions are never closed for room: past the limit a create, and an
    open of a closed session, get -32029 naming hub.max_open_sessions; once one is free
    again the open succeeds."""
    hub = await hub_factory(max_open_sessions=2)
    raw = await raw_factory(hub)
    await create(raw, "a", "b", "c")  # c closed a
    for sid in ("b", "c"):
        await raw.call("session/subscribe", {"sessionId": sid})
    for method, params in (("session/create", {"sessionId": "d"}),
                           ("session/history", {"sessionId": "a"})):
        err = await raw.error(method, params)
        assert err["code"] == OVERLOADED
        assert "hub.max_open_sessions" in err["message"]
    assert set(hub.sessions.open) == {"b", "c"}
    await raw.call("session/unsubscribe", {"sessionId": "b"})
    await raw.call("session/history", {"sessionId": "a"})
    assert set(hub.sessions.open) == {"a", "c"}


async def test_a_session_used_a_moment_ago_is_not_closed_for_room(
    hub_factory: HubFactory, raw_factory: RawFactory,
) -> None:
    """A session opened within the last second (its request may still be reading it) is
    not closed to make room: the new open is refused with -32029 instead."""
    hub = await hub_factory(max_open_sessions=1)
    raw = await raw_factory(hub)
    await create(raw, "a")
    err = await raw.error("session/create", {"sessionId": "b"})
    assert err["code"] == OVERLOADED
    assert set(hub.sessions.open) == {"a"}


async def test_a_connection_is_subscribed_to_at_most_max_connection_sessions(
    hub_factory: HubFactory, raw_factory: RawFactory,
) -> None:
    """A connection's subscription past hub.max_connection_sessions gets -32029 saying
    what to do; subscribing again to one it has, or after unsubscribing, works; another
    connection has its own allowance."""
    hub = await hub_factory(max_connection_sessions=2)
    raw = await raw_factory(hub)
    await create(raw, "a", "b", "c")
    for sid in ("a", "b"):
        await raw.call("session/subscribe", {"sessionId": sid})
    err = await raw.error("session/subscribe", {"sessionId": "c"})
    assert err["code"] == OVERLOADED
    assert "hub.max_connection_sessions" in err["message"]
    assert "unsubscribe" in err["message"]
    await raw.call("session/subscribe", {"sessionId": "a", "afterSeq": 1})  # a replacement
    await raw.call("session/unsubscribe", {"sessionId": "b"})
    await raw.call("session/subscribe", {"sessionId": "c"})
    other = await raw_factory(hub)
    for sid in ("a", "b"):
        await other.call("session/subscribe", {"sessionId": sid})
    assert hub.metrics.overloaded == 1


async def test_pipelined_subscriptions_cannot_pass_the_limit(
    hub_factory: HubFactory, raw_factory: RawFactory,
) -> None:
    """Subscriptions sent all at once (each opening its session concurrently) still end
    with at most hub.max_connection_sessions of them; the others get -32029."""
    hub = await hub_factory(max_connection_sessions=3)
    raw = await raw_factory(hub)
    ids = [f"s{i}" for i in range(8)]
    await create(raw, *ids)
    for i, sid in enumerate(ids):
        await raw.send({"jsonrpc": "2.0", "id": 100 + i, "method": "session/subscribe",
                        "params": {"sessionId": sid}})
    answers = [await raw.response(100 + i) for i in range(len(ids))]
    assert sum("result" in a for a in answers) == 3
    assert all(a["error"]["code"] == OVERLOADED for a in answers if "error" in a)


def open_fds() -> int:
    """File descriptors open in this process."""
    return len(os.listdir("/proc/self/fd"))


async def test_files_and_threads_stay_bounded_however_many_sessions_are_read(
    hub_factory: HubFactory, raw_factory: RawFactory, no_grace: None,
) -> None:
    """Reading and querying 60 sessions through one connection with hub.max_open_sessions
    5 leaves at most 5 open: the hub's files and threads do not grow with the sessions
    read."""
    hub = await hub_factory(max_open_sessions=5)
    raw = await raw_factory(hub)
    ids = [f"s{i:02d}" for i in range(60)]
    await create(raw, *ids[:5])
    for sid in ids[:5]:  # every kind of connection a session has: writer, reader, query
        await raw.call("session/history", {"sessionId": sid})
        await raw.call("state/query", {"sessionId": sid, "sql": "SELECT 1"})
    fds, threads = open_fds(), threading.active_count()
    await create(raw, *ids[5:])
    for sid in ids:
        await raw.call("session/history", {"sessionId": sid})
        await raw.call("state/query", {"sessionId": sid, "sql": "SELECT 1"})
        assert len(hub.sessions.open) <= 5
    assert open_fds() <= fds + 3
    assert threading.active_count() <= threads + 3
