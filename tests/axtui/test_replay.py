"""`axtui replay` from a real hub and straight from a session file with no hub running."""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path

from axtui.client import HubClient
from server.hub import Hub
from tests.axtui.conftest import CliRun, cli_events
from tests.conftest import HubFactory
from tests.server.agent_helpers import agent_hub, echo_agent

LINE = re.compile(r"^\s*(\d+) \d\d:\d\d:\d\d\.\d{3} (\S+)\s+(\S+)\s+(.*)$")


async def echo_session(hub: Hub, sid: str = "r") -> None:
    """A session with an echo turn and a state write."""
    async with HubClient(hub.url) as client:
        await client.create_session(sessionId=sid, agent="echo", title="replayed")
        sub = client.subscribe(sid)
        await client.publish(sid, "user.message", {"text": "hello"})
        async for event in sub:
            if event["type"] == "turn.completed":
                break
        await sub.close()
        await client.exec(sid, [{"sql": "CREATE TABLE notes (body TEXT)"},
                                {"sql": "INSERT INTO notes VALUES (?)", "params": ["hi"]}])


async def test_pretty_replay_is_readable_and_skips_chunks(cli_hub: Hub, cli_run: CliRun) -> None:
    """Each line has seq, time, source, type and a body; chunks are left out (the whole
    agent.message is there), statements are shown."""
    await echo_session(cli_hub)
    result = await cli_run("replay", "r", "--server", cli_hub.url)
    assert result.exit_code == 0, result.output
    rows = [m.groups() for line in result.stdout.splitlines() if (m := LINE.match(line))]
    types = [r[2] for r in rows]
    assert "agent.message.chunk" not in types
    assert ("2", "local/cli", "user.message", "hello") in rows
    [message] = [r for r in rows if r[2] == "agent.message"]
    assert message[1] == "echo" and message[3] == "echo: hello"
    assert "(I have seen 1 messages in this session)" in result.stdout
    assert "INSERT INTO notes VALUES (?)  [\"hi\"]" in result.stdout
    seqs = [int(r[0]) for r in rows]
    assert seqs == sorted(seqs) and seqs[0] == 1


async def test_types_and_seq_range_filter(cli_hub: Hub, cli_run: CliRun) -> None:
    """--types globs (comma-separated or repeated) and --from-seq/--to-seq select events;
    --types can ask for chunks in pretty mode."""
    await echo_session(cli_hub)
    turns = await cli_run("replay", "r", "--server", cli_hub.url, "--format", "jsonl",
                          "--types", "turn.*")
    assert [e["type"] for e in cli_events(turns.stdout)] == ["turn.started", "turn.completed"]
    both = await cli_run("replay", "r", "--server", cli_hub.url, "--json",
                         "--types", "user.message,state.*", "--types", "session.created")
    assert [e["type"] for e in cli_events(both.stdout)] == ["session.created", "user.message",
                                                            "state.changed"]
    window = await cli_run("replay", "r", "--server", cli_hub.url, "--json",
                           "--from-seq", "3", "--to-seq", "5")
    assert [e["seq"] for e in cli_events(window.stdout)] == [3, 4, 5]
    chunks = await cli_run("replay", "r", "--server", cli_hub.url, "--types", "*.chunk")
    assert chunks.stdout.count("agent.message.chunk") == 3


async def test_jsonl_is_exactly_what_the_hub_sent(cli_hub: Hub, cli_run: CliRun) -> None:
    """--format jsonl prints every event (chunks too) as session/history returns it;
    --speed replays the same events."""
    await echo_session(cli_hub)
    async with HubClient(cli_hub.url) as client:
        stored = (await client.history("r"))["events"]
    result = await cli_run("replay", "r", "--server", cli_hub.url, "--format", "jsonl")
    assert cli_events(result.stdout) == stored
    paced = await cli_run("replay", "r", "--server", cli_hub.url, "--json", "--speed", "1000")
    assert cli_events(paced.stdout) == stored


async def test_follow_streams_live_events(hub: Hub, cli_run: CliRun) -> None:
    """--follow keeps streaming events published after it started (until --to-seq)."""
    async with HubClient(hub.url) as client:
        await client.create_session(sessionId="live")
        replay = asyncio.create_task(cli_run("replay", "live", "--server", hub.url, "--json",
                                             "--follow", "--to-seq", "3"))
        await client.publish("live", "note.added", {"n": 1})
        await client.publish("live", "note.added", {"n": 2})
        result = await asyncio.wait_for(replay, 30)
    assert [e["seq"] for e in cli_events(result.stdout)] == [1, 2, 3]


async def test_replay_of_an_unknown_session_exits_1(hub: Hub, cli_run: CliRun) -> None:
    """An unknown session: exit 1, one line."""
    result = await cli_run("replay", "nope", "--server", hub.url)
    assert result.exit_code == 1 and result.stderr == "axtui: session nope does not exist\n"


async def test_replay_db_reads_a_copied_file_with_no_hub(hub_factory: HubFactory, tmp_path: Path,
                                                         cli_run: CliRun) -> None:
    """A session file copied after the hub stopped replays with --db exactly as the hub
    served it, and nothing is written next to the copy."""
    hub = await agent_hub(hub_factory, echo_agent(tmp_path))
    await echo_session(hub)
    from_hub = await cli_run("replay", "r", "--server", hub.url, "--json")
    pretty_hub = await cli_run("replay", "r", "--server", hub.url)
    await hub.stop()
    copy_dir = tmp_path / "copy"
    copy_dir.mkdir()
    copy = copy_dir / "r.db"
    shutil.copy(hub.config.hub.data_dir / "sessions" / "r.db", copy)
    result = await cli_run("replay", "--db", str(copy), "--json")
    assert result.exit_code == 0, result.output
    served = cli_events(from_hub.stdout)
    read = cli_events(result.stdout)
    assert read[: len(served)] == served
    assert [e["type"] for e in read[len(served):]] == ["agent.status"]  # the hub's stop
    pretty = await cli_run("replay", "r", "--db", str(copy))
    assert pretty.stdout.startswith(pretty_hub.stdout)
    turns = await cli_run("replay", "--db", str(copy), "--json", "--types", "turn.*",
                          "--from-seq", "2")
    assert [e["type"] for e in cli_events(turns.stdout)] == ["turn.started", "turn.completed"]
    assert sorted(p.name for p in copy_dir.iterdir()) == ["r.db"]


async def test_replay_db_errors(tmp_path: Path, cli_run: CliRun) -> None:
    """A missing file, a file that is not a session, --follow with --db: exit 2, one line."""
    missing = await cli_run("replay", "--db", str(tmp_path / "none.db"))
    assert missing.exit_code == 2 and "no such session file" in missing.stderr
    junk = tmp_path / "junk.db"
    junk.write_text("not sqlite")
    bad = await cli_run("replay", "--db", str(junk))
    assert bad.exit_code == 2 and "is not an axtui session file" in bad.stderr
    assert bad.stderr.count("\n") == 1
    follow = await cli_run("replay", "--db", str(junk), "--follow")
    assert follow.exit_code == 2 and "--follow needs a hub" in follow.stderr
