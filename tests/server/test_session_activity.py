"""What counts as a session's activity (``updatedAt``, the order of ``session/list``), across
a real hub restart: what people and agents did, not the hub's own bookkeeping."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from axtui.client import HubClient
from tests.conftest import HubFactory, restart
from tests.server.agent_helpers import agent_hub, echo_agent


def last_activity(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The newest event a person or an agent caused (turn.* included)."""
    return [e for e in events
            if e["source"]["kind"] != "hub" or e["type"].startswith("turn.")][-1]


async def turn(client: HubClient, sid: str, text: str) -> None:
    """Publish a message and wait until its turn ends."""
    sub = client.subscribe(sid, (await client.get_session(sid))["headSeq"])
    await client.publish(sid, "user.message", {"text": text})
    async with asyncio.timeout(30):
        async for event in sub:
            if event["type"] == "turn.completed":
                break
    await sub.close()


async def test_a_restart_keeps_the_order_of_last_activity(hub_factory: HubFactory,
                                                          tmp_path: Path) -> None:
    """The hub's agent.status records at shutdown do not bump updatedAt: after a restart
    each session's updatedAt is its last message's or turn's, in that order."""
    hub = await agent_hub(hub_factory, echo_agent(tmp_path))
    async with HubClient(hub.url) as client:
        for sid in ("first", "second", "third"):
            await client.create_session(sessionId=sid, agent="echo")
        for sid in ("second", "third", "first"):  # first is now the most recent
            await turn(client, sid, f"hello {sid}")
            await asyncio.sleep(0.01)  # distinct milliseconds, so the order is well defined
    hub = await restart(hub_factory, hub)
    async with HubClient(hub.url) as client:
        listed = [s async for s in client.list_sessions()]
        for session in listed:
            events = (await client.history(session["sessionId"]))["events"]
            assert any(e["type"] == "agent.status" and e["source"]["kind"] == "hub"
                       and e["ts"] > last_activity(events)["ts"] for e in events)
            assert session["updatedAt"] == last_activity(events)["ts"]
    assert [s["sessionId"] for s in listed] == ["first", "third", "second"]
