"""The SQLite authorizer that stands between client SQL and a session's database.

Two policies share one rule set:

- ``READ`` (``state/query``): only reads; the hub's ``ax_`` tables are visible through the
  ``events`` view and nowhere else; no ATTACH, no PRAGMA that changes anything, no
  ``load_extension``.
- ``WRITE`` (``state/exec`` and ``session/publish`` with ``state``): the application's own
  tables may be created, changed and dropped; the hub's tables and the ``events`` view may
  not be touched, directly or through views or triggers; no transaction control (the hub
  owns the transaction), no temporary objects, no ATTACH, no PRAGMA.

A connection that ever runs client SQL must be opened with ``cached_statements=0``: SQLite
consults the authorizer only when a statement is prepared, and a cached statement
prepared for the hub would otherwise run for a client unchecked.

How the ``events`` view is told apart: SQLite names the view as the source of the reads
it makes of ``ax_events``, but it names a CTE called ``events`` the same way. Each use of
the view reads the columns of its definition in one fixed order (:data:`EVENTS_VIEW_READS`),
so reads attributed to ``events`` must follow that order exactly; a CTE that reads
anything else is refused. A CTE that copies the order exactly can at most show the event
JSON, which ``session/history`` gives every viewer anyway.

A guard also carries the deadline of the statement it watches: its :meth:`SqlGuard.expired`
is the connection's progress handler.

Two things the authorizer cannot see are checked on the statement's text
(:func:`write_refusal`), with a small lexer that skips strings, quoted names and comments:
a ``ROLLBACK`` conflict clause (``INSERT OR ROLLBACK``, ``ON CONFLICT ROLLBACK``,
``RAISE(ROLLBACK)``), which would roll back the hub's whole group commit and with it other
clients' events; and the new name of ``ALTER TABLE ... RENAME TO`` (SQLite names only the
old one). SQLite's statistics tables (``sqlite_stat1``...) belong to the hub: forged rows
would steer the planner away from the log's indexes, so clients may not run ``ANALYZE``
or read or write them.
"""

from __future__ import annotations

import enum
import re
import sqlite3
import time

EVENTS_VIEW = "events"
# The columns of ax_events that one use of the events view reads, in order (see SCHEMA in
# server/sessiondb.py; tests/server/test_sqlguard.py checks that they agree).
EVENTS_VIEW_READS = ("seq", "ts", "type", "raw", "raw", "turn_id")
_DENY = sqlite3.SQLITE_DENY
_OK = sqlite3.SQLITE_OK

# Introspection pragmas that only read; everything else is refused (database_list too: it
# shows where the hub keeps the session's file).
READ_PRAGMAS = frozenset({
    "table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo",
    "foreign_key_list", "collation_list", "function_list",
})
FORBIDDEN_FUNCTIONS = frozenset({"load_extension", "fts3_tokenizer", "readfile", "writefile"})
FORBIDDEN_TABLES = frozenset({"sqlite_dbpage", "dbstat"})

_CREATE = {
    sqlite3.SQLITE_CREATE_TABLE, sqlite3.SQLITE_CREATE_VIEW, sqlite3.SQLITE_CREATE_INDEX,
    sqlite3.SQLITE_CREATE_TRIGGER, sqlite3.SQLITE_CREATE_VTABLE,
}
_DROP = {
    sqlite3.SQLITE_DROP_TABLE, sqlite3.SQLITE_DROP_VIEW, sqlite3.SQLITE_DROP_INDEX,
    sqlite3.SQLITE_DROP_TRIGGER, sqlite3.SQLITE_DROP_VTABLE,
}
_TEMP = {
    sqlite3.SQLITE_CREATE_TEMP_TABLE, sqlite3.SQLITE_CREATE_TEMP_VIEW,
    sqlite3.SQLITE_CREATE_TEMP_INDEX, sqlite3.SQLITE_CREATE_TEMP_TRIGGER,
    sqlite3.SQLITE_DROP_TEMP_TABLE, sqlite3.SQLITE_DROP_TEMP_VIEW,
    sqlite3.SQLITE_DROP_TEMP_INDEX, sqlite3.SQLITE_DROP_TEMP_TRIGGER,
}
_WRITES = {sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE}


class Policy(enum.Enum):
    """What client SQL may do on a connection."""

    HUB = "hub"  # the hub's own statements: no checks
    READ = "read"
    WRITE = "write"


def is_reserved_name(name: str | None) -> bool:
    """Whether ``name`` belongs to the hub (``ax_*`` tables, the ``events`` view)."""
    if not name:
        return False
    low = name.lower()
    return low.startswith("ax_") or low == EVENTS_VIEW


def is_statistics_table(name: str | None) -> bool:
    """Whether ``name`` is one of SQLite's statistics tables (``sqlite_stat1`` to ``4``)."""
    return name is not None and name.lower().startswith("sqlite_stat")


# One token of SQLite's SQL, in the order SQLite's own tokenizer tries them: blanks and
# comments (skipped), strings, quoted names, parameters, words (keywords and bare names),
# numbers, any other character. An unterminated string, name or comment runs to the end.
_TOKEN = re.compile(r"""
    (?P<skip> \s+ | --[^\n]* | /\*(?:.|\n)*?(?:\*/|\Z) )
  | (?P<string> '(?:[^']|'')*'? )
  | (?P<name> "(?:[^"]|"")*"? | `(?:[^`]|``)*`? | \[[^\]]*\]? )
  | (?P<param> [?:@$#][A-Za-z0-9_$:\x80-\U0010ffff]* )
  | (?P<word> [A-Za-z_\x80-\U0010ffff][A-Za-z0-9_$\x80-\U0010ffff]* )
  | (?P<number> \.?[0-9][A-Za-z0-9_.]* )
  | (?P<other> . )
""", re.VERBOSE | re.DOTALL)


def tokens(sql: str) -> list[tuple[str, str]]:
    """The tokens of ``sql`` as ``(kind, text)``, blanks and comments left out; ``kind`` is
    ``string``, ``name`` (quoted), ``param``, ``word``, ``number`` or ``other``."""
    out: list[tuple[str, str]] = []
    for match in _TOKEN.finditer(sql):
        kind = match.lastgroup
        if kind is not None and kind != "skip":
            out.append((kind, match.group()))
    return out


def unquote(text: str) -> str:
    """A name as SQLite reads it: quotes (``"``, `````, ``[]``, ``'``) removed."""
    if text[:1] in "\"`'" and len(text) >= 2 and text[-1] == text[0]:
        return text[1:-1].replace(text[0] * 2, text[0])
    if text[:1] == "[" and text.endswith("]"):
        return text[1:-1]
    return text


def write_refusal(sql: str) -> str | None:
    """Why the client write ``sql`` is refused on its text, or ``None`` (see the module
    docstring: a ROLLBACK conflict clause, a rename into the hub's names)."""
    toks = tokens(sql)
    for i, (kind, text) in enumerate(toks):
        if kind != "word":
            continue
        word = text.upper()
        if word == "ROLLBACK":
            return ("ROLLBACK conflict clauses and RAISE(ROLLBACK) are not allowed: they would"
                    " roll back other clients' events committed with yours; use ABORT (the"
                    " default) or FAIL, and quote a name spelled rollback")
        if (word == "RENAME" and i + 2 < len(toks) and toks[i + 1][0] == "word"
                and toks[i + 1][1].upper() == "TO"):
            new_name = unquote(toks[i + 2][1])
            if is_reserved_name(new_name):
                return f"{new_name} is reserved for the hub (names starting with ax_, and events)"
    return None


class SqlGuard:
    """An authorizer callback whose policy can be switched between statements.

    ``denial`` keeps the reason for the last refusal, so that the error the client gets
    says what was refused rather than SQLite's bare "not authorized".
    """

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.denial: str | None = None
        self.deadline = 0.0  # time.monotonic() after which the statement is interrupted
        self._view_pos = 0  # where this statement is in EVENTS_VIEW_READS
        self._through_view = False  # this statement reads the log through the events view

    def begin_statement(self) -> None:
        """Call before preparing each client statement."""
        self._view_pos = 0
        self._through_view = False

    def expired(self) -> int:
        """The progress handler: non-zero interrupts the running statement."""
        return 1 if self.deadline and time.monotonic() > self.deadline else 0

    def __call__(
        self, action: int, arg1: str | None, arg2: str | None, db: str | None, inner: str | None
    ) -> int:
        """The SQLite authorizer callback."""
        if self.policy is Policy.HUB:
            return _OK
        reason = self._check(action, arg1, arg2, db, inner)
        if reason is None:
            return _OK
        self.denial = reason
        return _DENY

    def _check(
        self, action: int, arg1: str | None, arg2: str | None, db: str | None, inner: str | None
    ) -> str | None:
        writing = self.policy is Policy.WRITE
        if action in (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_RECURSIVE):
            return None
        if action == sqlite3.SQLITE_READ:
            table = (arg1 or "").lower()
            if table in FORBIDDEN_TABLES or is_statistics_table(table):
                return f"reading {arg1} is not allowed"
            if inner == EVENTS_VIEW:
                expected = EVENTS_VIEW_READS[self._view_pos]
                if table != "ax_events" or arg2 != expected:
                    if table.startswith("ax_"):
                        return f"the hub's table {arg1} is not readable (use the events view)"
                    return None  # a CTE named events reading the client's own tables
                self._view_pos = (self._view_pos + 1) % len(EVENTS_VIEW_READS)
                self._through_view = True
                return None
            # When SQLite flattens the events view it also checks a read of ax_events with
            # no column (the same check as count(*) on the table): it reveals only the row
            # count, which the view shows anyway.
            if table == "ax_events" and arg2 == "" and self._through_view:
                return None
            if table.startswith("ax_"):
                return f"the hub's table {arg1} is not readable (use the events view)"
            return None
        if action == sqlite3.SQLITE_FUNCTION:
            if (arg2 or "").lower() in FORBIDDEN_FUNCTIONS:
                return f"the function {arg2}() is not allowed"
            return None
        if action == sqlite3.SQLITE_PRAGMA:
            name = (arg1 or "").lower()
            if not writing and name in READ_PRAGMAS:
                return None
            return f"PRAGMA {arg1} is not allowed"
        if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
            return "ATTACH and DETACH are not allowed"
        if action in (sqlite3.SQLITE_TRANSACTION, sqlite3.SQLITE_SAVEPOINT):
            return ("transaction control is not allowed:"
                    " the hub runs each request as one transaction")
        if not writing:
            return "state/query is read-only: use state/exec to change state"
        if action in _TEMP:
            return "temporary tables, views, indexes and triggers are not allowed"
        if action in _WRITES:
            if (arg1 or "").lower().startswith("ax_") or is_statistics_table(arg1):
                return f"the hub's table {arg1} cannot be changed"
            return None
        if action in _CREATE or action in _DROP:
            # For indexes and triggers arg2 is the table they belong to.
            if (is_reserved_name(arg1) or is_reserved_name(arg2) or is_statistics_table(arg1)
                    or is_statistics_table(arg2)):
                return f"{arg1} is reserved for the hub (names starting with ax_, and events)"
            return None
        if action == sqlite3.SQLITE_ANALYZE:
            return "ANALYZE is not allowed: the statistics tables are the hub's"
        if action in (sqlite3.SQLITE_ALTER_TABLE, sqlite3.SQLITE_REINDEX):
            target = arg2 if action == sqlite3.SQLITE_ALTER_TABLE else arg1
            if is_reserved_name(target):
                return f"{target} is reserved for the hub"
            return None
        return f"this kind of statement is not allowed (SQLite authorizer action {action})"
