"""A watchdog that kills agents' process groups when the hub dies, even by SIGKILL.

An agent runs in a process group of its own, and the hub kills that whole group when the
agent exits or is stopped (:mod:`server.acp`). A hub killed with SIGKILL can do nothing;
the parent-death signal (``setpriv --pdeathsig``) kills the agent itself, but not what it
started, since a parent-death signal is not inherited. So the hub starts one small
watchdog process (the first time it starts an agent) and tells it, over a pipe, which
groups are alive. When the hub dies, the kernel closes the pipe; the watchdog reads the
end of it and sends SIGKILL to every group it still knows, then exits. On a clean stop the
hub has forgotten every group by then, so the watchdog kills nothing.

A process that leaves its group (``setsid``) escapes this; the sandbox's pid namespace
(where it is on) does not let it.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

log = logging.getLogger("axtui.acp")

# Standard library only, and ``-I -S``: it starts in about 10 ms.
WATCHDOG = """\
import os, signal, sys
groups = set()
for line in sys.stdin.buffer:
    sign, pgid = line[:1], int(line[1:])
    (groups.add if sign == b"+" else groups.discard)(pgid)
for pgid in groups:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
"""


class GroupWatchdog:
    """The hub's one watchdog process: :meth:`watch` a group when an agent starts,
    :meth:`forget` it once the group is dead."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._groups: set[int] = set()

    def watch(self, pgid: int) -> None:
        """Kill group ``pgid`` if the hub dies before :meth:`forget`."""
        self._groups.add(pgid)
        self._send(b"+%d\n" % pgid)

    def forget(self, pgid: int) -> None:
        """Group ``pgid`` is dead (its id may be reused): no longer kill it."""
        if pgid in self._groups:
            self._groups.discard(pgid)
            self._send(b"-%d\n" % pgid)

    def _send(self, line: bytes) -> None:
        for _ in range(2):
            if self._proc is None or self._proc.poll() is not None:
                if not self._start():
                    return
                if line.startswith(b"+"):
                    return  # _start sent every group, this one included
            assert self._proc is not None and self._proc.stdin is not None
            try:
                os.write(self._proc.stdin.fileno(), line)
                return
            except OSError:  # it died (someone killed it): start another one
                self._proc = None

    def _start(self) -> bool:
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", WATCHDOG], stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True,  # no terminal's Ctrl+C reaches it
            )
            assert self._proc.stdin is not None
            if self._groups:
                os.write(self._proc.stdin.fileno(),
                         b"".join(b"+%d\n" % g for g in self._groups))
        except OSError as exc:
            log.warning("cannot start the agents' watchdog (%s): a hub killed with SIGKILL "
                        "may leave processes that agents started behind", exc)
            self._proc = None
            return False
        return True


WATCHDOG_PROCESS = GroupWatchdog()
