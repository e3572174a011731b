"""The state screen against a real hub: tables, queries, errors, refresh, snapshot."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, OptionList, Static

from axtui.client import HubClient
from axtui.tui.screens.state import StateScreen, quote_identifier
from server.hub import Hub
from tests.axtui.tui.conftest import FixedClock, ScreenHost, snapshot_host, wait_until

SESSION = "triage-42"
SEED = [
    {"sql": "CREATE TABLE tickets (id TEXT PRIMARY KEY, status TEXT, summary TEXT,"
            " owner TEXT, attachment BLOB)"},
    {"sql": "INSERT INTO tickets VALUES ('T-42', 'open', 'CSV export times out after 30 s"
            " on large accounts', NULL, x'00ff10')"},
    {"sql": "INSERT INTO tickets VALUES ('T-43', 'closed', 'Blank login page', 'alice', NULL)"},
    {"sql": "INSERT INTO tickets VALUES ('T-44', 'open', 'Slow search', 'bob', NULL)"},
    {"sql": "CREATE TABLE notes (id INTEGER PRIMARY KEY, ticket TEXT, body TEXT)"},
    {"sql": "INSERT INTO notes (ticket, body) VALUES ('T-42', 'Seen on accounts over 1M rows')"},
    {"sql": "CREATE VIEW open_tickets AS SELECT id, summary FROM tickets"
            " WHERE status = 'open'"},
]


async def seed(client: HubClient) -> None:
    """A session with two tables and a view."""
    await client.create_session(sessionId=SESSION, title="CSV export timeout")
    await client.exec(SESSION, SEED)


@pytest.fixture
async def state_client(hub: Hub) -> AsyncIterator[HubClient]:
    """A client on a local hub holding the seeded session."""
    async with HubClient(hub.url, kind="tui") as client:
        await seed(client)
        yield client


def parts(app: ScreenHost) -> tuple[StateScreen, DataTable[Any], Static, OptionList]:
    """The screen under test and its results table, status line and tables list."""
    screen = app.screen
    assert isinstance(screen, StateScreen)
    return (screen, screen.query_one("#state-results", DataTable),
            screen.query_one("#state-status", Static),
            screen.query_one("#state-tables", OptionList))


def status_text(app: ScreenHost) -> str:
    """The status line's text."""
    return str(parts(app)[2].content)


def cell_texts(table: DataTable[Any]) -> list[list[str]]:
    """Every row of ``table`` as plain strings."""
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def column_names(table: DataTable[Any]) -> list[str]:
    """The results table's column labels."""
    return [str(col.label) for col in table.columns.values()]


async def run_sql(pilot: Pilot[Any], app: ScreenHost, sql: str) -> None:
    """Put ``sql`` in the SQL box and press Enter."""
    box = app.screen.query_one("#state-sql")
    box.focus()
    box.value = sql  # type: ignore[attr-defined]
    await pilot.press("enter")


async def opened(pilot: Pilot[Any], app: ScreenHost) -> None:
    """Wait until the first table's rows are shown."""
    await wait_until(pilot, lambda: parts(app)[0].current_sql is not None, "the first table")


async def test_tables_listed_and_first_table_shown(state_client: HubClient) -> None:
    """Tables and views are listed (the events view last, no ax_ tables) and the first is
    shown with its row count."""
    app = ScreenHost(StateScreen(state_client, SESSION))
    async with app.run_test(size=(100, 30)) as pilot:
        await opened(pilot, app)
        screen, table, _, tables = parts(app)
        names = [tables.get_option_at_index(i).id for i in range(tables.option_count)]
        assert names == ["notes", "open_tickets", "tickets", "events"]
        assert column_names(table) == ["id", "ticket", "body"]
        assert cell_texts(table) == [["1", "T-42", "Seen on accounts over 1M rows"]]
        assert status_text(app) == "1 row"
        assert screen.title == "State · CSV export timeout"


async def test_picking_a_table_shows_its_rows(state_client: HubClient) -> None:
    """Selecting a table in the list shows its rows, with NULL dimmed and BLOB columns
    marked base64."""
    app = ScreenHost(StateScreen(state_client, SESSION))
    async with app.run_test(size=(100, 30)) as pilot:
        await opened(pilot, app)
        await pilot.press("ctrl+t", "down", "down", "enter")
        screen, table, _, _ = parts(app)
        await wait_until(pilot, lambda: screen.current_sql == 'SELECT * FROM "tickets"',
                         "the tickets table")
        assert column_names(table) == ["id", "status", "summary", "owner", "attachment base64"]
        rows = cell_texts(table)
        assert [r[0] for r in rows] == ["T-42", "T-43", "T-44"]
        assert rows[0][3] == "NULL" and table.get_row_at(0)[3].style == "dim italic"
        assert rows[0][4] == "AP8Q"  # x'00ff10'
        assert status_text(app) == "3 rows"
        assert screen.query_one("#state-sql").value == 'SELECT * FROM "tickets"'  # type: ignore[attr-defined]


async def test_query_results_replace_the_table(state_client: HubClient) -> None:
    """A query typed in the SQL box shows its columns and rows."""
    app = ScreenHost(StateScreen(state_client, SESSION))
    async with app.run_test(size=(100, 30)) as pilot:
        await opened(pilot, app)
        sql = "SELECT status, count(*) AS n FROM tickets GROUP BY status ORDER BY status"
        await run_sql(pilot, app, sql)
        screen, table, _, _ = parts(app)
        await wait_until(pilot, lambda: screen.current_sql == sql, "the query's results")
        assert column_names(table) == ["status", "n"]
        assert cell_texts(table) == [["closed", "1"], ["open", "2"]]
        assert status_text(app) == "2 rows"


async def test_bad_sql_shows_sqlite_message_and_keeps_query(state_client: HubClient) -> None:
    """SQL that SQLite rejects shows SQLite's message inline; the query text stays."""
    app = ScreenHost(StateScreen(state_client, SESSION))
    async with app.run_test(size=(100, 30)) as pilot:
        await opened(pilot, app)
        await run_sql(pilot, app, "SELEC id FROM tickets")
        screen, _, status, _ = parts(app)
        await wait_until(pilot, lambda: status.has_class("-error"), "the error")
        assert 'near "SELEC": syntax error' in status_text(app)
        assert screen.query_one("#state-sql").value == "SELEC id FROM tickets"  # type: ignore[attr-defined]


async def test_write_is_refused_with_the_guards_message(state_client: HubClient) -> None:
    """A write typed in the SQL box is refused with the guard's message; nothing changes."""
    app = ScreenHost(StateScreen(state_client, SESSION))
    async with app.run_test(size=(100, 30)) as pilot:
        await opened(pilot, app)
        await run_sql(pilot, app, "DELETE FROM tickets")
        _, _, status, _ = parts(app)
        await wait_until(pilot, lambda: status.has_class("-error"), "the refusal")
        assert "read-only" in status_text(app)
        assert "state/" not in status_text(app)  # the TUI's words, not the protocol's
        assert "ask the agent" in status_text(app)
    assert len((await state_client.query(SESSION, "SELECT * FROM tickets"))["rows"]) == 3


async def test_a_failed_query_clears_the_old_results(state_client: HubClient) -> None:
    """After a query fails, the grid no longer shows the rows of the query before it."""
    app = ScreenHost(StateScreen(state_client, SESSION))
    async with app.run_test(size=(100, 30)) as pilot:
        await opened(pilot, app)
        _, table, status, _ = parts(app)
        assert table.row_count == 1
        await run_sql(pilot, app, "SELECT * FROM no_such_table")
        await wait_until(pilot, lambda: status.has_class("-error"), "the error")
        assert table.row_count == 0 and not table.columns
        await pilot.press("r")  # a refresh does not bring back the old rows either
        await pilot.pause(0.3)
        assert table.row_count == 0


async def test_big_table_is_truncated_and_says_so(state_client: HubClient) -> None:
    """A table of more than 500 rows shows 500 and notes that it was truncated."""
    await state_client.exec(SESSION, [
        {"sql": "CREATE TABLE big (n INTEGER)"},
        {"sql": "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 600)"
                " INSERT INTO big SELECT n FROM c"},
    ])
    app = ScreenHost(StateScreen(state_client, SESSION))
    async with app.run_test(size=(100, 30)) as pilot:
        await opened(pilot, app)
        screen, table, _, _ = parts(app)
        assert screen.current_sql == 'SELECT * FROM "big"'
        assert table.row_count == 500
        assert status_text(app) == "500 rows (truncated: only the first 500 shown)"


async def test_history_walks_back_and_forth(state_client: HubClient) -> None:
    """Up and down in the SQL box bring back earlier queries, then the line being typed."""
    app = ScreenHost(StateScreen(state_client, SESSION))
    async with app.run_test(size=(100, 30)) as pilot:
        await opened(pilot, app)
        screen, _, _, _ = parts(app)
        await run_sql(pilot, app, "SELECT 1")
        await wait_until(pilot, lambda: screen.current_sql == "SELECT 1", "SELECT 1")
        await run_sql(pilot, app, "SELECT 2")
        await wait_until(pilot, lambda: screen.current_sql == "SELECT 2", "SELECT 2")
        box: Any = screen.query_one("#state-sql")
        box.value = "SELECT 3"
        await pilot.press("up")
        assert box.value == "SELECT 2"
        await pilot.press("up", "up")
        assert box.value == 'SELECT * FROM "notes"'
        await pilot.press("down", "down", "down")
        assert box.value == "SELECT 3"


async def test_refresh_if_changed_reruns_the_query(state_client: HubClient) -> None:
    """After refresh_if_changed, new rows and new tables show up without a key press."""
    app = ScreenHost(StateScreen(state_client, SESSION))
    async with app.run_test(size=(100, 30)) as pilot:
        await opened(pilot, app)
        _, table, _, tables = parts(app)
        result = await state_client.exec(SESSION, [
            {"sql": "INSERT INTO notes (ticket, body) VALUES ('T-43', 'Second note')"},
            {"sql": "CREATE TABLE alerts (id INTEGER)"},
        ])
        app.screen.refresh_if_changed(result["seq"])  # type: ignore[attr-defined]
        await wait_until(pilot, lambda: table.row_count == 2, "the new row")
        await wait_until(pilot, lambda: tables.option_count == 5, "the new table")
        assert tables.get_option_at_index(0).id == "alerts"
        assert tables.highlighted_option is not None
        assert tables.highlighted_option.id == "notes"  # the table shown stays picked


async def test_r_reruns_and_escape_closes(state_client: HubClient) -> None:
    """r re-runs the current query; escape dismisses the screen with None."""
    app = ScreenHost(StateScreen(state_client, SESSION))
    async with app.run_test(size=(100, 30)) as pilot:
        await opened(pilot, app)
        _, table, _, _ = parts(app)
        await state_client.exec(SESSION, [
            {"sql": "INSERT INTO notes (ticket, body) VALUES ('T-44', 'More')"}])
        await pilot.press("ctrl+t", "r")
        await wait_until(pilot, lambda: table.row_count == 2, "the re-run")
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.dismissed == [None], "the dismissal")


def test_quote_identifier_escapes_quotes() -> None:
    """Table names are quoted so that any name, even with quotes, is one identifier."""
    assert quote_identifier('we"ird') == '"we""ird"'


def test_snapshot_state_screen(snap_compare: Any, tmp_path: Path,
                               fixed_hub_clock: FixedClock) -> None:
    """You should see "State · CSV export timeout" in the header, the tables notes,
    open_tickets, tickets (picked) and the events view on the left, the SQL box holding
    SELECT * FROM "tickets", "3 rows", and the tickets with owner NULL dimmed and the
    attachment column marked base64."""
    app, run_before = snapshot_host(
        tmp_path, seed, lambda client: StateScreen(client, SESSION),
        loaded=lambda screen: screen.current_sql is not None, clock=fixed_hub_clock,
        keys=("ctrl+t", "down", "down", "enter"),
        ready=lambda screen: screen.current_sql == 'SELECT * FROM "tickets"')
    assert snap_compare(app, terminal_size=(100, 24), run_before=run_before)
