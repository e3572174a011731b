"""Starting an agent (the bundled echo agent, a real subprocess): initialize, then resume,
load or new; the failures that leave nothing behind."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from server import agent_start
from server.agent_start import (
    ResumeMode,
    StartedAgent,
    StartFailed,
    agent_env,
    start_agent,
    state_server,
)
from server.config import AgentConfig
from tests.server.agent_helpers import echo_agent


class Sessions:
    """The agent session ids a catalog would keep, in memory."""

    def __init__(self) -> None:
        self.ids: dict[str, str | None] = {}

    async def agent_session(self, session_id: str) -> str | None:
        """The remembered id."""
        return self.ids.get(session_id)

    async def set_agent_session(self, session_id: str, agent_session_id: str | None) -> None:
        """Remember an id."""
        self.ids[session_id] = agent_session_id


class Starter:
    """Starts agents for session ``s`` on ``tmp_path``, counting revoked tokens."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.sessions = Sessions()
        self.minted = self.revoked = 0
        self.started: list[StartedAgent] = []

    def credentials(self, session_id: str, agent_id: str) -> tuple[str, str, Any]:
        """A fake token for the state server (the echo agent never starts it)."""
        self.minted += 1

        def revoke() -> None:
            self.revoked += 1

        return "ws://127.0.0.1:1/ws", f"token-{self.minted}", revoke

    async def start(self, agent: AgentConfig) -> StartedAgent:
        """Start ``agent`` for session ``s``."""
        started = await start_agent(
            agent, "s", cwd=self.tmp_path, data_dir=self.tmp_path, catalog=self.sessions,
            credentials=self.credentials, on_notification=lambda method, params: None,
            on_request=self._refuse,
        )
        self.started.append(started)
        return started

    async def _refuse(self, method: str, params: dict[str, Any]) -> Any:
        return None


@pytest.fixture
async def starter(tmp_path: Path) -> AsyncIterator[Starter]:
    """A :class:`Starter`; every agent it started is stopped after the test."""
    s = Starter(tmp_path)
    yield s
    for started in s.started:
        await started.process.stop()


async def test_new_then_resume(starter: Starter, tmp_path: Path) -> None:
    """The first start makes a new conversation (transcript pending once); the next resumes it."""
    agent = echo_agent(tmp_path)
    first = await starter.start(agent)
    assert first.mode is ResumeMode.NEW and first.alive
    assert starter.sessions.ids == {"s": first.acp_session}
    assert first.take_transcript() is True and first.take_transcript() is False
    await first.process.stop()
    second = await starter.start(agent)
    assert second.mode is ResumeMode.RESUME and second.acp_session == first.acp_session
    assert second.take_transcript() is False


async def test_load_when_resume_is_not_offered(starter: Starter, tmp_path: Path) -> None:
    """An agent that offers only loadSession gets session/load for a known conversation."""
    agent = echo_agent(tmp_path, env={"AXTUI_ECHO_STATE": str(tmp_path / "state"),
                                      "AXTUI_ECHO_CAPABILITIES": "load"})
    first = await starter.start(agent)
    await first.process.stop()
    second = await starter.start(agent)
    assert second.mode is ResumeMode.LOAD and second.acp_session == first.acp_session


async def test_a_missing_command_fails_and_revokes(starter: Starter, tmp_path: Path) -> None:
    """A command that cannot be run fails with a reason naming it; its token is revoked."""
    with pytest.raises(StartFailed, match=r"cannot run .*no-such-agent"):
        await starter.start(AgentConfig(id="x", command=(str(tmp_path / "no-such-agent"),)))
    assert starter.revoked == 1


async def test_an_agent_that_exits_at_once(starter: Starter) -> None:
    """An agent that dies before answering initialize: the reason carries its stderr."""
    script = "import sys; print('no API key', file=sys.stderr); sys.exit(2)"
    with pytest.raises(StartFailed, match="its last output:\nno API key"):
        await starter.start(AgentConfig(id="x", command=(sys.executable, "-c", script)))
    assert starter.revoked == 1


async def test_an_agent_that_never_answers(starter: Starter,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """An agent that never answers initialize (say, a command without its ACP flag) is
    killed past START_TIMEOUT; the reason names initialize and quotes its output."""
    monkeypatch.setattr(agent_start, "START_TIMEOUT", 1.5)  # time to print its usage first
    script = "import sys; print('Usage: opencode [command]', file=sys.stderr, flush=True); " \
             "sys.stdin.read()"
    agent = AgentConfig(id="x", command=(sys.executable, "-c", script), sandbox=None)
    with pytest.raises(StartFailed) as failed:
        await starter.start(agent)
    assert str(failed.value) == ("the agent did not answer initialize within 1.5 s;"
                                 " its last output:\nUsage: opencode [command]")
    assert starter.revoked == 1


def test_the_environment_is_explicit(monkeypatch: pytest.MonkeyPatch) -> None:
    """An agent gets a few basics, its session id and its own env; nothing else leaks."""
    monkeypatch.setenv("HOME", "/home/hub")
    monkeypatch.setenv("HUB_SECRET", "s3cret")
    agent = AgentConfig(id="x", command=("x",), env={"API_KEY": "k", "HOME": "/home/agent"})
    env = agent_env(agent, "s")
    assert env["HOME"] == "/home/agent" and env["API_KEY"] == "k"
    assert env["AXTUI_SESSION_ID"] == "s" and "HUB_SECRET" not in env


def test_the_state_server_runs_the_axtui_module() -> None:
    """The state MCP server is ``python -m axtui.mcp_state`` with the hub's url and token."""
    server = state_server("ws://h/ws", "tok", "s")
    assert server["command"] == sys.executable
    assert server["args"] == ["-m", "axtui.mcp_state"]
    assert {e["name"]: e["value"] for e in server["env"]} == {
        "AXTUI_HUB_URL": "ws://h/ws", "AXTUI_HUB_TOKEN": "tok", "AXTUI_SESSION_ID": "s"}


@pytest.mark.skipif(sys.platform != "linux" or os.geteuid() != 0, reason="needs a root hub")
def test_a_root_hub_runs_agents_as_root_when_nobody_cannot_run_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """With no hub.agent_user, a root hub whose Python the user nobody cannot reach (a
    fresh machine's /root) runs agents as root and says why, instead of failing them all."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "python").symlink_to(sys.executable)
    monkeypatch.setattr(sys, "executable", str(private / "python"))
    monkeypatch.delenv(agent_start.AGENT_USER_ENV, raising=False)
    agent_start._default_agent_user.cache_clear()
    try:
        with caplog.at_level("WARNING", logger="axtui.supervisor"):
            assert agent_start.agent_user(None) is None
    finally:
        agent_start._default_agent_user.cache_clear()
    assert "cannot run" in caplog.text and "hub.agent_user" in caplog.text
