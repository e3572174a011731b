"""The cluster's store against a real redis-server: the fenced append, leases, the catalog."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bench.redis_peer import RedisServer
from server.clusterconfig import ClusterConfig
from server.clustererrors import Fenced, StoreUnavailable
from server.protocol import Conflict, SessionInfo
from server.redisstore import RedisStore
from tests.server.cluster_helpers import redis_server  # noqa: F401 - a fixture

LEASE = 0.3


def info(sid: str, updated_at: int = 1, state: str = "suspended") -> SessionInfo:
    return SessionInfo(sid, f"epoch-{sid}", "title", "echo", 0, state,  # type: ignore[arg-type]
                       1, updated_at, {"k": 1})


@pytest.fixture
async def stores(redis_server: RedisServer) -> AsyncIterator[tuple[RedisStore, RedisStore]]:  # noqa: F811
    """Two replicas' stores on one Redis."""
    url = f"redis://127.0.0.1:{redis_server.port}/0"
    made = (RedisStore(ClusterConfig(url, "s", "node-a", lease=LEASE)),
            RedisStore(ClusterConfig(url, "s", "node-b", lease=LEASE)))
    yield made
    for store in made:
        await store.close()


async def append(store: RedisStore, *args: object) -> None:
    await asyncio.to_thread(store.append, *args)  # type: ignore[arg-type]


async def test_the_append_keeps_seqs_dense_and_creation_unique(
        stores: tuple[RedisStore, RedisStore]) -> None:
    """A batch lands only right after the head; an id is created once in the cluster."""
    a, b = stores
    lease = await a.create(info("s"))
    with pytest.raises(Conflict):
        await b.create(info("s"))
    await append(a, lease, 1, [b'{"seq":1}', b'{"seq":2}'], 5)
    with pytest.raises(Fenced):  # a gap
        await append(a, lease, 4, [b'{"seq":4}'], None)
    with pytest.raises(Fenced):  # an overlap
        await append(a, lease, 2, [b'{"seq":2}'], None)
    assert await a.read("s", 0) == [(1, b'{"seq":1}'), (2, b'{"seq":2}')]
    assert await a.read("s", 1) == [(2, b'{"seq":2}')]
    described = await b.describe("s")
    assert described is not None
    assert (described.head_seq, described.updated_at, described.owner) == (2, 5, "node-a")
    assert described.metadata == {"k": 1}


async def test_a_stale_owner_is_fenced_once_another_takes_the_lease(
        stores: tuple[RedisStore, RedisStore]) -> None:
    """While a lease is held nobody else gets it; once it runs out another replica takes
    it, and the old owner's append is refused even with the right head."""
    a, b = stores
    old = await a.create(info("s"))
    assert await b.acquire("s") is None
    await asyncio.sleep(LEASE + 0.2)  # a paused owner: its lease runs out
    new = await b.acquire("s")
    assert new is not None
    with pytest.raises(Fenced):
        await append(a, old, 1, [b'{"seq":1}'], None)
    await append(b, new, 1, [b'{"seq":1}'], None)
    assert await a.renew([old]) == [False]
    assert await b.renew([new]) == [True]
    assert await a.owner("s") == "node-b"
    await b.release(new)
    assert await a.owner("s") is None


async def test_the_session_list_pages_by_activity(stores: tuple[RedisStore, RedisStore]) -> None:
    """ax:sessions orders by last activity, newest first; a cursor continues after it."""
    a, _ = stores
    for n, sid in enumerate(["s1", "s2", "s3", "s4"]):
        await a.create(info(sid))
        await a.update(info(sid, updated_at=10 + n))
    assert await a.listed(None, 2) == ["s4", "s3"]
    assert await a.listed((12, "s3"), 10) == ["s2", "s1"]


async def test_orphans_are_active_sessions_nobody_owns(
        stores: tuple[RedisStore, RedisStore]) -> None:
    """A session whose agent was active and whose lease ran out is an orphan."""
    a, _ = stores
    await a.create(info("busy"))
    await a.update(info("busy", state="idle"))
    await a.create(info("quiet"))
    await a.update(info("quiet", state="suspended"))
    assert await a.orphans() == []  # the creator still holds both leases
    await asyncio.sleep(LEASE + 0.2)
    assert await a.orphans() == ["busy"]


async def test_an_unreachable_store_says_so(redis_server: RedisServer) -> None:  # noqa: F811
    """Every call to a Redis that is gone raises StoreUnavailable (-32029)."""
    store = RedisStore(ClusterConfig(f"redis://127.0.0.1:{redis_server.port}/0", "s", "n"))
    redis_server.stop()
    with pytest.raises(StoreUnavailable) as caught:
        await store.check()
    assert caught.value.code == -32029
    with pytest.raises(StoreUnavailable):
        await store.describe("s")
    await store.close()


async def test_a_full_redis_refuses_the_append_as_try_again(
        stores: tuple[RedisStore, RedisStore]) -> None:
    """Redis at maxmemory (noeviction) refuses the write: StoreUnavailable (-32029), and
    nothing is stored."""
    a, _ = stores
    lease = await a.create(info("s"))
    await a.aio.config_set("maxmemory", "1")
    try:
        with pytest.raises(StoreUnavailable) as caught:
            await append(a, lease, 1, [b'{"seq":1}', b'{"seq":2}', b'{"seq":3}'], None)
        assert "maxmemory" in caught.value.message
    finally:
        await a.aio.config_set("maxmemory", "0")
    assert await a.read("s", 0) == []
