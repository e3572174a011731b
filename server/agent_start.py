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
import functools
import logging
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from server import __version__
from server.acp import AgentError, AgentExited, AgentProcess, AgentUser, Room
from server.config import AgentConfig
from server.sandbox import bwrap_works, sandbox_argv, sandboxed

START_TIMEOUT = 30.0  # seconds for initialize plus session/new, load or resume
BASE_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TMPDIR", "TZ")
CLIENT_CAPABILITIES = {"fs": {"readTextFile": True, "writeTextFile": True}, "terminal": False}
STATE_SERVER_MODULE = "axtui.mcp_state"  # run by the agent's subprocess, never imported here
log = logging.getLogger("axtui.supervisor")
DEFAULT_AGENT_USER = "nobody"  # who agents run as when the hub is root
AGENT_USER_ENV = "AXTUI_AGENT_USER"  # the default for hub.agent_user
MIN_SECRET_CHARS = 8  # env values at least this long are masked in the agent's stderr

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
    user: AgentUser | None = None, room: Room | None = None,
) -> StartedAgent:
    """Start ``agent`` for a session (as ``user``, if given) and restore its conversation.

    Raises :class:`StartFailed` (the process killed, its token revoked) if the command
    cannot be run, ``initialize`` or the session request fails, or ``START_TIMEOUT`` passes.
    ``room`` is the session's backpressure (see :class:`~server.acp.AgentProcess`).
    """
    url, token, revoke = credentials(session_id, agent.id)
    command, url = sandboxed(agent, url, cwd=cwd, data_dir=data_dir)
    process: AgentProcess | None = None
    step = ["initialize"]  # what the agent was asked last, for the reason of a timeout
    try:
        process = await AgentProcess.spawn(
            command, env=agent_env(agent, session_id, user), cwd=str(cwd),
            stderr_path=data_dir / "logs" / f"{session_id}.agent.log",
            on_notification=on_notification, on_request=on_request, user=user, room=room,
            secrets=agent_secrets(agent, token),
        )
        base = {"cwd": str(cwd), "mcpServers": [state_server(url, token, session_id)]}
        async with asyncio.timeout(START_TIMEOUT):
            acp_session, mode = await _restore(process, base, session_id, catalog, step)
    except BaseException as exc:
        # Cancelled (the hub stops) or failed: no half-started process is left behind.
        if process is not None:
            process.kill()
        revoke()
        if isinstance(exc, OSError | AgentError | TimeoutError):
            raise StartFailed(_failure(agent, process, exc, step[-1], user)) from exc
        raise
    return StartedAgent(process, acp_session, mode, revoke)


async def _restore(process: AgentProcess, base: dict[str, Any], session_id: str,
                   catalog: AgentSessions, step: list[str]) -> tuple[str, ResumeMode]:
    init = await process.request("initialize", {
        "protocolVersion": 1, "clientCapabilities": CLIENT_CAPABILITIES,
        "clientInfo": {"name": "axtui", "version": __version__},
    }) or {}
    caps = init.get("agentCapabilities") or {}
    known = await catalog.agent_session(session_id)
    if known and "resume" in (caps.get("sessionCapabilities") or {}):
        step.append("session/resume")
        with contextlib.suppress(AgentError):
            await process.request("session/resume", {"sessionId": known, **base})
            return known, ResumeMode.RESUME
    if known and caps.get("loadSession"):
        step.append("session/load")
        with contextlib.suppress(AgentError):
            await process.request("session/load", {"sessionId": known, **base})
            return known, ResumeMode.LOAD
    step.append("session/new")
    result = await process.request("session/new", base)
    new_id = result.get("sessionId") if isinstance(result, dict) else None
    if not isinstance(new_id, str):
        raise AgentError("session/new was answered without a sessionId")
    await catalog.set_agent_session(session_id, new_id)
    return new_id, ResumeMode.NEW


def _failure(agent: AgentConfig, process: AgentProcess | None, exc: BaseException,
             step: str, user: AgentUser | None) -> str:
    """The ``reason`` of ``agent.status failed``: what went wrong, and the agent's stderr."""
    if isinstance(exc, OSError) and not isinstance(exc, TimeoutError):  # (one is the other)
        who = f" as user {user.name}" if user is not None else ""
        return f"cannot run {' '.join(agent.command)}{who}: {exc.strerror or exc}"
    detail = process.stderr_tail(5) if process else ""
    if isinstance(exc, TimeoutError):
        what = f"the agent did not answer {step} within {START_TIMEOUT:g} s"
    elif isinstance(exc, AgentExited):
        what = str(exc)  # "the agent exited with code 2"
    else:
        what = f"the agent failed {step}: {exc}"
    return what + (f"; its last output:\n{detail}" if detail else "; it wrote nothing to stderr")


def agent_cwd(agent: AgentConfig, data_dir: Path, session_id: str,
              user: AgentUser | None = None) -> Path:
    """The agent's working directory: its ``cwd``, else its own workspace (created here,
    and owned by ``user``, the agent's, so that it can write there)."""
    if agent.cwd:
        return Path(agent.cwd).expanduser().resolve()
    path = data_dir / "workspaces" / session_id
    path.mkdir(parents=True, exist_ok=True)
    if user is not None:
        os.chown(path, user.uid, user.gid)
    return path.resolve()


async def remove_agent_files(data_dir: Path, session_id: str) -> None:
    """Remove a deleted session's workspace and agent log, so that a session created later
    with the same id (by anyone) finds neither.

    The workspace is renamed aside at once (an agent still running there until it is
    stopped writes into the renamed one), then removed in a worker thread; ``rmtree``
    follows no symbolic link.
    """
    with contextlib.suppress(FileNotFoundError):
        (data_dir / "logs" / f"{session_id}.agent.log").unlink()
    workspace = data_dir / "workspaces" / session_id
    trash = workspace.with_name(f".deleted-{session_id}-{secrets.token_hex(4)}")
    try:
        workspace.rename(trash)
    except FileNotFoundError:
        return
    await asyncio.to_thread(shutil.rmtree, trash, ignore_errors=True)


def agent_user(configured: str | None) -> AgentUser | None:
    """Who agents run as: ``None`` (the hub's own user) unless the hub runs as root; then
    ``hub.agent_user`` (else ``$AXTUI_AGENT_USER``, else ``nobody``), unless that is root.

    Raises ``LookupError`` with a clear message for a user that does not exist.
    """
    if os.geteuid() != 0:
        return None
    name = configured or os.environ.get(AGENT_USER_ENV)
    if name is None:
        return _default_agent_user()
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise LookupError(f"hub.agent_user {name!r} is not a user on this machine; create"
                          " it or name another unprivileged user") from None
    if entry.pw_uid == 0:
        return None  # chosen explicitly: agents run as root
    return AgentUser(name, entry.pw_uid, entry.pw_gid)


@functools.cache
def _default_agent_user() -> AgentUser | None:
    """``nobody``, if it exists and can run this Python (the bundled agents and the state
    tools run on it); else root, said once. A root hub installed under ``/root`` (as on a
    fresh machine) has a Python ``nobody`` cannot read: ``axtui up`` must still work there,
    with the sandbox as the boundary, and the log says how to do better."""
    try:
        entry = pwd.getpwnam(DEFAULT_AGENT_USER)
    except KeyError:
        log.warning("the hub runs as root and there is no user %s: agents run as root;"
                    " set hub.agent_user to an unprivileged user", DEFAULT_AGENT_USER)
        return None
    user = AgentUser(DEFAULT_AGENT_USER, entry.pw_uid, entry.pw_gid)
    setpriv = shutil.which("setpriv")
    with tempfile.TemporaryDirectory(prefix="axtui-probe-") as workspace:
        os.chmod(workspace, 0o777)
        python = [sys.executable, "-c", ""]
        if bwrap_works():  # as agents run: inside their sandbox too
            python = sandbox_argv(python, workspace=Path(workspace), hidden=[], network=True)
        probe = [str(setpriv), f"--reuid={user.uid}", f"--regid={user.gid}",
                 "--clear-groups", "--", *python]
        try:
            ok = setpriv is not None and subprocess.run(
                probe, capture_output=True, timeout=10).returncode == 0
        except (OSError, subprocess.SubprocessError):
            ok = False
    if not ok:
        log.warning("the hub runs as root, but user %s cannot run %s: agents run as root"
                    " (inside their sandbox); set hub.agent_user to a user who can run it,"
                    " or install axtui where %s can read it", DEFAULT_AGENT_USER,
                    sys.executable, DEFAULT_AGENT_USER)
        return None
    return user


def agent_env(agent: AgentConfig, session_id: str,
              user: AgentUser | None = None) -> dict[str, str]:
    """Only what the agent needs: a few basics from the hub's, then the agent's own ``env``.

    An agent run as another user gets that user's name, and a ``HOME`` it can use: its
    own, where that is a directory, else none, so its programs fall back on their defaults.
    """
    env = {k: os.environ[k] for k in BASE_ENV if k in os.environ}
    if user is not None:
        env["USER"] = env["LOGNAME"] = user.name
        home = pwd.getpwuid(user.uid).pw_dir
        if os.path.isdir(home):
            env["HOME"] = home
        else:
            env.pop("HOME", None)
    env["AXTUI_SESSION_ID"] = session_id
    env.update(agent.env)
    return env


def agent_secrets(agent: AgentConfig, token: str) -> list[str]:
    """What never appears in what is shown of an agent's stderr: its token and the values
    of its ``env`` (the short ones, which could be any word, excepted)."""
    return [token, *(v for v in agent.env.values() if len(v) >= MIN_SECRET_CHARS)]


def state_server(url: str, token: str, session_id: str) -> dict[str, Any]:
    """The MCP server (stdio) that gives an agent its session's state, for ``mcpServers``."""
    env = {"AXTUI_HUB_URL": url, "AXTUI_HUB_TOKEN": token, "AXTUI_SESSION_ID": session_id}
    return {
        "name": "axtui-state",
        "command": sys.executable,
        "args": ["-m", STATE_SERVER_MODULE],
        "env": [{"name": k, "value": v} for k, v in env.items()],
    }
