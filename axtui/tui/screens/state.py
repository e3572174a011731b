"""The state screen: a session's tables and views, and a SQL box running ``state/query``.

The main app pushes ``StateScreen(client, session_id)``; the screen hears of the session's
events through the app's ``session_events`` signal and calls
:meth:`StateScreen.refresh_if_changed` when one of them changed the state. Everything goes
through ``client`` (``state/query`` and ``session/get``); the hub's guard makes every query
read-only, so this screen cannot change anything.
"""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Header, Input, OptionList, Static
from textual.widgets.option_list import Option

from axtui.client import HubClient
from axtui.terminal import safe_text
from axtui.tui.hubapp import hub_app
from axtui.tui.messages import SessionEvents
from axtui.tui.widgets.status import StatusBar
from server.protocol import ProtocolError

TABLES_SQL = "SELECT name, type FROM sqlite_master WHERE type IN ('table', 'view') ORDER BY name"
TABLE_ROWS = 500  # rows shown when a table is picked from the list
QUERY_ROWS = 1000  # rows asked for a query typed in the SQL box (the hub's default)
CELL_CHARS = 40  # longer values are cut in cells (the whole value is one query away)
HISTORY_SIZE = 100
REFRESH_DELAY = 0.3  # seconds: a burst of state.changed events re-runs the query once


def quote_identifier(name: str) -> str:
    """``name`` as an SQLite identifier, safe whatever it contains."""
    return '"' + name.replace('"', '""') + '"'


def is_hidden_table(name: str) -> bool:
    """The hub's ``ax_*`` tables (unreadable for clients) and SQLite's own ``sqlite_*``."""
    low = name.lower()
    return low.startswith(("ax_", "sqlite_"))


def format_cell(value: Any) -> Text:
    """One value as a single-line cell: NULL dimmed, numbers right-aligned, long text cut."""
    if value is None:
        return Text("NULL", style="dim italic")
    if isinstance(value, bool):  # JSON has no SQLite booleans, but be exact if one comes
        return Text(str(int(value)), justify="right")
    if isinstance(value, int | float):
        return Text(str(value), justify="right")
    text = safe_text(str(value).replace("\r\n", "⏎").replace("\n", "⏎").replace("\t", " "))
    if len(text) > CELL_CHARS:
        text = text[: CELL_CHARS - 1] + "…"
    return Text(text)


class SqlInput(Input):
    """The SQL box: Enter runs, up and down walk the history of queries run."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "history(-1)", "Previous query", show=False),
        Binding("down", "history(1)", "Next query", show=False),
    ]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.history: list[str] = []
        self._position = 0  # len(history) means "the line being typed"
        self._draft = ""

    def remember(self, sql: str) -> None:
        """Add ``sql`` to the history (no repeats in a row) and reset the position."""
        if sql and (not self.history or self.history[-1] != sql):
            self.history.append(sql)
            del self.history[:-HISTORY_SIZE]
        self._position = len(self.history)

    def action_history(self, step: int) -> None:
        """Show the previous (-1) or next (+1) query of the history."""
        if not self.history:
            return
        if self._position == len(self.history):
            self._draft = self.value
        self._position = max(0, min(len(self.history), self._position + step))
        self.value = (self.history[self._position] if self._position < len(self.history)
                      else self._draft)
        self.cursor_position = len(self.value)


class StateScreen(Screen[None]):
    """A session's tables and views on the left, query results on the right.

    Picking a table shows its first :data:`TABLE_ROWS` rows; the SQL box runs any
    read-only query (results in the same table). Errors from the hub (SQLite's message,
    or the guard's refusal of a write) are shown under the box and the query text stays.
    Dismissed (with ``None``) by escape.
    """

    CSS_PATH = "state.tcss"
    AUTO_FOCUS = "#state-tables"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close"),
        Binding("r", "refresh", "Refresh"),
        Binding("ctrl+l", "focus_sql", "SQL"),
        Binding("ctrl+t", "focus_tables", "Tables"),
    ]

    def __init__(self, client: HubClient, session_id: str) -> None:
        super().__init__()
        self.client = client
        self.session_id = session_id
        self.current_sql: str | None = None  # the query the results come from
        self._current_limit = QUERY_ROWS
        self._current_table: str | None = None  # set when the results are a whole table
        self._tables: list[tuple[str, str]] = []
        self._refresh_timer: Timer | None = None
        self._seen_seq = 0  # the highest state.changed seq already refreshed for

    def compose(self) -> ComposeResult:
        """Header, tables list, SQL box, status line, results, footer."""
        yield Header()
        with Horizontal(id="state-body"):
            with Vertical(id="state-side"):
                yield Static("Tables", classes="state-heading")
                yield OptionList(id="state-tables")
            with Vertical(id="state-main"):
                yield SqlInput(id="state-sql", placeholder="SELECT …   (Enter runs, ↑↓ history)")
                yield Static("", id="state-status")
                yield DataTable(id="state-results", cursor_type="row", zebra_stripes=True)
        yield StatusBar()
        yield Footer()

    def on_mount(self) -> None:
        """Set the title and load the session and its tables; listen for state changes."""
        hub_app(self).session_events.subscribe(self, self._session_events)
        self.title = f"State · {self.session_id}"
        self.query_one("#state-tables", OptionList).loading = True
        self._load_session()
        self._load_tables(select_first=True)

    # --- public --------------------------------------------------------------------------

    def refresh_if_changed(self, seq: int) -> None:
        """Tell the screen that a ``state.changed`` event ``seq`` arrived for its session.

        The list of tables and the current query are re-run once, :data:`REFRESH_DELAY`
        seconds after the last such call (a burst of changes costs one query); a ``seq``
        already refreshed for is ignored.
        """
        if seq <= self._seen_seq:
            return
        self._seen_seq = seq
        if self._refresh_timer is not None:
            self._refresh_timer.stop()
        self._refresh_timer = self.set_timer(REFRESH_DELAY, self._refresh_now)

    def _session_events(self, message: SessionEvents) -> None:
        if message.session_id == self.session_id and any(
                e.type == "state.changed" or e.state for e in message.events):
            self.refresh_if_changed(message.events[-1].seq)

    # --- actions -------------------------------------------------------------------------

    def action_close(self) -> None:
        """Close the screen."""
        self.dismiss(None)

    def action_refresh(self) -> None:
        """Re-run the current query and reload the list of tables."""
        self._refresh_now()

    def action_focus_sql(self) -> None:
        """Focus the SQL box."""
        self.query_one("#state-sql", SqlInput).focus()

    def action_focus_tables(self) -> None:
        """Focus the list of tables."""
        self.query_one("#state-tables", OptionList).focus()

    def _refresh_now(self) -> None:
        self._refresh_timer = None
        self._load_tables(select_first=False)
        if self.current_sql is not None:
            self._run(self.current_sql, self._current_limit, self._current_table)

    # --- events --------------------------------------------------------------------------

    @on(OptionList.OptionSelected, "#state-tables")
    def _table_picked(self, event: OptionList.OptionSelected) -> None:
        if event.option.id is not None:
            self.show_table(event.option.id)

    @on(Input.Submitted, "#state-sql")
    def _sql_submitted(self, event: Input.Submitted) -> None:
        sql = event.value.strip()
        if not sql:
            return
        sql_box = self.query_one("#state-sql", SqlInput)
        sql_box.remember(sql)
        self._run(sql, QUERY_ROWS)

    def show_table(self, name: str) -> None:
        """Show the first :data:`TABLE_ROWS` rows of table or view ``name``."""
        sql = f"SELECT * FROM {quote_identifier(name)}"
        sql_box = self.query_one("#state-sql", SqlInput)
        sql_box.value = sql
        sql_box.remember(sql)
        self._run(sql, TABLE_ROWS, name)

    # --- workers -------------------------------------------------------------------------

    @work(exclusive=True, group="state-session")
    async def _load_session(self) -> None:
        try:
            session = await self.client.get_session(self.session_id)
        except (ProtocolError, ConnectionError):
            return  # the title keeps the id; the queries will show the error
        self.title = safe_text(f"State · {session.get('title') or self.session_id}")
        self.sub_title = self.session_id if session.get("title") else ""

    @work(exclusive=True, group="state-tables")
    async def _load_tables(self, select_first: bool) -> None:
        tables = self.query_one("#state-tables", OptionList)
        try:
            result = await self.client.query(self.session_id, TABLES_SQL)
        except (ProtocolError, ConnectionError) as exc:
            tables.loading = False
            self._status(Text(f"Cannot list the tables: {_message(exc)}", style="bold"),
                         error=True)
            return
        found = [(row[0], row[1]) for row in result["rows"] if not is_hidden_table(row[0])]
        # The application's tables and views first, the hub's events view last.
        found.sort(key=lambda item: (item[0] == "events", item[0].lower()))
        tables.loading = False
        if found != self._tables:
            self._tables = found
            highlighted = tables.highlighted_option
            keep = highlighted.id if highlighted is not None else None
            tables.clear_options()
            tables.add_options([self._table_option(name, kind) for name, kind in found])
            names = [name for name, _ in found]
            if keep in names:
                tables.highlighted = names.index(keep)
        if select_first and found and self.current_sql is None:
            tables.highlighted = 0
            self.show_table(found[0][0])
        elif not found:
            self._status(Text("This session has no tables yet.", style="italic"))

    @work(exclusive=True, group="state-query")
    async def _run(self, sql: str, limit: int, table: str | None = None) -> None:
        results = self.query_one("#state-results", DataTable)
        results.loading = True
        self._status(Text("Running…", style="italic"))
        try:
            answer = await self.client.query(self.session_id, sql, limit=limit)
            blobs = await self._blob_columns(table) if table is not None else set()
        except (ProtocolError, ConnectionError) as exc:
            # The old rows would pass for this query's answer: clear them, and let a
            # refresh re-run nothing until a query succeeds.
            results.clear(columns=True)
            results.loading = False
            self.current_sql = self._current_table = None
            self._status(Text(_message(exc)), error=True)
            return
        self.current_sql, self._current_limit, self._current_table = sql, limit, table
        columns: list[str] = answer["columns"]
        rows: list[list[Any]] = answer["rows"]
        results.clear(columns=True)
        results.add_columns(*[self._header(name, name in blobs) for name in columns])
        for row in rows:
            results.add_row(*[format_cell(value) for value in row])
        results.loading = False
        count = f"{len(rows)} row{'s' if len(rows) != 1 else ''}"
        if answer["truncated"]:
            count += f" (truncated: only the first {limit} shown)"
        self._status(Text(count))

    async def _blob_columns(self, table: str) -> set[str]:
        """Columns of ``table`` declared BLOB: the hub sends their values as base64 text,
        which the header says (a query's results carry no types, so only tables get this)."""
        info = await self.client.query(self.session_id,
                                       f"PRAGMA table_info({quote_identifier(table)})")
        name_at, type_at = info["columns"].index("name"), info["columns"].index("type")
        return {row[name_at] for row in info["rows"] if str(row[type_at]).upper() == "BLOB"}

    # --- helpers -------------------------------------------------------------------------

    @staticmethod
    def _header(name: str, blob: bool) -> Text:
        header = Text(name, style="bold")
        if blob:
            header.append(" base64", style="dim italic")
        return header

    @staticmethod
    def _table_option(name: str, kind: str) -> Option:
        label = Text(name)
        if kind == "view":
            label.append(" view", style="dim italic")
        return Option(label, id=name)

    def _status(self, text: Text, error: bool = False) -> None:
        status = self.query_one("#state-status", Static)
        status.update(text)
        status.set_class(error, "-error")


READ_ONLY = ("This view only reads the state (SELECT, WITH, read-only PRAGMAs): it cannot "
             "change it. To change the state, ask the agent in the conversation (Esc).")


def _message(exc: BaseException) -> str:
    """The sentence to show for a failed call: the hub's message, or the connection's."""
    if isinstance(exc, ProtocolError):
        # The guard names the protocol's methods; here only this screen's words make sense.
        if "is read-only: use state/exec" in exc.message:
            return READ_ONLY
        return exc.message
    return str(exc) or type(exc).__name__
