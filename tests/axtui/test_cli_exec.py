"""`axtui exec` against real hubs and real echo agents: one turn, streamed; permissions;
the embedded hub; and resuming a run whose client was killed or interrupted mid-turn."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import orjson

from axtui.client import HubClient
from server.hub import Hub
from tests.axtui.conftest import CliRun, cli_events
from tests.conftest import HubFactory
from tests.server.hubproc import AXTUI, HubProcess


def dense(events: list[dict[str, Any]], first: int = 1) -> bool:
    """Whether the events' seqs run from ``first`` with no gap and no repeat."""
    return [e["seq"] for e in events] == list(range(first, first + len(events)))


async def test_exec_runs_one_turn_in_a_new_session(cli_hub: Hub, cli_run: CliRun) -> None:
    """A new session's events from seq 1 to turn.completed, exit 0; pretty shows the reply."""
    result = await cli_run("exec", "--server", cli_hub.url, "--agent", "echo",
                           "--input", "hello", "--json")
    assert result.exit_code == 0, result.output
    events = cli_events(result.stdout)
    assert dense(events)
    assert events[0]["type"] == "session.created" and events[-1]["type"] == "turn.completed"
    assert any(e["type"] == "agent.message" and e["data"]["text"].startswith("echo: hello")
               for e in events)
    match = re.search(r"session (\S+) \(agent echo\)", result.stderr)
    assert match is not None
    pretty = await cli_run("exec", "--server", cli_hub.url, "--session", match[1],
                           "--input", "again")
    assert pretty.exit_code == 0, pretty.output
    assert "echo: again" in pretty.stdout and "turn.completed" in pretty.stdout
    assert "session.created" not in pretty.stdout  # an existing session starts at its head


async def test_exec_exits_1_when_the_turn_fails(cli_hub: Hub, cli_run: CliRun) -> None:
    """An agent that crashes mid-turn: turn.failed is printed, exit 1 with the reason."""
    result = await cli_run("exec", "--server", cli_hub.url, "--agent", "echo",
                           "--input", "crash", "--json")
    assert result.exit_code == 1
    assert cli_events(result.stdout)[-1]["type"] == "turn.failed"
    assert "the turn failed (crashed)" in result.stderr


async def test_exec_refuses_permission_without_a_terminal(cli_hub: Hub, cli_run: CliRun) -> None:
    """Stdin is not a terminal: the request is answered with the reject option."""
    result = await cli_run("exec", "--server", cli_hub.url, "--agent", "echo",
                           "--input", "permission", "--json")
    assert result.exit_code == 0, result.output
    events = cli_events(result.stdout)
    [answer] = [e for e in events if e["type"] == "permission.response"]
    assert answer["data"]["optionId"] == "reject"
    assert any(e["type"] == "agent.message" and "permission: reject" in e["data"]["text"]
               for e in events)
    assert "pass --approve to allow" in result.stderr


async def test_exec_approve_picks_the_allow_option(cli_hub: Hub, cli_run: CliRun) -> None:
    """--approve answers with the first allow option."""
    result = await cli_run("exec", "--server", cli_hub.url, "--agent", "echo",
                           "--input", "permission", "--approve", "--json")
    assert result.exit_code == 0, result.output
    events = cli_events(result.stdout)
    assert any(e["type"] == "agent.message" and "permission: allow" in e["data"]["text"]
               for e in events)


async def test_exec_without_server_runs_an_embedded_hub(tmp_path: Path,
                                                        cli_run: CliRun) -> None:
    """No --server: a hub on the data dir runs for the command; the session stays there."""
    data_dir = tmp_path / "data"
    result = await cli_run("exec", "--data-dir", str(data_dir), "--agent", "echo",
                           "--input", "embedded", "--json")
    assert result.exit_code == 0, result.output
    assert cli_events(result.stdout)[-1]["type"] == "turn.completed"
    assert len(list((data_dir / "sessions").glob("*.db"))) == 1
    # A second run can take the data dir: the first released its lock.
    again = await cli_run("exec", "--data-dir", str(data_dir), "--agent", "echo",
                          "--input", "twice", "--json")
    assert again.exit_code == 0, again.output


async def test_exec_embedded_on_a_busy_data_dir_suggests_server(
    hub_factory: HubFactory, tmp_path: Path, cli_run: CliRun
) -> None:
    """A token-mode hub already runs on the data dir (it advertises no local secret): exit 2
    with one line pointing to --server."""
    await hub_factory(data_dir=tmp_path / "busy", tokens=True)
    result = await cli_run("exec", "--data-dir", str(tmp_path / "busy"), "--input", "hi")
    assert result.exit_code == 2
    assert "already using" in result.stderr and "--server ws://" in result.stderr
    assert result.stderr.count("\n") == 1


async def test_exec_usage_errors(cli_hub: Hub, cli_run: CliRun) -> None:
    """Nothing to run, --resume without --session, an unknown session: clear one-liners."""
    nothing = await cli_run("exec", "--server", cli_hub.url)
    assert nothing.exit_code == 2 and "--input" in nothing.stderr
    resume = await cli_run("exec", "--server", cli_hub.url, "--resume")
    assert resume.exit_code == 2 and "--resume needs --session" in resume.stderr
    unknown = await cli_run("exec", "--server", cli_hub.url, "--session", "nope", "--resume")
    assert unknown.exit_code == 1 and unknown.stderr == "axtui: session nope does not exist\n"


async def test_exec_resume_prints_the_last_turn_after_last_seq(cli_hub: Hub,
                                                                cli_run: CliRun) -> None:
    """--resume on a session whose turn ended prints what follows --last-seq up to its end."""
    async with HubClient(cli_hub.url) as client:
        sid = (await client.create_session(agent="echo"))["sessionId"]
    first = await cli_run("exec", "--server", cli_hub.url, "--session", sid, "--input", "one",
                          "--json")
    events = cli_events(first.stdout)
    resumed = await cli_run("exec", "--server", cli_hub.url, "--session", sid, "--resume",
                            "--last-seq", str(events[2]["seq"]), "--json")
    assert resumed.exit_code == 0, resumed.output
    assert cli_events(resumed.stdout) == events[3:]


async def test_exec_asks_permission_at_the_terminal(cli_hub: Hub) -> None:
    """On a terminal the options are shown with keys; the key typed picks the answer."""
    import pexpect

    def run() -> tuple[str, int | None]:
        child = pexpect.spawn(AXTUI[0], [*AXTUI[1:], "exec", "--server", cli_hub.url,
                                         "--agent", "echo", "--input", "permission"],
                              encoding="utf-8", timeout=30, dimensions=(40, 200))
        child.expect(r"\[1\] Allow  \[2\] Reject  \[c\] cancel")
        child.sendline("1")
        child.expect(pexpect.EOF)
        child.close()
        return child.before, child.exitstatus

    colored, status = await asyncio.to_thread(run)
    assert status == 0, colored
    output = re.sub(r"\x1b\[[0-9;]*m", "", colored)  # a terminal gets colours
    assert "permission: allow" in output and "turn.completed" in output


async def test_exec_resume_waits_for_the_queued_turn(cli_hub: Hub, cli_run: CliRun) -> None:
    """--resume with a message still queued behind a running turn follows the queued turn,
    printing from its trigger to its end."""
    async with HubClient(cli_hub.url) as client:
        sid = (await client.create_session(agent="echo"))["sessionId"]
        await client.publish(sid, "user.message", {"text": "sleep 0.5"})
        queued = (await client.publish(sid, "user.message", {"text": "queued"}))["seq"]
    result = await cli_run("exec", "--server", cli_hub.url, "--session", sid, "--resume",
                           "--json")
    assert result.exit_code == 0, result.output
    events = cli_events(result.stdout)
    assert events[0]["seq"] == queued and dense(events, queued)
    [started] = [e for e in events
                 if e["type"] == "turn.started" and e["data"]["triggerSeq"] == queued]
    assert events[-1]["type"] == "turn.completed"
    assert events[-1]["data"]["turnId"] == started["data"]["turnId"]


# --- a real `axtui exec` process, killed or interrupted mid-turn ---------------------------

def start_exec(*args: str) -> subprocess.Popen[str]:
    """`axtui exec ... --json` as a child process."""
    return subprocess.Popen([*AXTUI, "exec", *args, "--json"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def read_until(proc: subprocess.Popen[str], event_type: str) -> list[dict[str, Any]]:
    """Events from the child's stdout up to and including the first of ``event_type``."""
    assert proc.stdout is not None
    events = []
    for line in proc.stdout:
        events.append(orjson.loads(line))
        if events[-1]["type"] == event_type:
            return events
    raise AssertionError(f"exec ended before {event_type}: {proc.stderr.read()}")  # type: ignore[union-attr]


def test_exec_killed_mid_turn_resumes_without_loss_or_repeat(tmp_path: Path) -> None:
    """SIGKILL during a slow turn; `exec --resume --last-seq N` with the last seq printed
    finishes the turn: both outputs together hold every event exactly once."""
    with HubProcess(tmp_path / "data").start() as hub:
        proc = start_exec("--server", str(hub.url), "--agent", "echo", "--input", "sleep 2")
        seen = read_until(proc, "turn.started")
        proc.kill()
        out, err = proc.communicate(timeout=10)
        seen += [orjson.loads(line) for line in out.splitlines()]
        sid = re.search(r"session (\S+) ", err)
        assert sid is not None, err
        resumed = subprocess.run(
            [*AXTUI, "exec", "--server", str(hub.url), "--session", sid[1], "--resume",
             "--last-seq", str(seen[-1]["seq"]), "--json"],
            capture_output=True, text=True, timeout=60, check=False)
    assert resumed.returncode == 0, resumed.stderr
    rest = [orjson.loads(line) for line in resumed.stdout.splitlines()]
    union = seen + rest
    assert dense(union)
    assert union[-1]["type"] == "turn.completed"
    assert union[-1]["data"]["stopReason"] == "end_turn"


def test_exec_ctrl_c_cancels_and_prints_the_resume_command(tmp_path: Path) -> None:
    """SIGINT mid-turn: the turn is cancelled, exit 130, and the printed command resumes
    with nothing repeated and nothing missed."""
    with HubProcess(tmp_path / "data").start() as hub:
        proc = start_exec("--server", str(hub.url), "--agent", "echo", "--input", "sleep 30")
        seen = read_until(proc, "turn.started")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        seen += [orjson.loads(line) for line in out.splitlines()]
        match = re.search(r"to resume: axtui (exec .*)$", err, re.MULTILINE)
        assert match is not None, err
        args = match[1].split()
        assert args[args.index("--last-seq") + 1] == str(seen[-1]["seq"])
        assert "--server" in args and "--json" in args
        resumed = subprocess.run([*AXTUI, *args], capture_output=True, text=True, timeout=60,
                                 check=False)
    assert resumed.returncode == 0, resumed.stderr
    union = seen + [orjson.loads(line) for line in resumed.stdout.splitlines()]
    assert dense(union)
    ends = [e for e in union if e["type"] == "turn.completed"]
    assert [e["data"]["stopReason"] for e in ends] == ["cancelled"]
