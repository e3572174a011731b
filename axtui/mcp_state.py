"""``python -m axtui.mcp_state``: the MCP server that gives an agent its session's state.

The hub lists this program in every agent's ACP ``session/new`` ``mcpServers``
(:func:`server.supervisor.state_server`); the agent starts it and talks MCP over its
stdin/stdout. It reads three environment variables, all required:

- ``AXTUI_HUB_URL``: the hub's websocket URL;
- ``AXTUI_HUB_TOKEN``: a token the hub minted for that agent process, good only for the
  state methods on its own session (:func:`server.auth.check_agent_scope`);
- ``AXTUI_SESSION_ID``: the session whose state the tools reach.

Tools: ``query_state`` (``state/query``), ``exec_state`` (``state/exec``, recorded by the
hub as a ``state.changed`` event whose source is the agent) and ``list_tables``.

The hub connection is opened on the first tool call, so the agent's start is not held
up, and is reused; when it drops, the next call opens a new one. Every failure (a refused
or broken statement, a revoked token, an unreachable hub) comes back as an MCP tool error
(``is_error``) carrying the hub's message, for the model to read and act on; the server
itself keeps running.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, NotRequired

from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import Field
from typing_extensions import TypedDict  # pydantic refuses typing's below Python 3.12

from axtui.client import ConnectionLost, HubClient, HubUnavailable, ProtocolError

ENV_URL = "AXTUI_HUB_URL"
ENV_TOKEN = "AXTUI_HUB_TOKEN"
ENV_SESSION = "AXTUI_SESSION_ID"
EXIT_USAGE = 2
MAX_ROWS = 10000  # the hub's own cap on state/query's limit

LIST_TABLES_SQL = (
    "SELECT name, sql FROM sqlite_master WHERE type IN ('table','view')"
    " AND name NOT LIKE 'ax\\_%' ESCAPE '\\' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
    " ORDER BY name"
)

JsonScalar = str | int | float | bool | None
SqlParams = list[JsonScalar] | dict[str, JsonScalar]


class Statement(TypedDict):
    """One statement of ``exec_state``: SQL and its optional parameters."""

    sql: str
    params: NotRequired[SqlParams]


class QueryResult(TypedDict):
    """What ``query_state`` returns."""

    columns: list[str]
    rows: list[list[Any]]
    truncated: bool


class ExecResult(TypedDict):
    """What ``exec_state`` returns."""

    seq: int
    changes: int


class TableInfo(TypedDict):
    """One table or view of the session's state, with the SQL that created it."""

    name: str
    sql: str


class TablesResult(TypedDict):
    """What ``list_tables`` returns."""

    tables: list[TableInfo]


@dataclass(frozen=True)
class HubSettings:
    """Where the hub is, the token to show it, and the session to work on."""

    url: str
    token: str
    session_id: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> HubSettings:
        """Read the settings; raises ``ValueError`` naming every variable that is missing."""
        missing = [name for name in (ENV_URL, ENV_TOKEN, ENV_SESSION) if not environ.get(name)]
        if missing:
            raise ValueError(
                f"{', '.join(missing)} not set. This MCP server is started by an agent that"
                " the axtui hub runs, with AXTUI_HUB_URL, AXTUI_HUB_TOKEN and AXTUI_SESSION_ID"
                " in its environment; set all three to run it by hand."
            )
        return cls(environ[ENV_URL], environ[ENV_TOKEN], environ[ENV_SESSION])


class SessionState:
    """The session's state, reached through one hub connection opened on first use."""

    def __init__(self, settings: HubSettings) -> None:
        self.settings = settings
        self._client: HubClient | None = None
        self._connecting = asyncio.Lock()

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        """Call a hub method on the session; every failure is raised as a ``ToolError``."""
        try:
            client = await self._connected()
            return await client.call(method, {"sessionId": self.settings.session_id, **params})
        except ProtocolError as exc:
            raise ToolError(exc.message) from None
        except ConnectionLost as exc:
            raise ToolError(
                f"{exc}: the call may or may not have taken effect; the next call reconnects"
            ) from None
        except HubUnavailable as exc:
            raise ToolError(f"the session's state is unavailable: {exc}") from None

    async def _connected(self) -> HubClient:
        async with self._connecting:
            client = self._client
            if client is not None and client.connected.is_set():
                return client
            if client is not None:
                await client.close()
                self._client = None
            # No reconnecting in the background: a dropped connection fails the calls
            # under way at once and the next call opens a new one, so no call waits on
            # a hub that is gone.
            client = HubClient(self.settings.url, token=self.settings.token,
                               name="axtui-state", kind="mcp", reconnect=False)
            await client.start()
            self._client = client
            return client

    async def close(self) -> None:
        """Close the hub connection, if one was opened."""
        if self._client is not None:
            await self._client.close()
            self._client = None


def build_server(state: SessionState) -> MCPServer[None]:
    """The MCP server with the three state tools, working on ``state``."""

    @asynccontextmanager
    async def lifespan(_: MCPServer[None]) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await state.close()

    server: MCPServer[None] = MCPServer(
        "axtui-state",
        instructions=(
            "The structured state of this axtui session: a SQLite database shared with the"
            " people and apps in the session. Read it with query_state, change it with"
            " exec_state (every change is recorded in the session's log), and see its"
            " tables with list_tables. The read-only view events(seq, ts, type, source,"
            " data, turn_id) is the session's log."
        ),
        log_level="WARNING",
        lifespan=lifespan,
    )

    async def query_state(
        sql: Annotated[str, Field(description="One SQLite SELECT (or WITH ... SELECT).")],
        params: Annotated[SqlParams | None, Field(
            description="Values for ? placeholders (a list) or :name placeholders (an object);"
                        " each a string, number, boolean or null.",
        )] = None,
        limit: Annotated[int, Field(ge=1, le=MAX_ROWS,
                                    description="At most this many rows are returned.")] = 100,
    ) -> QueryResult:
        """Run one read-only SQL query on this session's state (a SQLite database).

        Returns the column names, the rows as lists in column order (BLOBs as base64),
        and truncated=true when more rows than `limit` matched. Besides the session's own
        tables, the `events` view (seq, ts, type, source, data, turn_id) exposes the
        session's log: one row per event, `source` and `data` as JSON text (use
        json_extract(data, '$.text')). Writes are refused: use exec_state to change state.
        Tables named ax_* are the hub's and cannot be read.
        """
        request: dict[str, Any] = {"sql": sql, "limit": limit}
        if params is not None:
            request["params"] = params
        result: QueryResult = await state.call("state/query", request)
        return result

    async def exec_state(
        statements: Annotated[list[Statement], Field(
            min_length=1,
            description="SQL statements run in order, all or none; each {sql, params?}.",
        )],
    ) -> ExecResult:
        """Change this session's state: run SQL statements atomically (all or none).

        Create, alter and drop your own tables, views, indexes and triggers; insert,
        update and delete rows. Each statement may take `params` (a list for ?
        placeholders or an object for :name ones). The change is recorded in the
        session's log as one `state.changed` event (visible to everyone in the session
        and in the `events` view); returns that event's `seq` and `changes`, the number of
        rows inserted, updated or deleted. No PRAGMA, no BEGIN/COMMIT (the hub owns the
        transaction), no temporary objects, nothing named ax_* or events. On any error
        nothing is applied.
        """
        result: ExecResult = await state.call(
            "state/exec", {"statements": [dict(statement) for statement in statements]}
        )
        return result

    async def list_tables() -> TablesResult:
        """List this session's tables and views, each with the SQL that created it.

        Shows the application's own tables and the read-only `events` view, which
        exposes the session's log (seq, ts, type, source, data, turn_id); the hub's own
        ax_* tables are not listed. Use it to learn the schema before query_state.
        """
        result = await state.call("state/query", {"sql": LIST_TABLES_SQL, "limit": MAX_ROWS})
        return {"tables": [{"name": name, "sql": sql} for name, sql in result["rows"]]}

    reads = ToolAnnotations(read_only_hint=True)
    writes = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False)
    for tool, hints in ((query_state, reads), (exec_state, writes), (list_tables, reads)):
        # The docstring is the description the model reads: without its indentation.
        server.add_tool(tool, description=inspect.getdoc(tool), annotations=hints)
    return server


def main(environ: Mapping[str, str] = os.environ) -> int:
    """Serve MCP on stdin/stdout until the agent closes them; 2 if settings are missing."""
    try:
        settings = HubSettings.from_env(environ)
    except ValueError as exc:
        print(f"axtui-state: {exc}", file=sys.stderr)
        return EXIT_USAGE
    build_server(SessionState(settings)).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
