"""``axtui serve`` as a child process, for tests that kill, signal and restart the hub."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

# The console script's entry point, run with this interpreter so it works inside a venv
# (axtui/cli.py has no ``__main__`` block, so ``python -m axtui.cli`` would do nothing).
AXTUI = (sys.executable, "-c", "from axtui.cli import main; main()")
LISTENING = re.compile(r"listening on (ws://[^\s/]+/ws)")


def run_axtui(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run an ``axtui`` command to completion; returns its exit code and output."""
    return subprocess.run([*AXTUI, *args], capture_output=True, text=True, timeout=timeout,
                          check=False)


class HubProcess:
    """One ``axtui serve --port 0`` process on ``data_dir``.

    :meth:`start` launches it and waits until ``/healthz`` answers; ``url`` is then the
    websocket URL parsed from the "listening on" log line. Everything the hub writes to
    stderr is kept in :attr:`stderr`. Use as a context manager so the process never
    outlives the test.
    """

    def __init__(self, data_dir: Path, *extra: str, config: Path | None = None) -> None:
        self.data_dir = data_dir
        self.argv = [*AXTUI, "serve", "--port", "0", "--http-port", "0", "--data-dir",
                     str(data_dir), *extra]
        if config is not None:
            self.argv += ["--config", str(config)]
        self.proc: subprocess.Popen[str] | None = None
        self.url: str | None = None
        self.startup_seconds: float | None = None
        self._started_at = 0.0
        self._lines: list[str] = []
        self._listening = threading.Event()
        self._reader: threading.Thread | None = None

    def __enter__(self) -> HubProcess:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # --- starting --------------------------------------------------------------------------

    def launch(self) -> None:
        """Start the process without waiting for it."""
        assert self.proc is None, "a HubProcess runs once; make a new one to restart"
        self._started_at = time.perf_counter()
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self._lines.append(line)
            match = LISTENING.search(line)
            if match and self.url is None:
                self.url = match[1]
                self._listening.set()

    def start(self, timeout: float = 15.0) -> HubProcess:
        """Launch and wait until ``/healthz`` answers 200; fails if the process exits first.

        ``startup_seconds`` is the time from launching the process to that first 200.
        """
        self.launch()
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._join_reader()
                raise AssertionError(
                    f"the hub exited with {self.proc.returncode} before it was ready:\n"
                    f"{self.stderr}"
                )
            if self._listening.wait(0.005):
                try:
                    status, _ = self.get("/healthz", timeout=1.0)
                except OSError:
                    status = 0
                if status == 200:
                    self.startup_seconds = time.perf_counter() - self._started_at
                    return self
                time.sleep(0.005)
        self.kill()
        raise AssertionError(f"the hub was not ready within {timeout} s:\n{self.stderr}")

    # --- talking to it ---------------------------------------------------------------------

    @property
    def http_base(self) -> str:
        """``http://host:port`` of the running hub."""
        assert self.url is not None, "the hub has not said where it listens"
        return "http" + self.url[2:].removesuffix("/ws")

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        """A plain HTTP GET on the hub's port: status and body."""
        try:
            with urllib.request.urlopen(self.http_base + path, timeout=timeout) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    @property
    def stderr(self) -> str:
        """What the process wrote to stderr so far."""
        return "".join(self._lines)

    @property
    def pid(self) -> int:
        """The process id."""
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.proc is not None and self.proc.poll() is None

    # --- stopping --------------------------------------------------------------------------

    def send_signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the hub process."""
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL the hub and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        self.wait(10.0)

    def wait(self, timeout: float = 15.0) -> int:
        """Wait for the process to exit; its exit code (the stderr reader is drained too)."""
        assert self.proc is not None
        code = self.proc.wait(timeout)
        self._join_reader()
        return code

    def _join_reader(self) -> None:
        if self._reader is not None:
            self._reader.join(5.0)

    def stop(self) -> None:
        """Make sure the process is gone: SIGTERM, then SIGKILL if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            if self.proc is not None:
                self._join_reader()
            return
        self.proc.terminate()
        try:
            self.wait(10.0)
        except subprocess.TimeoutExpired:
            self.kill()


def process_state(pid: int) -> str:
    """The one-letter state of a process (R, S, T for stopped, Z...), or '' when gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1].split()[0]
    except FileNotFoundError:
        return ""


def pid_alive(pid: int) -> bool:
    """Whether a live (not zombie) process has this pid."""
    return process_state(pid) not in ("", "Z")
