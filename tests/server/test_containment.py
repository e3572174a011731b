"""Agents written to misbehave (tests/server/agents/), each attack shown to fail: the hub
is never frozen, flooded or fooled, and nothing an agent starts outlives it.

The agents run without the sandbox (``sandbox: none``): these are the hub's own defences.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from axtui.client import HubClient
from server.config import AgentConfig
from server.hub import Hub
from tests.conftest import HubFactory, Raw, RawFactory
from tests.server.agent_helpers import agent_hub, agent_session, echo_agent, say, until
from tests.server.hubproc import AXTUI, HubProcess, pid_alive

AGENTS = Path(__file__).parent / "agents"


def script_agent(name: str, **overrides: Any) -> AgentConfig:
    """The test agent ``tests/server/agents/<name>.py``, run by this Python, unsandboxed."""
    return AgentConfig(id=name, command=(sys.executable, str(AGENTS / f"{name}.py")),
                       sandbox=None, **overrides)


async def session_of(hub_factory: HubFactory, raw_factory: RawFactory, agent: AgentConfig,
                     **hub: Any) -> tuple[Hub, Raw]:
    """A hub (with ``hub`` settings) running ``agent``, and a connection subscribed to a new
    session ``a`` of it."""
    made = await agent_hub(hub_factory, agent, **hub)
    raw = await raw_factory(made)
    await raw.call("session/create", {"sessionId": "a", "agent": agent.id})
    await raw.call("session/subscribe", {"sessionId": "a"})
    return made, raw


def workspace(hub: Hub, sid: str = "a") -> Path:
    """The default working directory of session ``sid``'s agent."""
    return hub.config.hub.data_dir / "workspaces" / sid


async def gone(pid: int, timeout: float = 10.0) -> bool:
    """Whether process ``pid`` ends within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def kill_quietly(pid_file: Path) -> None:
    """Kill the process named in ``pid_file``, if any (what an attack left running)."""
    with contextlib.suppress(OSError, ValueError):
        os.kill(int(pid_file.read_text()), signal.SIGKILL)


def reply(seen: list[dict[str, Any]]) -> str:
    """The text of the last agent.message seen."""
    return str([e for e in seen if e["type"] == "agent.message"][-1]["data"]["text"])


async def test_a_fifo_in_the_cwd_never_blocks_the_hub(hub_factory: HubFactory,
                                                      raw_factory: RawFactory) -> None:
    """fs/read_text_file on a FIFO is refused at once (not a regular file); pings stay fast."""
    hub, raw = await agent_session(hub_factory, raw_factory, script_agent("fifo_reader"))
    other = await raw_factory(hub)
    await say(raw, "a", "read the pipe")
    seen: list[dict[str, Any]] = []
    turn = asyncio.create_task(until(raw, "a", "turn.completed", seen, timeout=20))
    slowest = 0.0
    while not turn.done():
        began = time.perf_counter()
        await asyncio.wait_for(other.call("ping"), 5)
        slowest = max(slowest, time.perf_counter() - began)
        await asyncio.sleep(0.01)
    await turn
    assert reply(seen) == f"refused: {workspace(hub) / 'pipe'} is not a regular file"
    assert slowest < 1.0


async def test_a_flipping_symlink_never_escapes_the_cwd(hub_factory: HubFactory,
                                                        raw_factory: RawFactory,
                                                        tmp_path: Path) -> None:
    """A directory swapped for a link to outside, 1,500 reads through it: none escapes."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("TOP SECRET")
    agent = script_agent("symlink_race", env={"OUTSIDE_DIR": str(outside)})
    _, raw = await agent_session(hub_factory, raw_factory, agent)
    await say(raw, "a", "race")
    seen: list[dict[str, Any]] = []
    await until(raw, "a", "turn.completed", seen, timeout=120)
    text = reply(seen)
    assert text.startswith("escapes: 0, "), text
    inside = int(text.split("inside: ")[1].split(",")[0])
    assert inside > 0, text  # reads through the real directory still work


async def test_an_agent_death_is_seen_though_a_helper_holds_its_output(
    hub_factory: HubFactory, raw_factory: RawFactory
) -> None:
    """A helper outside the agent's group keeps its stdout open: the death is still seen
    at once (turn.failed crashed with the real code), and the hub stops promptly."""
    hub, raw = await agent_session(hub_factory, raw_factory, script_agent("stdout_holder"))
    try:
        began = time.monotonic()
        await say(raw, "a", "die")
        seen: list[dict[str, Any]] = []
        failed = await until(raw, "a", "turn.failed", seen, timeout=15)
        assert time.monotonic() - began < 10
        assert failed["data"]["reason"] == "crashed"
        assert failed["data"]["error"]["message"].startswith("the agent exited with code 3")
        assert "about to die" in [e["data"]["text"] for e in seen
                                  if e["type"] == "agent.message.chunk"]
        began = time.monotonic()
        await asyncio.wait_for(hub.stop(), 15)
        assert time.monotonic() - began < 10
    finally:
        kill_quietly(workspace(hub) / "helper.pid")


async def test_a_child_dies_when_its_agent_exits(hub_factory: HubFactory,
                                                 raw_factory: RawFactory) -> None:
    """A child left in the agent's process group dies as soon as the agent exits."""
    hub, raw = await agent_session(hub_factory, raw_factory, script_agent("child_left"))
    pid_file = workspace(hub) / "child.pid"
    try:
        await say(raw, "a", "spawn")
        seen: list[dict[str, Any]] = []
        await until(raw, "a", "turn.completed", seen)
        child = int(pid_file.read_text())
        assert pid_alive(child)
        await say(raw, "a", "exit")
        await until(raw, "a", "turn.failed", seen)  # it exits mid-turn, with code 0
        assert await gone(child)
    finally:
        kill_quietly(pid_file)


async def test_a_child_dies_when_the_hub_is_killed(tmp_path: Path) -> None:
    """SIGKILL the hub: the agent dies (parent-death signal) and so does its child (the
    watchdog kills the agent's group)."""
    config = tmp_path / "config.yaml"
    config.write_text(f"agents:\n  child:\n    command: [{sys.executable!r},"
                      f" {str(AGENTS / 'child_left.py')!r}]\n    sandbox: none\n")
    data = tmp_path / "data"
    pid_file = data / "workspaces" / "s" / "child.pid"
    try:
        with HubProcess(data, config=config) as hub:
            hub.start()
            assert hub.url is not None
            async with HubClient(hub.url, reconnect=False) as client:
                await client.create_session(sessionId="s", agent="child")
                sub = client.subscribe("s")
                await client.publish("s", "user.message", {"text": "spawn"})
                agent_pid = 0
                async with asyncio.timeout(15):
                    async for event in sub:
                        if event["data"].get("state") == "ready":
                            agent_pid = event["data"]["pid"]
                        if event["type"] == "turn.completed":
                            break
                child = int(pid_file.read_text())
                assert pid_alive(child) and pid_alive(agent_pid)
                hub.kill()
        assert await gone(agent_pid)
        assert await gone(child)
    finally:
        kill_quietly(pid_file)


async def test_a_flood_is_slowed_down_and_nothing_is_lost(
    hub_factory: HubFactory, raw_factory: RawFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """20,000 updates sent as fast as the pipe takes them, into a 64-event queue: every one
    is stored, in order; nothing is refused or logged."""
    count = 20_000
    caplog.set_level(logging.INFO, "axtui")
    hub, raw = await session_of(hub_factory, raw_factory, script_agent("flood"),
                                max_queue=64)
    await say(raw, "a", f"flood {count}")
    seen: list[dict[str, Any]] = []
    await until(raw, "a", "turn.completed", seen, timeout=90)
    chunks = [e["data"]["text"] for e in seen if e["type"] == "agent.message.chunk"]
    assert chunks == [f"{i} " for i in range(count)] + ["done"]
    assert reply(seen) == "".join(chunks)
    assert hub.metrics.overloaded == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert len(caplog.text) < 10_000  # a few lines: start, and nothing per update


async def test_a_secret_in_stderr_stays_out_of_the_log(hub_factory: HubFactory,
                                                       raw_factory: RawFactory) -> None:
    """An agent prints its API key (from its env) and a bearer token to stderr and
    crashes: turn.failed quotes its stderr with both masked, and the log has neither."""
    key = "sk-live-0123456789abcdef"
    agent = script_agent("stderr_secret", env={"MODEL_KEY": key})
    _, raw = await agent_session(hub_factory, raw_factory, agent)
    await say(raw, "a", "go")
    seen: list[dict[str, Any]] = []
    failed = await until(raw, "a", "turn.failed", seen)
    message = failed["data"]["error"]["message"]
    assert "calling the model with key (redacted)" in message
    assert "Bearer (redacted)" in message
    history = await raw.call("session/history", {"sessionId": "a", "limit": 1000})
    text = str(history)
    assert key not in text and "abcdef0123456789" not in text


async def test_a_token_kept_after_suspend_loses_its_connection(
    hub_factory: HubFactory, raw_factory: RawFactory
) -> None:
    """A connection logged in with an agent's token is closed when the agent is suspended
    (the token revoked), not left working."""
    hub, raw = await agent_session(hub_factory, raw_factory, script_agent("token_keeper"))
    await say(raw, "a", "keep the token")
    await until(raw, "a", "turn.completed", [])
    token = (workspace(hub) / "token").read_text()
    kept = await raw_factory(hub, headers={"Authorization": f"Bearer {token}"})
    assert (await kept.call("session/get", {"sessionId": "a"}))["session"]["sessionId"] == "a"
    await raw.call("session/suspend", {"sessionId": "a"})
    assert await kept.closed(timeout=5) == 4401
    assert hub.auth.principal_for_token(token) is None  # nor can it log in again


async def test_a_recreated_session_id_gets_no_old_workspace_or_log(
    hub_factory: HubFactory, raw_factory: RawFactory, tmp_path: Path
) -> None:
    """Deleting a session removes its workspace and agent log: a new session with the same
    id (someone else's, say) starts with neither."""
    hub, raw = await agent_session(hub_factory, raw_factory, echo_agent(tmp_path, sandbox=None))
    notes = workspace(hub) / "notes.txt"
    log = hub.config.hub.data_dir / "logs" / "a.agent.log"
    await say(raw, "a", f"write {notes} private notes")
    await say(raw, "a", "stderr 1")
    seen: list[dict[str, Any]] = []
    await until(raw, "a", "turn.completed", seen)
    await until(raw, "a", "turn.completed", seen)
    assert notes.read_text() == "private notes" and log.stat().st_size > 0
    await raw.call("session/delete", {"sessionId": "a"})
    assert not workspace(hub).exists() and not log.exists()
    await raw.call("session/create", {"sessionId": "a", "agent": "echo"})
    await raw.call("session/subscribe", {"sessionId": "a"})
    await say(raw, "a", f"read {notes}")
    answer = await until(raw, "a", "agent.message", [])
    assert answer["data"]["text"].startswith("read refused:")
    assert not notes.exists()
    assert [p.name for p in workspace(hub).parent.iterdir()] == ["a"]  # nothing left aside


async def test_a_killed_launcher_fails_the_turn_and_its_child_dies(
    hub_factory: HubFactory, raw_factory: RawFactory
) -> None:
    """A launcher (the real agent its child, on the same pipes) killed with SIGKILL: the
    turn fails at once as killed by SIGKILL, and the child dies; a crash of the child is
    reported with the launcher's real exit code."""
    hub, raw = await agent_session(hub_factory, raw_factory, script_agent("launcher"))
    pid_file = workspace(hub) / "child.pid"
    try:
        await say(raw, "a", "sleep 30")
        seen: list[dict[str, Any]] = []
        await until(raw, "a", "turn.started", seen)
        launcher = next(e["data"]["pid"] for e in seen if e["data"].get("state") == "ready")
        child = int(pid_file.read_text())
        os.kill(launcher, signal.SIGKILL)
        began = time.monotonic()
        failed = await until(raw, "a", "turn.failed", seen, timeout=10)
        assert time.monotonic() - began < 5
        assert failed["data"]["reason"] == "crashed"
        assert failed["data"]["error"]["message"].startswith("the agent was killed by SIGKILL")
        assert await gone(child)
        await raw.call("session/create", {"sessionId": "b", "agent": "launcher"})
        await raw.call("session/subscribe", {"sessionId": "b"})
        await say(raw, "b", "crash")  # (a first prompt: no transcript ahead of it)
        failed = await until(raw, "b", "turn.failed", [])
        assert failed["data"]["error"]["message"].startswith("the agent exited with code 3")
    finally:
        kill_quietly(pid_file)
        kill_quietly(workspace(hub, "b") / "child.pid")


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None
                    or not os.path.exists("/usr/bin/python3"),
                    reason="needs root, setpriv and a system Python any user can run")
async def test_a_root_hub_runs_agents_as_agent_user(hub_factory: HubFactory,
                                                    raw_factory: RawFactory,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A hub running as root runs its agents as hub.agent_user (nobody), in a workspace
    that user may write; an agent_user that does not exist fails the start clearly."""
    monkeypatch.delenv("AXTUI_AGENT_USER", raising=False)
    agent = AgentConfig(id="whoami", sandbox=None, command=(
        "/usr/bin/python3", "-E", "-s", str(AGENTS / "whoami.py")))
    hub, raw = await session_of(hub_factory, raw_factory, agent, agent_user="nobody")
    await say(raw, "a", "who")
    seen: list[dict[str, Any]] = []
    await until(raw, "a", "turn.completed", seen)
    assert reply(seen) == "uid 65534 gid 65534 can write: yes"
    assert (workspace(hub) / "mine.txt").stat().st_uid == 65534
    _, raw2 = await session_of(hub_factory, raw_factory, agent, agent_user="no-such-user-here")
    await say(raw2, "a", "who")
    await until(raw2, "a", "agent.status", seen)
    failed = await until(raw2, "a", "agent.status", seen)
    assert failed["data"]["state"] == "failed"
    assert "hub.agent_user 'no-such-user-here' is not a user" in failed["data"]["reason"]


@pytest.mark.skipif(not sys.platform.startswith("linux") or shutil.which("setpriv") is None,
                    reason="PR_SET_DUMPABLE is Linux's; the check drops capabilities with setpriv")
def test_the_hub_environment_is_unreadable_to_its_user(tmp_path: Path) -> None:
    """A process of the hub's user cannot read the hub's /proc/<pid>/environ (the hub is
    not dumpable), while it can read a plain process's of the same user."""
    no_caps = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--"]  # root, powerless
    env = {**os.environ, "HUB_SECRET": "s3cret-value"}
    hub = subprocess.Popen([*no_caps, *AXTUI, "serve", "--port", "0", "--http-port", "0",
                            "--data-dir", str(tmp_path / "data")], env=env,
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
    plain = subprocess.Popen([*no_caps, sys.executable, "-c", "import time; time.sleep(60)"],
                             env=env)
    try:
        assert hub.stderr is not None
        for line in hub.stderr:  # the hub is up once it says so
            if "listening on" in line:
                break
        read = [subprocess.run([*no_caps, "cat", f"/proc/{p.pid}/environ"],
                               capture_output=True, check=False) for p in (hub, plain)]
        assert read[0].returncode != 0 and b"s3cret-value" not in read[0].stdout
        assert b"s3cret-value" in read[1].stdout  # the check can see a dumpable process's
    finally:
        for proc in (hub, plain):
            proc.kill()
            proc.wait()
