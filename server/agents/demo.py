"""``demo``: the bundled offline agent that shows, in one turn, everything an agent can do.

Run as ``python -m server.agents.demo``. It speaks the Agent Client Protocol through the
ACP SDK (``acp``) and needs no network and no model. Whatever the user writes, a turn plays
the same script, its content derived from the user's words (the transcript and context
rows the hub may put ahead of them are skipped), and streams it with short pauses so that
a person can watch it happen (about a second in all, plus the time someone takes to answer
the permission request):

1. a ``plan`` of three entries, sent again as each step starts;
2. a few ``agent_thought_chunk`` updates on what it is about to do;
3. a ``tool_call`` "Look up related tickets" (kind ``search``), then ``tool_call_update``
   ``in_progress`` and ``completed`` with the result as text (the lookup is part of the
   script: it reads nothing);
4. ``session/request_permission`` for "Write ticket to the tickets table" (option
   ``allow``, kind allow_once; option ``reject``, kind reject_once), and it waits;
5. if allowed, it writes one row to the ``tickets`` table (created if missing) through the
   hub's state MCP server, the stdio server named ``axtui-state`` in ``session/new``'s
   ``mcpServers``: one ``exec_state`` call (one ``state.changed`` event in the log), then
   ``query_state`` for the new ticket's id;
6. an answer in Markdown, in several ``agent_message_chunk`` updates, saying what it did,
   and ``stopReason`` ``end_turn``. When the write was rejected, the request cancelled,
   no state server offered, or the write failed, it says so and writes nothing.

``session/cancel`` ends the running turn at once with ``cancelled``. Every turn stands
alone, so the agent keeps no conversation: it offers ``session/resume`` (for any session
id, with nothing to restore) and not ``session/load``. A session's state server is started
in the background from ``session/new`` or ``session/resume`` on (``import mcp`` alone takes
about a second), so that a quick answer to the permission request does not wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import os
import re
import sys
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from acp import PROTOCOL_VERSION, RequestError, run_agent
from acp.helpers import (
    plan_entry,
    start_tool_call,
    text_block,
    tool_content,
    update_agent_message_text,
    update_agent_thought_text,
    update_plan,
    update_tool_call,
)
from acp.interfaces import Agent, Client
from acp.schema import (
    AgentCapabilities,
    AgentMessageChunk,
    AgentPlanUpdate,
    AgentThoughtChunk,
    AllowedOutcome,
    Implementation,
    InitializeResponse,
    McpServerStdio,
    NewSessionResponse,
    PermissionOption,
    PlanEntryPriority,
    PlanEntryStatus,
    PromptResponse,
    ResumeSessionResponse,
    SessionCapabilities,
    SessionResumeCapabilities,
    TextContentBlock,
    ToolCallProgress,
    ToolCallStart,
    ToolCallUpdate,
)

from server import __version__

if TYPE_CHECKING:
    from mcp import Client as McpClient
    from mcp.types import CallToolResult

log = logging.getLogger("axtui.demo")

STATE_SERVER = "axtui-state"  # the name the hub gives its state MCP server
# Seconds between streamed updates: visible, and the turn stays short. The screenshot
# script slows it down so that a reply is caught mid-stream on any machine.
PAUSE = float(os.environ.get("AXTUI_DEMO_PAUSE", "0.03"))
LOOKUP_TIME = 0.15  # seconds the scripted lookup "runs"
STATE_TIMEOUT = 20.0  # seconds the write may take, the state server's start included
TITLE_LENGTH = 60

CREATE_TICKETS = ("CREATE TABLE IF NOT EXISTS tickets "
                  "(id INTEGER PRIMARY KEY, title TEXT, status TEXT, summary TEXT)")
INSERT_TICKET = "INSERT INTO tickets (title, status, summary) VALUES (?, ?, ?)"
NEWEST_TICKET = "SELECT max(id) FROM tickets"
# How the hub's prompt begins when it puts the transcript or context rows ahead of the text.
TRANSCRIPT_START = "The conversation so far (from the session's log):\n"
CONTEXT_START = "Context from the session's state:\n"

ALLOW, REJECT = "allow", "reject"
PERMISSION_OPTIONS = [
    PermissionOption(option_id=ALLOW, name="Allow", kind="allow_once"),
    PermissionOption(option_id=REJECT, name="Reject", kind="reject_once"),
]
STEPS: tuple[tuple[str, PlanEntryPriority], ...] = (
    ("Understand the request", "medium"),
    ("Look up related tickets", "medium"),
    ("Write a ticket to the tickets table", "high"),
)

Update = AgentPlanUpdate | AgentThoughtChunk | AgentMessageChunk | ToolCallStart | ToolCallProgress


class StateError(Exception):
    """The state server answered a tool call with an error."""


@dataclass(frozen=True)
class Topic:
    """What the script takes from a message: a title, its keywords, its length."""

    title: str
    keywords: tuple[str, ...]
    words: int

    @classmethod
    def of(cls, text: str) -> Topic:
        """The topic of ``text``: whitespace collapsed, long titles cut, three keywords."""
        words = text.split()
        title = " ".join(words)
        if len(title) > TITLE_LENGTH:
            title = title[:TITLE_LENGTH - 1].rstrip() + "…"
        keywords = dict.fromkeys(w.lower() for w in re.findall(r"[^\W\d_]{4,}", text))
        return cls(title or "(an empty message)", tuple(keywords)[:3], len(words))

    @property
    def terms(self) -> str:
        """The keywords, quoted, for sentences."""
        return ", ".join(f"“{k}”" for k in self.keywords) or "the message"

    @property
    def summary(self) -> str:
        """The ticket's summary."""
        keywords = ", ".join(self.keywords) or "none"
        return f"Filed by the demo agent from a {self.words}-word message; keywords: {keywords}."


def plan(started: int, *, skipped: bool = False) -> AgentPlanUpdate:
    """The plan with the steps before ``started`` completed and that one in progress."""
    entries = []
    for i, (content, priority) in enumerate(STEPS):
        status: PlanEntryStatus = (
            "completed" if i < started else "in_progress" if i == started else "pending"
        )
        if skipped and i == len(STEPS) - 1:
            content += " (skipped: not written)"
        entries.append(plan_entry(content, priority=priority, status=status))
    return update_plan(entries)


class StateServer:
    """A session's state MCP server, started in the background and kept open."""

    def __init__(self, server: McpServerStdio) -> None:
        self.server = server
        self._client: asyncio.Future[McpClient] = asyncio.get_running_loop().create_future()
        # A failed start is logged in _hold; a session that never writes never awaits it.
        self._client.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._holder = asyncio.create_task(self._hold(), name=f"mcp {server.name}")

    async def _hold(self) -> None:
        try:
            # Importing mcp takes about a second: in a thread, the turn streams on meanwhile.
            await asyncio.to_thread(importlib.import_module, "mcp")
            from mcp import Client, StdioServerParameters

            params = StdioServerParameters(
                command=self.server.command, args=list(self.server.args),
                env={variable.name: variable.value for variable in self.server.env},
            )
            async with Client(params) as client:
                self._client.set_result(client)
                await asyncio.Event().wait()  # open until the agent exits
        except Exception as exc:
            log.warning("the state server %s failed: %r", self.server.name, exc)
            if not self._client.done():
                self._client.set_exception(exc)

    async def call(self, tool: str, arguments: dict[str, Any]) -> Any:
        """Call one of the server's tools; the data of its result."""
        # Shielded: a cancelled turn must not cancel the connection other turns will use.
        client = await asyncio.shield(self._client)
        result = await client.call_tool(tool, arguments)
        if result.is_error:
            raise StateError(f"{tool} failed: {result_text(result)}")
        return result_data(result)

    async def add_ticket(self, topic: Topic) -> int:
        """Write the topic's ticket (one ``exec_state``, one event); return its id."""
        await self.call("exec_state", {"statements": [
            {"sql": CREATE_TICKETS},
            {"sql": INSERT_TICKET, "params": [topic.title, "open", topic.summary]},
        ]})
        # The answer to exec_state carries no row id: the newest row is the one just written
        # (unless a client inserted one in between; the demo accepts that).
        return int(single_value(await self.call("query_state", {"sql": NEWEST_TICKET})))


def result_text(result: CallToolResult) -> str:
    """The text blocks of a tool result, joined."""
    return "".join(getattr(block, "text", "") for block in result.content)


def result_data(result: CallToolResult) -> Any:
    """A tool result's data: its structured content, else the JSON in its text."""
    data = result.structured_content
    if data is None:
        data = json.loads(result_text(result))
    if isinstance(data, dict) and data.keys() == {"result"}:
        return data["result"]  # how an MCP server wraps a result that is not an object
    return data


def single_value(data: Any) -> Any:
    """The first value of the first row of a query result (``{columns, rows, truncated}``)."""
    row = data["rows"][0]
    return next(iter(row.values())) if isinstance(row, dict) else row[0]


def describe(exc: BaseException) -> str:
    """What went wrong, in words: the first error inside task groups' wrappers."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return str(exc) or type(exc).__name__


def user_words(prompt: str) -> str:
    """The user's own words, without what the hub may have put ahead of them: the
    conversation so far (up to ``Now:``) and the rows of the agent's ``context.sql``."""
    if prompt.startswith(TRANSCRIPT_START):
        prompt = prompt.rpartition("\n\nNow: ")[2]
    if prompt.startswith(CONTEXT_START):
        prompt = prompt.partition("\n\n")[2]
    return prompt


@dataclass
class DemoSession:
    """One ACP session: its state server, if offered, and its running turn."""

    id: str
    state: StateServer | None
    turn: asyncio.Task[None] | None = None
    cancelled: bool = False


class Turn:
    """One prompt's script, played in order with a short pause after each update."""

    def __init__(self, conn: Client, session: DemoSession, text: str) -> None:
        self.conn = conn
        self.session = session
        self.topic = Topic.of(user_words(text))
        # Tool call ids stay unique in the session's log, whichever process played the turn.
        self.key = uuid.uuid4().hex[:12]

    async def send(self, update: Update) -> None:
        """Send one ``session/update``, then pause."""
        await self.conn.session_update(session_id=self.session.id, update=update)
        await asyncio.sleep(PAUSE)

    async def play(self) -> None:
        """The whole turn, from the plan to the answer."""
        topic = self.topic
        await self.send(plan(0))
        for thought in (f"The user wrote: “{topic.title}”. ",
                        "Before filing anything I should check ",
                        "for related tickets, ",
                        "then ask before I write to the tickets table."):
            await self.send(update_agent_thought_text(thought))
        await self.send(plan(1))
        await self.look_up()
        await self.send(plan(2))
        written, answer = await self.file_ticket()
        await self.send(plan(len(STEPS), skipped=not written))
        for chunk in answer:
            await self.send(update_agent_message_text(chunk))

    async def look_up(self) -> None:
        """The scripted lookup, as a tool call with its progress."""
        call_id = f"demo-lookup-{self.key}"
        query = " ".join(self.topic.keywords) or self.topic.title
        await self.send(start_tool_call(call_id, "Look up related tickets", kind="search",
                                        status="pending", raw_input={"query": query}))
        await self.send(update_tool_call(call_id, status="in_progress"))
        await asyncio.sleep(LOOKUP_TIME)
        found = f"Searched for {self.topic.terms}: no related ticket, so a new one is needed."
        await self.send(update_tool_call(call_id, status="completed",
                                         content=[tool_content(text_block(found))]))

    async def file_ticket(self) -> tuple[bool, list[str]]:
        """Ask to write the ticket and write it if allowed: (written, the answer's chunks)."""
        topic = self.topic
        request = ToolCallUpdate(
            tool_call_id=f"demo-write-{self.key}", title="Write ticket to the tickets table",
            kind="edit", status="pending",
            raw_input={"table": "tickets", "title": topic.title, "status": "open",
                       "summary": topic.summary},
        )
        response = await self.conn.request_permission(
            session_id=self.session.id, tool_call=request, options=PERMISSION_OPTIONS
        )
        outcome = response.outcome
        nothing = "**Nothing written.** "
        if not isinstance(outcome, AllowedOutcome):
            return False, [nothing, "The permission request was cancelled, ",
                           "so the `tickets` table is unchanged.\n"]
        if outcome.option_id != ALLOW:
            return False, [nothing, "You rejected the write, ",
                           "so the `tickets` table is unchanged. ",
                           f"The ticket would have been titled “{topic.title}”.\n"]
        if self.session.state is None:
            return False, [nothing, "You allowed the write, but the client offered no ",
                           f"`{STATE_SERVER}` MCP server to write it with.\n"]
        try:
            async with asyncio.timeout(STATE_TIMEOUT):
                ticket = await self.session.state.add_ticket(topic)
        except Exception as exc:  # whatever the state server did, the turn ends with an answer
            log.warning("writing the ticket failed: %r", exc)
            reason = (f"the state server did not answer within {STATE_TIMEOUT:g} s"
                      if isinstance(exc, TimeoutError) else describe(exc))
            return False, [nothing, "You allowed the write, but it failed: ", f"{reason}\n"]
        return True, [
            f"**Ticket #{ticket} filed.** ",
            "I read your message, looked up related tickets ",
            "and, with your permission, wrote a new row to the `tickets` table:\n\n",
            f"- **id:** {ticket}\n- **title:** {topic.title}\n",
            "- **status:** open\n",
            f"- **summary:** {topic.summary}\n",
        ]


class DemoAgent:
    """The ACP agent. Duck-typed: the SDK routes each request to the method of its name."""

    def __init__(self) -> None:
        self.conn: Client | None = None
        self.sessions: dict[str, DemoSession] = {}

    def on_connect(self, conn: Client) -> None:
        """Keep the connection to the client."""
        self.conn = conn

    async def initialize(self, protocol_version: int, **kwargs: Any) -> InitializeResponse:
        """Protocol version 1; ``session/resume``, no ``session/load``."""
        return InitializeResponse(
            protocol_version=PROTOCOL_VERSION,
            agent_capabilities=AgentCapabilities(session_capabilities=SessionCapabilities(
                resume=SessionResumeCapabilities()
            )),
            agent_info=Implementation(name="axtui-demo", title="axtui demo", version=__version__),
        )

    async def new_session(self, cwd: str, mcp_servers: list[Any] | None = None,
                          **kwargs: Any) -> NewSessionResponse:
        """A new session; its state server starts in the background."""
        session_id = f"demo-{uuid.uuid4().hex}"
        self._open(session_id, mcp_servers)
        return NewSessionResponse(session_id=session_id)

    async def resume_session(self, session_id: str, cwd: str, mcp_servers: list[Any] | None = None,
                             **kwargs: Any) -> ResumeSessionResponse:
        """Any session can be resumed: turns stand alone, there is nothing to restore."""
        self._open(session_id, mcp_servers)
        return ResumeSessionResponse()

    def _open(self, session_id: str, mcp_servers: list[Any] | None) -> None:
        if session_id in self.sessions:
            return
        server = next((s for s in mcp_servers or []
                       if isinstance(s, McpServerStdio) and s.name == STATE_SERVER), None)
        self.sessions[session_id] = DemoSession(session_id,
                                                StateServer(server) if server else None)

    async def prompt(self, session_id: str, prompt: list[Any], **kwargs: Any) -> PromptResponse:
        """Play the turn; ``cancelled`` if ``session/cancel`` ends it first."""
        session = self.sessions.get(session_id)
        if session is None:
            raise RequestError.resource_not_found(session_id)
        if session.turn is not None:
            raise RequestError.invalid_request(
                {"details": f"session {session_id} already runs a prompt"}
            )
        assert self.conn is not None
        text = "\n".join(block.text for block in prompt if isinstance(block, TextContentBlock))
        turn = Turn(self.conn, session, text)
        session.turn, session.cancelled = asyncio.create_task(turn.play()), False
        try:
            await session.turn
        except asyncio.CancelledError:
            if not session.cancelled:
                raise  # not a session/cancel: the connection is closing
            return PromptResponse(stop_reason="cancelled")
        finally:
            session.turn = None
        return PromptResponse(stop_reason="end_turn")

    async def cancel(self, session_id: str, **kwargs: Any) -> None:
        """``session/cancel``: stop the running turn where it is."""
        session = self.sessions.get(session_id)
        if session is not None and session.turn is not None:
            session.cancelled = True
            session.turn.cancel()


def main() -> int:
    """Serve one client on stdin/stdout until it closes stdin."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="axtui-demo: %(levelname)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        # The SDK answers method-not-found for the methods an agent lacks: a partial Agent is
        # what we mean (subclassing acp.Agent would answer them with do-nothing stubs).
        agent = cast(Agent, DemoAgent())
        asyncio.run(run_agent(agent, use_unstable_protocol=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
