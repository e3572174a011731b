"""Each agent in a bwrap sandbox: an agent written to misbehave (agents/attacker.py) sees
no other process, nothing of the data dir or the config, and no admin way into the hub."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from server import sandbox
from server.config import AgentConfig, SandboxConfig, load_config
from server.hub import Hub
from tests.conftest import HubFactory, Raw, RawFactory
from tests.server.agent_helpers import agent_hub, say, until
from tests.server.agents.test_demo import answer as answer_permission
from tests.server.agents.test_demo import demo_agent, demo_session

ATTACKER = str(Path(__file__).parent / "agents" / "attacker.py")
CONFIG_TOKEN = "config-file-admin-token-abc123"


@pytest.fixture(autouse=True)
def needs_bwrap(sandbox_problem: str | None) -> None:
    """These tests are about the sandbox: without a working bwrap there is none to test."""
    if sandbox_problem is not None:
        pytest.skip(sandbox_problem)


def attacker(**overrides: Any) -> AgentConfig:
    """The misbehaving agent."""
    return replace(AgentConfig("attacker", (sys.executable, ATTACKER)), **overrides)


async def attack(raw: Raw, sid: str, text: str) -> str:
    """Ask the attacker for one attack in session ``sid``; its one-line answer."""
    await say(raw, sid, text)
    seen: list[dict[str, Any]] = []
    message = await until(raw, sid, "agent.message", seen, timeout=30)
    answer: str = message["data"]["text"]
    return answer


async def attacked(hub_factory: HubFactory, raw_factory: RawFactory,
                   agent: AgentConfig | None = None, **hub: Any) -> tuple[Hub, Raw]:
    """A local-mode hub running the attacker; a client subscribed to its session ``a``."""
    server = await agent_hub(hub_factory, agent or attacker(), **hub)
    raw = await raw_factory(server)
    await raw.call("session/create", {"sessionId": "a", "agent": "attacker"})
    await raw.call("session/subscribe", {"sessionId": "a"})
    return server, raw


async def test_agent_sees_no_other_process(hub_factory: HubFactory,
                                           raw_factory: RawFactory) -> None:
    """In its pid namespace the agent sees only bwrap's init and itself: not the hub."""
    _, raw = await attacked(hub_factory, raw_factory)
    assert (await attack(raw, "a", "pids")).split()[1:] == ["1", "2"]


async def test_hub_environment_is_unreadable(hub_factory: HubFactory,
                                             raw_factory: RawFactory) -> None:
    """``/proc/<hub pid>/environ`` (where an admin token would be) cannot be read."""
    _, raw = await attacked(hub_factory, raw_factory)
    answer = await attack(raw, "a", f"read /proc/{os.getpid()}/environ")
    assert answer.startswith("blocked: FileNotFoundError"), answer


async def test_config_file_is_hidden(hub_factory: HubFactory, raw_factory: RawFactory,
                                     tmp_path: Path) -> None:
    """The config file (tokens in clear, its path on the hub's command line) cannot be read:
    a device-less ``/dev/null`` covers it."""
    path = tmp_path / "etc" / "axtui.yaml"
    path.parent.mkdir()
    path.write_text(f"auth:\n  tokens:\n    - {{name: ada, token: {CONFIG_TOKEN}, role: admin}}\n"
                    f"agents:\n  attacker: {{command: [{sys.executable}, {ATTACKER}]}}\n")
    config = load_config(path).with_overrides(port=0, data_dir=tmp_path / "data")
    hub = await hub_factory(config=config)
    raw = await raw_factory(hub, initialize=False)
    await raw.initialize(token=CONFIG_TOKEN)
    await raw.call("session/create", {"sessionId": "a", "agent": "attacker"})
    await raw.call("session/subscribe", {"sessionId": "a"})
    answer = await attack(raw, "a", f"read {path}")
    assert answer.startswith("blocked: PermissionError") and CONFIG_TOKEN not in answer


async def test_data_dir_is_hidden(hub_factory: HubFactory, raw_factory: RawFactory) -> None:
    """Another session's file, the catalog and the local secret are not in the sandbox."""
    hub, raw = await attacked(hub_factory, raw_factory)
    await raw.call("session/create", {"sessionId": "other"})
    await raw.call("session/publish", {"sessionId": "other", "type": "note",
                                       "data": {"text": "private"}})
    data_dir = hub.config.hub.data_dir.resolve()
    for name in ("sessions/other.db", "hub.db", "local-token"):
        answer = await attack(raw, "a", f"read {data_dir / name}")
        assert answer.startswith("blocked: FileNotFoundError"), (name, answer)


async def test_local_hub_refuses_the_agent_without_the_secret(
    hub_factory: HubFactory, raw_factory: RawFactory
) -> None:
    """The agent reaches the hub on loopback, but without the secret it is nobody."""
    hub, raw = await attacked(hub_factory, raw_factory)
    answer = await attack(raw, "a", f"connect {hub.url}")
    assert answer.startswith("connect: "), answer
    assert '"code":-32001' in answer or "closed 4401" in answer, answer
    assert '"sessions"' not in answer


async def test_without_network_the_state_tools_use_the_hub_socket(
    hub_factory: HubFactory, raw_factory: RawFactory
) -> None:
    """With network false loopback is gone, yet the demo agent writes its state (socket)."""
    hub, raw = await attacked(hub_factory, raw_factory, attacker(
        sandbox=SandboxConfig(network=False)))
    answer = await attack(raw, "a", f"connect {hub.url}")
    assert answer.startswith("blocked: ConnectionRefusedError"), answer

    demo = await agent_hub(hub_factory, demo_agent(sandbox=SandboxConfig(network=False)))
    client = await demo_session(demo, raw_factory)
    await say(client, "d", "The login page times out")
    seen: list[dict[str, Any]] = []
    request = await until(client, "d", "permission.request", seen, 30)
    await answer_permission(demo, raw_factory, request, "allow")
    await until(client, "d", "turn.completed", seen, 30)
    assert [e for e in seen if e["type"] == "state.changed"], [e["type"] for e in seen]


async def test_sandbox_none_is_unconfined_and_said_once(
    hub_factory: HubFactory, raw_factory: RawFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """``sandbox: none``: the agent sees the hub's processes, and the hub said so at start."""
    with caplog.at_level(logging.INFO, logger="axtui.sandbox"):
        _, raw = await attacked(hub_factory, raw_factory, attacker(sandbox=None))
    said = [r.getMessage() for r in caplog.records if r.name == "axtui.sandbox"]
    assert said == ["agents without a sandbox (sandbox: none): attacker"]
    assert str(os.getpid()) in (await attack(raw, "a", "pids")).split()


@pytest.fixture
def no_bwrap(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A machine without bwrap (the probe forgets what it found, before and after)."""
    monkeypatch.setattr(sandbox, "bwrap", lambda: None)
    sandbox.bwrap_problem.cache_clear()
    yield
    monkeypatch.undo()
    sandbox.bwrap_problem.cache_clear()


async def test_without_bwrap_the_hub_warns_once_and_runs_agents_unconfined(
    no_bwrap: None, hub_factory: HubFactory, raw_factory: RawFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No bwrap: one warning naming the agents at start, and they still run (unconfined)."""
    with caplog.at_level(logging.INFO, logger="axtui.sandbox"):
        _, raw = await attacked(hub_factory, raw_factory)
        assert str(os.getpid()) in (await attack(raw, "a", "pids")).split()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
                and r.name == "axtui.sandbox"]
    assert len(warnings) == 1 and "WITHOUT a sandbox: bwrap is not installed" in warnings[0]
    assert "(attacker)" in warnings[0]


def test_mounts_deeper_paths_win(tmp_path: Path) -> None:
    """A workspace inside the hidden data dir is bound after the tmpfs that hides it."""
    data, workspace = tmp_path / "data", tmp_path / "data" / "workspaces" / "a"
    workspace.mkdir(parents=True)
    argv = sandbox.sandbox_argv(["prog"], workspace=workspace, hidden=[data], network=True)
    assert argv.index("--tmpfs", argv.index("/tmp") + 1) < argv.index("--bind")
    assert argv[-2:] == ["--", "prog"] and "--unshare-net" not in argv


async def test_an_agent_installed_under_tmp_starts_in_its_sandbox(
    hub_factory: HubFactory, raw_factory: RawFactory, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An agent whose program lives under /tmp (a checkout or venv there, covered by the
    sandbox's own /tmp) still starts: its directory is mounted, not the file alone."""
    if not tmp_path.is_relative_to("/tmp"):
        pytest.skip(f"the test's temp dir {tmp_path} is not under /tmp")
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").symlink_to(sys.executable)
    script = tmp_path / "venv" / "attacker.py"
    script.write_text(Path(ATTACKER).read_text())
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "venv"))  # as for a venv in /tmp
    agent = attacker(command=(str(bin_dir / "python"), str(script)))
    _, raw = await attacked(hub_factory, raw_factory, agent)
    assert (await attack(raw, "a", "pids")).split()[1:] == ["1", "2"]
