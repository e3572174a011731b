"""Running client SQL on a session's connections, in their own threads: writes in a
savepoint of the hub's group commit, queries with caps on what they may return.

Every client statement runs under its guard's policy (:mod:`server.sqlguard`), a deadline
(``hub.query_timeout``) and ``SQLITE_LIMIT_LENGTH`` set to ``hub.max_value_bytes``: SQLite
then refuses to make a longer string or BLOB (or row) at all, so a ``zeroblob(1e9)`` is an
error before anything is allocated (a deadline cannot stop one allocation). A query's
answer is encoded here, row by row, until ``hub.max_result_bytes``: it never holds more
than that, and the event loop never encodes it.

A client write can end the hub's whole transaction: SQLite rolls it back by itself when a
statement is interrupted (the deadline) or hits a disk or memory error, and for a
``ROLLBACK`` conflict clause (refused on the text, see
:func:`server.sqlguard.write_refusal`, but a file may hold a trigger older than that
check). Then :class:`TransactionLost` tells the group commit to start over without it.
"""

from __future__ import annotations

import base64
import contextlib
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from server.protocol import Forbidden, ProtocolError, TooLarge
from server.sqlguard import Policy, SqlGuard, write_refusal
from server.sqliteio import sql_error

MIB = 1024 * 1024


@dataclass(slots=True)
class ClientLimits:
    """What client SQL of one session may use (set from the hub's config)."""

    max_value_bytes: int = MIB  # hub.max_value_bytes: SQLITE_LIMIT_LENGTH
    max_result_bytes: int = 4 * MIB  # hub.max_result_bytes: a query answer, a history page
    commit_budget: float = 0.25  # hub.commit_budget: client SQL seconds per group commit


class CommitBudget:
    """The client SQL time of one group commit (``hub.commit_budget``)."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.spent = 0.0
        self.ran = False

    def spend(self, seconds: float) -> None:
        """Count client SQL that just ran (or was stopped)."""
        self.spent += seconds
        self.ran = True

    @property
    def used_up(self) -> bool:
        """Whether later client SQL waits for the next batch (the first always runs)."""
        return self.ran and self.spent >= self.limit


class TransactionLost(Exception):
    """A client write ended the hub's transaction (SQLite rolled it all back); ``error`` is
    what that write's sender gets, ``index`` its place in the batch."""

    def __init__(self, error: ProtocolError) -> None:
        super().__init__(error.message)
        self.error = error
        self.index = -1


@contextlib.contextmanager
def client_sql(
    con: sqlite3.Connection, guard: SqlGuard, policy: Policy, timeout: float,
    max_value: int | None,
) -> Iterator[None]:
    """Run client SQL on ``con`` under ``policy``, a deadline and (unless ``None``) the
    value cap; turn SQLite's errors into ours."""
    guard.policy, guard.denial = policy, None
    guard.deadline = time.monotonic() + timeout
    previous = con.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, max_value) if max_value else None
    try:
        yield
    except (sqlite3.Error, OverflowError) as exc:
        raise sql_error(exc, guard.denial, timeout, max_value) from None
    finally:
        if previous is not None:
            con.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, previous)
        if policy is Policy.WRITE:
            guard.policy = Policy.HUB
        guard.deadline = 0.0


def run_writes(
    con: sqlite3.Connection, guard: SqlGuard, statements: Sequence[tuple[str, Any]],
    timeout: float, max_value: int | None,
) -> int:
    """Run client statements in a savepoint of the open transaction: all of them or none.
    Returns the rows changed; raises the :class:`ProtocolError` for the client, or
    :class:`TransactionLost` when SQLite rolled back the whole transaction."""
    con.execute("SAVEPOINT client")
    before = con.total_changes
    try:
        with client_sql(con, guard, Policy.WRITE, timeout, max_value):
            for sql, params in statements:
                refusal = write_refusal(sql)
                if refusal is not None:
                    raise Forbidden(f"SQL refused: {refusal}")
                guard.begin_statement()
                con.execute(sql, params)
    except ProtocolError as exc:
        if not con.in_transaction:
            raise TransactionLost(exc) from None
        con.execute("ROLLBACK TO client")
        con.execute("RELEASE client")
        raise
    except BaseException:
        if con.in_transaction:
            con.execute("ROLLBACK TO client")
            con.execute("RELEASE client")
        raise
    con.execute("RELEASE client")
    return con.total_changes - before


def run_query(
    con: sqlite3.Connection, guard: SqlGuard, sql: str, params: Any, limit: int,
    timeout: float, limits: ClientLimits,
) -> tuple[list[str], bytes, bool]:
    """Run one read-only client statement: its column names, its first rows encoded as a
    JSON array (BLOBs as base64), and whether rows were left out. Rows stop at ``limit``
    or before the answer passes ``limits.max_result_bytes``; a first row alone over it is
    :class:`TooLarge`."""
    cap = limits.max_result_bytes
    encoded: list[bytes] = []
    size = 2
    truncated = False
    guard.begin_statement()
    with client_sql(con, guard, Policy.READ, timeout, limits.max_value_bytes):
        cur = con.execute(sql, params)
        try:
            columns = [d[0] for d in cur.description or ()]
            for row in cur:  # each step runs under the deadline too
                if len(encoded) == limit:
                    truncated = True
                    break
                item = orjson.dumps([
                    base64.b64encode(v).decode() if isinstance(v, bytes) else v for v in row
                ])
                size += len(item) + 1
                if size > cap:
                    if not encoded:
                        raise TooLarge(
                            f"the first row alone is over {cap} bytes (hub.max_result_bytes):"
                            " select fewer or shorter columns",
                            {"size": len(item), "limit": cap},
                        )
                    truncated = True
                    break
                encoded.append(item)
        finally:
            cur.close()
    return columns, b"[" + b",".join(encoded) + b"]", truncated


def fetch_capped(
    con: sqlite3.Connection, sql: str, args: Sequence[Any], max_bytes: int
) -> list[Any]:
    """The last column of ``sql``'s rows (bytes) until they would pass ``max_bytes``
    together (always at least one row): a page of history that never holds more."""
    out: list[Any] = []
    size = 0
    cur = con.execute(sql, args)
    try:
        for row in cur:
            value = row[-1]
            size += len(value)
            if out and size > max_bytes:
                break
            out.append(value)
    finally:
        cur.close()
    return out
