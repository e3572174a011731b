"""The bundled ``llm`` agent as a real subprocess under a real hub, against a fake model."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from server.config import AgentConfig
from server.hub import Hub
from tests.conftest import HubFactory, Raw, RawFactory
from tests.server.agent_helpers import (
    agent_hub,
    say,
    until,
)
from tests.server.agents.fake_openai import Failure, FakeOpenAI, Hold, Text, ToolCall

API_KEY = "sk-test-9c2f4e81d7a3b605"
MODEL = "fake-gpt-1"
TIMEOUT = 30.0  # a cold start imports acp and mcp, and starts the state MCP server


def llm_agent(fake: FakeOpenAI, **env: str | None) -> AgentConfig:
    """The bundled llm agent pointed at ``fake``; ``env`` overrides (None removes) a setting."""
    settings = {"AXTUI_LLM_BASE_URL": fake.url, "AXTUI_LLM_API_KEY": API_KEY,
                "AXTUI_LLM_MODEL": MODEL} | env
    return AgentConfig(id="llm", command=(sys.executable, "-m", "server.agents.llm"),
                       env={k: v for k, v in settings.items() if v is not None})


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    """A fake OpenAI-compatible server that wants ``API_KEY``."""
    async with FakeOpenAI(API_KEY) as server:
        yield server


async def llm_session(hub_factory: HubFactory, raw_factory: RawFactory,
                      agent: AgentConfig) -> tuple[Hub, Raw]:
    """A hub running ``agent``, and a client subscribed to its session ``a``."""
    hub = await agent_hub(hub_factory, agent)
    raw = await raw_factory(hub)
    await raw.call("session/create", {"sessionId": "a", "agent": "llm"})
    await raw.call("session/subscribe", {"sessionId": "a"})
    return hub, raw


async def turn(raw: Raw, text: str, end: str = "turn.completed") -> list[dict[str, Any]]:
    """Say ``text`` in session ``a``; the events up to the end of the turn it starts."""
    await say(raw, "a", text)
    seen: list[dict[str, Any]] = []
    await until(raw, "a", end, seen, timeout=TIMEOUT)
    return seen


async def gather(raw: Raw, seen: list[dict[str, Any]], done: Callable[[], bool]) -> None:
    """Collect events of session ``a`` into ``seen`` until ``done()``.

    Unlike ``until``, it keeps the events that share a notification with the one awaited.
    """
    async with asyncio.timeout(TIMEOUT):
        while not done():
            seen.extend(await raw.events("a", 1, timeout=TIMEOUT))


def of_type(events: list[dict[str, Any]], event_type: str) -> list[dict[str, Any]]:
    """The events of one type."""
    return [e for e in events if e["type"] == event_type]


def conversation(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A request's messages without the system prompt."""
    return [m for m in messages if m["role"] != "system"]


def agent_log(hub: Hub) -> str:
    """Everything the agent of session ``a`` wrote to stderr."""
    return (Path(hub.config.hub.data_dir) / "logs" / "a.agent.log").read_text()


async def test_streamed_answer(hub_factory: HubFactory, raw_factory: RawFactory,
                               fake: FakeOpenAI) -> None:
    """A streamed completion arrives as agent.message.chunk events, then one agent.message."""
    _, raw = await llm_session(hub_factory, raw_factory, llm_agent(fake))
    fake.reply(Text(["Hello", ", ", "world"]))
    seen = await turn(raw, "hi")
    assert [e["data"]["text"] for e in of_type(seen, "agent.message.chunk")] \
        == ["Hello", ", ", "world"]
    [message] = of_type(seen, "agent.message")
    assert message["data"]["text"] == "Hello, world"
    assert message["source"] == {"kind": "agent", "name": "llm"}
    assert seen[-1]["data"]["stopReason"] == "end_turn"
    [request] = fake.requests
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.body["model"] == MODEL and request.body["stream"] is True
    assert conversation(request.body["messages"]) == [{"role": "user", "content": "hi"}]


async def test_second_prompt_sends_the_whole_conversation(
    hub_factory: HubFactory, raw_factory: RawFactory, fake: FakeOpenAI
) -> None:
    """The second prompt sends the first question and answer ahead of the new question."""
    _, raw = await llm_session(hub_factory, raw_factory, llm_agent(fake))
    fake.reply(Text(["Paris."]), Text(["About 2 million."]))
    await turn(raw, "What is the capital of France?")
    seen = await turn(raw, "How many people live there?")
    assert of_type(seen, "agent.message")[0]["data"]["text"] == "About 2 million."
    assert conversation(fake.requests[1].body["messages"]) == [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "How many people live there?"},
    ]
    assert fake.requests[1].body["messages"][0]["role"] == "system"


async def test_tool_call_changes_state_through_the_hub(
    hub_factory: HubFactory, raw_factory: RawFactory, fake: FakeOpenAI
) -> None:
    """The model's exec_state call creates and fills a table: state.changed by the agent."""
    _, raw = await llm_session(hub_factory, raw_factory, llm_agent(fake))
    arguments = {"statements": [
        {"sql": "CREATE TABLE tickets (id TEXT PRIMARY KEY, status TEXT)"},
        {"sql": "INSERT INTO tickets VALUES (:id, :status)",
         "params": {"id": "T-1", "status": "open"}},
    ]}
    fake.reply(ToolCall("exec_state", arguments, text="Filing it."), Text(["Filed T-1."]))
    seen = await turn(raw, "File a ticket for the broken build.")
    offered = {t["function"]["name"]: t["function"] for t in fake.requests[0].body["tools"]}
    assert {"query_state", "exec_state", "list_tables"} <= set(offered)
    assert "statements" in offered["exec_state"]["parameters"]["properties"], \
        f"this test calls exec_state with statements; it offers {offered['exec_state']}"
    [changed] = of_type(seen, "state.changed")
    assert changed["source"]["kind"] == "agent" and changed["source"]["name"] == "llm"
    assert changed["data"]["statements"] == arguments["statements"]
    [call] = of_type(seen, "tool.call")
    assert call["data"]["title"].startswith("exec_state") and call["data"]["kind"] == "edit"
    assert call["data"]["input"] == arguments
    [update] = of_type(seen, "tool.update")
    assert update["data"]["toolCallId"] == call["data"]["toolCallId"]
    assert update["data"]["status"] == "completed"
    assert [e["data"]["text"] for e in of_type(seen, "agent.message")] \
        == ["Filing it.", "Filed T-1."]
    state = await raw.call("state/query", {"sessionId": "a", "sql": "SELECT * FROM tickets"})
    assert state["rows"] == [["T-1", "open"]]
    *_, asked, answered = fake.requests[1].body["messages"]
    [tool_call] = asked["tool_calls"]
    assert asked["content"] == "Filing it."
    assert tool_call["function"]["name"] == "exec_state"
    assert json.loads(tool_call["function"]["arguments"]) == arguments
    assert answered["role"] == "tool" and answered["tool_call_id"] == tool_call["id"]


async def test_unknown_tool_fails_and_the_model_hears_why(
    hub_factory: HubFactory, raw_factory: RawFactory, fake: FakeOpenAI
) -> None:
    """A call to a tool nobody offers is reported failed, and the error goes to the model."""
    _, raw = await llm_session(hub_factory, raw_factory, llm_agent(fake))
    fake.reply(ToolCall("drop_everything", {"really": True}), Text(["I cannot do that."]))
    seen = await turn(raw, "Drop everything.")
    [call] = of_type(seen, "tool.call")
    assert call["data"]["kind"] == "other" and call["data"]["input"] == {"really": True}
    [update] = of_type(seen, "tool.update")
    assert update["data"]["status"] == "failed"
    assert "no tool named 'drop_everything'" in update["data"]["content"][0]["content"]["text"]
    answered = fake.requests[1].body["messages"][-1]
    assert answered["role"] == "tool" and "no tool named" in answered["content"]
    assert seen[-1]["data"]["stopReason"] == "end_turn"


async def test_missing_api_key(hub_factory: HubFactory, raw_factory: RawFactory,
                               fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    """No AXTUI_LLM_API_KEY: turn.failed names the variable, and no request is sent."""
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)  # in the hub's environment, not the agent's
    hub, raw = await llm_session(hub_factory, raw_factory,
                                 llm_agent(fake, AXTUI_LLM_API_KEY=None))
    seen = await turn(raw, "hi", end="turn.failed")
    failed = seen[-1]["data"]
    assert failed["reason"] == "error"
    assert "AXTUI_LLM_API_KEY is not set" in failed["error"]["message"]
    assert API_KEY not in failed["error"]["message"]
    assert fake.requests == [] and fake.refused == 0
    assert API_KEY not in agent_log(hub)


async def test_server_error(hub_factory: HubFactory, raw_factory: RawFactory,
                            fake: FakeOpenAI) -> None:
    """HTTP 500 from the endpoint: turn.failed with the status, the key blotted out."""
    hub, raw = await llm_session(hub_factory, raw_factory, llm_agent(fake))
    fake.reply(Failure(500, f"upstream exploded (it got Authorization: Bearer {API_KEY})"),
               Text(["Better now."]))
    seen = await turn(raw, "hi", end="turn.failed")
    failed = seen[-1]["data"]
    assert failed["reason"] == "error"
    assert "HTTP 500" in failed["error"]["message"]
    assert "upstream exploded" in failed["error"]["message"]
    assert API_KEY not in failed["error"]["message"]
    seen = await turn(raw, "again")
    assert of_type(seen, "agent.message")[0]["data"]["text"] == "Better now."
    assert API_KEY not in agent_log(hub)


async def test_cancel_stops_the_stream(hub_factory: HubFactory, raw_factory: RawFactory,
                                       fake: FakeOpenAI) -> None:
    """session/cancel mid-stream ends the turn cancelled; the conversation keeps the text."""
    _, raw = await llm_session(hub_factory, raw_factory, llm_agent(fake))
    hold = Hold(["Let me", " think"])
    fake.reply(hold, Text(["Done."]))
    await say(raw, "a", "Think hard.")
    seen: list[dict[str, Any]] = []
    await gather(raw, seen, lambda: "".join(
        e["data"]["text"] for e in of_type(seen, "agent.message.chunk")) == "Let me think")
    assert await raw.call("session/cancel", {"sessionId": "a"}) == {}
    done = await until(raw, "a", "turn.completed", seen, timeout=TIMEOUT)
    assert done["data"]["stopReason"] == "cancelled"
    hold.release()
    await turn(raw, "Never mind.")
    assert conversation(fake.requests[1].body["messages"])[-2:] == [
        {"role": "assistant", "content": "Let me think"},
        {"role": "user", "content": "Never mind."},
    ]
