"""The short headless commands against real hubs: sessions, agents, publish, state, fork,
and the errors every command shares (exit codes, one-line messages)."""

from __future__ import annotations

import orjson

from axtui.client import HubClient
from server.hub import Hub
from tests.axtui.conftest import CliRun, cli_events
from tests.conftest import HubFactory


async def test_sessions_lists_sessions_as_a_table_and_as_json(cli_hub: Hub,
                                                            cli_run: CliRun) -> None:
    """`axtui sessions` shows each session's id, title and agent; --json gives Session objects."""
    async with HubClient(cli_hub.url) as hub:
        await hub.create_session(sessionId="triage-42", agent="echo", title="CSV timeout")
        await hub.create_session(sessionId="plain", title="no agent")
    result = await cli_run("sessions", "--server", cli_hub.url)
    assert result.exit_code == 0, result.output
    assert "triage-42" in result.stdout and "CSV timeout" in result.stdout
    assert "plain" in result.stdout
    result = await cli_run("sessions", "--server", cli_hub.url, "--json", "--agent", "echo")
    assert [s["sessionId"] for s in cli_events(result.stdout)] == ["triage-42"]


async def test_agents_lists_the_hubs_agents(cli_hub: Hub, cli_run: CliRun) -> None:
    """`axtui agents` lists the configured agents (table and --json)."""
    result = await cli_run("agents", "--server", cli_hub.url)
    assert result.exit_code == 0
    assert "echo" in result.stdout and "demo" in result.stdout
    result = await cli_run("agents", "--server", cli_hub.url, "--json")
    assert {a["id"] for a in cli_events(result.stdout)} == {"echo", "demo"}


async def test_publish_prints_the_seq_and_is_idempotent(hub: Hub, cli_run: CliRun) -> None:
    """`axtui publish` stores the event with its data and state; the same key stores nothing."""
    async with HubClient(hub.url) as client:
        await client.create_session(sessionId="ci")
        args = ("publish", "ci", "--server", hub.url, "--type", "ci.build_failed",
                "--data", '{"job": 7}', "--idempotency-key", "build-7",
                "--state", '[{"sql": "CREATE TABLE builds (id INTEGER)"}]')
        first = await cli_run(*args)
        again = await cli_run(*args)
        assert first.exit_code == 0 and again.exit_code == 0, first.output + again.output
        assert first.stdout.strip() == again.stdout.strip() == "2"
        assert "already published" in again.stderr
        events = (await client.history("ci"))["events"]
    assert len(events) == 2
    assert events[1]["type"] == "ci.build_failed" and events[1]["data"] == {"job": 7}
    assert events[1]["state"] == [{"sql": "CREATE TABLE builds (id INTEGER)"}]


async def test_publish_refusals_are_one_line_with_the_right_code(hub: Hub,
                                                                 cli_run: CliRun) -> None:
    """A reserved type is refused by the hub (exit 1); bad --data JSON never reaches it (2)."""
    async with HubClient(hub.url) as client:
        await client.create_session(sessionId="ci")
    reserved = await cli_run("publish", "ci", "--server", hub.url, "--type", "turn.started")
    assert reserved.exit_code == 1
    assert reserved.stderr.count("\n") == 1 and "reserved" in reserved.stderr
    bad = await cli_run("publish", "ci", "--server", hub.url, "--type", "x.y", "--data", "{no")
    assert bad.exit_code == 2 and bad.stderr.startswith("axtui: --data is not valid JSON")


async def test_state_prints_a_table_and_sqlite_errors(hub: Hub, cli_run: CliRun) -> None:
    """`axtui state` prints rows as a table (params bound in order); bad SQL exits 1 with
    SQLite's message."""
    async with HubClient(hub.url) as client:
        await client.create_session(sessionId="s")
        await client.exec("s", [{"sql": "CREATE TABLE tickets (id INTEGER, status TEXT)"},
                                {"sql": "INSERT INTO tickets VALUES (42, 'open'), (7, NULL)"}])
    result = await cli_run("state", "s", "SELECT id, status FROM tickets WHERE id > ?",
                           "-p", "5", "--server", hub.url)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["id", "status"]
    assert lines[1].split() == ["42", "open"] and lines[2].split() == ["7", "NULL"]
    assert "(2 rows)" in result.stdout
    as_json = await cli_run("state", "s", "SELECT count(*) AS n FROM tickets", "--json",
                            "--server", hub.url)
    assert orjson.loads(as_json.stdout)["rows"] == [[2]]
    bad = await cli_run("state", "s", "SELECT * FROM nowhere", "--server", hub.url)
    assert bad.exit_code == 1
    assert bad.stderr == "axtui: SQLite rejected the statement: no such table: nowhere\n"


async def test_fork_copies_events_and_state(hub: Hub, cli_run: CliRun) -> None:
    """`axtui fork --at-seq N` prints the new id; the fork has events 1..N and their state."""
    async with HubClient(hub.url) as client:
        await client.create_session(sessionId="orig", title="t")
        await client.exec("orig", [{"sql": "CREATE TABLE t (x)"}])
        await client.publish("orig", "note.added", {"n": 1})
        result = await cli_run("fork", "orig", "--at-seq", "2", "--session", "copy",
                               "--server", hub.url)
        assert result.exit_code == 0, result.output
        assert result.stdout.strip() == "copy"
        events = (await client.history("copy"))["events"]
        assert [e["type"] for e in events] == ["session.created", "state.changed",
                                               "session.forked"]
        assert (await client.query("copy", "SELECT count(*) FROM t"))["rows"] == [[0]]


async def test_fork_with_another_agent(cli_hub: Hub, cli_run: CliRun) -> None:
    """`axtui fork --agent` gives the fork another agent, recorded in session.forked."""
    async with HubClient(cli_hub.url) as client:
        await client.create_session(sessionId="e", agent="echo")
        result = await cli_run("fork", "e", "--agent", "demo", "--json", "--server", cli_hub.url)
        session = orjson.loads(result.stdout)
        assert session["agent"] == "demo"
        forked = (await client.history(session["sessionId"]))["events"][-1]
    assert forked["data"] == {"fromSessionId": "e", "atSeq": 1, "agent": "demo"}


async def test_unreachable_hub_exits_3(cli_run: CliRun) -> None:
    """No hub listening: exit 3 and one line naming the URL."""
    result = await cli_run("sessions", "--server", "ws://127.0.0.1:9/ws")
    assert result.exit_code == 3
    assert result.stderr.startswith("axtui: cannot reach the hub at ws://127.0.0.1:9/ws")
    assert result.stderr.count("\n") == 1


async def test_bad_token_exits_3(hub_factory: HubFactory, cli_run: CliRun) -> None:
    """A token the hub refuses: exit 3 with one line; a good one works."""
    hub = await hub_factory(tokens=True)
    result = await cli_run("sessions", "--server", hub.url, "--token", "nope")
    assert result.exit_code == 3
    assert "refused the token" in result.stderr and result.stderr.count("\n") == 1
    ok = await cli_run("sessions", "--server", hub.url, "--token", "viewer-token")
    assert ok.exit_code == 0


async def test_forbidden_and_unknown_session_exit_1(hub_factory: HubFactory,
                                                    cli_run: CliRun) -> None:
    """An unknown session and a role too low are the hub's refusals: exit 1, one line."""
    hub = await hub_factory(tokens=True)
    unknown = await cli_run("state", "nope", "SELECT 1", "--server", hub.url,
                            "--token", "viewer-token")
    assert unknown.exit_code == 1 and unknown.stderr == "axtui: session nope does not exist\n"
    forbidden = await cli_run("publish", "nope", "--type", "x", "--server", hub.url,
                              "--token", "viewer-token")
    assert forbidden.exit_code == 1 and forbidden.stderr.count("\n") == 1


async def test_server_must_be_a_websocket_url(cli_run: CliRun) -> None:
    """A --server that is not ws:// or wss:// is bad usage (exit 2)."""
    result = await cli_run("agents", "--server", "http://127.0.0.1:8494")
    assert result.exit_code == 2 and "ws://" in result.stderr
