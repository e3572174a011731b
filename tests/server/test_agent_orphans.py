"""A hub killed with SIGKILL leaves no agent behind, and its next start closes the turn."""

from __future__ import annotations

import asyncio
import sys
import textwrap
from pathlib import Path
from typing import Any

from axtui.client import HubClient
from tests.server.hubproc import HubProcess, pid_alive

STUBBORN = textwrap.dedent("""
    # An ACP agent that stops reading its input during a turn: only a signal ends it.
    import json, sys, time
    for line in sys.stdin:
        msg = json.loads(line)
        method = msg.get("method")
        if method == "initialize":
            result = {"protocolVersion": 1, "agentCapabilities": {}}
        elif method == "session/new":
            result = {"sessionId": "stubborn"}
        elif method == "session/prompt":
            time.sleep(3600)
        else:
            continue
        print(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}), flush=True)
""")


async def test_sigkilled_hub_leaves_no_agent_and_recovers_the_turn(tmp_path: Path) -> None:
    """SIGKILL the hub mid-turn: the agent dies with it; the restart records interrupted."""
    agent = tmp_path / "stubborn.py"
    agent.write_text(STUBBORN)
    config = tmp_path / "config.yaml"
    config.write_text(f"agents:\n  stubborn:\n    command: [{sys.executable!r}, {str(agent)!r}]\n")
    data = tmp_path / "data"
    with HubProcess(data, config=config) as hub:
        hub.start()
        assert hub.url is not None
        async with HubClient(hub.url, reconnect=False) as client:
            await client.create_session(sessionId="s", agent="stubborn")
            sub = client.subscribe("s")
            await client.publish("s", "user.message", {"text": "work forever"})
            events: list[dict[str, Any]] = []
            async with asyncio.timeout(15):
                async for event in sub:
                    events.append(event)
                    if event["type"] == "turn.started":
                        break
            pid = next(e["data"]["pid"] for e in events if e["data"].get("state") == "ready")
            assert pid_alive(pid)
            hub.kill()
        async with asyncio.timeout(10):
            while pid_alive(pid):
                await asyncio.sleep(0.02)
    with HubProcess(data, config=config) as hub:
        hub.start()
        assert hub.url is not None
        async with HubClient(hub.url) as client:
            async with asyncio.timeout(15):
                while True:
                    turns = (await client.history("s", types=["turn.*"]))["events"]
                    if turns[-1]["type"] == "turn.failed":
                        break
                    await asyncio.sleep(0.05)
            assert turns[-1]["data"]["reason"] == "interrupted"
            assert (await client.get_session("s"))["agentState"] == "suspended"
