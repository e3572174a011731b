"""A sandbox for each agent process: bubblewrap (``bwrap``), where the machine allows it.

An agent runs as the hub's user, so without a sandbox it could read everything the hub
can: the hub's ``/proc/<pid>/environ``, the config file with every token (its path is on
the hub's command line), every session's log in the data dir. Inside the sandbox it sees:

- the whole system read-only (``--ro-bind / /``), so programs, Python and its venv work;
- its own workspace read-write (``--bind``), and a private ``/tmp`` (``--tmpfs``);
- its own pid namespace (``--unshare-pid`` with a fresh ``--proc``): no other process,
  and everything it starts dies when it ends (the namespace's init is bwrap's);
- nothing of the data dir (a tmpfs over it) nor of the config file (``/dev/null`` bound
  over it, without device access, so opening it is refused): so no other workspace, no
  session file, no log, no local secret;
- the network, unless its ``sandbox: {network: false}`` (``--unshare-net``); the hub's
  websocket is then reached through the hub's unix socket, bound in at :data:`SOCKET_INSIDE`.

Mounts are applied shallowest first, so a deeper path wins: a workspace inside the data
dir is visible, a data dir inside a visible directory is hidden (and a path both hidden
and given is given).

Not ``--new-session``: the hub already starts the agent in a session of its own (no
controlling terminal, so nothing to inject into with TIOCSTI), and staying in that process
group lets the hub's group signals (SIGSTOP when idle, SIGKILL when stopping) reach it.
``--die-with-parent`` gives the parent-death signal bwrap's child needs; the hub's own
``setpriv --pdeathsig KILL`` covers bwrap itself.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from websockets.asyncio.server import Server, ServerConnection, unix_serve

from server.config import AgentConfig, Config
from server.local_secret import make_private_dir, runtime_dir

log = logging.getLogger("axtui.sandbox")

SOCKET_INSIDE = Path("/tmp/.axtui/hub.sock")
UNIX_SCHEME = "ws+unix://"  # a hub URL that is a unix socket's path (see axtui.client)
_SUN_PATH_MAX = 107  # bytes in sockaddr_un.sun_path, less the terminating NUL


def bwrap() -> str | None:
    """The ``bwrap`` program, if installed."""
    return shutil.which("bwrap")


@functools.cache
def bwrap_problem() -> str | None:
    """Why agents cannot be sandboxed here (``None``: bwrap works). Probed once, with the
    flags agents get (user and pid namespaces may be off in a container)."""
    program = bwrap()
    if program is None:
        return "bwrap is not installed (Debian: apt-get install bubblewrap)"
    with tempfile.TemporaryDirectory(prefix="axtui-probe-") as workspace:
        argv = sandbox_argv(["/bin/true"], workspace=Path(workspace), hidden=[], network=False)
        try:
            done = subprocess.run(argv, capture_output=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"bwrap did not run: {exc}"
    if done.returncode != 0:
        detail = done.stderr.decode(errors="replace").strip().splitlines()
        return f"bwrap does not work here: {detail[-1] if detail else done.returncode}"
    return None


def bwrap_works() -> bool:
    """Whether agents can be sandboxed on this machine (probed once)."""
    return bwrap_problem() is None


def sandbox_argv(argv: Sequence[str], *, workspace: Path, hidden: Iterable[Path],
                 network: bool, visible: Iterable[Path] = (), writable: Iterable[Path] = (),
                 hub_socket: Path | None = None) -> list[str]:
    """``argv`` run in a bwrap sandbox (see the module's docstring).

    ``visible``: paths kept readable though under ``/tmp`` or a hidden path (the program,
    Python); ``writable``: read-write like the workspace; ``hub_socket``: bound at
    :data:`SOCKET_INSIDE` (for an agent without network).
    """
    mounts: list[tuple[Path, list[str]]] = []
    for path in hidden:
        if path.is_dir():
            mounts.append((path, ["--tmpfs", str(path)]))
        elif path.exists():
            mounts.append((path, ["--ro-bind", "/dev/null", str(path)]))
    for path in visible:
        if path.exists():
            mounts.append((path, ["--ro-bind", str(path), str(path)]))
    for path in (workspace, *writable):
        mounts.append((path, ["--bind", str(path), str(path)]))
    # Deeper paths mount later, so they win; at one depth (stable sort) what is given wins
    # over what is hidden.
    mounts.sort(key=lambda mount: len(mount[0].parts))
    args = [bwrap() or "bwrap", "--ro-bind", "/", "/", "--dev", "/dev",
            "--unshare-pid", "--proc", "/proc", "--unshare-ipc", "--tmpfs", "/tmp"]
    for _, mount in mounts:
        args += mount
    if not network:
        args.append("--unshare-net")
        if hub_socket is not None and hub_socket.exists():
            args += ["--bind", str(hub_socket), str(SOCKET_INSIDE)]
    return [*args, "--chdir", str(workspace), "--die-with-parent", "--", *argv]


def hub_socket(data_dir: Path) -> Path:
    """The unix socket the hub listens on for agents without network.

    In the data dir when its path fits a socket address, else in the user's private
    runtime directory (:func:`server.local_secret.runtime_dir`), named after the data dir.
    """
    path = data_dir.resolve() / "hub.sock"
    if len(os.fsencode(path)) <= _SUN_PATH_MAX:
        return path
    digest = hashlib.sha256(os.fsencode(data_dir.resolve())).hexdigest()[:16]
    return runtime_dir() / f"{digest}.sock"


def wants_socket(agents: Iterable[AgentConfig]) -> bool:
    """Whether some agent runs sandboxed without network, so needs the hub's unix socket."""
    return any(a.sandbox is not None and not a.sandbox.network for a in agents)


def sandboxed(agent: AgentConfig, url: str, *, cwd: Path,
              data_dir: Path) -> tuple[tuple[str, ...], str]:
    """The agent's command, in its sandbox where it has one, and the hub URL to give it.

    Unchanged with ``sandbox: none``, where bwrap does not work (:func:`announce` said so
    at start) or when the program cannot be found (so that the spawn says so).
    """
    search = agent.env.get("PATH", os.environ.get("PATH"))
    program = shutil.which(agent.command[0], path=search) if agent.command else None
    if agent.sandbox is None or program is None or not bwrap_works():
        return agent.command, url
    argv = [program, *agent.command[1:]]
    hidden = [data_dir.resolve(), *(Path(p) for p in agent.sandbox.hidden)]
    # The program, its script and axtui's own Python, where a tmpfs would cover them.
    wanted = [Path(arg) for arg in argv if os.path.isabs(arg)]
    wanted += [Path(sys.prefix), Path(sys.base_prefix), Path(__file__).resolve().parents[1]]
    covers = [Path("/tmp"), *hidden]
    # Whole directories (a file's own directory): bwrap cannot mount a file where the
    # tmpfs has no parent for it, nor over a symlink inside a read-only mount.
    dirs = {p if p.is_dir() else p.parent for p in wanted
            if any(p.is_relative_to(c) for c in covers)}
    visible = sorted(d for d in dirs if not any(d != o and d.is_relative_to(o) for o in dirs))
    writable = [Path(p).expanduser().resolve() for p in agent.sandbox.writable]
    for path in writable:  # a bind needs its source: made as the directory it names
        path.mkdir(parents=True, exist_ok=True)
    network = agent.sandbox.network
    socket = None if network else hub_socket(data_dir)
    command = sandbox_argv(argv, workspace=cwd, hidden=hidden, network=network,
                           visible=visible, writable=writable, hub_socket=socket)
    if not network:
        url = UNIX_SCHEME + quote(str(SOCKET_INSIDE), safe="")
    return tuple(command), url


def announce(agents: Iterable[AgentConfig]) -> None:
    """Say once, at the hub's start, which agents run without a sandbox and why."""
    agents = list(agents)
    unconfined = sorted(a.id for a in agents if a.sandbox is None)
    if unconfined:
        log.info("agents without a sandbox (sandbox: none): %s", ", ".join(unconfined))
    wanting = sorted(a.id for a in agents if a.sandbox is not None)
    problem = bwrap_problem() if wanting else None
    if problem is not None:
        log.warning("agents run WITHOUT a sandbox: %s; they can read everything the hub's"
                    " user can (%s). Install bubblewrap, or set sandbox: none to silence"
                    " this", problem, ", ".join(wanting))


async def serve_agent_socket(handler: Callable[[ServerConnection], Awaitable[None]],
                             config: Config, **options: Any) -> Server | None:
    """The hub's unix socket, for agents without network (none is needed without them);
    ``options`` as for the TCP server. A socket that cannot be made is a warning: those
    agents then run, without their state tools."""
    if not wants_socket(config.agents.values()) or not bwrap_works():
        return None
    path = hub_socket(config.hub.data_dir)
    try:
        if path.parent == runtime_dir():
            make_private_dir(path.parent)
        path.unlink(missing_ok=True)  # left by a hub that was killed (we hold the lock)
        server = await unix_serve(handler, str(path), **options)
        path.chmod(0o666)  # agents may run as another user; the token still decides
    except OSError as exc:
        log.warning("cannot listen on %s (%s): agents with sandbox network false cannot"
                    " reach their state tools", path, exc)
        return None
    return server
