"""Fixtures for the client-side tests (fixtures of the headless commands are named ``cli_*``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result

from axtui.cli import main
from server.config import bundled_agents
from server.hub import Hub
from tests.conftest import HubFactory
from tests.server.agent_helpers import agent_hub, echo_agent

CliRun = Callable[..., Awaitable[Result]]


@pytest.fixture
def cli_run() -> CliRun:
    """Run an ``axtui`` command in-process (``await cli_run("sessions", "--server", url)``).

    The command runs in a worker thread with its own event loop, as it would in its own
    process, while the test's hubs keep running on the test's loop.
    """
    async def run(*args: str, input: str | None = None) -> Result:
        runner = CliRunner()
        return await asyncio.to_thread(runner.invoke, main, list(args), input=input,
                                       catch_exceptions=False)

    return run


@pytest.fixture
async def cli_hub(hub_factory: HubFactory, tmp_path: Path) -> Hub:
    """A local-mode hub running the echo agent and the bundled demo agent."""
    return await agent_hub(hub_factory, echo_agent(tmp_path), bundled_agents()["demo"])


def cli_events(output: str) -> list[dict[str, Any]]:
    """The events in a command's JSON Lines output."""
    return [orjson.loads(line) for line in output.splitlines() if line.strip()]
