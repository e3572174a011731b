"""Helpers for tests that run hubs with real agent processes."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from server.config import AgentConfig, SandboxConfig
from server.hub import Hub
from tests.conftest import HubFactory, Raw, RawFactory


def echo_agent(tmp_path: Path, **overrides: Any) -> AgentConfig:
    """The bundled echo agent, keeping its transcripts under ``tmp_path`` (which its
    sandbox may write there; the data dirs of hubs in it stay hidden)."""
    agent = AgentConfig(id="echo", command=(sys.executable, "-m", "server.agents.echo"),
                        env={"AXTUI_ECHO_STATE": str(tmp_path / "echo-state")},
                        sandbox=SandboxConfig(writable=(str(tmp_path),)))
    return replace(agent, **overrides)


async def agent_hub(hub_factory: HubFactory, *agents: AgentConfig, **hub: Any) -> Hub:
    """A local-mode hub running exactly ``agents``."""
    return await hub_factory(agents={a.id: a for a in agents}, **hub)


async def until(raw: Raw, sid: str, event_type: str, seen: list[dict[str, Any]],
                timeout: float = 15.0) -> dict[str, Any]:
    """Collect events of ``sid`` into ``seen`` until one of ``event_type`` arrives.

    Events after it in the same notification are put back for the next call.
    """
    async with asyncio.timeout(timeout):
        while True:
            events = await raw.events(sid, 1, timeout=timeout)
            for i, event in enumerate(events):
                seen.append(event)
                if event["type"] == event_type:
                    if events[i + 1:]:
                        raw.notifications.insert(0, {"method": "session/events", "params": {
                            "sessionId": sid, "events": events[i + 1:]}})
                    return event


async def say(raw: Raw, sid: str, text: str) -> int:
    """Publish a user.message; returns its seq."""
    result = await raw.call("session/publish", {"sessionId": sid, "type": "user.message",
                                                "data": {"text": text}})
    seq: int = result["seq"]
    return seq


async def agent_session(hub_factory: HubFactory, raw_factory: RawFactory, agent: AgentConfig,
                        sid: str = "a") -> tuple[Hub, Raw]:
    """A hub running ``agent``, and a connection subscribed to a new session ``sid`` of it."""
    hub = await agent_hub(hub_factory, agent)
    raw = await raw_factory(hub)
    await raw.call("session/create", {"sessionId": sid, "agent": agent.id})
    await raw.call("session/subscribe", {"sessionId": sid})
    return hub, raw
