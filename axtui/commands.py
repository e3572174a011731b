"""The short headless commands: ``sessions``, ``fork``, ``delete``, ``agents``, ``publish``,
``state``.

Each is one coroutine returning the exit code; tables for people (rich), JSON with
``--json`` for machines.
"""

from __future__ import annotations

import re
import sys
import time
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from axtui.exitcodes import ExitCode
from axtui.headless import CommandError, Target, connect, usage_error
from axtui.render import clock
from axtui.terminal import safe_text
from server.protocol import InvalidParams


def _console() -> Console:
    return Console(highlight=False, soft_wrap=False)


def print_json(value: Any) -> None:
    """One JSON document on stdout."""
    sys.stdout.write(orjson.dumps(value).decode() + "\n")
    sys.stdout.flush()


def parse_json(text: str, option: str, kind: type = dict) -> Any:
    """``text`` parsed as JSON of ``kind`` (an object or a list), or a usage error."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise usage_error(f"{option} is not valid JSON: {exc}") from None
    if not isinstance(value, kind):
        raise usage_error(f"{option} must be a JSON {'object' if kind is dict else 'list'}")
    return value


def _date(ms: int) -> str:
    return time.strftime("%Y-%m-%d ", time.localtime(ms / 1000)) + clock(ms)[:8]


async def list_sessions(target: Target, agent: str | None, as_json: bool) -> ExitCode:
    """``axtui sessions``: every session, newest activity first; a table on a terminal
    (ids are never cut), tab-separated lines when piped."""
    async with connect(target) as hub:
        sessions = [s async for s in hub.list_sessions(agent)]
    if as_json:
        for session in sessions:
            print_json(session)
        return ExitCode.OK
    rows = [(s["sessionId"], s.get("title") or "", s.get("agent") or "-",
             s.get("agentState", ""), str(s.get("headSeq", 0)),
             _date(int(s.get("updatedAt", 0)))) for s in sessions]
    if not sys.stdout.isatty():
        # For `cut -f1` and friends: whole fields, one line a session, no header or padding.
        for row in rows:
            print("\t".join(re.sub(r"[\t\r\n]", " ", safe_text(f)) for f in row))
        return ExitCode.OK
    table = Table(box=None, header_style="bold")
    for column in ("session", "title", "agent", "state", "head", "updated"):
        table.add_column(column, justify="right" if column == "head" else "left",
                         overflow="fold" if column == "session" else "ellipsis")
    for row in rows:
        table.add_row(*row)
    _console().print(table)
    return ExitCode.OK


FORK_FLAGS = {"atSeq": "--at-seq", "newSessionId": "--session", "title": "--title",
              "agent": "--agent"}


def in_flag_words(exc: InvalidParams, flags: dict[str, str]) -> CommandError:
    """The hub's complaint about a parameter, naming the command's flag instead."""
    param = exc.data.get("param") if isinstance(exc.data, dict) else None
    message = exc.message.rstrip(".")
    if isinstance(param, str) and param in flags:
        message = re.sub(rf"\b{re.escape(param)}\b", flags[param], message)
    return CommandError(message)


async def fork(target: Target, session_id: str, at_seq: int | None, new_id: str | None,
               title: str | None, agent: str | None, as_json: bool) -> ExitCode:
    """``axtui fork``: a new session with the events up to ``at_seq`` and their state."""
    params: dict[str, Any] = {"sessionId": session_id}
    for key, value in (("atSeq", at_seq), ("newSessionId", new_id), ("title", title),
                       ("agent", agent)):
        if value is not None:
            params[key] = value
    async with connect(target) as hub:
        try:
            session = (await hub.call("session/fork", params))["session"]
        except InvalidParams as exc:
            raise in_flag_words(exc, FORK_FLAGS) from None
    if as_json:
        print_json(session)
    else:
        print(session["sessionId"])
        print(f"forked {session_id} at seq {session['headSeq'] - 1} into {session['sessionId']}",
              file=sys.stderr)
    return ExitCode.OK


async def describe_session(target: Target, session_id: str, into: dict[str, Any]) -> ExitCode:
    """Put the Session ``session_id`` into ``into`` (what ``delete`` shows before asking)."""
    async with connect(target) as hub:
        into.update(await hub.get_session(session_id))
    return ExitCode.OK


def delete_question(session: dict[str, Any]) -> str:
    """What ``axtui delete`` asks at a terminal: the session, named so it is recognised."""
    title = safe_text(str(session.get("title") or ""))
    events = int(session.get("headSeq", 0))
    return (f"Delete session {safe_text(str(session['sessionId']))}"
            f"{f' ({title!r})' if title else ''}, {events} event{'s' if events != 1 else ''}"
            ", and its state? This cannot be undone")


async def delete_session(target: Target, session_id: str) -> ExitCode:
    """``axtui delete``: remove the session's log and state (admin)."""
    async with connect(target) as hub:
        await hub.call("session/delete", {"sessionId": session_id})
    print(f"deleted session {session_id}", file=sys.stderr)
    return ExitCode.OK


async def list_agents(target: Target, as_json: bool) -> ExitCode:
    """``axtui agents``: the agents the hub can run."""
    async with connect(target) as hub:
        agents = (await hub.call("agents/list"))["agents"]
    if as_json:
        for agent in agents:
            print_json(agent)
        return ExitCode.OK
    table = Table(box=None, header_style="bold")
    for column in ("agent", "protocol", "description"):
        table.add_column(column)
    for a in agents:
        table.add_row(a["id"], a.get("protocol", ""), a.get("description", ""))
    _console().print(table)
    return ExitCode.OK


async def publish(target: Target, session_id: str, event_type: str, data: str | None,
                  idempotency_key: str | None, state: str | None, as_json: bool) -> ExitCode:
    """``axtui publish``: one event from a script, a cron job or CI; prints its seq."""
    payload = parse_json(data, "--data") if data is not None else {}
    statements = parse_json(state, "--state", list) if state is not None else None
    async with connect(target) as hub:
        result = await hub.publish(session_id, event_type, payload,
                                   idempotency_key=idempotency_key, state=statements)
    if as_json:
        print_json(result)
    else:
        print(result["seq"])
        if result.get("duplicate"):
            print(f"already published (idempotency key {idempotency_key!r}): seq "
                  f"{result['seq']}", file=sys.stderr)
    return ExitCode.OK


def _scalar(text: str) -> Any:
    """A ``--param``: a JSON scalar (``42``, ``1.5``, ``null``, ``"x"``) or else the text."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
    return value if value is None or isinstance(value, str | int | float) else text


async def query_state(target: Target, session_id: str, sql: str, params: list[str],
                      limit: int | None, as_json: bool) -> ExitCode:
    """``axtui state``: read-only SQL on a session's state, printed as a table."""
    values = [_scalar(p) for p in params]
    async with connect(target) as hub:
        result = await hub.query(session_id, sql, values or None, limit)
    if as_json:
        print_json(result)
        return ExitCode.OK
    table = Table(box=None, header_style="bold")
    for column in result["columns"]:
        table.add_column(column)
    for row in result["rows"]:
        table.add_row(*("NULL" if v is None else str(v) for v in row))
    console = _console()
    console.print(table)
    count = len(result["rows"])
    note = " (truncated: pass --limit for more)" if result["truncated"] else ""
    console.print(f"({count} row{'s' if count != 1 else ''}){note}", style="dim")
    return ExitCode.OK
