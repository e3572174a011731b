"""The real ACP agents from npm (OpenCode, Codex, Claude Code, Gemini CLI) through a hub.

Each runs in its sandbox, pointed at the fake model server of ``fake_models.py`` (the
real wire protocol, on 127.0.0.1). One test per agent walks it through what
docs/agents.md §3 promises: a turn with the model's reply, a permission request answered
through the log and the tool's effect, a suspend and a wake with the conversation back
(seen in what the agent sends the model), and the state tools offered to the model.
The packages are installed once per set of pinned versions (``real_agents.py``); without
npm or a registry the tests skip.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import HubFactory, Raw, RawFactory
from tests.server.agent_helpers import agent_session, say
from tests.server.fake_models import DONE, REPLY, WRITE_TRIGGER, WRITTEN, FakeModels
from tests.server.real_agents import RECIPES, Installed, install

TURN = 90.0  # seconds a real agent gets for a turn (the first one starts it)
MEMORY = "BANANA-SEVEN"  # a word of the first turn, looked for in the requests after a wake


@pytest.fixture(scope="session")
def installed(sandbox_problem: str | None) -> Installed:
    """The pinned packages, installed once (a skip when npm or the registry is missing)."""
    if sandbox_problem:
        pytest.skip(f"agents cannot be sandboxed here: {sandbox_problem}")
    result = install()
    if isinstance(result, str):
        pytest.skip(result)
    if result.seconds:
        print(f"\nnpm install of the real agents: {result.seconds:.1f} s")
    return result


@pytest.fixture
async def fake() -> AsyncIterator[FakeModels]:
    """The fake model server."""
    server = FakeModels()
    await server.start()
    yield server
    await server.stop()


async def wait_for(raw: Raw, event_type: str, seen: list[dict[str, Any]],
                   timeout: float = TURN) -> dict[str, Any]:
    """Collect events of session ``s`` until one of ``event_type``; a failed turn or start,
    or a turn that ends first, fails the test at once (with the reason)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            events = await raw.events("s", 1, timeout=max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            raise AssertionError(f"no {event_type} within {timeout} s; seen: "
                                 f"{[(e['type'], e['data']) for e in seen]}") from None
        for i, event in enumerate(events):
            seen.append(event)
            failed = event["type"] == "turn.failed" or (
                event["type"] == "agent.status" and event["data"]["state"] == "failed")
            assert not failed, event["data"]
            assert event["type"] != "turn.completed" or event_type == "turn.completed", (
                f"the turn ended without a {event_type}: {[e['type'] for e in seen]}")
            if event["type"] == event_type:
                if events[i + 1:]:  # put the rest back for the next wait
                    raw.notifications.insert(0, {"method": "session/events", "params": {
                        "sessionId": "s", "events": events[i + 1:]}})
                return event


def _messages(seen: list[dict[str, Any]]) -> str:
    return "\n".join(e["data"]["text"] for e in seen if e["type"] == "agent.message")


@pytest.mark.parametrize("name", sorted(RECIPES))
async def test_real_agent(name: str, installed: Installed, fake: FakeModels,
                          hub_factory: HubFactory, raw_factory: RawFactory, tmp_path: Path,
                          caplog: pytest.LogCaptureFixture) -> None:
    """Turn, permission, suspend and wake with the conversation, the state tools."""
    recipe = RECIPES[name]
    home = tmp_path / "home"
    home.mkdir()
    agent = recipe.make(installed, fake.url, home)
    caplog.set_level(logging.INFO, logger="axtui.supervisor")
    times: dict[str, float] = {}
    start = time.monotonic()
    hub, raw = await agent_session(hub_factory, raw_factory, agent, sid="s")
    workspace = hub.config.hub.data_dir / "workspaces" / "s"

    # 1. A user.message wakes the agent; the turn ends with the fake's reply.
    seen: list[dict[str, Any]] = []
    await say(raw, "s", f"Remember the word {MEMORY}, then say hello.")
    done = await wait_for(raw, "turn.completed", seen, timeout=TURN)
    times["first turn"] = time.monotonic() - start
    ready = [e for e in seen if e["type"] == "agent.status" and e["data"]["state"] == "ready"]
    assert ready and ready[0]["data"]["resumeMode"] == "new", seen
    assert done["data"]["stopReason"] == "end_turn", seen
    assert REPLY in _messages(seen), seen

    # 2. A tool that needs permission: asked through the log, answered there, done.
    mark = time.monotonic()
    target = workspace / "note.txt"
    if recipe.overwrites_only:
        target.write_text("to be replaced\n")
    seen = []
    await say(raw, "s", f"{WRITE_TRIGGER} {target}")
    request = await wait_for(raw, "permission.request", seen, timeout=TURN)
    assert not target.exists() or target.read_text() != WRITTEN  # it waits for the answer
    allow = next(o for o in request["data"]["options"] if o["kind"] == "allow_once")
    await raw.call("session/publish", {"sessionId": "s", "type": "permission.response", "data": {
        "requestId": request["data"]["requestId"], "optionId": allow["optionId"]}})
    done = await wait_for(raw, "turn.completed", seen, timeout=TURN)
    assert done["data"]["stopReason"] == "end_turn", seen
    assert target.read_text() == WRITTEN
    assert DONE in _messages(seen), seen
    times["permission turn"] = time.monotonic() - mark

    # 3. Suspend, then a new message: the agent comes back with the conversation.
    mark = time.monotonic()
    await raw.call("session/suspend", {"sessionId": "s"})
    await wait_for(raw, "agent.status", seen := [], timeout=30.0)
    assert seen[-1]["data"]["state"] == "suspended", seen
    before = len(fake.requests)
    await say(raw, "s", "Which word did I ask you to remember?")
    done = await wait_for(raw, "turn.completed", seen, timeout=TURN)
    ready = [e for e in seen if e["type"] == "agent.status" and e["data"]["state"] == "ready"]
    assert ready and ready[0]["data"]["resumeMode"] in recipe.resume_modes, seen
    mode = ready[0]["data"]["resumeMode"]
    assert f"resume mode {mode}" in caplog.text
    after = [r for r in fake.requests[before:] if "Which word" in r.text]
    assert after and MEMORY in after[-1].text, [r.path for r in fake.requests[before:]]
    times["wake turn"] = time.monotonic() - mark

    # 4. The state tools were offered to the model, under the agent's names for them.
    offered = {tool for r in fake.requests for tool in _tool_names(r.body)}
    print(f"\n{name}: {times}; resume mode {mode}; state tools as "
          f"{sorted(t for t in offered if 'state' in t or 'tables' in t)}")
    for tool in ("query_state", "exec_state", "list_tables"):
        assert recipe.mcp_name.format(tool) in offered, sorted(offered)


def _tool_names(body: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for tool in body.get("tools") or []:
        if not isinstance(tool, dict):
            continue
        names += [f.get("name", "") for f in tool.get("functionDeclarations") or []]
        if tool.get("type") == "namespace":  # Responses: a group of tools (Codex's MCP servers)
            names += [f"{tool['name']}.{t.get('name')}" for t in tool.get("tools") or []]
        names.append(tool.get("name") or tool.get("function", {}).get("name", ""))
    return [n for n in names if n]
