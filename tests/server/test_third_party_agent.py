"""A third-party ACP agent, written with the ACP SDK alone, works with the hub unchanged."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from server.config import AgentConfig
from tests.conftest import HubFactory, RawFactory
from tests.server.agent_helpers import (
    agent_hub,
    say,
    until,
)

SDK_AGENT = Path(__file__).parent / "agents" / "sdk_agent.py"


async def test_full_turn_with_an_sdk_agent(hub_factory: HubFactory,
                                          raw_factory: RawFactory) -> None:
    """An agent built only on the ACP SDK, run as a script, serves a whole turn."""
    agent = AgentConfig(id="sdk-echo", command=(sys.executable, str(SDK_AGENT)))
    hub = await agent_hub(hub_factory, agent)
    raw = await raw_factory(hub)
    await raw.call("session/create", {"sessionId": "s", "agent": "sdk-echo"})
    await raw.call("session/subscribe", {"sessionId": "s"})
    trigger = await say(raw, "s", "hello from axtui")
    seen: list[dict[str, Any]] = []
    done = await until(raw, "s", "turn.completed", seen, timeout=30.0)

    assert [e["type"] for e in seen] == [
        "session.created", "user.message", "agent.status", "agent.status", "turn.started",
        "agent.message.chunk", "agent.message.chunk", "agent.message", "turn.completed",
    ]
    assert [e["data"]["state"] for e in seen[2:4]] == ["starting", "ready"]
    assert seen[3]["data"]["resumeMode"] == "new"  # it offers neither load nor resume
    started = seen[4]
    assert started["data"]["triggerSeq"] == trigger
    message = seen[7]
    assert seen[5]["data"]["text"] + seen[6]["data"]["text"] == message["data"]["text"]
    assert message["data"]["text"] == "3 words: HELLO FROM AXTUI"
    assert message["source"] == {"kind": "agent", "name": "sdk-echo"}
    assert {e["turnId"] for e in seen[4:]} == {started["data"]["turnId"]}
    assert done["data"] == {"turnId": started["data"]["turnId"], "stopReason": "end_turn"}
