"""The ACP client layer against real (tiny) agent processes."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from server.acp import MAX_LINE, AgentError, AgentExited, AgentProcess

AGENT = r"""
import json, os, sys
print("starting up (not JSON)", flush=True)
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("method") == "env":
        result = {"keys": sorted(os.environ)}
    elif msg.get("method") == "big":
        sys.stdout.write("x" * (int(msg["params"]["n"])) + "\n"); sys.stdout.flush(); continue
    elif msg.get("method") == "fail":
        print(json.dumps({"jsonrpc": "2.0", "id": msg["id"],
                          "error": {"code": -32000, "message": "nope"}}), flush=True); continue
    else:
        print(json.dumps({"jsonrpc": "2.0", "method": "session/update",
                          "params": {"n": 1}}), flush=True)
        result = {"echo": msg["params"]}
    print(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}), flush=True)
"""


async def spawn(tmp_path: Path, notes: list[tuple[str, dict[str, Any]]],
                env: dict[str, str] | None = None) -> AgentProcess:
    """Start the tiny agent."""
    script = tmp_path / "agent.py"
    script.write_text(AGENT)

    async def serve(method: str, params: dict[str, Any]) -> Any:
        raise AgentError("no", -32601)

    return await AgentProcess.spawn(
        [sys.executable, str(script)], env=env or {"PATH": os.environ["PATH"]}, cwd=None,
        stderr_path=tmp_path / "agent.log",
        on_notification=lambda m, p: notes.append((m, p)), on_request=serve,
    )


async def test_requests_notifications_and_junk_lines(tmp_path: Path) -> None:
    """Non-JSON lines are skipped; notifications arrive before the response that follows."""
    notes: list[tuple[str, dict[str, Any]]] = []
    agent = await spawn(tmp_path, notes)
    assert await asyncio.wait_for(agent.request("hello", {"a": 1}), 10) == {"echo": {"a": 1}}
    assert notes == [("session/update", {"n": 1})]
    with pytest.raises(AgentError, match="nope"):
        await asyncio.wait_for(agent.request("fail", {}), 10)
    assert await agent.stop() == 0


async def test_environment_is_explicit(tmp_path: Path) -> None:
    """The agent sees only the environment it is given."""
    agent = await spawn(tmp_path, [], env={"PATH": os.environ["PATH"], "ONLY": "this"})
    keys = (await asyncio.wait_for(agent.request("env", {}), 10))["keys"]
    assert "ONLY" in keys and "HOME" not in keys
    await agent.stop()


async def test_line_over_the_limit_ends_the_agent(tmp_path: Path) -> None:
    """A line longer than 10 MiB ends the agent; pending requests fail clearly."""
    agent = await spawn(tmp_path, [])
    with pytest.raises(AgentExited, match="longer than"):
        await asyncio.wait_for(agent.request("big", {"n": MAX_LINE + 10}), 30)
    await asyncio.wait_for(agent.exited, 10)


async def test_missing_program_is_an_os_error(tmp_path: Path) -> None:
    """A command that does not exist fails to spawn with FileNotFoundError."""
    with pytest.raises(FileNotFoundError):
        await AgentProcess.spawn(
            [str(tmp_path / "missing")], env={"PATH": os.environ["PATH"]}, cwd=None,
            stderr_path=tmp_path / "x.log", on_notification=lambda m, p: None,
            on_request=lambda m, p: asyncio.sleep(0),
        )


async def test_stop_is_bounded_and_kills_the_group(tmp_path: Path) -> None:
    """An agent that ignores its closed input and SIGTERM is killed with SIGKILL one grace
    later, with what it started; stop() returns the code and never waits longer."""
    script = tmp_path / "stubborn.py"
    script.write_text(
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(child.pid, file=sys.stderr, flush=True)\n"
        "time.sleep(60)\n")

    async def serve(method: str, params: dict[str, Any]) -> Any:
        raise AgentError("no", -32601)

    agent = await AgentProcess.spawn(
        [sys.executable, str(script)], env={"PATH": os.environ["PATH"]}, cwd=None,
        stderr_path=tmp_path / "agent.log", on_notification=lambda m, p: None,
        on_request=serve,
    )
    async with asyncio.timeout(10):
        while not agent.stderr_tail():
            await asyncio.sleep(0.02)
    child = int(agent.stderr_tail())
    began = asyncio.get_running_loop().time()
    assert await agent.stop(grace=0.3) == -9
    assert asyncio.get_running_loop().time() - began < 3
    async with asyncio.timeout(5):
        while os.path.exists(f"/proc/{child}") and "Z" not in _state(child):
            await asyncio.sleep(0.02)


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"
