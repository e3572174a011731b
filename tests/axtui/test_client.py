"""HubClient against real hubs: calls, errors, subscriptions, reconnect and resume."""

from __future__ import annotations

import asyncio

import pytest

from axtui.client import HubAuthError, HubClient, HubUnavailable
from server.hub import Hub
from server.protocol import CannotResume, Forbidden, NotFound, Overloaded
from tests.conftest import HubFactory, restart


async def test_call_helpers_round_trip(client: HubClient) -> None:
    """create, publish, history, exec and query work through the helpers."""
    session = await client.create_session(sessionId="c", title="T")
    assert session["title"] == "T"
    ack = await client.publish("c", "user.message", {"text": "hi"})
    assert ack["seq"] == 2
    await client.exec("c", [{"sql": "CREATE TABLE t (x)"}, {"sql": "INSERT INTO t VALUES (7)"}])
    assert (await client.query("c", "SELECT x FROM t"))["rows"] == [[7]]
    history = await client.history("c", types=["user.*"])
    assert [e["data"]["text"] for e in history["events"]] == ["hi"]
    assert (await client.get_session("c"))["headSeq"] == 3


async def test_hub_errors_raise_typed_exceptions(client: HubClient) -> None:
    """Hub errors arrive as the protocol's exception classes with code and message."""
    with pytest.raises(NotFound) as info:
        await client.get_session("missing")
    assert info.value.code == -32004 and "missing" in info.value.message
    await client.create_session(sessionId="r")
    with pytest.raises(Forbidden):
        await client.publish("r", "turn.started", {})


async def test_list_sessions_follows_cursors(client: HubClient) -> None:
    """list_sessions yields every session across pages."""
    for i in range(5):
        await client.create_session(sessionId=f"s{i}")
    got = [s["sessionId"] async for s in client.list_sessions()]
    assert sorted(got) == [f"s{i}" for i in range(5)]


async def test_subscribe_iterates_backlog_then_live(client: HubClient) -> None:
    """A subscription yields the backlog, then live events, in order."""
    await client.create_session(sessionId="it")
    await client.publish("it", "note", {"n": 1})
    sub = client.subscribe("it")
    seqs = [(await sub.__anext__())["seq"] for _ in range(2)]
    await client.publish("it", "note", {"n": 2})
    seqs.append((await sub.__anext__())["seq"])
    assert seqs == [1, 2, 3]
    assert sub.epoch is not None and sub.last_seq == 3
    await sub.close()
    assert [e async for e in sub] == []


async def test_subscription_survives_hub_restart(hub_factory: HubFactory) -> None:
    """After the hub restarts, the client reconnects and resumes with nothing lost or twice."""
    hub = await hub_factory()
    statuses: list[str] = []
    async with HubClient(hub.url, max_backoff=0.2) as client:
        client.on_status = statuses.append
        await client.create_session(sessionId="live")
        sub = client.subscribe("live")
        assert (await sub.__anext__())["seq"] == 1
        hub = await restart(hub_factory, hub)
        async with HubClient(hub.url) as other:
            for i in range(5):
                await other.publish("live", "note", {"i": i})
        seqs = [(await asyncio.wait_for(sub.__anext__(), 10))["seq"] for _ in range(5)]
        assert seqs == [2, 3, 4, 5, 6]
        assert any("reconnected" in s for s in statuses)


async def test_recreated_session_ends_subscription_with_cannot_resume(
    hub_factory: HubFactory,
) -> None:
    """A session recreated under the same id while away ends the iterator with -32010."""
    hub = await hub_factory()
    async with HubClient(hub.url, max_backoff=0.2) as client:
        await client.create_session(sessionId="e")
        sub = client.subscribe("e")
        await sub.__anext__()
        hub = await restart(hub_factory, hub)
        async with HubClient(hub.url) as admin:
            await admin.call("session/delete", {"sessionId": "e"})
            await admin.create_session(sessionId="e")
        with pytest.raises(CannotResume):
            await asyncio.wait_for(sub.__anext__(), 10)


async def test_deleted_session_ends_subscription(client: HubClient) -> None:
    """Deleting a subscribed session ends the iterator with NotFound."""
    await client.create_session(sessionId="gone")
    sub = client.subscribe("gone")
    await sub.__anext__()
    await client.call("session/delete", {"sessionId": "gone"})
    with pytest.raises(NotFound):
        await asyncio.wait_for(sub.__anext__(), 5)


async def test_bad_token_is_an_auth_error(hub_factory: HubFactory) -> None:
    """A refused token raises HubAuthError, not a retry loop."""
    hub = await hub_factory(tokens=True)
    with pytest.raises(HubAuthError):
        async with HubClient(hub.url, token="wrong"):
            pass
    async with HubClient(hub.url, token="viewer-token") as client:
        assert client.principal == {"name": "vera", "role": "viewer"}


async def test_unreachable_hub_is_reported(hub: Hub) -> None:
    """Connecting to a port where no hub listens raises HubUnavailable."""
    url = hub.url
    await hub.stop()
    with pytest.raises(HubUnavailable) as info:
        async with HubClient(url, open_timeout=2):
            pass
    assert "cannot reach" in str(info.value)


async def test_publish_with_key_is_retried_across_reconnect(hub_factory: HubFactory) -> None:
    """A keyed publish made while the hub is down completes once it is back, stored once."""
    hub = await hub_factory()
    async with HubClient(hub.url, max_backoff=0.2) as client:
        await client.create_session(sessionId="k")
        port = hub.port
        await hub.stop()
        pending = asyncio.create_task(
            client.publish("k", "note", {"x": 1}, idempotency_key="once")
        )
        hub = await hub_factory(hub.config.hub.data_dir, port=port)
        ack = await asyncio.wait_for(pending, 10)
        again = await client.publish("k", "note", {"x": 1}, idempotency_key="once")
        assert again == {**ack, "duplicate": True}
        assert (await client.get_session("k"))["headSeq"] == 2


async def test_keyed_publish_is_retried_while_the_hub_says_try_again(hub: Hub,
                                                                     client: HubClient) -> None:
    """A keyed publish refused with -32029 (here: the hub stopping) is sent again until it
    lands, and is stored once; an unkeyed one fails at once."""
    await client.create_session(sessionId="busy")
    hub.dispatcher.stopping = True
    refused = hub.metrics.overloaded + hub.metrics.errors
    with pytest.raises(Overloaded):
        await client.publish("busy", "user.message", {"text": "unkeyed"})
    task = asyncio.create_task(client.publish("busy", "user.message", {"text": "keyed"},
                                              idempotency_key="k-1"))
    async with asyncio.timeout(5):
        while hub.metrics.errors < refused + 3:  # refused more than once: it was retried
            await asyncio.sleep(0.01)
    assert not task.done()
    hub.dispatcher.stopping = False
    ack = await asyncio.wait_for(task, 5)
    assert ack == {"seq": 2, "ts": ack["ts"], "duplicate": False}
    events = (await client.history("busy", types=["user.*"]))["events"]
    assert [e["data"]["text"] for e in events] == ["keyed"]
