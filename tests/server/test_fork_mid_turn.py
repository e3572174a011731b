"""A fork taken during a turn starts with no turn running: the open permission request is
cancelled by the hub, the turn is recorded as interrupted, and the fork's next message
starts a fresh turn (a real hub, the demo agent stopped at its permission request)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from axtui.tui.model import Conversation
from tests.conftest import HubFactory, RawFactory
from tests.server.agent_helpers import agent_hub, echo_agent, say, until
from tests.server.agents.test_demo import TEXT, TURN_TIMEOUT, demo_agent, demo_session


async def test_fork_during_a_permission_wait_closes_the_request_and_the_turn(
    hub_factory: HubFactory, raw_factory: RawFactory, tmp_path: Path
) -> None:
    """Forked at a waiting permission: cancelled (hub), turn interrupted, next message runs."""
    hub = await agent_hub(hub_factory, demo_agent(), echo_agent(tmp_path))
    raw = await demo_session(hub, raw_factory)
    await say(raw, "d", TEXT)
    seen: list[dict[str, Any]] = []
    request = await until(raw, "d", "permission.request", seen, TURN_TIMEOUT)
    [started] = [e for e in seen if e["type"] == "turn.started"]
    turn_id = started["data"]["turnId"]

    fork = (await raw.call("session/fork", {"sessionId": "d", "newSessionId": "f",
                                            "agent": "echo"}))["session"]
    events = (await raw.call("session/history", {"sessionId": "f"}))["events"]

    assert [e["type"] for e in events[-3:]] == [
        "session.forked", "permission.response", "turn.failed"]
    forked, response, failed = events[-3:]
    assert forked["data"]["atSeq"] == request["seq"]
    assert response["data"] == {"requestId": request["data"]["requestId"],
                                "outcome": "cancelled"}
    assert response["source"]["kind"] == "hub"
    assert failed["turnId"] == turn_id
    assert failed["data"]["turnId"] == turn_id
    assert failed["data"]["reason"] == "interrupted"
    assert "forked" in failed["data"]["error"]["message"]
    assert fork["headSeq"] == failed["seq"]
    assert fork["agentState"] == "suspended"
    listed = (await raw.call("session/list", {}))["sessions"]
    assert [s["headSeq"] for s in listed if s["sessionId"] == "f"] == [failed["seq"]]

    convo = Conversation()
    convo.apply_all(events)
    assert convo.open_permissions() == []
    assert convo.running_turn is None

    # The origin is untouched: its request is still open and its turn still running.
    origin = (await raw.call("session/history", {"sessionId": "d"}))["events"]
    assert origin[-1]["type"] == "permission.request"

    await raw.call("session/subscribe", {"sessionId": "f", "afterSeq": fork["headSeq"]})
    after: list[dict[str, Any]] = []
    await say(raw, "f", "hello from the fork")
    new_turn = await until(raw, "f", "turn.started", after, TURN_TIMEOUT)
    done = await until(raw, "f", "turn.completed", after, TURN_TIMEOUT)
    assert new_turn["data"]["turnId"] != turn_id
    assert done["data"]["turnId"] == new_turn["data"]["turnId"]
    assert done["data"]["stopReason"] == "end_turn"
    assert any(e["type"] == "agent.message" for e in after)
