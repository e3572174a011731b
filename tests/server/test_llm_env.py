"""In local mode with no ``agents:`` configured, the ``AXTUI_LLM_*`` variables of the hub's
own environment reach the bundled ``llm`` agent (and nothing else of that environment)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from server.config import load_config
from tests.conftest import HubFactory, RawFactory
from tests.server.agent_helpers import say, until
from tests.server.agents.fake_openai import FakeOpenAI, Text

API_KEY = "sk-test-4d1e0b97a2c85f36"
SETTINGS = {"AXTUI_LLM_BASE_URL": "http://127.0.0.1:9/v1", "AXTUI_LLM_API_KEY": API_KEY,
            "AXTUI_LLM_MODEL": "fake-gpt-2", "AXTUI_LLM_SYSTEM_PROMPT": ""}
TIMEOUT = 30.0  # a cold start imports acp and mcp, and starts the state MCP server


@pytest.fixture
def llm_settings(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The llm settings in this process's environment, next to a variable of another name."""
    for name, value in SETTINGS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AXTUI_LLMX", "not a setting")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-for-the-agent")
    return SETTINGS


def write(tmp_path: Path, text: str) -> Path:
    """A config file holding ``text``."""
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_bundled_llm_gets_the_llm_variables(llm_settings: dict[str, str]) -> None:
    """No agents configured, local mode: the bundled llm's env is exactly the AXTUI_LLM_* ones."""
    config = load_config(None)
    assert config.local_mode
    assert dict(config.agents["llm"].env) == llm_settings
    assert dict(config.agents["echo"].env) == {}
    assert dict(config.agents["demo"].env) == {}


def test_an_empty_agents_section_still_passes_them(
    tmp_path: Path, llm_settings: dict[str, str]
) -> None:
    """An empty ``agents:`` section means the bundled agents: the llm still gets its settings."""
    config = load_config(write(tmp_path, "agents: {}\n"))
    assert dict(config.agents["llm"].env) == llm_settings


def test_configured_agents_do_not_get_them(tmp_path: Path, llm_settings: dict[str, str]) -> None:
    """With ``agents:`` configured, an agent named llm has only the env its config gives."""
    config = load_config(write(tmp_path, (
        "agents:\n"
        "  llm: {command: 'python -m server.agents.llm', env: {AXTUI_LLM_MODEL: mine}}\n")))
    assert dict(config.agents["llm"].env) == {"AXTUI_LLM_MODEL": "mine"}


def test_not_in_token_mode(tmp_path: Path, llm_settings: dict[str, str]) -> None:
    """A hub with auth tokens (not local mode) keeps its environment from the bundled llm."""
    token = "a-long-enough-admin-token-0123456789"
    config = load_config(write(tmp_path, (
        f"auth: {{tokens: [{{name: ops, token: {token}, role: admin}}]}}\n")))
    assert not config.local_mode
    assert dict(config.agents["llm"].env) == {}


async def test_the_spawned_llm_uses_them(
    hub_factory: HubFactory, raw_factory: RawFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hub started with AXTUI_LLM_* set runs the bundled llm against that endpoint."""
    async with FakeOpenAI(API_KEY) as fake:
        for name, value in (SETTINGS | {"AXTUI_LLM_BASE_URL": fake.url}).items():
            monkeypatch.setenv(name, value)
        hub = await hub_factory()  # the default config: local mode, the bundled agents
        raw = await raw_factory(hub)
        await raw.call("session/create", {"sessionId": "a", "agent": "llm"})
        await raw.call("session/subscribe", {"sessionId": "a"})
        fake.reply(Text(["Hi ", "there"]))
        await say(raw, "a", "hello")
        seen: list[dict[str, Any]] = []
        done = await until(raw, "a", "turn.completed", seen, TIMEOUT)
        assert done["data"]["stopReason"] == "end_turn"
        [message] = [e for e in seen if e["type"] == "agent.message"]
        assert message["data"]["text"] == "Hi there"
        [request] = fake.requests
        assert request.headers["authorization"] == f"Bearer {API_KEY}"
        assert request.body["model"] == "fake-gpt-2"
