"""Starting an agent: spawn its command, ``initialize`` it, and restore the conversation.

The conversation is restored in the first way that works: ``session/resume`` if the hub
knows the agent's session id and the agent offers resume, else ``session/load`` if it
offers that (the replayed updates arrive while no turn runs, so they are dropped: the log
has them), else ``session/new``, whose id is remembered in the catalog and whose first
prompt carries the log's transcript. All of it must finish within ``START_TIMEOUT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from server import __version__
from server.acp import AgentError, AgentProcess
from server.config import AgentConfig

START_TIMEOUT = 30.0  # seconds for initialize plus session/new, load or resume
BASE_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TMPDIR", "TZ")
CLIENT_CAPABILITIES = {"fs": {"readTextFile": True, "writeTextFile": True}, "terminal": False}
STATE_SERVER_MODULE = "axtui.mcp_state"  # run by the agent's subprocess, never imported here

# (session id, agent id) -> (hub url, token, revoke): a token for one agent process.
Credentials = Callable[[str, str], tuple[str, str, Callable[[], None]]]
OnNotification = Callable[[str, dict[str, Any]], None]
OnRequest = Callable[[str, dict[str, Any]], Awaitable[Any]]


class AgentSessions(Protocol):
    """Where the agent's own session id for each session is kept (the hub's catalog)."""

    async def agent_session(self, session_id: str) -> str | None:
        """The agent's session id for ``session_id``, if one was remembered."""

    async def set_agent_session(self, session_id: str, agent_session_id: str | None) -> None:
        """Remember the agent's session id for ``session_id``."""


class ResumeMode(enum.StrEnum):
    """How the conversation was restored (``resumeMode`` of ``agent.status ready``)."""

    RESUME = "resume"
    LOAD = "load"
    NEW = "new"


class StartFailed(Exception):
    """The agent could not be started; the message is the ``reason`` to record."""


@dataclass(slots=True)
class StartedAgent:
    """A running agent process whose conversation (``acp_session``) is ready for prompts.

    ``transcript_pending``: the conversation is new, so the log's transcript goes ahead of
    the next prompt (see :meth:`take_transcript`).
    """

    process: AgentProcess
    acp_session: str
    mode: ResumeMode
    revoke: Callable[[], None]
    transcript_pending: bool = field(init=False)

    def __post_init__(self) -> None:
        self.transcript_pending = self.mode is ResumeMode.NEW

    @property
    def alive(self) -> bool:
        """Whether the process is still running."""
        return not self.process.exited.done()

    def take_transcript(self) -> bool:
        """Whether the next prompt must carry the transcript (true once, for a new one)."""
        pending, self.transcript_pending = self.transcript_pending, False
        return pending


async def start_agent(
    agent: AgentConfig, session_id: str, *, cwd: Path, data_dir: Path, catalog: AgentSessions,
    credentials: Credentials, on_notification: OnNotification, on_request: OnRequest,
) -> StartedAgent:
    """Start ``agent`` for a session and restore its conversation.

    Raises :class:`StartFailed` (the process killed, its token revoked) if the command
    cannot be run, ``initialize`` or the session request fails, or ``START_TIMEOUT`` passes.
    """
    url, token, revoke = credentials(session_id, agent.id)
    process: AgentProcess | None = None
    try:
        process = await AgentProcess.spawn(
            agent.command, env=agent_env(agent, session_id), cwd=str(cwd),
            stderr_path=data_dir / "logs" / f"{session_id}.agent.log",
            on_notification=on_notification, on_request=on_request,
        )
        base = {"cwd": str(cwd), "mcpServers": [state_server(url, token, session_id)]}
        async with asyncio.timeout(START_TIMEOUT):
            acp_session, mode = await _restore(process, base, session_id, catalog)
    except BaseException as exc:
        # Cancelled (the hub stops) or failed: no half-started process is left behind.
        if process is not None:
            process.kill()
        revoke()
        if isinstance(exc, OSError | AgentError | TimeoutError):
            raise StartFailed(_failure(agent, process, exc)) from exc
        raise
    return StartedAgent(process, acp_session, mode, revoke)


async def _restore(process: AgentProcess, base: dict[str, Any], session_id: str,
                   catalog: AgentSessions) -> tuple[str, ResumeMode]:
    init = await process.request("initialize", {
        "protocolVersion": 1, "clientCapabilities": CLIENT_CAPABILITIES,
        "clientInfo": {"name": "axtui", "version": __version__},
    }) or {}
    caps = init.get("agentCapabilities") or {}
    known = await catalog.agent_session(session_id)
    if known and "resume" in (caps.get("sessionCapabilities") or {}):
        with contextlib.suppress(AgentError):
            await process.request("session/resume", {"sessionId": known, **base})
            return known, ResumeMode.RESUME
    if known and caps.get("loadSession"):
        with contextlib.suppress(AgentError):
            await process.request("session/load", {"sessionId": known, **base})
            return known, ResumeMode.LOAD
    result = await process.request("session/new", base)
    new_id = result.get("sessionId") if isinstance(result, dict) else None
    if not isinstance(new_id, str):
        raise AgentError("session/new was answered without a sessionId")
    await catalog.set_agent_session(session_id, new_id)
    return new_id, ResumeMode.NEW


def _failure(agent: AgentConfig, process: AgentProcess | None, exc: BaseException) -> str:
    """The ``reason`` of ``agent.status failed``: what went wrong, and the agent's stderr."""
    if isinstance(exc, OSError) and not isinstance(exc, TimeoutError):  # (one is the other)
        return f"cannot run {' '.join(agent.command)}: {exc.strerror or exc}"
    detail = process.stderr_tail(5) if process else ""
    what = (f"did not answer within {START_TIMEOUT:g} s" if isinstance(exc, TimeoutError)
            else str(exc))
    return f"the agent {what}" + (f"; its last output:\n{detail}" if detail else "")


def agent_cwd(agent: AgentConfig, data_dir: Path, session_id: str) -> Path:
    """The agent's working directory: its ``cwd``, else its own workspace (created here)."""
    if agent.cwd:
        return Path(agent.cwd).expanduser().resolve()
    path = data_dir / "workspaces" / session_id
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def agent_env(agent: AgentConfig, session_id: str) -> dict[str, str]:
    """Only what the agent needs: a few basics from the hub's, then the agent's own ``env``."""
    env = {k: os.environ[k] for k in BASE_ENV if k in os.environ}
    env["AXTUI_SESSION_ID"] = session_id
    env.update(agent.env)
    return env


def state_server(url: str, token: str, session_id: str) -> dict[str, Any]:
    """The MCP server (stdio) that gives an agent its session's state, for ``mcpServers``."""
    env = {"AXTUI_HUB_URL": url, "AXTUI_HUB_TOKEN": token, "AXTUI_SESSION_ID": session_id}
    return {
        "name": "axtui-state",
        "command": sys.executable,
        "args": ["-m", STATE_SERVER_MODULE],
        "env": [{"name": k, "value": v} for k, v in env.items()],
    }
