"""What a new user trips over in the CLI (issue 14), against real hubs: `exec` naming its
session, `exec` next to a running `axtui up`, permission answers from other clients,
piped `sessions`, `delete`, and messages that say what to do next."""

from __future__ import annotations

import asyncio
import re
import socket
from pathlib import Path

from axtui.client import HubClient
from server.hub import Hub
from tests.axtui.conftest import CliRun, cli_events
from tests.axtui.test_cli_exec import dense
from tests.conftest import HubFactory
from tests.server.agent_helpers import agent_hub, echo_agent
from tests.server.hubproc import AXTUI, run_axtui


async def test_exec_with_a_new_session_name_creates_that_session(cli_hub: Hub,
                                                                 cli_run: CliRun) -> None:
    """`exec --session NAME --agent A` with a new NAME creates the session NAME running A,
    prints it from seq 1, and a second run with the same NAME continues in it."""
    result = await cli_run("exec", "--server", cli_hub.url, "--session", "build-1234",
                           "--agent", "echo", "--input", "hello", "--json")
    assert result.exit_code == 0, result.output
    events = cli_events(result.stdout)
    assert dense(events) and events[0]["type"] == "session.created"
    assert events[-1]["type"] == "turn.completed"
    assert "created session build-1234 (agent echo)" in result.stderr
    async with HubClient(cli_hub.url) as client:
        session = await client.get_session("build-1234")
    assert session["agent"] == "echo"
    again = await cli_run("exec", "--server", cli_hub.url, "--session", "build-1234",
                          "--agent", "echo", "--input", "again", "--json")
    assert again.exit_code == 0, again.output
    assert cli_events(again.stdout)[0]["seq"] > events[-1]["seq"]
    assert "created" not in again.stderr


async def test_exec_next_to_a_running_hub_uses_it(hub_factory: HubFactory, tmp_path: Path,
                                                  cli_run: CliRun) -> None:
    """No --server while a hub (`axtui up`) runs on the data dir: exec runs the turn on that
    hub, and the session stays there."""
    data_dir = tmp_path / "busy"
    running = await agent_hub(hub_factory, echo_agent(tmp_path), data_dir=data_dir)
    result = await cli_run("exec", "--data-dir", str(data_dir), "--agent", "echo",
                           "--session", "tour", "--input", "hi", "--json")
    assert result.exit_code == 0, result.output
    assert cli_events(result.stdout)[-1]["type"] == "turn.completed"
    assert f"using the hub already running on {data_dir}" in result.stderr
    async with HubClient(running.url) as client:
        events = (await client.history("tour"))["events"]
    assert any(e["type"] == "turn.completed" for e in events)


async def test_exec_prompt_gives_way_to_an_answer_from_another_client(cli_hub: Hub) -> None:
    """At a terminal prompt, a TUI answering first ends the prompt at once: exec says who
    answered and the turn carries on to its end (exit 0) with nothing typed."""
    import pexpect

    child = await asyncio.to_thread(
        pexpect.spawn, AXTUI[0], [*AXTUI[1:], "exec", "--server", cli_hub.url, "--session",
                                  "asked", "--agent", "echo", "--input", "permission"],
        encoding="utf-8", timeout=30, dimensions=(40, 200))
    try:
        await asyncio.to_thread(child.expect, r"\[c\] cancel")
        async with HubClient(cli_hub.url, kind="tui") as tui:
            [request] = (await tui.history("asked", types=["permission.request"]))["events"]
            await tui.publish("asked", "permission.response",
                              {"requestId": request["data"]["requestId"], "optionId": "allow"})
        await asyncio.to_thread(child.expect, pexpect.EOF)
    finally:
        await asyncio.to_thread(child.close, True)
    output = re.sub(r"\x1b\[[0-9;]*m", "", child.before or "")
    assert child.exitstatus == 0, output
    assert "answered by local via tui" in output
    assert "permission: allow" in output and "turn.completed" in output


async def test_sessions_piped_prints_whole_ids_without_table_art(cli_hub: Hub,
                                                                cli_run: CliRun) -> None:
    """`axtui sessions | …`: one tab-separated line a session, the whole id and title, no
    header and no padding, however long they are."""
    long_id = "ci-" + "x" * 70
    title = "a title long enough to be cut in an 80-column table " * 2
    async with HubClient(cli_hub.url) as hub:
        await hub.create_session(sessionId=long_id, agent="echo", title=title)
    result = await cli_run("sessions", "--server", cli_hub.url)
    assert result.exit_code == 0, result.output
    [line] = result.stdout.splitlines()
    fields = line.split("\t")
    assert fields[:5] == [long_id, title, "echo", fields[3], "1"]
    assert "…" not in result.stdout


async def _exists(url: str, session_id: str) -> bool:
    """Whether the hub at ``url`` lists ``session_id``."""
    async with HubClient(url) as hub:
        return session_id in [s["sessionId"] async for s in hub.list_sessions()]


async def test_delete_without_a_terminal_needs_yes(hub: Hub, cli_run: CliRun) -> None:
    """`axtui delete` piped: without --yes nothing is deleted (exit 2, says to pass --yes);
    with --yes the session is gone; an unknown one is the hub's refusal (exit 1)."""
    async with HubClient(hub.url) as client:
        await client.create_session(sessionId="old", title="stale")
    refused = await cli_run("delete", "old", "--server", hub.url)
    assert refused.exit_code == 2 and "--yes" in refused.stderr
    assert refused.stderr.count("\n") == 1
    assert await _exists(hub.url, "old")
    deleted = await cli_run("delete", "old", "--yes", "--server", hub.url)
    assert deleted.exit_code == 0, deleted.output
    assert "deleted session old" in deleted.stderr
    assert not await _exists(hub.url, "old")
    unknown = await cli_run("delete", "old", "--yes", "--server", hub.url)
    assert unknown.exit_code == 1 and unknown.stderr == "axtui: session old does not exist\n"


async def test_delete_needs_the_admin_role(hub_factory: HubFactory, cli_run: CliRun) -> None:
    """A token below admin cannot delete (exit 1, one line)."""
    hub = await hub_factory(tokens=True)
    async with HubClient(hub.url, token="admin-token") as client:
        await client.create_session(sessionId="kept")
    refused = await cli_run("delete", "kept", "--yes", "--server", hub.url,
                            "--token", "viewer-token")
    assert refused.exit_code == 1 and refused.stderr.count("\n") == 1


async def test_delete_at_a_terminal_asks_first(hub: Hub) -> None:
    """At a terminal `axtui delete` asks; "n" keeps the session, "y" deletes it."""
    import pexpect

    async with HubClient(hub.url) as client:
        await client.create_session(sessionId="asked", title="to go")

    async def answer(key: str) -> int | None:
        child = await asyncio.to_thread(
            pexpect.spawn, AXTUI[0], [*AXTUI[1:], "delete", "asked", "--server", hub.url],
            encoding="utf-8", timeout=30)
        await asyncio.to_thread(child.expect, r"Delete session asked .*\[y/N\]")
        child.sendline(key)
        await asyncio.to_thread(child.expect, pexpect.EOF)
        await asyncio.to_thread(child.close)
        return child.exitstatus

    assert await answer("n") == 1
    assert await _exists(hub.url, "asked")
    assert await answer("y") == 0
    assert not await _exists(hub.url, "asked")


async def test_unreachable_hub_says_how_to_start_one(cli_run: CliRun) -> None:
    """Exit 3 for a hub nobody runs: the one line names `axtui up` and `axtui serve`."""
    result = await cli_run("sessions", "--server", "ws://127.0.0.1:9/ws")
    assert result.exit_code == 3
    assert "axtui up" in result.stderr and "axtui serve" in result.stderr
    assert result.stderr.count("\n") == 1


async def test_fork_at_seq_out_of_range_names_the_flag(hub: Hub, cli_run: CliRun) -> None:
    """`fork --at-seq 99` past the head: the message speaks of --at-seq, not atSeq."""
    async with HubClient(hub.url) as client:
        await client.create_session(sessionId="short")
    result = await cli_run("fork", "short", "--at-seq", "99", "--server", hub.url)
    assert result.exit_code == 1
    assert result.stderr == "axtui: --at-seq must be between 1 and 1\n"


def test_a_port_in_use_names_the_port_flag(tmp_path: Path) -> None:
    """`axtui serve` and `axtui up` on a port already taken: exit 2, and the one line says
    to pass another --port."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        for command in ("serve", "up"):
            result = run_axtui(command, "--port", port, "--data-dir", str(tmp_path / command))
            assert result.returncode == 2, result.stderr
            assert f"port {port} is already in use" in result.stderr
            assert "--port" in result.stderr
