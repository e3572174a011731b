"""Fixtures for the Slack adapter: a fake Slack, hubs with real agents, adapters."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from axtui.slack.app import SlackAdapter
from server.config import ClientConfig, SlackConfig
from server.hub import Hub
from tests.axtui.slack.fake_slack import FakeSlack
from tests.conftest import HubFactory
from tests.server.agent_helpers import agent_hub, echo_agent

AdapterFactory = Callable[..., Awaitable[SlackAdapter]]


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    """A fake Slack on 127.0.0.1."""
    fake = FakeSlack()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def echo_hub(hub_factory: HubFactory, tmp_path: Path) -> Hub:
    """A local-mode hub running the bundled echo agent."""
    return await agent_hub(hub_factory, echo_agent(tmp_path))


@pytest.fixture
async def adapters(slack: FakeSlack) -> AsyncIterator[AdapterFactory]:
    """Start adapters on the fake Slack (``await adapters(hub, agent="echo", ...)``);
    all stop after the test."""
    started: list[SlackAdapter] = []

    async def start(hub: Hub, *, agent: str | None = "echo", bot_token: str | None = None,
                    app_token: str | None = None, hub_token: str | None = None,
                    **options: Any) -> SlackAdapter:
        config = SlackConfig(bot_token=bot_token or slack.bot_token,
                             app_token=app_token or slack.app_token, agent=agent,
                             api_url=slack.api_url)
        options.setdefault("edit_interval", 0.05)
        adapter = SlackAdapter(config, ClientConfig(server=hub.url, token=hub_token), **options)
        await adapter.start()
        started.append(adapter)
        return adapter

    yield start
    for adapter in started:
        await adapter.stop()
