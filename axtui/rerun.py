"""``axtui replay SESSION --rerun [--agent ID]``: regression testing for agents.

1. Read the session and split it into turns (by ``turn.started``'s ``triggerSeq``).
2. Fork it at seq 1 (``session/fork`` with ``atSeq: 1`` and, with ``--agent``, the other
   agent): a new session with nothing but ``session.created`` and ``session.forked``.
3. Send the recorded client events into the fork, in order: ``user.message`` and
   app-defined types are published again (with their ``state``), client ``state.changed``
   events are re-run with ``state/exec``; ``permission.response`` events are not sent as
   such. After each event that triggered a turn in the original, wait until the fork's
   turn for it ends. Its permission requests are answered as in the original (the k-th
   request of a turn gets the k-th recorded answer: the same option id if offered, else an
   option of the same kind, else cancelled).
4. Compare each turn's agent output: messages, tool calls (title, kind, final status),
   plans, permission requests, and how the turn ended. Thoughts and timing are not
   compared. Print a unified diff per turn that differs; exit 0 when every turn is the
   same, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import sys
from dataclasses import dataclass, field
from typing import Any

import orjson
from rich.console import Console
from rich.text import Text

from axtui.client import HubClient, Subscription
from axtui.exitcodes import ExitCode
from axtui.headless import CommandError, Target, connect, history
from axtui.render import body_lines
from server.protocol import Conflict, is_reserved_type

TURN_ENDS = ("turn.completed", "turn.failed")


@dataclass
class Turn:
    """One turn: its trigger, its events, and the answers to its permission requests."""

    trigger: dict[str, Any]
    turn_id: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)  # requestId -> response

    def requests(self) -> list[dict[str, Any]]:
        """The turn's permission requests, in order."""
        return [e["data"] for e in self.events if e["type"] == "permission.request"]


def split_turns(events: list[dict[str, Any]]) -> dict[int, Turn]:
    """The recorded turns by the seq of the event that triggered them (a retried turn
    replaces the first try)."""
    by_seq = {e["seq"]: e for e in events}
    turns: dict[int, Turn] = {}
    by_id: dict[str, Turn] = {}
    by_request: dict[str, Turn] = {}
    for event in events:
        kind, data = event["type"], event.get("data") or {}
        if kind == "turn.started" and data.get("triggerSeq") in by_seq:
            turn = Turn(by_seq[data["triggerSeq"]], data.get("turnId"))
            turns[data["triggerSeq"]] = by_id[str(turn.turn_id)] = turn
        if event.get("turnId") in by_id:
            by_id[event["turnId"]].events.append(event)
            if kind == "permission.request":
                by_request[str(data.get("requestId"))] = by_id[event["turnId"]]
        elif kind == "permission.response" and str(data.get("requestId")) in by_request:
            by_request[str(data["requestId"])].answers[str(data["requestId"])] = data
    return turns


def replayable(event: dict[str, Any]) -> bool:
    """Whether a recorded event is sent again into the rerun (the clients' input)."""
    if (event.get("source") or {}).get("kind") != "client":
        return False
    if event["type"] == "state.changed":
        return True
    return event["type"] != "permission.response" and not is_reserved_type(event["type"])


def summarize(events: list[dict[str, Any]]) -> list[str]:
    """A turn's agent output as comparable lines."""
    lines: list[str] = []
    tools: dict[str, tuple[int, dict[str, Any]]] = {}
    for event in events:
        kind, data = event["type"], event.get("data") or {}
        if kind == "agent.message":
            lines += [f"message: {line}" for line in str(data.get("text", "")).splitlines()]
        elif kind == "tool.call":
            tools[str(data.get("toolCallId"))] = (len(lines), dict(data))
            lines.append("")
        elif kind == "tool.update" and str(data.get("toolCallId")) in tools:
            tools[str(data["toolCallId"])][1].update(
                {k: data[k] for k in ("title", "kind", "status") if k in data})
        elif kind in ("plan", "permission.request"):
            lines += [f"{kind}: {line}" for line in body_lines(event)]
        elif kind == "turn.completed":
            lines.append(f"end: completed ({data.get('stopReason')})")
        elif kind == "turn.failed":
            lines.append(f"end: failed ({data.get('reason')})")
    for index, tool in tools.values():
        lines[index] = f"tool: {tool.get('title')} [{tool.get('kind')}] -> {tool.get('status')}"
    return lines


def choose_answer(recorded: dict[str, Any] | None, original_options: list[dict[str, Any]],
                  options: list[dict[str, Any]]) -> dict[str, Any]:
    """The answer for a request in the rerun, from the original's answer to its request."""
    chosen = (recorded or {}).get("optionId")
    ids = {o.get("optionId") for o in options}
    if chosen in ids:
        return {"optionId": chosen}
    kind = next((o.get("kind") for o in original_options if o.get("optionId") == chosen), None)
    same_kind = next((o.get("optionId") for o in options if kind and o.get("kind") == kind), None)
    if same_kind is not None:
        return {"optionId": same_kind}
    return {"outcome": "cancelled"}


class Rerun:
    """Sends the recorded input into the fork and collects the fork's turns."""

    def __init__(self, hub: HubClient, fork_id: str, original: dict[int, Turn],
                 turn_timeout: float) -> None:
        self.hub = hub
        self.fork_id = fork_id
        self.original = original
        self.turn_timeout = turn_timeout

    async def run(self, inputs: list[dict[str, Any]], sub: Subscription) -> dict[int, Turn]:
        """The fork's turns, by the seq of the *original* trigger."""
        turns: dict[int, Turn] = {}
        for event in inputs:
            seq = await self._send(event)
            recorded = self.original.get(event["seq"])
            if recorded is None:
                continue
            print(f"axtui: turn {len(turns) + 1} of {len(self.original)}"
                  f" (for seq {event['seq']})", file=sys.stderr)
            try:
                async with asyncio.timeout(self.turn_timeout):
                    turns[event["seq"]] = await self._turn(sub, seq, recorded)
            except TimeoutError:
                await self.hub.call("session/cancel", {"sessionId": self.fork_id})
                raise CommandError(f"the turn for seq {event['seq']} did not end within"
                                   f" {self.turn_timeout:g} s in {self.fork_id}") from None
        return turns

    async def _send(self, event: dict[str, Any]) -> int:
        if event["type"] == "state.changed":
            result = await self.hub.exec(self.fork_id, (event.get("data") or {})["statements"])
        else:
            result = await self.hub.publish(self.fork_id, event["type"], event.get("data"),
                                            state=event.get("state"))
        return int(result["seq"])

    async def _turn(self, sub: Subscription, trigger_seq: int, recorded: Turn) -> Turn:
        turn = Turn({"seq": trigger_seq})
        asked = 0
        async for event in sub:
            data = event.get("data") or {}
            if event["type"] == "turn.started" and data.get("triggerSeq") == trigger_seq:
                turn.turn_id = data.get("turnId")
            if turn.turn_id is None or event.get("turnId") != turn.turn_id:
                continue
            turn.events.append(event)
            if event["type"] == "permission.request":
                originals = recorded.requests()
                original = originals[asked] if asked < len(originals) else {}
                asked += 1
                answer = choose_answer(recorded.answers.get(str(original.get("requestId"))),
                                       original.get("options") or [], data.get("options") or [])
                with contextlib.suppress(Conflict):  # someone watching the fork answered first
                    await self.hub.publish(self.fork_id, "permission.response",
                                           {"requestId": data.get("requestId"), **answer})
            if event["type"] in TURN_ENDS:
                return turn
        raise CommandError(f"the subscription to {self.fork_id} ended during a turn")


async def rerun(target: Target, session_id: str, agent: str | None, turn_timeout: float,
                as_json: bool) -> ExitCode:
    """``axtui replay SESSION --rerun``: the exit code is 0 when nothing differs."""
    async with connect(target) as hub:
        origin = await hub.get_session(session_id)
        events = [e async for e in history(hub, session_id, 0, origin["headSeq"])]
        original = split_turns(events)
        inputs = [e for e in events if replayable(e)]
        params: dict[str, Any] = {"sessionId": session_id, "atSeq": 1,
                                  "title": f"{origin.get('title') or session_id} (rerun)"}
        if agent is not None:
            params["agent"] = agent
        fork = (await hub.call("session/fork", params))["session"]
        print(f"axtui: rerunning {len(original)} turns of {session_id} in {fork['sessionId']}"
              f" (agent {fork.get('agent')})", file=sys.stderr)
        sub = hub.subscribe(fork["sessionId"], fork["headSeq"])
        try:
            rerun_turns = await Rerun(hub, fork["sessionId"], original, turn_timeout).run(
                inputs, sub)
        finally:
            await sub.close()
    report = compare(original, rerun_turns)
    same = all(t["same"] for t in report)
    if as_json:
        sys.stdout.write(orjson.dumps({"session": session_id, "fork": fork["sessionId"],
                                       "agent": fork.get("agent"), "same": same,
                                       "turns": report}).decode() + "\n")
    else:
        print_report(report, fork["sessionId"])
    return ExitCode.OK if same else ExitCode.FAILED


def compare(original: dict[int, Turn], rerun_turns: dict[int, Turn]) -> list[dict[str, Any]]:
    """Per turn (in trigger order): the trigger, both summaries and whether they match."""
    report = []
    for seq in sorted(original):
        before = summarize(original[seq].events)
        after = summarize(rerun_turns[seq].events) if seq in rerun_turns else ["(not rerun)"]
        report.append({"triggerSeq": seq, "trigger": body_lines(original[seq].trigger)[0],
                       "same": before == after, "original": before, "rerun": after})
    return report


def print_report(report: list[dict[str, Any]], fork_id: str) -> None:
    """A readable diff of the turns that differ, and a one-line verdict."""
    console = Console(highlight=False, soft_wrap=True)
    styles = {"-": "red", "+": "green", "@": "cyan"}
    for number, turn in enumerate(report, 1):
        head = Text(f"turn {number} (seq {turn['triggerSeq']}: {turn['trigger'][:60]}) ", "bold")
        if turn["same"]:
            console.print(head + Text("same", "green"))
            continue
        console.print(head + Text("differs", "bold red"))
        diff = difflib.unified_diff(turn["original"], turn["rerun"], "original", "rerun",
                                    lineterm="", n=2)
        for line in diff:
            console.print(Text("  " + line, styles.get(line[:1], "")))
    differ = sum(1 for t in report if not t["same"])
    verdict = (f"{differ} of {len(report)} turns differ" if differ
               else f"no differences in {len(report)} turns")
    console.print(Text(f"{verdict} (the rerun is session {fork_id})",
                       "bold red" if differ else "bold green"))
