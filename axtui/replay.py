"""Headless replay, export and import (rerun is in :mod:`axtui.rerun`).

``replay`` reads a session from a hub (``session/history``, or a subscription with
``--follow``) or straight from its SQLite file (``--db``: opened read-only, no hub, no
writes), filters it (seq range, type patterns) and prints it pretty or as JSON Lines,
instantly or with the recorded timing scaled.

``export`` writes a session as JSON Lines: a header line, then every event as stored::

    {"axtuiExport": 1, "session": {...the Session object...}}
    {"seq": 1, "id": "...", "ts": ..., "type": "session.created", ...}

``import`` reads such a file, checks it line by line (the first problem is reported with
its line number and nothing is stored) and sends it to the hub's ``session/import``:
a new session with a new epoch, the events with new ids, the state rebuilt from the
recorded statements.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import orjson

from axtui.exitcodes import ExitCode
from axtui.headless import CommandError, Target, connect, history, usage_error
from axtui.render import CHUNK_TYPES, EventPrinter
from server.protocol import InvalidParams, NotFound, check_recorded_event
from server.typepattern import TypeFilter

EXPORT_VERSION = 1


@dataclass
class ReplayOptions:
    """Which events to show and how fast."""

    from_seq: int = 1
    to_seq: int | None = None
    types: tuple[str, ...] = ()
    speed: float | None = None  # None: instant
    max_gap: float = 5.0  # seconds: the longest pause, after scaling
    follow: bool = False
    jsonl: bool = False


async def play(events: AsyncIterator[dict[str, Any]], opts: ReplayOptions,
               printer: EventPrinter) -> int:
    """Print the wanted events, pausing between them as recorded (scaled) unless instant."""
    wanted = TypeFilter.of(opts.types)
    previous_ts: int | None = None
    count = 0
    async for event in events:
        if opts.to_seq is not None and event["seq"] > opts.to_seq:
            break
        if event["seq"] < opts.from_seq:
            continue
        if wanted:
            if not wanted.matches(event["type"]):
                continue
        elif not opts.jsonl and event["type"] in CHUNK_TYPES:
            continue
        if opts.speed is not None and previous_ts is not None:
            gap = max(0.0, (event["ts"] - previous_ts) / 1000 / opts.speed)
            await asyncio.sleep(min(gap, opts.max_gap))
        previous_ts = event["ts"]
        printer.print(event)
        count += 1
    return count


# --- from a hub ----------------------------------------------------------------------------

async def replay_from_hub(target: Target, session_id: str, opts: ReplayOptions) -> ExitCode:
    """``axtui replay SESSION --server URL``."""
    printer = EventPrinter(jsonl=opts.jsonl)
    async with connect(target, reconnect=opts.follow) as hub:
        session = await hub.get_session(session_id)
        after = min(opts.from_seq - 1, session["headSeq"])
        if opts.follow:
            sub = hub.subscribe(session_id, after)
            try:
                await play(_until(sub, opts.to_seq), opts, printer)
            finally:
                await sub.close()
        else:
            await play(history(hub, session_id, after, opts.to_seq, list(opts.types) or None),
                       opts, printer)
    return ExitCode.OK


async def _until(events: AsyncIterator[dict[str, Any]], to_seq: int | None,
                 ) -> AsyncIterator[dict[str, Any]]:
    async for event in events:
        yield event
        if to_seq is not None and event["seq"] >= to_seq:
            return


# --- from a session file -------------------------------------------------------------------

def open_session_file(path: Path) -> sqlite3.Connection:
    """Open a session file read-only, writing nothing next to it when it can.

    A file with no ``-wal`` beside it (a copy, or a session no hub has open) is opened
    ``immutable``: no lock, no ``-wal``/``-shm`` created. Otherwise the WAL is read too.
    """
    if not path.is_file():
        raise usage_error(f"{path}: no such session file")
    wal = Path(f"{path}-wal").exists()
    uri = f"file:{path}?mode=ro" + ("" if wal else "&immutable=1")
    try:
        con = sqlite3.connect(uri, uri=True)
        con.execute("SELECT 1 FROM ax_events LIMIT 1").fetchall()
    except sqlite3.Error as exc:
        raise usage_error(f"{path} is not an axtui session file ({exc})") from None
    return con


def read_file_meta(con: sqlite3.Connection, path: Path) -> dict[str, Any]:
    """The session's description from the file's own ``ax_meta``, as a Session object."""
    try:
        meta = dict(con.execute("SELECT key, value FROM ax_meta").fetchall())
        head = con.execute("SELECT max(seq), max(ts) FROM ax_events").fetchone()
        return {
            "sessionId": meta["session_id"], "title": meta["title"],
            "agent": meta["agent"] or None, "epoch": meta["epoch"], "headSeq": head[0] or 0,
            "agentState": "suspended" if meta["agent"] else "none",
            "createdAt": int(meta["created_at"]), "updatedAt": head[1] or 0,
            "metadata": orjson.loads(meta["metadata"]),
        }
    except (sqlite3.Error, KeyError, ValueError) as exc:
        raise usage_error(f"{path} is not an axtui session file ({exc})") from None


def file_events(con: sqlite3.Connection, after_seq: int = 0,
                to_seq: int | None = None) -> Iterator[dict[str, Any]]:
    """The events stored in a session file, in order."""
    cursor = con.execute(
        "SELECT raw FROM ax_events WHERE seq > ? AND seq <= ? ORDER BY seq",
        (after_seq, to_seq if to_seq is not None else 2**63 - 1),
    )
    for (raw,) in cursor:
        yield orjson.loads(raw)


async def _aiter(items: Iterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    for item in items:
        yield item


async def replay_from_file(path: Path, session_id: str | None, opts: ReplayOptions) -> ExitCode:
    """``axtui replay [SESSION] --db FILE``: no hub needed."""
    if opts.follow:
        raise usage_error("--follow needs a hub (--server): a session file has no live events")
    con = open_session_file(path)
    try:
        meta = read_file_meta(con, path)
        if session_id is not None and session_id != meta["sessionId"]:
            raise usage_error(f"{path} holds session {meta['sessionId']}, not {session_id}")
        events = file_events(con, opts.from_seq - 1, opts.to_seq)
        await play(_aiter(events), opts, EventPrinter(jsonl=opts.jsonl))
    finally:
        con.close()
    return ExitCode.OK


# --- export --------------------------------------------------------------------------------

@contextlib.contextmanager
def _output(path: Path | None) -> Iterator[TextIO]:
    """stdout, or ``path`` written whole or not at all (a temp file renamed at the end)."""
    if path is None:
        yield sys.stdout
        sys.stdout.flush()
        return
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temp.open("w", encoding="utf-8") as out:
            yield out
        temp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise


def _line(value: Any) -> str:
    return orjson.dumps(value).decode() + "\n"


async def export_session(target: Target | None, session_id: str | None, db: Path | None,
                         output: Path | None) -> ExitCode:
    """``axtui export SESSION [-o F]`` from a hub, or from a session file with ``--db``."""
    count = 0
    try:
        if db is not None:
            con = open_session_file(db)
            try:
                session = read_file_meta(con, db)
                if session_id is not None and session_id != session["sessionId"]:
                    raise usage_error(f"{db} holds session {session['sessionId']},"
                                      f" not {session_id}")
                with _output(output) as out:
                    out.write(_line({"axtuiExport": EXPORT_VERSION, "session": session}))
                    for event in file_events(con):
                        out.write(_line(event))
                        count += 1
            finally:
                con.close()
        else:
            assert target is not None and session_id is not None
            async with connect(target) as hub:
                session = await hub.get_session(session_id)
                with _output(output) as out:
                    out.write(_line({"axtuiExport": EXPORT_VERSION, "session": session}))
                    async for event in history(hub, session_id, 0, session["headSeq"]):
                        out.write(_line(event))
                        count += 1
    except OSError as exc:
        raise CommandError(f"cannot write {output}: {exc}") from None
    where = f" to {output}" if output is not None else ""
    print(f"axtui: exported {count} events of session {session['sessionId']}{where}",
          file=sys.stderr)
    return ExitCode.OK


# --- import --------------------------------------------------------------------------------

@dataclass
class ExportFile:
    """A checked export file: the session header, the events and the line of each."""

    session: dict[str, Any]
    events: list[dict[str, Any]]
    lines: list[int]


def read_export(path: Path) -> ExportFile:
    """Read and check an export file; the first problem is a usage error naming its line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise usage_error(f"cannot read {path}: {exc}") from None
    header: dict[str, Any] | None = None
    events: list[dict[str, Any]] = []
    lines: list[int] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise usage_error(f"{path}:{number}: not valid JSON ({exc})") from None
        if header is None:
            if (not isinstance(value, dict) or value.get("axtuiExport") != EXPORT_VERSION
                    or not isinstance(value.get("session"), dict)):
                raise usage_error(f"{path}:{number}: not an axtui export header (expected"
                                  f' {{"axtuiExport": {EXPORT_VERSION}, "session": {{...}}}})')
            header = value["session"]
            continue
        try:
            events.append(check_recorded_event(value, len(events) + 1))
        except InvalidParams as exc:
            raise usage_error(f"{path}:{number}: {exc.message}") from None
        lines.append(number)
    if header is None:
        raise usage_error(f"{path}: the file is empty")
    if not events:
        raise usage_error(f"{path}: the file holds no events")
    return ExportFile(header, events, lines)


async def import_session(target: Target, path: Path, new_id: str | None, title: str | None,
                         agent: str | None, as_json: bool) -> ExitCode:
    """``axtui import F``: a new session from an export file."""
    export = read_export(path)
    header = export.session
    params: dict[str, Any] = {
        "title": title if title is not None else str(header.get("title") or ""),
        "metadata": header.get("metadata") if isinstance(header.get("metadata"), dict) else {},
        "events": export.events,
    }
    chosen_agent = agent if agent is not None else header.get("agent")
    if chosen_agent and chosen_agent != "none":
        params["agent"] = chosen_agent
    async with connect(target) as hub:
        if new_id is None:
            original = header.get("sessionId")
            if isinstance(original, str):
                with contextlib.suppress(NotFound):
                    await hub.get_session(original)
                    original = None  # taken: the hub makes a new id
                new_id = original
        if new_id is not None:
            params["newSessionId"] = new_id
        try:
            session = (await hub.call("session/import", params))["session"]
        except InvalidParams as exc:
            index = (exc.data or {}).get("index") if isinstance(exc.data, dict) else None
            if isinstance(index, int) and 0 <= index < len(export.lines):
                raise CommandError(f"{path}:{export.lines[index]}: {exc.message}") from None
            raise
        except NotFound as exc:
            raise CommandError(f"{exc.message.rstrip('.')}; choose one with --agent ID"
                               " (or --agent none)") from None
        except ConnectionError as exc:
            raise CommandError(f"the hub dropped the import ({exc}); a file this large may be"
                               " over its hub.max_frame_bytes", ExitCode.UNREACHABLE) from None
    if as_json:
        sys.stdout.write(_line(session))
    else:
        print(session["sessionId"])
        print(f"axtui: imported {len(export.events)} events as session"
              f" {session['sessionId']} (epoch {session['epoch']})", file=sys.stderr)
    return ExitCode.OK
