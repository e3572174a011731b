"""The hub under test: ``axtui serve`` as a separate process on a temp data dir.

The benchmark never runs the hub in its own process, so the hub's event loop, threads and
CPU are its own, as in production. :class:`HubUnderTest` starts it on port 0, learns the
port from the "listening on" log line, and calls it ready when ``/healthz`` answers.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

LISTENING = re.compile(r"listening on ws://127\.0\.0\.1:(\d+)/ws")  # the hub's and the floor's
HTTP_LISTENING = re.compile(r"axtui http listening on http://127\.0\.0\.1:(\d+)")
POLL_INTERVAL = 0.001  # seconds between /healthz attempts: the start-time resolution
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def write_config(path: Path, *, durability: str = "full",
                 agents: Mapping[str, Mapping[str, object]] | None = None,
                 **hub: object) -> Path:
    """Write a hub config YAML (loopback, local mode) with ``durability`` and other hub keys.

    ``agents`` becomes the ``agents:`` section (each agent's keys as in the config file);
    without it the hub has its bundled agents.
    """
    lines = ["hub:", "  host: 127.0.0.1", f"  durability: {durability}"]
    lines += [f"  {key}: {value}" for key, value in hub.items()]
    if agents:
        lines.append(f"agents: {json.dumps(agents)}")  # JSON is YAML (flow style)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def echo_agent(**keys: object) -> dict[str, object]:
    """The bundled echo agent as an ``agents:`` entry, with more keys (``idle_timeout``...)."""
    return {"command": [sys.executable, "-m", "server.agents.echo"], **keys}


class HubUnderTest:
    """One ``axtui serve --port 0`` process; a context manager that never leaves it running.

    Everything the hub logs is kept (see :attr:`log`) and shown if it fails to start.
    """

    def __init__(self, data_dir: Path, config: Path | None,
                 argv: list[str] | None = None) -> None:
        self.argv = argv or [sys.executable, "-m", "axtui.cli", "serve", "--port", "0",
                             "--http-port", "0", "--data-dir", str(data_dir),
                             "--config", str(config)]
        self.proc: subprocess.Popen[str] | None = None
        self.port: int | None = None
        self.http_port: int | None = None  # the HTTP API's (http.md), if it logged one
        self.data_dir = data_dir
        self.startup_seconds = 0.0
        self.listening_seconds = 0.0  # from launch to the "listening on" line
        self._started = 0.0
        self._lines: list[str] = []
        self._listening = threading.Event()
        self._reader: threading.Thread | None = None

    @classmethod
    def floor(cls, data_dir: Path, durability: str = "full") -> HubUnderTest:
        """The floor program (:mod:`bench.floor`) instead of the hub, started the same way."""
        return cls(data_dir, None, [sys.executable, "-m", "bench.floor", "--data-dir",
                                    str(data_dir), "--durability", durability])

    def __enter__(self) -> HubUnderTest:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The websocket URL."""
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http_url(self) -> str:
        """The HTTP API's base URL, ``http://127.0.0.1:PORT``."""
        assert self.http_port is not None, "the hub logged no HTTP API port"
        return f"http://127.0.0.1:{self.http_port}"

    def local_token(self) -> str:
        """Local mode's secret (``data_dir/local-token``): the Bearer token of the HTTP API."""
        return (self.data_dir / "local-token").read_text(encoding="ascii").strip()

    @property
    def pid(self) -> int:
        """The hub's process id."""
        assert self.proc is not None
        return self.proc.pid

    @property
    def log(self) -> str:
        """What the hub wrote to stderr so far."""
        return "".join(self._lines)

    def start(self, timeout: float = 60.0) -> float:
        """Launch the process and wait for ``/healthz``; the seconds that took."""
        assert self.proc is None, "a HubUnderTest runs once; make another to restart"
        started = self._started = time.perf_counter()
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        deadline = started + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                self._reader.join(5)
                raise RuntimeError(f"the hub exited with {self.proc.returncode} before it was"
                                   f" ready:\n{self.log}")
            if self._listening.wait(POLL_INTERVAL) and self._healthy():
                self.startup_seconds = time.perf_counter() - started
                return self.startup_seconds
            time.sleep(POLL_INTERVAL)
        self.kill()
        raise RuntimeError(f"the hub was not ready within {timeout:g} s:\n{self.log}")

    def since_launch(self) -> float:
        """Seconds since the process was launched."""
        return time.perf_counter() - self._started

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self._lines.append(line)
            if self.http_port is None and (match := HTTP_LISTENING.search(line)):
                self.http_port = int(match[1])
            if self.port is None and (match := LISTENING.search(line)):
                self.listening_seconds = time.perf_counter() - self._started
                self.port = int(match[1])
                self._listening.set()

    def _healthy(self) -> bool:
        try:
            return self.get("/healthz", timeout=1.0)[0] == 200
        except OSError:
            return False

    def get(self, path: str, timeout: float = 10.0) -> tuple[int, str]:
        """A plain HTTP GET on the hub's port: status and body."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read().decode()
        finally:
            conn.close()

    def metrics(self) -> dict[str, float]:
        """The hub's ``/metrics`` samples by name (histogram buckets left out)."""
        status, body = self.get("/metrics")
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        samples = {}
        for line in body.splitlines():
            if line and not line.startswith("#") and "{" not in line:
                name, value = line.split()
                samples[name] = float(value)
        return samples

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the hub process has used so far."""
        return process_cpu_seconds(self.pid)

    def children_cpu_seconds(self) -> float:
        """CPU time (user + system) of the hub's children that ended and were reaped: its
        agents, when it runs them."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[13]) + int(fields[14])) / CLOCK_TICKS

    def status(self) -> dict[str, str]:
        """The hub's ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``, ``Threads``...) by field."""
        out = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            out[name] = value.strip()
        return out

    def open_fds(self) -> int:
        """How many file descriptors the hub has open."""
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def descendants(self) -> list[tuple[int, str]]:
        """The hub's child processes and theirs (pid, state letter), zombies included.

        Agents started through ``setpriv`` keep its pid (it execs the agent), so they are
        the hub's children like any other.
        """
        parents: dict[int, list[tuple[int, str]]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                after_comm = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # ended meanwhile
            parents.setdefault(int(after_comm[1]), []).append((int(entry), after_comm[0]))
        found, todo = [], [self.pid]
        while todo:
            for child in parents.get(todo.pop(), []):
                found.append(child)
                todo.append(child[0])
        return found

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM and wait for a clean exit; its exit code (``None`` if it had to be killed)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                return None
        self._join_reader()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the hub, as a crash would, and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._join_reader()

    def _join_reader(self) -> None:
        if self._reader is not None:
            self._reader.join(5)


def status_kib(value: str) -> int:
    """A ``/proc/<pid>/status`` size such as ``"123456 kB"`` in KiB."""
    number, _, unit = value.partition(" ")
    assert unit == "kB", value
    return int(number)


def process_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def process_state(pid: int) -> str | None:
    """The state letter of a process (``R``, ``S``, ``T`` when stopped...); None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None
