"""`axtui replay --rerun`: the recorded input sent again into a fork, the output compared."""

from __future__ import annotations

import orjson

from axtui.client import HubClient
from server.hub import Hub
from tests.axtui.conftest import CliRun


async def recorded_echo_session(hub: Hub) -> None:
    """An echo session of two turns, a permission answered, and an app event between."""
    async with HubClient(hub.url) as client:
        await client.create_session(sessionId="orig", agent="echo", title="regress")
        sub = client.subscribe("orig")
        for text in ("hello", "permission"):
            await client.publish("orig", "user.message", {"text": text})
            async for event in sub:
                if event["type"] == "permission.request":
                    await client.publish("orig", "permission.response", {
                        "requestId": event["data"]["requestId"], "optionId": "allow"})
                if event["type"] == "turn.completed":
                    break
            await client.publish("orig", "ci.build", {"ok": True})
        await sub.close()


async def test_rerun_against_echo_shows_no_difference(cli_hub: Hub, cli_run: CliRun) -> None:
    """echo is deterministic: the rerun's turns match the original's, exit 0; the
    permission was answered as recorded."""
    await recorded_echo_session(cli_hub)
    result = await cli_run("replay", "orig", "--rerun", "--server", cli_hub.url)
    assert result.exit_code == 0, result.output
    assert "no differences in 2 turns" in result.stdout
    report = await cli_run("replay", "orig", "--rerun", "--json", "--server", cli_hub.url)
    data = orjson.loads(report.stdout)
    assert data["same"] and [t["same"] for t in data["turns"]] == [True, True]
    assert "message: permission: allow" in data["turns"][1]["rerun"]
    async with HubClient(cli_hub.url) as client:
        fork = (await client.history(data["fork"], limit=5000))["events"]
    assert [e["type"] for e in fork[:2]] == ["session.created", "session.forked"]
    assert [e["type"] for e in fork if e["source"]["kind"] == "client"][2:] == [
        "user.message", "ci.build", "user.message", "permission.response", "ci.build"]


async def test_rerun_against_another_agent_shows_the_differences(cli_hub: Hub,
                                                                 cli_run: CliRun) -> None:
    """Rerun against demo: every turn differs; the diff shows both outputs; exit 1."""
    await recorded_echo_session(cli_hub)
    result = await cli_run("replay", "orig", "--rerun", "--agent", "demo",
                           "--server", cli_hub.url)
    assert result.exit_code == 1, result.output
    assert "2 of 2 turns differ" in result.stdout
    assert "-message: echo: hello" in result.stdout
    assert "+tool: Look up related tickets [search] -> completed" in result.stdout
    assert "+plan: [" in result.stdout


async def test_rerun_usage(cli_hub: Hub, cli_run: CliRun) -> None:
    """--rerun needs a hub and a session; --agent goes with --rerun; unknown agent exits 1."""
    db = await cli_run("replay", "--db", "x.db", "--rerun")
    assert db.exit_code == 2 and "--rerun needs SESSION" in db.stderr
    agent = await cli_run("replay", "orig", "--agent", "demo", "--server", cli_hub.url)
    assert agent.exit_code == 2 and "--agent goes with --rerun" in agent.stderr
    await recorded_echo_session(cli_hub)
    unknown = await cli_run("replay", "orig", "--rerun", "--agent", "nope",
                            "--server", cli_hub.url)
    assert unknown.exit_code == 1 and "no agent named 'nope'" in unknown.stderr
