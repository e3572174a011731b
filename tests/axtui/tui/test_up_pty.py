"""``axtui up`` in a real pseudo-terminal, read back through a terminal emulator (pyte)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pexpect
import pyte

COLUMNS, ROWS = 120, 36
CTRL_N, CTRL_Q, ENTER = "\x0e", "\x11", "\r"


class Terminal:
    """A child process on a pty and the screen it draws."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.screen = pyte.Screen(COLUMNS, ROWS)
        self.stream = pyte.Stream(self.screen)
        self.child = pexpect.spawn(sys.executable, args, env=env, encoding="utf-8",
                                   dimensions=(ROWS, COLUMNS), codec_errors="replace")

    @property
    def text(self) -> str:
        """What the screen shows now."""
        return "\n".join(self.screen.display)

    def wait_for(self, needle: str, timeout: float = 40.0) -> None:
        """Read the child's output until ``needle`` is on the screen."""
        deadline = time.monotonic() + timeout
        while needle not in self.text:
            if time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} never appeared; the screen:\n{self.text}")
            try:
                self.stream.feed(self.child.read_nonblocking(65536, timeout=0.2))
            except pexpect.TIMEOUT:
                continue

    def send(self, keys: str) -> None:
        """Type ``keys``."""
        self.child.send(keys)


def test_axtui_up_runs_a_demo_turn_in_a_terminal(tmp_path: Path) -> None:
    """`axtui up` starts its hub and the TUI; a new demo session answers a typed message once
    its write is allowed; once the turn is over Ctrl+Q quits with exit 0 and stops the
    hub."""
    env = {**os.environ, "TERM": "xterm-256color", "COLORTERM": "truecolor"}
    term = Terminal(["-m", "axtui", "up", "--data-dir", str(tmp_path / "data"),
                     "--port", "0"], env)
    try:
        term.wait_for("local hub ws://127.0.0.1:")
        term.send(CTRL_N)
        term.wait_for("New session")
        term.wait_for("demo —")  # the agents have loaded; demo is chosen
        term.send("Terminal check" + ENTER)
        term.wait_for("Terminal check")
        term.wait_for("Write a message")
        term.send("Customer reports CSV export timeout" + ENTER)
        term.wait_for("permission requested")
        term.send("1")
        term.wait_for("Ticket #1 filed.")
        term.wait_for("demo · idle")  # the turn has ended: Ctrl+Q quits at once
        term.send(CTRL_Q)
        term.child.expect(pexpect.EOF, timeout=30)
    finally:
        term.child.close(force=True)
    assert term.child.exitstatus == 0
    assert (tmp_path / "data" / "hub.db").exists()
    log = (tmp_path / "data" / "logs" / "hub.log").read_text()
    assert "axtui hub stopped" in log
