"""The bundled ``demo`` agent end to end: a real hub, the agent and its state MCP server as
real subprocesses, the permission answered by a second client."""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import Any

from server.config import AgentConfig
from server.hub import Hub
from tests.conftest import HubFactory, Raw, RawFactory
from tests.server.agent_helpers import (
    agent_hub,
    say,
    until,
)

TEXT = "The login page times out after a password reset"
TURN_TIMEOUT = 30.0  # a cold turn starts two Python processes (agent and state server)


def demo_agent(**overrides: Any) -> AgentConfig:
    """The bundled demo agent."""
    agent = AgentConfig(id="demo", command=(sys.executable, "-m", "server.agents.demo"))
    return replace(agent, **overrides)


def runs(events: list[dict[str, Any]]) -> list[str]:
    """The event types in order, each run of one type (chunks, updates) listed once."""
    types = [e["type"] for e in events]
    return [t for i, t in enumerate(types) if i == 0 or t != types[i - 1]]


def of_type(events: list[dict[str, Any]], event_type: str) -> list[dict[str, Any]]:
    """The events of one type, in order."""
    return [e for e in events if e["type"] == event_type]


async def demo_session(hub: Hub, raw_factory: RawFactory, sid: str = "d") -> Raw:
    """A session with the demo agent; the returned client is subscribed to it."""
    raw = await raw_factory(hub)
    await raw.call("session/create", {"sessionId": sid, "agent": "demo"})
    await raw.call("session/subscribe", {"sessionId": sid})
    return raw


async def answer(hub: Hub, raw_factory: RawFactory, request: dict[str, Any],
                 option_id: str, sid: str = "d") -> None:
    """Answer a permission request from a second client (clientInfo kind ``approver``)."""
    approver = await raw_factory(hub, initialize=False)
    await approver.initialize(kind="approver")
    await approver.call("session/publish", {
        "sessionId": sid, "type": "permission.response",
        "data": {"requestId": request["data"]["requestId"], "optionId": option_id},
    })


async def tickets_table(raw: Raw, sid: str = "d") -> bool:
    """Whether the session's state has a ``tickets`` table."""
    result = await raw.call("state/query", {
        "sessionId": sid, "sql": "SELECT count(*) FROM sqlite_master WHERE name = 'tickets'",
    })
    return bool(result["rows"][0][0])


async def test_demo_turn_shows_everything_and_writes_a_ticket(
    hub_factory: HubFactory, raw_factory: RawFactory
) -> None:
    """One turn: plan, thoughts, a tool call, a permission another client allows, a write."""
    hub = await agent_hub(hub_factory, demo_agent())
    raw = await demo_session(hub, raw_factory)
    await say(raw, "d", TEXT)
    seen: list[dict[str, Any]] = []
    request = await until(raw, "d", "permission.request", seen, TURN_TIMEOUT)
    await answer(hub, raw_factory, request, "allow")
    done = await until(raw, "d", "turn.completed", seen, TURN_TIMEOUT)

    assert runs(seen) == [
        "session.created", "user.message", "agent.status", "turn.started",
        "plan", "agent.thought.chunk", "agent.thought",
        "plan", "tool.call", "tool.update",
        "plan", "permission.request", "permission.response", "state.changed",
        "plan", "agent.message.chunk", "agent.message", "turn.completed",
    ]
    assert [e["data"]["state"] for e in of_type(seen, "agent.status")] == ["starting", "ready"]
    assert done["data"]["stopReason"] == "end_turn"

    plans = [[(x["status"], x["priority"]) for x in e["data"]["entries"]]
             for e in of_type(seen, "plan")]
    assert [[status for status, _ in entries] for entries in plans] == [
        ["in_progress", "pending", "pending"],
        ["completed", "in_progress", "pending"],
        ["completed", "completed", "in_progress"],
        ["completed", "completed", "completed"],
    ]
    assert [priority for _, priority in plans[0]] == ["medium", "medium", "high"]

    thought_chunks = of_type(seen, "agent.thought.chunk")
    [thought] = of_type(seen, "agent.thought")
    assert len(thought_chunks) > 1
    assert "".join(c["data"]["text"] for c in thought_chunks) == thought["data"]["text"]
    assert TEXT in thought["data"]["text"]

    [call] = of_type(seen, "tool.call")
    assert (call["data"]["title"], call["data"]["kind"]) == ("Look up related tickets", "search")
    updates = of_type(seen, "tool.update")
    assert [u["data"]["status"] for u in updates] == ["in_progress", "completed"]
    assert {u["data"]["toolCallId"] for u in updates} == {call["data"]["toolCallId"]}
    assert "login" in updates[-1]["data"]["content"][0]["content"]["text"]

    assert request["data"]["toolCall"]["title"] == "Write ticket to the tickets table"
    assert [o["kind"] for o in request["data"]["options"]] == ["allow_once", "reject_once"]
    [response] = of_type(seen, "permission.response")
    assert response["source"]["client"] == "approver"
    assert response["data"]["optionId"] == "allow"

    [changed] = of_type(seen, "state.changed")
    assert (changed["source"]["kind"], changed["source"]["name"]) == ("agent", "demo")

    message_chunks = of_type(seen, "agent.message.chunk")
    [message] = of_type(seen, "agent.message")
    assert len(message_chunks) > 1
    assert "".join(c["data"]["text"] for c in message_chunks) == message["data"]["text"]
    assert message["data"]["text"].startswith("**Ticket #1 filed.**")

    tickets = await raw.call("state/query", {"sessionId": "d", "sql": "SELECT * FROM tickets"})
    assert tickets["columns"] == ["id", "title", "status", "summary"]
    [row] = tickets["rows"]
    assert row[:3] == [1, TEXT, "open"]
    assert row[3] in message["data"]["text"]


async def test_demo_turn_with_the_write_rejected(
    hub_factory: HubFactory, raw_factory: RawFactory
) -> None:
    """A rejected permission: the demo says so, nothing is written, no state.changed."""
    hub = await agent_hub(hub_factory, demo_agent())
    raw = await demo_session(hub, raw_factory)
    await say(raw, "d", TEXT)
    seen: list[dict[str, Any]] = []
    request = await until(raw, "d", "permission.request", seen, TURN_TIMEOUT)
    await answer(hub, raw_factory, request, "reject")
    done = await until(raw, "d", "turn.completed", seen, TURN_TIMEOUT)

    assert runs(seen)[-7:] == [
        "plan", "permission.request", "permission.response",
        "plan", "agent.message.chunk", "agent.message", "turn.completed",
    ]
    assert "state.changed" not in runs(seen)
    assert done["data"]["stopReason"] == "end_turn"
    last_plan = of_type(seen, "plan")[-1]["data"]["entries"][-1]
    assert last_plan["status"] == "completed" and "skipped" in last_plan["content"]
    [message] = of_type(seen, "agent.message")
    assert message["data"]["text"].startswith("**Nothing written.** You rejected the write")
    assert not await tickets_table(raw)


async def test_cancel_while_the_demo_waits_for_permission(
    hub_factory: HubFactory, raw_factory: RawFactory
) -> None:
    """session/cancel during the permission wait ends the turn as cancelled, writing nothing."""
    hub = await agent_hub(hub_factory, demo_agent())
    raw = await demo_session(hub, raw_factory)
    await say(raw, "d", TEXT)
    seen: list[dict[str, Any]] = []
    await until(raw, "d", "permission.request", seen, TURN_TIMEOUT)
    assert await raw.call("session/cancel", {"sessionId": "d"}) == {}
    done = await until(raw, "d", "turn.completed", seen, TURN_TIMEOUT)

    assert done["data"]["stopReason"] == "cancelled"
    [response] = of_type(seen, "permission.response")
    assert response["data"]["outcome"] == "cancelled"
    assert "agent.message" not in runs(seen)
    assert not await tickets_table(raw)


async def test_demo_resumes_after_suspend_and_files_the_next_ticket(
    hub_factory: HubFactory, raw_factory: RawFactory
) -> None:
    """Suspended when idle, the demo comes back with session/resume; tickets keep counting."""
    hub = await agent_hub(hub_factory, demo_agent(idle_timeout=0.3))
    raw = await demo_session(hub, raw_factory)
    seen: list[dict[str, Any]] = []
    for ticket in (1, 2):
        await say(raw, "d", f"{TEXT} ({ticket})")
        request = await until(raw, "d", "permission.request", seen, TURN_TIMEOUT)
        await answer(hub, raw_factory, request, "allow")
        await until(raw, "d", "turn.completed", seen, TURN_TIMEOUT)
        message = of_type(seen, "agent.message")[-1]
        assert message["data"]["text"].startswith(f"**Ticket #{ticket} filed.**")
        suspended = await until(raw, "d", "agent.status", seen, TURN_TIMEOUT)
        assert suspended["data"]["state"] == "suspended"
    modes = [e["data"].get("resumeMode") for e in of_type(seen, "agent.status")
             if e["data"]["state"] == "ready"]
    assert modes == ["new", "resume"]
    tickets = await raw.call("state/query", {"sessionId": "d",
                                             "sql": "SELECT id, title FROM tickets ORDER BY id"})
    assert tickets["rows"] == [[1, f"{TEXT} (1)"], [2, f"{TEXT} (2)"]]
