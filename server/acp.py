"""The client side of the Agent Client Protocol: JSON-RPC 2.0 over an agent's stdio.

A small layer of our own rather than the ACP SDK: ``import acp`` costs about a second and
pydantic's memory in the hub, and its per-message tasks would make ordering our problem.
Here one reader task reads the agent's stdout line by line and hands notifications to a
callback *synchronously, in the order the agent sent them*; the agent's requests (which
may wait for a person, like a permission) each run as a task. The agent's stderr goes
straight to a log file, so the operating system drains it, whatever the agent writes.
The agent's death is seen from the process (a pidfd), not from the end of its output, and
kills its whole process group: nothing it started outlives it, and nothing that holds its
pipes hides its death.
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
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from server.jsonrpc import JsonRpcPeer, Notification, Request
from server.reaper import WATCHDOG_PROCESS
from server.redact import redact
from server.tasks import TaskSet

log = logging.getLogger("axtui.acp")

MAX_LINE = 10 * 1024 * 1024  # the longest line an agent may send
SETPRIV = shutil.which("setpriv")
STDERR_TAIL_LINES = 20
EXIT_DRAIN = 1.0  # seconds without a line, after the agent died, before its output is cut

Notify = Callable[[str, dict[str, Any]], None]
Serve = Callable[[str, dict[str, Any]], Awaitable[Any]]
Room = Callable[[], Awaitable[None] | None]  # None: go on reading; else wait for it first


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
    its exit (``exited``: the exit code, negative for a signal), seen from the process
    itself (a pidfd), never from its output: whatever holds its pipes, its death is seen.
    """

    def __init__(self, pid: int, stdin: asyncio.StreamWriter, stdout: asyncio.StreamReader,
                 exited: asyncio.Future[int]) -> None:
        self.pid = pid
        self.stdin = stdin
        self.stdout = stdout
        self.exited = exited


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


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


async def start_child(argv: Sequence[str], *, env: Mapping[str, str], cwd: str | None,
                      stderr: IO[bytes]) -> Child:
    """Start ``argv`` in a process group (and session) of its own, stdin and stdout piped.

    ``asyncio.create_subprocess_exec`` forks the whole hub on uvloop: with a thousand
    sessions open (a big process with a thousand threads) copying its page tables blocked
    the event loop, and so every client, for 10-50 ms per agent start. ``subprocess.Popen``
    uses vfork on Linux, which copies nothing (0.5 ms), so the child is started that way,
    its pipes attached to the loop and its exit watched through a pidfd. When it exits, its
    whole group is killed before it is reaped (while the group's id is still its own), so
    nothing it started outlives it; the watchdog (:mod:`server.reaper`) does the same if
    the hub dies first.
    """
    loop = asyncio.get_running_loop()
    if not hasattr(os, "pidfd_open"):
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
    WATCHDOG_PROCESS.watch(popen.pid)
    try:
        pidfd = os.pidfd_open(popen.pid)
    except OSError:  # a kernel older than 5.3: asyncio's way, fork and all
        _kill_group(popen.pid)
        popen.wait()
        WATCHDOG_PROCESS.forget(popen.pid)
        os.close(hub_out)
        os.close(hub_in)
        return await _start_with_asyncio(argv, env=env, cwd=cwd, stderr=stderr)
    exited: asyncio.Future[int] = loop.create_future()

    def reap() -> None:
        _kill_group(popen.pid)  # the zombie still holds the group's id: no one else has it
        code = popen.poll()
        if code is None:
            return
        WATCHDOG_PROCESS.forget(popen.pid)
        loop.remove_reader(pidfd)
        os.close(pidfd)
        if not exited.done():
            exited.set_result(code)

    loop.add_reader(pidfd, reap)
    stdout = asyncio.StreamReader(limit=MAX_LINE)
    uv = type(loop).__module__.partition(".")[0] == "uvloop"
    # asyncio's transports close the file they are given; uvloop's close the descriptor.
    read_end: Any = _PipeEnd(hub_in) if uv else os.fdopen(hub_in, "rb", buffering=0)
    write_end: Any = _PipeEnd(hub_out) if uv else os.fdopen(hub_out, "wb", buffering=0)
    try:
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdout), read_end)
        transport, protocol = await loop.connect_write_pipe(
            lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader()), write_end
        )
    except BaseException:  # (the descriptors may be a transport's by now: not closed here)
        _kill_group(popen.pid)
        raise
    return Child(popen.pid, asyncio.StreamWriter(transport, protocol, None, loop), stdout,
                 exited)


async def _start_with_asyncio(argv: Sequence[str], *, env: Mapping[str, str], cwd: str | None,
                              stderr: IO[bytes]) -> Child:
    """Where there is no pidfd: asyncio's own child watcher, the group killed after."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=stderr, env=dict(env), cwd=cwd, limit=MAX_LINE, start_new_session=True,
    )
    WATCHDOG_PROCESS.watch(proc.pid)
    exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def done(task: asyncio.Task[int]) -> None:
        _kill_group(proc.pid)
        WATCHDOG_PROCESS.forget(proc.pid)
        exited.set_result(task.result())

    asyncio.create_task(proc.wait()).add_done_callback(done)
    assert proc.stdin is not None and proc.stdout is not None
    return Child(proc.pid, proc.stdin, proc.stdout, exited)


def describe_exit(code: int) -> str:
    """How a process ended, for messages: ``exited with code 3``, ``was killed by SIGKILL``."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with code {code}"


@dataclass(frozen=True, slots=True)
class AgentUser:
    """The unprivileged user an agent runs as when the hub runs as root."""

    name: str
    uid: int
    gid: int


class AgentProcess:
    """An agent subprocess and the JSON-RPC conversation with it.

    ``exited`` is resolved (with the exit code) once the process is gone and what it wrote
    before is read: at most ``EXIT_DRAIN`` seconds without a new line after its death,
    since something it left behind may hold its output open. ``room``, if given, is asked
    after each line: while it returns an awaitable (its session has too many events
    waiting), the agent's output is not read, so a flooding agent is slowed down.
    """

    def __init__(self, proc: Child, stderr_path: Path, stderr_start: int,
                 on_notification: Notify, on_request: Serve, *, room: Room | None = None,
                 secrets: Iterable[str] = ()) -> None:
        self.proc = proc
        self.stderr_path = stderr_path
        self.stderr_start = stderr_start  # where this run's stderr begins in the log
        self.secrets = tuple(secrets)  # masked in what is shown of its stderr
        self._on_notification = on_notification
        self._on_request = on_request
        self._room = room
        self._peer = JsonRpcPeer(self._write, _agent_error)
        self._tasks = TaskSet(log, f"agent {proc.pid}")
        self._lines = 0  # lines read: progress, for the drain after its death
        self._paused = False
        self._cut: str | None = None  # why the hub ended it, if it did for what it sent
        self.exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read(), name=f"acp reader {proc.pid}")
        self._watcher = asyncio.create_task(self._watch(), name=f"acp exit {proc.pid}")

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
        user: AgentUser | None = None,
        room: Room | None = None,
        secrets: Iterable[str] = (),
    ) -> AgentProcess:
        """Start the agent. Raises ``OSError`` if the command cannot be run.

        Where util-linux's ``setpriv`` is available the agent is started through it with a
        parent-death signal, so that even a hub killed with SIGKILL leaves no agent behind;
        with a ``user``, ``setpriv`` also switches to that user (and is then required).
        """
        program = shutil.which(command[0], path=env.get("PATH")) if command else None
        if program is None:
            raise FileNotFoundError(2, "no such program", command[0] if command else "")
        argv = [program, *command[1:]]
        if user is not None:
            if SETPRIV is None:
                raise FileNotFoundError(
                    2, f"setpriv (util-linux) is needed to run agents as {user.name}", "setpriv")
            argv = [SETPRIV, f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups",
                    "--pdeathsig", "KILL", "--", *argv]
        elif SETPRIV is not None:
            argv = [SETPRIV, "--pdeathsig", "KILL", "--", *argv]
        stderr_path.parent.mkdir(parents=True, exist_ok=True)
        # Mode 0600: what an agent writes to stderr (keys, say) is for the hub's user only.
        fd = os.open(stderr_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        with open(fd, "ab") as stderr:
            start = stderr.tell()
            proc = await start_child(argv, env=env, cwd=cwd, stderr=stderr)
        return cls(proc, stderr_path, start, on_notification, on_request, room=room,
                   secrets=secrets)

    # --- requests to the agent -------------------------------------------------------------

    async def request(self, method: str, params: dict[str, Any]) -> Any:
        """Call a method of the agent and return its result."""
        return await self._peer.request(method, params)

    async def notify(self, method: str, params: dict[str, Any]) -> None:
        """Send a notification to the agent."""
        await self._peer.notify(method, params)

    async def _write(self, frame: bytes) -> None:
        stdin = self.proc.stdin
        if stdin.is_closing() or self.proc.exited.done():
            raise AgentExited("the agent is not running")
        try:
            stdin.write(frame + b"\n")
            await stdin.drain()
        except (ConnectionError, BrokenPipeError) as exc:
            raise AgentExited(f"the agent closed its input: {exc}") from None

    # --- reading -----------------------------------------------------------------------------

    async def _read(self) -> None:
        stdout = self.proc.stdout
        try:
            while True:
                try:
                    line = await stdout.readline()
                except ValueError:  # asyncio's way of saying the line passed MAX_LINE
                    self._cut = f"the agent sent a line longer than {MAX_LINE} bytes"
                    log.warning("agent %d: %s; killed", self.pid, self._cut)
                    break
                if not line:
                    break
                self._lines += 1
                self._dispatch(line)
                wait = self._room() if self._room is not None else None
                if wait is not None:
                    self._paused = True
                    try:
                        await wait
                    finally:
                        self._paused = False
        finally:
            # An agent that cannot be heard any more is of no use: it is ended.
            if not self.proc.exited.done():
                self.kill()

    async def _watch(self) -> None:
        code = await self.proc.exited
        # What it wrote before it died is read first (its group is dead: the end of its
        # output comes at once), unless something outside its group holds its output open.
        while not self._reader.done():
            lines = self._lines
            await asyncio.wait([self._reader], timeout=EXIT_DRAIN)
            if not self._reader.done() and lines == self._lines and not self._paused:
                self._reader.cancel()
                break
        ended = f"the agent {describe_exit(code)}"
        self._peer.fail_all(AgentExited(f"{self._cut} ({ended})" if self._cut else ended))
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
        """Send ``sig`` to the agent's process group (not once it is gone: the group was
        killed then, and its id may be someone else's by now)."""
        if self.proc.exited.done():
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """Kill the agent and everything it started, at once."""
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGKILL)

    async def stop(self, grace: float = 2.0) -> int | None:
        """Close its input (the polite way), then SIGTERM, then SIGKILL, each ``grace``
        seconds apart; returns the exit code, or ``None`` if it has not exited ``grace``
        seconds after SIGKILL either (never waits longer)."""
        self.signal(signal.SIGCONT)  # a frozen agent cannot exit
        self.proc.stdin.close()
        for sig in (signal.SIGTERM, signal.SIGKILL, None):
            try:
                return await asyncio.wait_for(asyncio.shield(self.exited), grace)
            except TimeoutError:
                if sig is not None:
                    self.signal(sig)
        log.warning("agent %d has not ended %g s after SIGKILL; no longer waiting for it",
                    self.pid, grace)
        return None

    def stderr_tail(self, lines: int = STDERR_TAIL_LINES) -> str:
        """The last lines the agent wrote to stderr (for error messages), with its secrets
        and anything shaped like a credential masked."""
        try:
            with open(self.stderr_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(self.stderr_start, f.tell() - 64 * 1024))
                tail = deque(f.read().decode(errors="replace").splitlines(), maxlen=lines)
        except OSError:
            return ""
        return redact("\n".join(tail), self.secrets)
