"""The state MCP server: a real hub, the real server process, the real MCP client."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from mcp import Client, StdioServerParameters
from mcp.types import CallToolResult

from server.hub import Hub
from tests.conftest import HubFactory, Raw, RawFactory

SERVER = ["-m", "axtui.mcp_state"]
TICKETS = [
    {"sql": "CREATE TABLE tickets (id TEXT PRIMARY KEY, status TEXT)"},
    {"sql": "INSERT INTO tickets VALUES (?, ?), (?, ?)", "params": ["T-1", "open", "T-2", "open"]},
    {"sql": "INSERT INTO tickets VALUES (:id, :status)", "params": {"id": "T-3", "status": "done"}},
]


def server_env(url: str, token: str, session_id: str) -> dict[str, str]:
    """The environment the hub gives the state server (see ``state_server``)."""
    return {"AXTUI_HUB_URL": url, "AXTUI_HUB_TOKEN": token, "AXTUI_SESSION_ID": session_id,
            "PATH": os.environ["PATH"]}


@asynccontextmanager
async def state_client(url: str, token: str, session_id: str) -> AsyncIterator[Client]:
    """Start ``python -m axtui.mcp_state`` and connect the MCP client to it."""
    params = StdioServerParameters(command=sys.executable, args=SERVER,
                                   env=server_env(url, token, session_id))
    async with Client(params) as client:
        yield client


async def admin_session(hub_factory: HubFactory, raw_factory: RawFactory) -> tuple[Hub, Raw, str]:
    """A hub with tokens, an admin connection, and a new session's id."""
    hub = await hub_factory(tokens=True)
    admin = await raw_factory(hub, initialize=False)
    await admin.initialize(token="admin-token")
    session = await admin.call("session/create", {"title": "state"})
    return hub, admin, session["session"]["sessionId"]


def mcp_connections(hub: Hub) -> int:
    """How many state servers are connected to ``hub``."""
    return sum(1 for conn in hub.connections if conn.client_kind == "mcp")


def error_text(result: CallToolResult) -> str:
    """The text of a tool result that must be an error."""
    assert result.is_error, result
    return " ".join(getattr(block, "text", "") for block in result.content)


def structured(result: CallToolResult) -> dict[str, Any]:
    """The structured content of a tool result that must have succeeded."""
    assert not result.is_error, result.content
    content: dict[str, Any] | None = result.structured_content
    assert content is not None
    return content


async def test_lists_the_three_tools(hub_factory: HubFactory, raw_factory: RawFactory) -> None:
    """The server offers query_state, exec_state and list_tables, described for a model."""
    hub, _, sid = await admin_session(hub_factory, raw_factory)
    url, token, _ = hub.auth.agent_credentials(sid, "demo")
    async with state_client(url, token, sid) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert mcp_connections(hub) == 0  # the hub is reached only on the first tool call
    assert sorted(tools) == ["exec_state", "list_tables", "query_state"]
    assert all("events" in (tool.description or "") for tool in tools.values())
    assert set(tools["query_state"].input_schema["properties"]) == {"sql", "params", "limit"}
    assert tools["query_state"].input_schema["required"] == ["sql"]
    assert tools["exec_state"].input_schema["required"] == ["statements"]
    assert tools["query_state"].annotations is not None
    assert tools["query_state"].annotations.read_only_hint is True


async def test_exec_then_query(hub_factory: HubFactory, raw_factory: RawFactory) -> None:
    """exec_state writes atomically as the agent (state.changed); query_state reads it back."""
    hub, admin, sid = await admin_session(hub_factory, raw_factory)
    url, token, _ = hub.auth.agent_credentials(sid, "demo")
    async with state_client(url, token, sid) as client:
        written = structured(await client.call_tool("exec_state", {"statements": TICKETS}))
        read = structured(await client.call_tool("query_state", {
            "sql": "SELECT id, status FROM tickets WHERE status = ? ORDER BY id",
            "params": ["open"],
        }))
        limited = structured(await client.call_tool("query_state", {
            "sql": "SELECT id FROM tickets ORDER BY id", "limit": 2,
        }))
        log = structured(await client.call_tool("query_state", {
            "sql": "SELECT type, json_extract(source, '$.kind') FROM events ORDER BY seq",
        }))
        assert mcp_connections(hub) == 1  # one connection, reused by every call
    assert written == {"seq": 2, "changes": 3}
    assert read == {"columns": ["id", "status"], "rows": [["T-1", "open"], ["T-2", "open"]],
                    "truncated": False}
    assert limited == {"columns": ["id"], "rows": [["T-1"], ["T-2"]], "truncated": True}
    assert log["rows"] == [["session.created", "client"], ["state.changed", "agent"]]
    history = await admin.call("session/history", {"sessionId": sid})
    event = history["events"][-1]
    assert event["type"] == "state.changed"
    assert event["source"] == {"kind": "agent", "name": "demo", "client": "mcp"}
    assert event["data"] == {"statements": TICKETS, "changes": 3}


async def test_refusals_are_tool_errors(hub_factory: HubFactory, raw_factory: RawFactory) -> None:
    """A write through query_state, bad SQL, or a failing batch: tool errors; the server lives."""
    hub, admin, sid = await admin_session(hub_factory, raw_factory)
    url, token, _ = hub.auth.agent_credentials(sid, "demo")
    async with state_client(url, token, sid) as client:
        structured(await client.call_tool("exec_state", {"statements": TICKETS[:2]}))
        write = await client.call_tool("query_state", {"sql": "DELETE FROM tickets"})
        typo = await client.call_tool("query_state", {"sql": "SELEC 1"})
        hub_table = await client.call_tool("query_state", {"sql": "SELECT * FROM ax_events"})
        batch = await client.call_tool("exec_state", {"statements": [
            {"sql": "INSERT INTO tickets VALUES ('T-9', 'open')"},
            {"sql": "INSERT INTO nowhere VALUES (1)"},
        ]})
        count = structured(await client.call_tool("query_state", {
            "sql": "SELECT count(*) FROM tickets",
        }))
    assert "state/query is read-only: use state/exec to change state" in error_text(write)
    assert 'near "SELEC": syntax error' in error_text(typo)
    assert "ax_events is not readable" in error_text(hub_table)
    assert "no such table: nowhere" in error_text(batch)
    assert count["rows"] == [[2]]
    assert (await admin.call("session/get", {"sessionId": sid}))["session"]["headSeq"] == 2


async def test_list_tables_shows_app_tables(
    hub_factory: HubFactory, raw_factory: RawFactory
) -> None:
    """list_tables shows the app's tables and the events view, never the hub's ax_* tables."""
    hub, _, sid = await admin_session(hub_factory, raw_factory)
    url, token, _ = hub.auth.agent_credentials(sid, "demo")
    async with state_client(url, token, sid) as client:
        structured(await client.call_tool("exec_state", {"statements": [
            {"sql": "CREATE TABLE notes (id INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT)"},
            {"sql": "INSERT INTO notes (body) VALUES ('hello')"},
        ]}))
        tables = structured(await client.call_tool("list_tables", {}))["tables"]
    assert [t["name"] for t in tables] == ["events", "notes"]
    assert tables[1]["sql"].startswith("CREATE TABLE notes")


async def test_other_sessions_token_is_refused(
    hub_factory: HubFactory, raw_factory: RawFactory
) -> None:
    """A token minted for another session cannot read or change this one."""
    hub, admin, sid = await admin_session(hub_factory, raw_factory)
    other = (await admin.call("session/create", {}))["session"]["sessionId"]
    url, token, _ = hub.auth.agent_credentials(other, "demo")
    async with state_client(url, token, sid) as client:
        read = await client.call_tool("query_state", {"sql": "SELECT 1"})
        write = await client.call_tool("exec_state", {"statements": TICKETS[:1]})
    for result in (read, write):
        assert f"only use ping, session/get, session/history, state/exec, state/query on its own" \
               f" session ({other})" in error_text(result)
    assert (await admin.call("session/get", {"sessionId": sid}))["session"]["headSeq"] == 1


async def test_revoked_token_cannot_connect(
    hub_factory: HubFactory, raw_factory: RawFactory
) -> None:
    """After revoke(), a new server process gets a tool error saying the token was refused."""
    hub, _, sid = await admin_session(hub_factory, raw_factory)
    url, token, revoke = hub.auth.agent_credentials(sid, "demo")
    revoke()
    async with state_client(url, token, sid) as client:
        result = await client.call_tool("list_tables", {})
    assert "refused the token" in error_text(result)


@pytest.mark.parametrize("missing", ["AXTUI_HUB_URL", "AXTUI_HUB_TOKEN", "AXTUI_SESSION_ID"])
async def test_missing_settings_exit_2(missing: str) -> None:
    """Without one of its three variables the server says which and exits with code 2."""
    env = server_env("ws://127.0.0.1:1/ws", "token", "s-1")
    del env[missing]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *SERVER, env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert stdout == b""
    assert f"{missing} not set" in stderr.decode()
