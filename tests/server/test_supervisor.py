"""Agents as real subprocesses (the bundled echo agent): turns, resume, crashes, cancel."""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from server.config import AgentConfig
from server.supervisor import wakes
from tests.conftest import HubFactory, RawFactory, restart
from tests.server.agent_helpers import agent_session, echo_agent, say, until
from tests.server.hubproc import pid_alive, process_state


async def test_full_turn_with_echo(hub_factory: HubFactory, raw_factory: RawFactory,
                                   tmp_path: Path) -> None:
    """A user.message starts the agent and runs one turn, recorded event by event."""
    _, raw = await agent_session(hub_factory, raw_factory, echo_agent(tmp_path))
    trigger = await say(raw, "a", "hello")
    seen: list[dict[str, Any]] = []
    done = await until(raw, "a", "turn.completed", seen)
    types = [e["type"] for e in seen]
    assert types[:4] == ["session.created", "user.message", "agent.status", "agent.status"]
    assert [e["data"]["state"] for e in seen[2:4]] == ["starting", "ready"]
    assert seen[3]["data"]["resumeMode"] == "new"
    started = next(e for e in seen if e["type"] == "turn.started")
    assert started["data"]["triggerSeq"] == trigger
    turn_id = started["data"]["turnId"]
    chunks = [e for e in seen if e["type"] == "agent.message.chunk"]
    [message] = [e for e in seen if e["type"] == "agent.message"]
    assert "".join(c["data"]["text"] for c in chunks) == message["data"]["text"]
    assert message["data"]["text"].startswith("echo: hello")
    assert message["source"] == {"kind": "agent", "name": "echo"}
    assert all(e["turnId"] == turn_id for e in seen[seen.index(started):])
    assert done["data"] == {"turnId": turn_id, "stopReason": "end_turn"}
    session = (await raw.call("session/get", {"sessionId": "a"}))["session"]
    assert session["agentState"] == "idle"


async def test_messages_during_a_turn_run_in_order(hub_factory: HubFactory,
                                                   raw_factory: RawFactory,
                                                   tmp_path: Path) -> None:
    """Three messages sent during one turn each get their own turn, in order."""
    _, raw = await agent_session(hub_factory, raw_factory, echo_agent(tmp_path))
    triggers = [await say(raw, "a", t) for t in ("sleep 0.3", "one", "two", "three")]
    seen: list[dict[str, Any]] = []
    for _ in triggers:
        await until(raw, "a", "turn.completed", seen)
    started = [e["data"]["triggerSeq"] for e in seen if e["type"] == "turn.started"]
    assert started == triggers
    replies = [e["data"]["text"].split("\n")[0] for e in seen if e["type"] == "agent.message"]
    assert replies == ["echo: sleep 0.3", "echo: one", "echo: two", "echo: three"]


async def test_suspend_when_idle_and_resume_with_conversation(
    hub_factory: HubFactory, raw_factory: RawFactory, tmp_path: Path
) -> None:
    """After idle_timeout the process is gone; the next message resumes the conversation."""
    _, raw = await agent_session(hub_factory, raw_factory, echo_agent(tmp_path, idle_timeout=0.3))
    await say(raw, "a", "first")
    seen: list[dict[str, Any]] = []
    await until(raw, "a", "turn.completed", seen)
    pid = next(e["data"]["pid"] for e in seen if e["data"].get("state") == "ready")
    suspended = await until(raw, "a", "agent.status", seen)
    assert suspended["data"] == {"state": "suspended"}
    assert not pid_alive(pid)
    assert (await raw.call("session/get", {"sessionId": "a"}))["session"]["agentState"] \
        == "suspended"
    await say(raw, "a", "second")
    ready = await until(raw, "a", "agent.status", seen)
    ready = await until(raw, "a", "agent.status", seen)
    assert ready["data"]["state"] == "ready" and ready["data"]["resumeMode"] == "resume"
    await until(raw, "a", "turn.completed", seen)
    last = [e for e in seen if e["type"] == "agent.message"][-1]
    assert "I have seen 2 messages" in last["data"]["text"]


@pytest.mark.parametrize(("offered", "mode"), [("load", "load"), ("", "new")])
async def test_conversation_restored_without_resume(
    hub_factory: HubFactory, raw_factory: RawFactory, tmp_path: Path, offered: str, mode: str
) -> None:
    """Without session/resume the hub uses session/load (replay dropped), else new + transcript."""
    env = {"AXTUI_ECHO_STATE": str(tmp_path / "echo-state"), "AXTUI_ECHO_CAPABILITIES": offered}
    _, raw = await agent_session(
        hub_factory, raw_factory, echo_agent(tmp_path, idle_timeout=0.2, env=env)
    )
    await say(raw, "a", "first")
    seen: list[dict[str, Any]] = []
    await until(raw, "a", "turn.completed", seen)
    await until(raw, "a", "agent.status", seen)  # suspended
    await say(raw, "a", "second")
    await until(raw, "a", "agent.status", seen)  # starting
    ready = await until(raw, "a", "agent.status", seen)
    assert ready["data"]["resumeMode"] == mode
    await until(raw, "a", "turn.completed", seen)
    messages = [e["data"]["text"] for e in seen if e["type"] == "agent.message"]
    assert len(messages) == 2  # a load's replay is not recorded again
    if mode == "load":
        assert "I have seen 2 messages" in messages[1]
    else:
        assert "The conversation so far" in messages[1] and "user: first" in messages[1]
        assert "assistant: echo: first" in messages[1]


async def test_crash_mid_turn(hub_factory: HubFactory, raw_factory: RawFactory,
                              tmp_path: Path) -> None:
    """An agent that dies mid-turn: turn.failed crashed with its stderr; the next turn works."""
    _, raw = await agent_session(hub_factory, raw_factory, echo_agent(tmp_path))
    await say(raw, "a", "crash")
    seen: list[dict[str, Any]] = []
    failed = await until(raw, "a", "turn.failed", seen)
    assert failed["data"]["reason"] == "crashed"
    assert "exit code 3" in failed["data"]["error"]["message"]
    assert "crash" in failed["data"]["error"]["message"].split("last output:")[1]
    await say(raw, "a", "again")
    done = await until(raw, "a", "turn.completed", seen)
    assert done["data"]["stopReason"] == "end_turn"


async def test_agent_that_cannot_start(hub_factory: HubFactory, raw_factory: RawFactory,
                                       tmp_path: Path) -> None:
    """A missing command gives agent.status failed with the reason; the hub keeps going."""
    broken = AgentConfig(id="echo", command=(str(tmp_path / "no-such-agent"),))
    _, raw = await agent_session(hub_factory, raw_factory, broken)
    await say(raw, "a", "hello")
    seen: list[dict[str, Any]] = []
    await until(raw, "a", "agent.status", seen)
    failed = await until(raw, "a", "agent.status", seen)
    assert failed["data"]["state"] == "failed"
    assert "no-such-agent" in failed["data"]["reason"]
    assert (await raw.call("session/get", {"sessionId": "a"}))["session"]["agentState"] \
        == "failed"
    assert await raw.call("ping") == {}


async def test_turn_timeout(hub_factory: HubFactory, raw_factory: RawFactory,
                            tmp_path: Path) -> None:
    """A turn past turn_timeout is recorded as turn.failed reason=timeout."""
    _, raw = await agent_session(hub_factory, raw_factory, echo_agent(tmp_path, turn_timeout=0.3))
    await say(raw, "a", "sleep 30")
    seen: list[dict[str, Any]] = []
    failed = await until(raw, "a", "turn.failed", seen)
    assert failed["data"]["reason"] == "timeout"


async def test_cancel_a_running_turn(hub_factory: HubFactory, raw_factory: RawFactory,
                                     tmp_path: Path) -> None:
    """session/cancel ends the turn with stopReason cancelled."""
    _, raw = await agent_session(hub_factory, raw_factory, echo_agent(tmp_path))
    await say(raw, "a", "sleep 30")
    seen: list[dict[str, Any]] = []
    await until(raw, "a", "turn.started", seen)
    assert await raw.call("session/cancel", {"sessionId": "a"}) == {}
    done = await until(raw, "a", "turn.completed", seen)
    assert done["data"]["stopReason"] == "cancelled"


async def test_permission_answered_by_another_client(
    hub_factory: HubFactory, raw_factory: RawFactory, tmp_path: Path
) -> None:
    """The agent's permission request is answered from a second client; first answer wins."""
    hub, raw = await agent_session(hub_factory, raw_factory, echo_agent(tmp_path))
    await say(raw, "a", "permission")
    seen: list[dict[str, Any]] = []
    request = await until(raw, "a", "permission.request", seen)
    assert {o["optionId"] for o in request["data"]["options"]} == {"allow", "reject"}
    assert (await raw.call("session/get", {"sessionId": "a"}))["session"]["agentState"] \
        == "waiting"
    other = await raw_factory(hub)
    answer = {"sessionId": "a", "type": "permission.response",
              "data": {"requestId": request["data"]["requestId"], "optionId": "allow"}}
    await other.call("session/publish", answer)
    late = await raw.error("session/publish", answer)
    assert late["code"] == -32009
    await until(raw, "a", "turn.completed", seen)
    last = [e for e in seen if e["type"] == "agent.message"][-1]
    assert last["data"]["text"].startswith("permission: allow")


async def test_no_agent_process_after_hub_stops(hub_factory: HubFactory,
                                                raw_factory: RawFactory,
                                                tmp_path: Path) -> None:
    """Stopping the hub stops its agents; a running turn is recorded as interrupted."""
    hub, raw = await agent_session(hub_factory, raw_factory, echo_agent(tmp_path))
    await say(raw, "a", "sleep 30")
    seen: list[dict[str, Any]] = []
    await until(raw, "a", "turn.started", seen)
    pid = next(e["data"]["pid"] for e in seen if e["data"].get("state") == "ready")
    port = hub.port
    await hub.stop()
    assert not pid_alive(pid)
    hub2 = await hub_factory(config=replace(hub.config, hub=replace(hub.config.hub, port=port)))
    reader = await raw_factory(hub2)
    history = await reader.call("session/history", {"sessionId": "a", "types": ["turn.*"]})
    assert history["events"][-1]["type"] == "turn.failed"
    assert history["events"][-1]["data"]["reason"] == "interrupted"


async def test_freeze_and_thaw(hub_factory: HubFactory, raw_factory: RawFactory,
                               tmp_path: Path) -> None:
    """An idle agent is paused after freeze_after and answers at once when woken."""
    _, raw = await agent_session(
        hub_factory, raw_factory, echo_agent(tmp_path, freeze_after=0.1, idle_timeout=60)
    )
    await say(raw, "a", "one")
    seen: list[dict[str, Any]] = []
    await until(raw, "a", "turn.completed", seen)
    pid = next(e["data"]["pid"] for e in seen if e["data"].get("state") == "ready")
    async with asyncio.timeout(5):
        while process_state(pid) != "T":
            await asyncio.sleep(0.02)
    await say(raw, "a", "two")
    await until(raw, "a", "turn.completed", seen)
    assert process_state(pid) != "T"
    assert [e for e in seen if e["type"] == "agent.status"][-1]["data"]["pid"] == pid
    assert "I have seen 2 messages" in [e for e in seen if e["type"] == "agent.message"][-1][
        "data"]["text"]


async def test_restart_during_turn_interrupts_then_retries(
    hub_factory: HubFactory, raw_factory: RawFactory, tmp_path: Path
) -> None:
    """A turn cut by a hub restart is turn.failed interrupted, then re-run once."""
    hub, raw = await agent_session(
        hub_factory, raw_factory, echo_agent(tmp_path, retry_interrupted=True)
    )
    trigger = await say(raw, "a", "sleep 1")
    seen: list[dict[str, Any]] = []
    first = await until(raw, "a", "turn.started", seen)
    hub2 = await restart(hub_factory, hub)
    raw2 = await raw_factory(hub2)
    await raw2.call("session/subscribe", {"sessionId": "a", "afterSeq": first["seq"]})
    after: list[dict[str, Any]] = []
    failed = await until(raw2, "a", "turn.failed", after)
    assert failed["data"]["reason"] == "interrupted"
    retried = await until(raw2, "a", "turn.started", after)
    assert retried["data"]["triggerSeq"] == trigger
    assert retried["data"]["retryOf"] == first["data"]["turnId"]
    done = await until(raw2, "a", "turn.completed", after)
    assert done["data"]["turnId"] == retried["data"]["turnId"]


async def test_context_sql_rows_go_into_the_prompt(hub_factory: HubFactory,
                                                   raw_factory: RawFactory,
                                                   tmp_path: Path) -> None:
    """The agent's context.sql is run before each turn and its rows lead the prompt."""
    sql = "SELECT id, status FROM tickets WHERE status != 'closed' ORDER BY id"
    _, raw = await agent_session(hub_factory, raw_factory, echo_agent(tmp_path, context_sql=sql))
    await raw.call("state/exec", {"sessionId": "a", "statements": [
        {"sql": "CREATE TABLE tickets (id INTEGER, status TEXT)"},
        {"sql": "INSERT INTO tickets VALUES (7, 'open'), (8, 'closed')"}]})
    await say(raw, "a", "what is open?")
    seen: list[dict[str, Any]] = []
    await until(raw, "a", "turn.completed", seen)
    text = [e for e in seen if e["type"] == "agent.message"][-1]["data"]["text"]
    assert "id | status" in text and "7 | open" in text and "8 | closed" not in text
    assert "what is open?" in text


async def test_files_confined_to_the_agent_cwd(hub_factory: HubFactory, raw_factory: RawFactory,
                                               tmp_path: Path) -> None:
    """fs/* requests work inside the agent's workspace and are refused outside it."""
    hub, raw = await agent_session(hub_factory, raw_factory, echo_agent(tmp_path))
    workspace = (hub.config.hub.data_dir / "workspaces" / "a").resolve()
    outside = tmp_path / "secret.txt"
    outside.write_text("do not read")
    seen: list[dict[str, Any]] = []
    for text in (f"write {workspace}/notes/a.txt hello there", f"read {workspace}/notes/a.txt",
                 f"read {outside}", f"write {workspace}/../escape.txt x", "read relative.txt"):
        await say(raw, "a", text)
        await until(raw, "a", "turn.completed", seen)
    replies = [e["data"]["text"].split("\n")[0] for e in seen if e["type"] == "agent.message"]
    assert replies[0] == "written"
    assert replies[1] == "read: hello there"
    assert replies[2].startswith("read refused:") and "outside" in replies[2]
    assert replies[3].startswith("write refused:")
    assert replies[4].startswith("read refused:") and "absolute" in replies[4]
    assert (workspace / "notes" / "a.txt").read_text() == "hello there"
    assert not (workspace.parent / "escape.txt").exists()


async def test_stderr_is_drained_into_the_agent_log(hub_factory: HubFactory,
                                                    raw_factory: RawFactory,
                                                    tmp_path: Path) -> None:
    """A chatty agent never blocks: its stderr goes to logs/<session>.agent.log."""
    hub, raw = await agent_session(hub_factory, raw_factory, echo_agent(tmp_path))
    await say(raw, "a", "stderr 20000")  # far more than a pipe buffer holds
    seen: list[dict[str, Any]] = []
    done = await until(raw, "a", "turn.completed", seen)
    assert done["data"]["stopReason"] == "end_turn"
    log_text = (hub.config.hub.data_dir / "logs" / "a.agent.log").read_text()
    assert "stderr line 20000 of 20000" in log_text


async def test_admin_suspend(hub_factory: HubFactory, raw_factory: RawFactory,
                             tmp_path: Path) -> None:
    """session/suspend is refused during a turn and stops an idle agent at once."""
    _, raw = await agent_session(hub_factory, raw_factory, echo_agent(tmp_path, idle_timeout=600))
    await say(raw, "a", "sleep 0.5")
    seen: list[dict[str, Any]] = []
    await until(raw, "a", "turn.started", seen)
    err = await raw.error("session/suspend", {"sessionId": "a"})
    assert err["code"] == -32009
    await until(raw, "a", "turn.completed", seen)
    pid = next(e["data"]["pid"] for e in seen if e["data"].get("state") == "ready")
    assert await raw.call("session/suspend", {"sessionId": "a"}) == {}
    status = await until(raw, "a", "agent.status", seen)
    assert status["data"] == {"state": "suspended"}
    assert not pid_alive(pid)


def test_wake_on_patterns_are_literal_but_for_star() -> None:
    """In wake_on only ``*`` is special: ``[1]`` and ``?`` match themselves."""
    agent = AgentConfig(id="x", command=("x",), wake_on=("ci.build[1]", "a?c", "deploy.*"))
    assert wakes(agent, "ci.build[1]") and wakes(agent, "a?c")
    assert not wakes(agent, "ci.build1") and not wakes(agent, "abc")
    assert wakes(agent, "deploy.done") and not wakes(agent, "user.message")


async def test_events_that_only_a_glob_would_match_do_not_wake(
    hub_factory: HubFactory, raw_factory: RawFactory, tmp_path: Path
) -> None:
    """With wake_on ``ci.build[1]`` and ``a?c``, ``ci.build1`` and ``abc`` start no turn."""
    agent = echo_agent(tmp_path, wake_on=("ci.build[1]", "a?c", "user.message"))
    _, raw = await agent_session(hub_factory, raw_factory, agent)
    for event_type in ("ci.build1", "abc"):
        await raw.call("session/publish", {"sessionId": "a", "type": event_type, "data": {}})
    trigger = await say(raw, "a", "hello")
    seen: list[dict[str, Any]] = []
    started = await until(raw, "a", "turn.started", seen)
    assert started["data"]["triggerSeq"] == trigger  # turns run in order: no earlier one
    await until(raw, "a", "turn.completed", seen)
    assert [e["type"] for e in seen].count("turn.started") == 1


async def test_hub_log_says_what_agents_do(hub_factory: HubFactory, raw_factory: RawFactory,
                                           tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    """At info level hub.log has one line per start (command, resume mode, time to ready),
    suspend, crash (exit code) and failed start."""
    caplog.set_level(logging.INFO, "axtui")
    agent = echo_agent(tmp_path, sandbox=None)
    _, raw = await agent_session(hub_factory, raw_factory, agent)
    seen: list[dict[str, Any]] = []
    await say(raw, "a", "hello")
    await until(raw, "a", "turn.completed", seen)
    await raw.call("session/suspend", {"sessionId": "a"})
    await say(raw, "a", "crash")
    await until(raw, "a", "turn.failed", seen)
    lines = [r.getMessage() for r in caplog.records if r.name == "axtui.supervisor"]
    command = " ".join(agent.command)
    starts = [line for line in lines if "started for session a" in line]
    assert len(starts) == 2 and all(line.endswith(command) for line in starts)
    assert re.search(r"resume mode new, ready in \d+ ms", starts[0])
    assert "resume mode resume" in starts[1]
    assert sum(" suspended" in line for line in lines) == 1
    assert [line for line in lines if line.endswith("exited with code 3")]
    broken = AgentConfig(id="echo", command=(str(tmp_path / "no-such-agent"),))
    _, raw2 = await agent_session(hub_factory, raw_factory, broken, sid="b")
    await say(raw2, "b", "hello")
    await until(raw2, "b", "agent.status", seen)
    await until(raw2, "b", "agent.status", seen)
    failed = [r.getMessage() for r in caplog.records if "failed to start" in r.getMessage()]
    assert len(failed) == 1 and "session b" in failed[0] and "no-such-agent" in failed[0]
