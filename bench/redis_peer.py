"""The Redis Streams peer: Debian's ``redis-server``, started (and installed) by the bench.

What a user would build instead of the hub: an append-only stream per session with
``appendonly yes`` and ``appendfsync always`` (each write is fsynced before the client is
answered, as with the hub's ``durability: full``), publishers calling ``XADD`` and
subscribers blocking in ``XREAD BLOCK``, all through redis-py's asyncio client.

:class:`RedisServer` runs one ``redis-server`` on a free port in a temp dir (no RDB
snapshots: ``--save ''``) and stops it at the end. When ``redis-server`` is missing and
the bench runs as root it is installed with ``apt-get install -y redis-server`` (after one
``apt-get update`` if apt cannot find it); otherwise the peer is skipped with a message.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

INSTALL_HINT = "pip install -e '.[bench]'"


class PeerUnavailable(RuntimeError):
    """A peer cannot run here; the message says what to do."""


def redis_py_version() -> str:
    """redis-py's version; :class:`PeerUnavailable` (with how to install it) if missing."""
    try:
        import redis
    except ImportError:
        raise PeerUnavailable(f"redis-py is not installed: {INSTALL_HINT}") from None
    version: str = redis.__version__
    if int(version.split(".")[0]) < 5:
        raise PeerUnavailable(f"redis-py {version} is too old (5 or newer): {INSTALL_HINT}")
    return version


def redis_server_binary(install: bool = True) -> str:
    """The path of ``redis-server``, installing Debian's package first if allowed."""
    found = shutil.which("redis-server")
    if found or not install:
        if found:
            return found
        raise PeerUnavailable("redis-server is not installed (apt-get install redis-server)")
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise PeerUnavailable("redis-server is not installed and the bench cannot install it"
                              " (needs root and apt-get): apt-get install redis-server")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install_cmd = ["apt-get", "install", "-y", "-q", "redis-server"]
    if subprocess.run(install_cmd, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        done = subprocess.run(install_cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise PeerUnavailable(f"apt-get install redis-server failed: {done.stderr[-500:]}")
    found = shutil.which("redis-server")
    if not found:
        raise PeerUnavailable("redis-server was installed but is not on PATH")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    """One ``redis-server`` with ``appendfsync always`` on a free port; a context manager."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.version = ""

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self, timeout: float = 20.0) -> None:
        """Launch it and wait until it answers PING."""
        binary = redis_server_binary()
        self.version = subprocess.run([binary, "--version"], capture_output=True,
                                      text=True).stdout.strip()
        self.dir.mkdir(parents=True, exist_ok=True)
        for _ in range(5):  # a free port may be taken between the probe and the bind
            self.port = _free_port()
            if self._launch(binary, timeout):
                return
        log = (self.dir / "redis.log")
        raise PeerUnavailable("redis-server did not start: "
                              + (log.read_text()[-500:] if log.exists() else "no log"))

    def restart(self, timeout: float = 20.0) -> None:
        """Start it again after :meth:`stop` or :meth:`kill`, on the same port and dir (so it
        loads its AOF): a Redis restart as its clients see it."""
        assert self.proc is None and self.port, "start it, then stop it, first"
        if not self._launch(redis_server_binary(install=False), timeout):
            raise PeerUnavailable(f"redis-server did not start again on port {self.port}")

    def _launch(self, binary: str, timeout: float) -> bool:
        """Run it on ``self.port``; whether it answered PING within ``timeout`` s."""
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "",
             "--daemonize", "no", "--protected-mode", "no", "--loglevel", "warning",
             "--logfile", str(self.dir / "redis.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if self._ping():
                return True
            time.sleep(0.01)
        self.stop()
        return False

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL it (a crash: only what the AOF holds survives) and reap it."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        """SIGTERM and wait (SIGKILL after 10 s)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
