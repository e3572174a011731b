"""The bundled ``echo`` agent as a real subprocess, driven with raw ACP JSON-RPC lines."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]
STATE_ENV = "AXTUI_ECHO_STATE"
TIMEOUT = 5.0  # for every read: a test never waits longer on the agent than this

Message = dict[str, Any]


def seen(n: int) -> str:
    """The reply's second line after ``n`` prompts."""
    return f"(I have seen {n} messages in this session)"


@dataclass
class Reply:
    """What one prompt turn produced."""

    stop_reason: str
    text: str  # the agent_message_chunk texts, joined
    chunks: int
    updates: list[Message]


class EchoProcess:
    """One ``python -m server.agents.echo``: JSON lines in and out, stderr collected."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.ids = itertools.count(1)
        self.inbox: list[Message] = []  # messages read while waiting for something else
        self.stderr: asyncio.Queue[str] = asyncio.Queue()
        self._drain = asyncio.create_task(self._drain_stderr())

    @classmethod
    async def start(cls, state_dir: Path | None = None) -> EchoProcess:
        """Spawn the agent, with ``AXTUI_ECHO_STATE`` set only when ``state_dir`` is given."""
        env = {k: v for k, v in os.environ.items() if k != STATE_ENV}
        if state_dir is not None:
            env[STATE_ENV] = str(state_dir)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "server.agents.echo", cwd=ROOT, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        return cls(proc)

    async def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.stderr.put_nowait(line.decode().rstrip("\n"))

    async def stderr_line(self) -> str:
        """The next line the agent wrote to stderr."""
        return await asyncio.wait_for(self.stderr.get(), TIMEOUT)

    async def send(self, message: Message | str) -> None:
        """Write one line (a dict is encoded as JSON)."""
        assert self.proc.stdin is not None
        line = message if isinstance(message, str) else json.dumps(message)
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()

    async def recv(self) -> Message:
        """The next message on the agent's stdout."""
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), TIMEOUT)
        assert line, "the agent closed its stdout"
        message: Message = json.loads(line)
        return message

    async def send_request(self, method: str, params: Message) -> int:
        """Send a request without waiting; return its id."""
        request_id = next(self.ids)
        await self.send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        return request_id

    async def _first(self, match: Callable[[Message], bool]) -> Message:
        for i, message in enumerate(self.inbox):
            if match(message):
                return self.inbox.pop(i)
        while not match(message := await self.recv()):
            self.inbox.append(message)
        return message

    async def response(self, request_id: int) -> Message:
        """The response to ``request_id``; other messages read meanwhile stay in the inbox."""
        return await self._first(lambda m: "method" not in m and m.get("id") == request_id)

    async def next_request(self, method: str) -> Message:
        """The next request of ``method`` from the agent to us."""
        return await self._first(lambda m: m.get("method") == method and "id" in m)

    async def request(self, method: str, params: Message) -> Message:
        """Send a request and return the whole response."""
        return await self.response(await self.send_request(method, params))

    async def call(self, method: str, params: Message) -> Any:
        """Send a request; return its result, failing the test on an error."""
        response = await self.request(method, params)
        assert "result" in response, response
        return response["result"]

    def updates(self, session_id: str) -> list[Message]:
        """Take the ``session/update``s of ``session_id`` out of the inbox, in order."""
        def ours(m: Message) -> bool:
            return bool(m.get("method") == "session/update"
                        and m["params"]["sessionId"] == session_id)

        taken = [m["params"]["update"] for m in self.inbox if ours(m)]
        self.inbox = [m for m in self.inbox if not ours(m)]
        return taken

    async def initialize(self) -> Message:
        """The handshake."""
        result: Message = await self.call("initialize", {
            "protocolVersion": 1, "clientCapabilities": {},
            "clientInfo": {"name": "test", "version": "0"},
        })
        return result

    async def new_session(self) -> str:
        """A new session's id."""
        result = await self.call("session/new", {"cwd": str(ROOT), "mcpServers": []})
        session_id: str = result["sessionId"]
        return session_id

    async def finish_prompt(self, request_id: int, session_id: str) -> Reply:
        """Wait for a prompt's answer; collect the updates it streamed before."""
        response = await self.response(request_id)
        assert "result" in response, response
        updates = self.updates(session_id)
        chunks = [u["content"]["text"] for u in updates
                  if u["sessionUpdate"] == "agent_message_chunk"]
        return Reply(response["result"]["stopReason"], "".join(chunks), len(chunks), updates)

    async def start_prompt(self, session_id: str, text: str) -> int:
        """Send a text prompt without waiting; return the request id."""
        return await self.send_request("session/prompt", {
            "sessionId": session_id, "prompt": [{"type": "text", "text": text}],
        })

    async def prompt(self, session_id: str, text: str) -> Reply:
        """One whole prompt turn."""
        return await self.finish_prompt(await self.start_prompt(session_id, text), session_id)

    async def close(self) -> int:
        """Close stdin (a graceful stop) and return the exit code."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return await self.exit_code()

    async def exit_code(self) -> int:
        """Wait for the process to end."""
        return await asyncio.wait_for(self.proc.wait(), TIMEOUT)

    async def kill(self) -> None:
        """Make sure the process is gone."""
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        await asyncio.wait_for(self._drain, TIMEOUT)


Spawn = Callable[..., Awaitable[EchoProcess]]


@pytest.fixture
async def spawn() -> AsyncIterator[Spawn]:
    """Start echo processes (``await spawn(state_dir=...)``); all are killed after the test."""
    procs: list[EchoProcess] = []

    async def start(state_dir: Path | None = None) -> EchoProcess:
        proc = await EchoProcess.start(state_dir)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        await proc.kill()


@pytest.fixture
async def echo(spawn: Spawn) -> EchoProcess:
    """An initialized echo agent with no state directory."""
    agent = await spawn()
    await agent.initialize()
    return agent


async def test_initialize(spawn: Spawn) -> None:
    """initialize answers protocol version 1, load and resume capabilities, and agent info."""
    agent = await spawn()
    result = await agent.initialize()
    assert result == {
        "protocolVersion": 1,
        "agentCapabilities": {
            "loadSession": True,
            "promptCapabilities": {"image": False, "audio": False, "embeddedContext": False},
            "sessionCapabilities": {"resume": {}},
        },
        "authMethods": [],
        "agentInfo": {"name": "axtui-echo", "version": "0.1.0"},
    }


async def test_prompt_streams_echo(echo: EchoProcess) -> None:
    """A prompt is echoed in two or three agent_message_chunk updates, then end_turn."""
    session_id = await echo.new_session()
    reply = await echo.prompt(session_id, "hi")
    assert reply.stop_reason == "end_turn"
    assert reply.text == f"echo: hi\n{seen(1)}"
    assert 2 <= reply.chunks <= 3
    assert all(u["sessionUpdate"] == "agent_message_chunk" for u in reply.updates)


async def test_count_grows_per_session(echo: EchoProcess) -> None:
    """The count of messages seen grows with each prompt, separately per session."""
    first, second = await echo.new_session(), await echo.new_session()
    for n in (1, 2, 3):
        assert (await echo.prompt(first, f"m{n}")).text == f"echo: m{n}\n{seen(n)}"
    assert (await echo.prompt(second, "other")).text == f"echo: other\n{seen(1)}"


async def test_prompt_joins_text_blocks(echo: EchoProcess) -> None:
    """The prompt's text blocks are joined by newlines; other blocks are ignored."""
    session_id = await echo.new_session()
    request_id = await echo.send_request("session/prompt", {"sessionId": session_id, "prompt": [
        {"type": "text", "text": "one"},
        {"type": "resource_link", "name": "x", "uri": "file:///x"},
        {"type": "text", "text": "two"},
    ]})
    reply = await echo.finish_prompt(request_id, session_id)
    assert reply.text == f"echo: one\ntwo\n{seen(1)}"


async def test_load_after_restart_replays(spawn: Spawn, tmp_path: Path) -> None:
    """After a restart, session/load replays the transcript, answers {} and keeps counting."""
    first = await spawn(state_dir=tmp_path)
    await first.initialize()
    session_id = await first.new_session()
    await first.prompt(session_id, "hi")
    await first.prompt(session_id, "again")
    assert await first.close() == 0

    second = await spawn(state_dir=tmp_path)
    await second.initialize()
    assert await second.call("session/load", {
        "sessionId": session_id, "cwd": str(ROOT), "mcpServers": [],
    }) == {}
    assert [(u["sessionUpdate"], u["content"]["text"]) for u in second.updates(session_id)] == [
        ("user_message_chunk", "hi"),
        ("agent_message_chunk", f"echo: hi\n{seen(1)}"),
        ("user_message_chunk", "again"),
        ("agent_message_chunk", f"echo: again\n{seen(2)}"),
    ]
    assert (await second.prompt(session_id, "third")).text == f"echo: third\n{seen(3)}"


async def test_resume_after_restart_keeps_count(spawn: Spawn, tmp_path: Path) -> None:
    """After a restart, session/resume answers {} with no replay and the count goes on."""
    first = await spawn(state_dir=tmp_path)
    await first.initialize()
    session_id = await first.new_session()
    await first.prompt(session_id, "hi")
    assert await first.close() == 0

    second = await spawn(state_dir=tmp_path)
    await second.initialize()
    assert await second.call("session/resume", {
        "sessionId": session_id, "cwd": str(ROOT), "mcpServers": [],
    }) == {}
    assert second.updates(session_id) == []
    reply = await second.prompt(session_id, "more")
    assert reply.text == f"echo: more\n{seen(2)}"
    assert [u["sessionUpdate"] for u in reply.updates] == ["agent_message_chunk"] * reply.chunks


async def test_unknown_session(echo: EchoProcess) -> None:
    """Loading, resuming or prompting a session the agent never had is error -32002."""
    params = {"sessionId": "echo-nope", "cwd": str(ROOT), "mcpServers": []}
    for method in ("session/load", "session/resume"):
        assert (await echo.request(method, params))["error"]["code"] == -32002
    response = await echo.request("session/prompt", {"sessionId": "echo-nope", "prompt": []})
    assert response["error"]["code"] == -32002


async def test_sleep_answers_after_the_wait(echo: EchoProcess) -> None:
    """``sleep <seconds>`` waits, then echoes as usual."""
    session_id = await echo.new_session()
    reply = await echo.prompt(session_id, "sleep 0.1")
    assert (reply.stop_reason, reply.text) == ("end_turn", f"echo: sleep 0.1\n{seen(1)}")


async def test_sleep_cancelled(echo: EchoProcess) -> None:
    """session/cancel during ``sleep`` ends the turn promptly with stopReason cancelled."""
    session_id = await echo.new_session()
    request_id = await echo.start_prompt(session_id, "sleep 60")
    await echo.send({"jsonrpc": "2.0", "method": "session/cancel",
                     "params": {"sessionId": session_id}})
    reply = await echo.finish_prompt(request_id, session_id)  # within TIMEOUT, not 60 s
    assert (reply.stop_reason, reply.text) == ("cancelled", "")
    assert (await echo.prompt(session_id, "next")).text == f"echo: next\n{seen(2)}"


async def test_crash_exits_with_code_3(echo: EchoProcess) -> None:
    """``crash`` writes a line to stderr and exits with code 3, leaving the prompt open."""
    session_id = await echo.new_session()
    await echo.start_prompt(session_id, "crash")
    assert await echo.exit_code() == 3
    assert "crash" in await echo.stderr_line()


async def test_stderr_lines(echo: EchoProcess) -> None:
    """``stderr <n>`` writes n lines to stderr, then answers."""
    session_id = await echo.new_session()
    reply = await echo.prompt(session_id, "stderr 300")
    assert reply.text == f"echo: stderr 300\n{seen(1)}"
    lines = [await echo.stderr_line() for _ in range(300)]
    assert lines[0].endswith("stderr line 1 of 300")
    assert lines[-1].endswith("stderr line 300 of 300")


async def permission_round(echo: EchoProcess, outcome: Message) -> tuple[Message, Reply]:
    """Run a ``permission`` prompt, answering its request with ``outcome``."""
    session_id = await echo.new_session()
    request_id = await echo.start_prompt(session_id, "permission")
    ask = await echo.next_request("session/request_permission")
    await echo.send({"jsonrpc": "2.0", "id": ask["id"], "result": {"outcome": outcome}})
    return ask, await echo.finish_prompt(request_id, session_id)


async def test_permission_allow(echo: EchoProcess) -> None:
    """``permission`` asks the client; choosing allow completes the tool call."""
    ask, reply = await permission_round(echo, {"outcome": "selected", "optionId": "allow"})
    tool_call_id = ask["params"]["toolCall"]["toolCallId"]
    assert [(o["optionId"], o["kind"]) for o in ask["params"]["options"]] == [
        ("allow", "allow_once"), ("reject", "reject_once"),
    ]
    assert reply.stop_reason == "end_turn"
    assert reply.text == f"permission: allow\n{seen(1)}"
    assert reply.updates[0] == {"sessionUpdate": "tool_call", **ask["params"]["toolCall"]}
    assert reply.updates[1] == {"sessionUpdate": "tool_call_update",
                                "toolCallId": tool_call_id, "status": "completed"}


async def test_permission_cancelled(echo: EchoProcess) -> None:
    """A cancelled permission outcome is reported, and the tool call fails."""
    _, reply = await permission_round(echo, {"outcome": "cancelled"})
    assert reply.stop_reason == "end_turn"
    assert reply.text == f"permission: cancelled\n{seen(1)}"
    assert reply.updates[1]["status"] == "failed"


async def test_session_cancel_during_permission(echo: EchoProcess) -> None:
    """session/cancel while the permission request is open ends the turn as cancelled."""
    session_id = await echo.new_session()
    request_id = await echo.start_prompt(session_id, "permission")
    await echo.next_request("session/request_permission")
    await echo.send({"jsonrpc": "2.0", "method": "session/cancel",
                     "params": {"sessionId": session_id}})
    reply = await echo.finish_prompt(request_id, session_id)
    assert (reply.stop_reason, reply.text) == ("cancelled", "")


async def test_malformed_lines_skipped(spawn: Spawn) -> None:
    """Lines that are not JSON objects are skipped with a note on stderr."""
    agent = await spawn()
    await agent.send("this is not json")
    await agent.send("[1, 2, 3]")
    assert (await agent.initialize())["protocolVersion"] == 1
    assert "not JSON" in await agent.stderr_line()
    assert "not a JSON object" in await agent.stderr_line()


async def test_unknown_method(echo: EchoProcess) -> None:
    """An unknown request is answered with JSON-RPC error -32601."""
    response = await echo.request("session/frobnicate", {})
    assert response["error"]["code"] == -32601


async def test_imports_stay_light() -> None:
    """The agent imports neither asyncio nor acp nor pydantic, so it starts fast."""
    code = ("import sys, server.agents.echo; "
            "print(sorted({'asyncio', 'acp', 'pydantic'} & set(sys.modules)))")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, cwd=ROOT,
                                                stdout=subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    assert out.decode().strip() == "[]"
