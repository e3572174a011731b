"""`axtui exec --input` when the agent cannot be started: exit 1 with the reason at once."""

from __future__ import annotations

import asyncio
from pathlib import Path

from server.config import AgentConfig
from tests.axtui.conftest import CliRun
from tests.conftest import HubFactory
from tests.server.agent_helpers import agent_hub


async def test_exec_ends_when_the_agent_cannot_start(hub_factory: HubFactory, cli_run: CliRun,
                                                     tmp_path: Path) -> None:
    """agent.status failed for the input's turn ends the run: exit 1, the reason printed
    (it used to wait forever for a turn that never comes)."""
    broken = AgentConfig(id="broken", command=(str(tmp_path / "no-such-agent"),))
    hub = await agent_hub(hub_factory, broken)
    result = await asyncio.wait_for(
        cli_run("exec", "--server", hub.url, "--agent", "broken", "--input", "hello"), 30)
    assert result.exit_code == 1, result.output
    assert "the agent could not start: cannot run" in result.stderr
    assert "no-such-agent" in result.stderr
