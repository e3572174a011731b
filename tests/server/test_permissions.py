"""Permission answers: the first valid answer wins; a late joiner sees the open request."""

from __future__ import annotations

import asyncio

from server.hub import Hub
from server.sources import Source
from tests.conftest import HubFactory, Raw, RawFactory, restart

REQUEST = {
    "requestId": "perm-1",
    "toolCall": {"toolCallId": "t1", "title": "Write tickets table", "kind": "edit"},
    "options": [{"optionId": "allow", "name": "Allow", "kind": "allow_once"},
                {"optionId": "deny", "name": "Deny", "kind": "reject_once"}],
}


async def open_request(hub: Hub, raw: Raw, sid: str) -> None:
    """A session with one open permission request, recorded as an agent records it."""
    await raw.call("session/create", {"sessionId": sid, "agent": "demo"})
    session = await hub.sessions.get(sid)
    await session.append("permission.request", REQUEST, Source("agent", "demo"), turn_id="turn-1")


async def test_first_answer_wins_second_learns_who(
    hub_factory: HubFactory, raw_factory: RawFactory
) -> None:
    """Two participants answer at once: one is stored, the other gets -32009 naming the winner."""
    hub = await hub_factory(tokens=True)
    alice, bob = await raw_factory(hub, initialize=False), await raw_factory(hub, initialize=False)
    await alice.initialize(token="participant-token", kind="tui")
    await bob.initialize(token="admin-token", kind="slack")
    await open_request(hub, alice, "p")
    answer = {"sessionId": "p", "type": "permission.response",
              "data": {"requestId": "perm-1", "optionId": "allow"}}
    replies = await asyncio.gather(alice.request("session/publish", answer),
                                   bob.request("session/publish", answer))
    wins = [r for r in replies if "result" in r]
    losses = [r for r in replies if "error" in r]
    assert len(wins) == 1 and len(losses) == 1
    err = losses[0]["error"]
    assert err["code"] == -32009
    winner = "paul" if "result" in replies[0] else "ada"
    assert err["data"]["answeredBy"]["name"] == winner
    assert f"answered by {winner} via" in err["message"]
    history = await alice.call("session/history", {"sessionId": "p", "types": ["permission.*"]})
    assert [e["type"] for e in history["events"]] == ["permission.request", "permission.response"]


async def test_answer_must_name_an_offered_option(hub: Hub, raw: Raw) -> None:
    """An optionId the request did not offer is invalid; cancelled is always accepted."""
    await open_request(hub, raw, "o")
    err = await raw.error("session/publish", {"sessionId": "o", "type": "permission.response",
                                              "data": {"requestId": "perm-1", "optionId": "x"}})
    assert err["code"] == -32602
    await raw.call("session/publish", {"sessionId": "o", "type": "permission.response",
                                       "data": {"requestId": "perm-1", "outcome": "cancelled"}})


async def test_open_request_survives_restart(hub_factory: HubFactory,
                                             raw_factory: RawFactory) -> None:
    """After a hub restart the request is still open, and a late joiner can answer it."""
    hub = await hub_factory()
    raw = await raw_factory(hub)
    await open_request(hub, raw, "r")
    hub = await restart(hub_factory, hub)
    late = await raw_factory(hub)
    history = await late.call("session/history", {"sessionId": "r", "types": ["permission.*"]})
    assert history["events"][0]["data"]["requestId"] == "perm-1"
    await late.call("session/publish", {"sessionId": "r", "type": "permission.response",
                                        "data": {"requestId": "perm-1", "optionId": "deny"}})


async def test_fork_closes_request_origin_keeps_it(hub: Hub, raw: Raw) -> None:
    """A fork taken while a request is open has it cancelled by the hub; the original stays open."""
    await open_request(hub, raw, "f")
    await raw.call("session/fork", {"sessionId": "f", "newSessionId": "f2"})
    answer = {"type": "permission.response", "data": {"requestId": "perm-1", "optionId": "allow"}}
    err = await raw.error("session/publish", {"sessionId": "f2", **answer})
    assert err["code"] == -32009
    assert err["data"]["answeredBy"]["kind"] == "hub"
    await raw.call("session/publish", {"sessionId": "f", **answer})
    err = await raw.error("session/publish", {"sessionId": "f", **answer})
    assert err["code"] == -32009
