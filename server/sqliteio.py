"""aiosqlite plumbing the session database and the catalog share: a whole transaction as one
hop into a connection's thread, connecting without leaks, turning a client statement's
SQLite error into the protocol's, and giving closed sessions' memory back."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import aiosqlite

from server.protocol import Forbidden, InvalidParams, ProtocolError, TooLarge

P = ParamSpec("P")
T = TypeVar("T")


async def in_thread(
    db: aiosqlite.Connection, fn: Callable[Concatenate[sqlite3.Connection, P], T],
    *args: P.args, **kwargs: P.kwargs,
) -> T:
    """Run ``fn(con, ...)`` with ``db``'s sqlite3 connection, in ``db``'s own thread.

    Each awaited aiosqlite call is a round trip to that thread; a whole transaction as one
    function is one round trip. aiosqlite has no public call for this: its ``_execute``
    (queue a function for the thread) and ``_conn`` (the sqlite3 connection) have been
    there since 0.17 and are used only here.
    """
    con: sqlite3.Connection = db._conn
    result: T = await db._execute(fn, con, *args, **kwargs)  # type: ignore[no-untyped-call]
    return result


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or ``None`` where there is none (musl, macOS, Windows)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the C library the interpreter runs on
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


MALLOC_TRIM = _malloc_trim()


def release_freed_memory() -> None:
    """Give the memory of closed sessions back to the operating system.

    An open session's SQLite connections and their threads take a few hundred kB from
    glibc's allocator, spread through its arenas. Once they are closed glibc keeps the
    freed pages for reuse, so without this an idle hub's RSS stays near its peak (about
    400 MB after 1,000 sessions were open, against about 100 MB after trimming).
    ``malloc_trim`` releases the free pages; it releases the GIL while it runs.
    """
    if MALLOC_TRIM is not None:
        MALLOC_TRIM(0)


async def connect(database: str | Path, **kwargs: Any) -> aiosqlite.Connection:
    """``aiosqlite.connect`` that cannot leak: a connection whose opener is cancelled midway
    is closed (otherwise its thread would live on, unreachable)."""
    opening = asyncio.ensure_future(aiosqlite.connect(database, **kwargs))
    try:
        return await asyncio.shield(opening)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await (await opening).close()
        raise


def sql_error(
    exc: Exception, denial: str | None, timeout: float, max_value: int | None = None
) -> ProtocolError:
    """The protocol error for a failed client statement (``max_value``: the
    ``SQLITE_LIMIT_LENGTH`` it ran under, if any)."""
    text = str(exc)
    if isinstance(exc, OverflowError):
        return InvalidParams("an SQL parameter is too large: integers must fit in 64 bits")
    if max_value is not None and getattr(exc, "sqlite_errorname", None) == "SQLITE_TOOBIG":
        return TooLarge(
            f"SQL made a value or row over {max_value} bytes (hub.max_value_bytes)",
            {"limit": max_value, "sqlite": text},
        )
    if denial is not None:  # the authorizer refused something in this statement
        return Forbidden(f"SQL refused: {denial}", {"sqlite": text})
    if isinstance(exc, sqlite3.OperationalError) and text == "interrupted":
        return InvalidParams(f"SQL took longer than {timeout:g} s and was stopped")
    if "readonly" in text or "read-only" in text:
        return Forbidden(f"SQL refused: {text}", {"sqlite": text})
    return InvalidParams(f"SQLite rejected the statement: {text}", {"sqlite": text})
