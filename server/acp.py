"""The client side of the Agent Client Protocol: JSON-RPC 2.0 over an agent's stdio.

A small layer of our own rather than the ACP SDK: ``import acp`` costs about a second and
pydantic's memory in the hub, and its per-message tasks would make ordering our problem.
Here one reader task reads the agent's stdout line by line and hands notifications to a
callback *synchronously, in the order the agent sent them*; the agent's requests (which
may wait for a person, like a permission) each run as a task. The agent's stderr goes
straight to a log file, so the operating system drains it, whatever the agent writes.
Request ids, pending requests and sorting what came in are :mod:`server.jsonrpc`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from server.jsonrpc import JsonRpcPeer, Notification, Request
from server.tasks import TaskSet

log = logging.getLogger("axtui.acp")

MAX_LINE = 10 * 1024 * 1024  # the longest line an agent may send
SETPRIV = shutil.which("setpriv")
STDERR_TAIL_LINES = 20

Notify = Callable[[str, dict[str, Any]], None]
Serve = Callable[[str, dict[str, Any]], Awaitable[Any]]


class AgentError(Exception):
    """An error answer from the agent, or a failure to talk to it."""

    def __init__(self, message: str, code: int | None = None, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.data = data


class AgentExited(AgentError):
    """The agent process is gone."""


def _agent_error(err: dict[str, Any]) -> AgentError:
    return AgentError(str(err.get("message", "error")), err.get("code"), err.get("data"))


class Child:
    """A process started by :func:`start_child`: its pid, its pipes as asyncio streams, and
    its exit, as far as :class:`AgentProcess` needs them (like ``asyncio.subprocess.Process``).
    """

    def __init__(self, popen: subprocess.Popen[bytes], stdin: asyncio.StreamWriter,
                 stdout: asyncio.StreamReader, exited: asyncio.Future[int]) -> None:
        self.popen = popen
        self.stdin: asyncio.StreamWriter | None = stdin
        self.stdout: asyncio.StreamReader | None = stdout
        self._exited = exited

    @property
    def pid(self) -> int:
        """The process id."""
        return self.popen.pid

    async def wait(self) -> int:
        """Wait for the process to exit; its exit code (negative: the signal)."""
        return await asyncio.shield(self._exited)


class _PipeEnd:
    """A pipe's descriptor for a uvloop transport, which closes it itself (libuv does).

    A file object here would close it a second time when collected: with ``Popen``'s own
    pipe files a descriptor was closed twice, the second time after its number had been
    reused for a session's database file ("disk I/O error").
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def fileno(self) -> int:
        """The descriptor."""
        return self.fd

    def close(self) -> None:
        """Nothing: the transport has closed the descriptor."""


async def start_child(argv: Sequence[str], *, env: Mapping[str, str], cwd: str | None,
                      stderr: IO[bytes]) -> Child | asyncio.subprocess.Process:
    """Start ``argv`` in a session of its own, stdin and stdout piped.

    On uvloop, ``asyncio.create_subprocess_exec`` forks the whole hub: with a thousand
    sessions open (a big process with a thousand threads) copying its page tables blocked
    the event loop, and so every client, for 10-50 ms per agent start. ``subprocess.Popen``
    uses vfork on Linux, which copies nothing (0.5 ms), so on uvloop the child is started
    that way, its pipes attached to the loop and its exit watched through a pidfd (asyncio's
    own loop already starts children with ``Popen``).
    """
    loop = asyncio.get_running_loop()
    if type(loop).__module__.partition(".")[0] != "uvloop" or not hasattr(os, "pidfd_open"):
        return await _start_with_asyncio(argv, env=env, cwd=cwd, stderr=stderr)
    child_in, hub_out = os.pipe()
    hub_in, child_out = os.pipe()
    try:
        popen = subprocess.Popen(
            argv, stdin=child_in, stdout=child_out, stderr=stderr, env=dict(env), cwd=cwd,
            start_new_session=True,  # its own group: signals reach its children too
        )
    except BaseException:
        os.close(hub_out)
        os.close(hub_in)
        raise
    finally:
        os.close(child_in)
        os.close(child_out)
    try:
        pidfd = os.pidfd_open(popen.pid)
    except OSError:  # a kernel older than 5.3: asyncio's way, fork and all
        popen.kill()
        popen.wait()
        os.close(hub_out)
        os.close(hub_in)
        return await _start_with_asyncio(argv, env=env, cwd=cwd, stderr=stderr)
    exited: asyncio.Future[int] = loop.create_future()

    def reap() -> None:
        code = popen.poll()
        if code is None:
            return
        loop.remove_reader(pidfd)
        os.close(pidfd)
        if not exited.done():
            exited.set_result(code)

    loop.add_reader(pidfd, reap)
    stdout = asyncio.StreamReader(limit=MAX_LINE)
    try:
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdout),
                                     _PipeEnd(hub_in))
        transport, protocol = await loop.connect_write_pipe(
            lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader()), _PipeEnd(hub_out)
        )
    except BaseException:  # (the descriptors may be a transport's by now: not closed here)
        popen.kill()
        raise
    return Child(popen, asyncio.StreamWriter(transport, protocol, None, loop), stdout, exited)


async def _start_with_asyncio(argv: Sequence[str], *, env: Mapping[str, str], cwd: str | None,
                              stderr: IO[bytes]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=stderr, env=dict(env), cwd=cwd, limit=MAX_LINE, start_new_session=True,
    )


class AgentProcess:
    """An agent subprocess and the JSON-RPC conversation with it."""

    def __init__(self, proc: Child | asyncio.subprocess.Process, stderr_path: Path,
                 stderr_start: int,
                 on_notification: Notify, on_request: Serve) -> None:
        self.proc = proc
        self.stderr_path = stderr_path
        self.stderr_start = stderr_start  # where this run's stderr begins in the log
        self._on_notification = on_notification
        self._on_request = on_request
        self._peer = JsonRpcPeer(self._write, _agent_error)
        self._tasks = TaskSet(log, f"agent {proc.pid}")
        self._reader = asyncio.create_task(self._read(), name=f"acp reader {proc.pid}")
        self.exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    @property
    def pid(self) -> int:
        """The agent's process id."""
        return self.proc.pid

    @classmethod
    async def spawn(
        cls,
        command: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: str | None,
        stderr_path: Path,
        on_notification: Notify,
        on_request: Serve,
    ) -> AgentProcess:
        """Start the agent. Raises ``OSError`` if the command cannot be run.

        Where util-linux's ``setpriv`` is available the agent is started through it with a
        parent-death signal, so that even a hub killed with SIGKILL leaves no agent behind.
        """
        program = shutil.which(command[0], path=env.get("PATH")) if command else None
        if program is None:
            raise FileNotFoundError(2, "no such program", command[0] if command else "")
        argv = [program, *command[1:]]
        if SETPRIV is not None:
            argv = [SETPRIV, "--pdeathsig", "KILL", "--", *argv]
        stderr_path.parent.mkdir(parents=True, exist_ok=True)
        with open(stderr_path, "ab") as stderr:
            start = stderr.tell()
            proc = await start_child(argv, env=env, cwd=cwd, stderr=stderr)
        return cls(proc, stderr_path, start, on_notification, on_request)

    # --- requests to the agent -------------------------------------------------------------

    async def request(self, method: str, params: dict[str, Any]) -> Any:
        """Call a method of the agent and return its result."""
        return await self._peer.request(method, params)

    async def notify(self, method: str, params: dict[str, Any]) -> None:
        """Send a notification to the agent."""
        await self._peer.notify(method, params)

    async def _write(self, frame: bytes) -> None:
        stdin = self.proc.stdin
        if stdin is None or stdin.is_closing() or self.exited.done():
            raise AgentExited("the agent is not running")
        try:
            stdin.write(frame + b"\n")
            await stdin.drain()
        except (ConnectionError, BrokenPipeError) as exc:
            raise AgentExited(f"the agent closed its input: {exc}") from None

    # --- reading -----------------------------------------------------------------------------

    async def _read(self) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        reason = "the agent closed its output"
        try:
            while True:
                try:
                    line = await stdout.readline()
                except ValueError:  # asyncio's way of saying the line passed MAX_LINE
                    reason = f"the agent sent a line longer than {MAX_LINE} bytes"
                    self.kill()
                    break
                if not line:
                    break
                self._dispatch(line)
        finally:
            code = await self.proc.wait()
            self._peer.fail_all(AgentExited(f"{reason} (exit code {code})"))
            if not self.exited.done():
                self.exited.set_result(code)

    def _dispatch(self, line: bytes) -> None:
        message = self._peer.receive(line)
        if isinstance(message, Notification):
            try:
                self._on_notification(message.method, message.params)
            except Exception:
                log.exception("handling %s from agent %d failed", message.method, self.pid)
        elif isinstance(message, Request):
            self._tasks.spawn(self._serve(message), name=message.method)

    async def _serve(self, request: Request) -> None:
        try:
            result = await self._on_request(request.method, request.params)
        except AgentError as exc:
            code, message = exc.code or -32603, str(exc)
        except Exception as exc:
            log.exception("serving %s for agent %d failed", request.method, self.pid)
            code, message = -32603, f"the hub failed: {exc}"
        else:
            with contextlib.suppress(AgentExited):
                await self._peer.respond(request.id, result)
            return
        with contextlib.suppress(AgentExited):
            await self._peer.respond_error(request.id, code, message)

    # --- stopping ----------------------------------------------------------------------------

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the agent's process group."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """Kill the agent and everything it started, at once."""
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGKILL)

    async def stop(self, grace: float = 2.0) -> int:
        """Close its input (the polite way), then SIGTERM, then SIGKILL; returns the code."""
        self.signal(signal.SIGCONT)  # a frozen agent cannot exit
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                return await asyncio.wait_for(asyncio.shield(self.exited), grace)
            except TimeoutError:
                self.signal(sig)
        return await self.exited

    def stderr_tail(self, lines: int = STDERR_TAIL_LINES) -> str:
        """The last lines the agent wrote to stderr (for error messages)."""
        try:
            with open(self.stderr_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(self.stderr_start, f.tell() - 64 * 1024))
                tail = deque(f.read().decode(errors="replace").splitlines(), maxlen=lines)
        except OSError:
            return ""
        return "\n".join(tail)
