"""Helpers for protocol-level tests over a bare connection (:class:`tests.conftest.Raw`).

The error codes are written out as protocol.md gives them, not imported from the hub, so
that a changed code in the hub fails the tests instead of changing them.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import aiosqlite
import orjson
import pytest

from server.hub import Hub
from tests.conftest import Raw, RawFactory

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
NOT_AUTHENTICATED = -32001
FORBIDDEN = -32003
NOT_FOUND = -32004
CONFLICT = -32009
CANNOT_RESUME = -32010
TOO_LARGE = -32013
OVERLOADED = -32029
CONTRACT_CODES = {
    PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, INTERNAL_ERROR,
    NOT_AUTHENTICATED, FORBIDDEN, NOT_FOUND, CONFLICT, CANNOT_RESUME, TOO_LARGE, OVERLOADED,
}


def request(request_id: Any, method: str, params: Any = None) -> dict[str, Any]:
    """A JSON-RPC request object."""
    msg: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        msg["params"] = params
    return msg


async def create(raw: Raw, sid: str = "s", **params: Any) -> dict[str, Any]:
    """Create session ``sid``; return its Session object."""
    result = await raw.call("session/create", {"sessionId": sid, **params})
    session: dict[str, Any] = result["session"]
    return session


async def head(raw: Raw, sid: str = "s") -> int:
    """The session's headSeq."""
    result = await raw.call("session/get", {"sessionId": sid})
    seq: int = result["session"]["headSeq"]
    return seq


async def exec_sql(raw: Raw, *sqls: str, sid: str = "s") -> dict[str, Any]:
    """Run ``sqls`` as one ``state/exec``; return the whole response message."""
    return await raw.request(
        "state/exec", {"sessionId": sid, "statements": [{"sql": s} for s in sqls]}
    )


async def query(raw: Raw, sql: str, sid: str = "s", **params: Any) -> dict[str, Any]:
    """Run ``sql`` with ``state/query``; return the whole response message."""
    return await raw.request("state/query", {"sessionId": sid, "sql": sql, **params})


async def rows(raw: Raw, sql: str, sid: str = "s") -> list[list[Any]]:
    """The rows ``sql`` returns through ``state/query`` (which must succeed)."""
    result: list[list[Any]] = (await raw.call("state/query",
                                              {"sessionId": sid, "sql": sql}))["rows"]
    return result


async def collect(raw: Raw, ids: list[Any], timeout: float = 15.0) -> dict[Any, dict[str, Any]]:
    """The responses to ``ids`` in whatever order they come; fails on a duplicate."""
    wanted = set(ids)
    got: dict[Any, dict[str, Any]] = {}
    kept = []
    for msg in raw.notifications:
        if msg.get("id") in wanted:
            got[msg["id"]] = msg
        else:
            kept.append(msg)
    raw.notifications = kept
    async with asyncio.timeout(timeout):
        while len(got) < len(wanted):
            msg = await raw.recv(timeout)
            if "id" in msg and msg["id"] in wanted:
                assert msg["id"] not in got, f"two responses for id {msg['id']!r}"
                got[msg["id"]] = msg
            else:
                raw.notifications.append(msg)
    return got


def assert_error(msg: dict[str, Any], code: int) -> dict[str, Any]:
    """Check that ``msg`` is an error response with ``code`` and a clear message."""
    assert "error" in msg and "result" not in msg, msg
    err: dict[str, Any] = msg["error"]
    assert err["code"] == code, err
    assert isinstance(err["message"], str) and err["message"].strip(), err
    return err


def tree(root: Path) -> set[str]:
    """Every path under ``root``, relative to it."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def session_files(hub: Hub) -> list[str]:
    """The names of the session database files in ``hub``'s data dir, sorted."""
    sessions_dir = hub.config.hub.data_dir / "sessions"
    return sorted(p.name for p in sessions_dir.iterdir() if p.suffix == ".db")


def sqlite_has_module(name: str) -> bool:
    """Whether the SQLite library the hub uses was built with the virtual table ``name``."""
    con = sqlite3.connect(":memory:")
    try:
        found = con.execute("SELECT 1 FROM pragma_module_list WHERE name = ?", (name,)).fetchall()
    finally:
        con.close()
    return bool(found)


async def event_seqs(raw: Raw, sid: str = "s") -> list[int]:
    """The seqs the ``events`` view shows, read through a plain column query."""
    return [row[0] for row in await rows(raw, "SELECT seq, type FROM events ORDER BY seq", sid)]


def database_threads() -> set[threading.Thread]:
    """The live worker threads of aiosqlite connections."""
    return {t for t in threading.enumerate() if "_connection_worker_thread" in t.name}


async def close_leaked_database_threads(before: set[threading.Thread]) -> int:
    """Close aiosqlite connections still open since ``before``; return how many there were.

    Call it once every hub is stopped. A connection left open keeps a non-daemon thread
    alive, and that thread would stop the test process from ever exiting.
    """
    deadline = time.monotonic() + 2  # closed connections' threads end right after close
    while (extra := database_threads() - before) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    if not extra:
        return 0
    for obj in gc.get_objects():
        try:
            leaked = isinstance(obj, aiosqlite.Connection) and obj._thread in extra
        except ReferenceError:  # a dead weak proxy
            continue
        if leaked:
            with contextlib.suppress(Exception):
                await obj.close()
    return len(extra)


async def token_conn(raw_factory: RawFactory, hub: Hub, token: str) -> Raw:
    """A connection to a token-mode ``hub`` initialized with ``token``."""
    raw = await raw_factory(target=hub, initialize=False)
    await raw.initialize(token)
    return raw


def describe(value: Any) -> str:
    """A short readable form of a parameter value for a test id."""
    text = orjson.dumps(value).decode()
    if len(text) > 40:
        kind = type(value).__name__
        return f"<{kind} of {len(value)}>" if hasattr(value, "__len__") else f"<{kind}>"
    return text


def call_cases(calls: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    """``(method, params)`` pairs as pytest params with ids like ``session/get sessionId=5``
    (the test session's own ``sessionId: "s"`` left out)."""
    out = []
    for method, params in calls:
        shown = " ".join(f"{k}={describe(v)}" for k, v in params.items()
                         if not (k == "sessionId" and v == "s"))
        shown = shown or ("only sessionId" if params else "no params")
        out.append(pytest.param(method, params, id=f"{method} {shown}"))
    return out
