"""Shared fixtures: real hubs on port 0 over temp data dirs, real websocket clients."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from axtui.client import HubClient
from server import sandbox
from server.config import AgentConfig, Config, TokenConfig, load_config
from server.hub import Hub
from server.local_secret import read_secret
from server.protocol import Role
from server.wiring import build_hub

# As root, a hub runs agents as hub.agent_user (default nobody); here the interpreter and the
# tests' agents live where only root can read, so agents run as root unless a test (the one
# of the switch, in test_containment.py) asks otherwise. Inherited by the hubs tests spawn.
if os.geteuid() == 0:
    os.environ.setdefault("AXTUI_AGENT_USER", "root")

def _install_bubblewrap() -> None:
    """Install Debian's bubblewrap when it is missing and we may (root, apt-get)."""
    if shutil.which("bwrap") or os.geteuid() != 0 or not shutil.which("apt-get"):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "bubblewrap"]
    if subprocess.run(install, env=env, capture_output=True, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=False)
        subprocess.run(install, env=env, capture_output=True, check=False)


@pytest.fixture(scope="session", autouse=True)
def sandbox_problem() -> str | None:
    """Agents run sandboxed by default: bubblewrap is installed first if it can be. Why
    agents cannot be sandboxed here (a reason to skip with), or ``None``."""
    _install_bubblewrap()
    sandbox.bwrap_problem.cache_clear()
    return sandbox.bwrap_problem()


TOKENS = {
    "viewer-token": ("vera", Role.VIEWER),
    "participant-token": ("paul", Role.PARTICIPANT),
    "admin-token": ("ada", Role.ADMIN),
}


def make_config(data_dir: Path, *, tokens: bool = False,
                agents: Mapping[str, AgentConfig] | None = None, **hub: Any) -> Config:
    """A config on ``data_dir`` listening on a free loopback port (``agents``: exactly these)."""
    config = load_config(None).with_overrides(port=0, http_port=0, data_dir=data_dir)
    config = replace(config, hub=replace(config.hub, **hub))
    if agents is not None:
        config = replace(config, agents=agents)
    if tokens:
        config = replace(config, tokens=tuple(
            TokenConfig(name, token, role) for token, (name, role) in TOKENS.items()
        ))
    return config


HubFactory = Callable[..., Awaitable[Hub]]


@pytest.fixture
async def hub_factory(tmp_path: Path) -> AsyncIterator[HubFactory]:
    """Start hubs (``await hub_factory(tokens=True, max_lag_bytes=...)``, or with a whole
    ``config=``); all stop after."""
    hubs: list[Hub] = []
    counter = itertools.count()

    async def start(data_dir: Path | None = None, config: Config | None = None,
                    **kwargs: Any) -> Hub:
        config = config or make_config(data_dir or tmp_path / f"hub{next(counter)}", **kwargs)
        hub = build_hub(config)
        await hub.start()
        hubs.append(hub)
        return hub

    yield start
    for hub in reversed(hubs):
        if not hub.stopping:
            await hub.stop()


async def restart(hub_factory: HubFactory, hub: Hub) -> Hub:
    """Stop ``hub`` and start a new one with the same configuration, data dir and port."""
    port = hub.port
    await hub.stop()
    return await hub_factory(config=replace(hub.config, hub=replace(hub.config.hub, port=port)))


@pytest.fixture
async def hub(hub_factory: HubFactory) -> Hub:
    """A local-mode hub (every client is admin ``local``)."""
    return await hub_factory()


@pytest.fixture
async def client(hub: Hub) -> AsyncIterator[HubClient]:
    """A connected :class:`HubClient` on ``hub``."""
    async with HubClient(hub.url, kind="test") as c:
        yield c


class Raw:
    """A bare websocket client for protocol-level tests: frames in, frames out."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.notifications: list[dict[str, Any]] = []

    async def send(self, message: Any) -> None:
        """Send one frame (a dict is encoded as JSON text)."""
        await self.ws.send(orjson.dumps(message).decode() if not isinstance(message, str | bytes)
                           else message)

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next frame, decoded."""
        frame = await asyncio.wait_for(self.ws.recv(), timeout)
        msg: dict[str, Any] = orjson.loads(frame)
        return msg

    async def response(self, request_id: Any, timeout: float = 5.0) -> dict[str, Any]:
        """The response to ``request_id``; other frames seen meanwhile are kept."""
        for i, msg in enumerate(self.notifications):
            if msg.get("id") == request_id and "method" not in msg:
                return self.notifications.pop(i)
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.recv(timeout)
                if "id" in msg and msg["id"] == request_id:
                    return msg
                self.notifications.append(msg)

    async def request(
        self, method: str, params: Any = None, timeout: float = 5.0
    ) -> dict[str, Any]:
        """Send a request and return the whole response message."""
        request_id = next(self.ids)
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            msg["params"] = params
        await self.send(msg)
        return await self.response(request_id, timeout)

    async def call(self, method: str, params: Any = None) -> Any:
        """Send a request; return its result or fail the test with its error."""
        msg = await self.request(method, params)
        assert "result" in msg, msg
        return msg["result"]

    async def error(self, method: str, params: Any = None) -> dict[str, Any]:
        """Send a request that must fail; return its error object."""
        msg = await self.request(method, params)
        assert "error" in msg, msg
        err: dict[str, Any] = msg["error"]
        return err

    async def initialize(self, token: str | None = None, kind: str = "test") -> dict[str, Any]:
        """The handshake."""
        params: dict[str, Any] = {"protocolVersion": 1,
                                  "clientInfo": {"name": "raw", "kind": kind, "version": "0"}}
        if token is not None:
            params["token"] = token
        result: dict[str, Any] = await self.call("initialize", params)
        return result

    async def events(
        self, session_id: str, count: int, timeout: float = 10.0
    ) -> list[dict[str, Any]]:
        """Collect ``count`` events of ``session_id`` from session/events notifications."""
        def ours(msg: dict[str, Any]) -> bool:
            return bool(msg.get("method") == "session/events"
                        and msg["params"]["sessionId"] == session_id)

        out = [e for msg in self.notifications if ours(msg) for e in msg["params"]["events"]]
        self.notifications = [msg for msg in self.notifications if not ours(msg)]
        async with asyncio.timeout(timeout):
            while len(out) < count:
                msg = await self.recv(timeout)
                if ours(msg):
                    out.extend(msg["params"]["events"])
                else:
                    self.notifications.append(msg)
        return out

    async def closed(self, timeout: float = 15.0) -> int | None:
        """Read until the hub closes the connection; return the close code."""
        async with asyncio.timeout(timeout):
            try:
                while True:
                    await self.ws.recv()
            except Exception:
                pass
        return self.ws.close_code


RawFactory = Callable[..., Awaitable[Raw]]


def local_headers(hub: Hub) -> dict[str, str]:
    """The header a client on this machine sends a local-mode hub: its data dir's secret."""
    secret = read_secret(hub.config.hub.data_dir)
    assert secret, f"no local secret in {hub.config.hub.data_dir}"
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
async def raw_factory(hub: Hub) -> AsyncIterator[RawFactory]:
    """Open bare websocket connections (``await raw_factory(hub=..., headers=...)``); to a
    local-mode hub with its secret unless ``headers`` are given or ``secret=False``."""
    conns: list[ClientConnection] = []

    async def open_(target: Hub | None = None, headers: dict[str, str] | None = None,
                    initialize: bool = True, secret: bool = True, **kwargs: Any) -> Raw:
        target = target or hub
        if secret and headers is None and target.auth.local_mode:  # as a local client does
            headers = local_headers(target)
        ws = await connect(target.url, additional_headers=headers, max_size=None,
                           compression=None, **kwargs)
        conns.append(ws)
        raw = Raw(ws)
        if initialize:
            await raw.initialize()
        return raw

    yield open_
    for ws in conns:
        await ws.close()


@pytest.fixture
async def raw(raw_factory: RawFactory) -> Raw:
    """An initialized bare connection to the local-mode ``hub``."""
    return await raw_factory()
