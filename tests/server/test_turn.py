"""One turn (the bundled echo agent, real subprocesses): the prompt, permissions, cancel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import HubFactory, RawFactory
from tests.server.agent_helpers import agent_session, echo_agent, say, until


def replies(seen: list[dict[str, Any]]) -> list[str]:
    """The text of the agent's whole messages."""
    return [e["data"]["text"] for e in seen if e["type"] == "agent.message"]


async def test_another_event_is_prompted_as_its_type_and_data(
    hub_factory: HubFactory, raw_factory: RawFactory, tmp_path: Path
) -> None:
    """An event other than user.message reaches the agent as ``Event <type>: <data>``."""
    agent = echo_agent(tmp_path, wake_on=("user.message", "ci.*"))
    _, raw = await agent_session(hub_factory, raw_factory, agent)
    await raw.call("session/publish", {"sessionId": "a", "type": "ci.build_failed",
                                       "data": {"job": 7, "branch": "main"}})
    seen: list[dict[str, Any]] = []
    await until(raw, "a", "turn.completed", seen)
    assert replies(seen)[0].startswith('echo: Event ci.build_failed: {"job":7,"branch":"main"}')


async def test_the_transcript_goes_only_ahead_of_the_first_prompt(
    hub_factory: HubFactory, raw_factory: RawFactory, tmp_path: Path
) -> None:
    """A new conversation gets the log's transcript once; later turns on it do not."""
    env = {"AXTUI_ECHO_STATE": str(tmp_path / "echo-state"), "AXTUI_ECHO_CAPABILITIES": ""}
    agent = echo_agent(tmp_path, idle_timeout=0.2, env=env)
    _, raw = await agent_session(hub_factory, raw_factory, agent)
    await say(raw, "a", "first")
    seen: list[dict[str, Any]] = []
    await until(raw, "a", "turn.completed", seen)
    suspended = await until(raw, "a", "agent.status", seen)
    assert suspended["data"] == {"state": "suspended"}
    await say(raw, "a", "second")
    await until(raw, "a", "turn.completed", seen)
    await say(raw, "a", "third")
    await until(raw, "a", "turn.completed", seen)
    first, second, third = replies(seen)
    assert "The conversation so far" not in first
    assert "user: first" in second and "Now: second" in second
    assert third.startswith("echo: third") and "The conversation so far" not in third


async def test_cancel_closes_the_open_permission_request(
    hub_factory: HubFactory, raw_factory: RawFactory, tmp_path: Path
) -> None:
    """Cancelling while the agent waits for an answer: the hub answers it cancelled, the turn
    completes as cancelled, and the agent is idle again."""
    _, raw = await agent_session(hub_factory, raw_factory, echo_agent(tmp_path))
    await say(raw, "a", "permission")
    seen: list[dict[str, Any]] = []
    request = await until(raw, "a", "permission.request", seen)
    assert request["source"] == {"kind": "agent", "name": "echo"}
    assert await raw.call("session/cancel", {"sessionId": "a"}) == {}
    response = await until(raw, "a", "permission.response", seen)
    assert response["data"] == {"requestId": request["data"]["requestId"],
                                "outcome": "cancelled"}
    assert response["source"] == {"kind": "hub", "name": "hub"}
    assert response["turnId"] == request["turnId"]
    done = await until(raw, "a", "turn.completed", seen)
    assert done["data"] == {"turnId": request["turnId"], "stopReason": "cancelled"}
    session = (await raw.call("session/get", {"sessionId": "a"}))["session"]
    assert session["agentState"] == "idle"


async def test_the_answer_goes_back_and_the_agent_runs_on(
    hub_factory: HubFactory, raw_factory: RawFactory, tmp_path: Path
) -> None:
    """A permission answer reaches the agent: waiting becomes running, the tool call ends."""
    _, raw = await agent_session(hub_factory, raw_factory, echo_agent(tmp_path))
    await say(raw, "a", "permission")
    seen: list[dict[str, Any]] = []
    request = await until(raw, "a", "permission.request", seen)
    assert request["data"]["options"] == [
        {"optionId": "allow", "name": "Allow", "kind": "allow_once"},
        {"optionId": "reject", "name": "Reject", "kind": "reject_once"}]
    await raw.call("session/publish", {"sessionId": "a", "type": "permission.response", "data": {
        "requestId": request["data"]["requestId"], "optionId": "reject"}})
    await until(raw, "a", "turn.completed", seen)
    assert replies(seen)[-1].startswith("permission: reject")
    updates = [e["data"] for e in seen if e["type"] == "tool.update"]
    assert updates and updates[-1]["status"] == "failed"
