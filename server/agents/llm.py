"""``llm``: the bundled ACP agent for any OpenAI-compatible chat-completions endpoint.

Run as ``python -m server.agents.llm``: the Agent Client Protocol on stdin/stdout (through
the ``acp`` SDK), logs on stderr. Its settings come from the environment, which the hub
passes explicitly from the agent's ``env:`` (docs/agents.md shows the config):
``AXTUI_LLM_BASE_URL`` (such as ``https://api.openai.com/v1``), ``AXTUI_LLM_API_KEY``,
``AXTUI_LLM_MODEL``, and optionally ``AXTUI_LLM_SYSTEM_PROMPT`` (empty: none). A prompt sent
while a setting is missing fails with a JSON-RPC error naming the variable.

Each ACP session keeps its conversation (OpenAI ``messages``) in memory and sends all of it
with every prompt to ``{base_url}/chat/completions`` with ``stream: true``. The Server-Sent
Events are read line by line (standard-library HTTP on a thread) and their text goes out as
``agent_message_chunk`` updates (``reasoning_content`` as thoughts).

The stdio MCP servers given in ``session/new`` (the hub's ``axtui-state``: ``query_state``,
``exec_state``, ``list_tables``) are connected with the ``mcp`` client and their tools
offered to the model. Each tool call is reported (``tool_call``), run on its server,
settled (``tool_call_update``, completed or failed, the result as text) and its result
handed back to the model, for at most :data:`MAX_ROUNDS` completions a prompt.
``session/cancel`` stops the stream or the tool call at once (stop reason ``cancelled``).
The conversation keeps whole rounds only (tool calls always with their results), plus the
text streamed before a turn was cancelled or failed.

No ``session/load`` or ``session/resume``: the conversation ends with the process, and the
hub then starts a new session with the transcript from its log ahead of the prompt.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import os
import sys
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import acp
from acp import schema
from mcp import Client as McpClient
from mcp import StdioServerParameters
from mcp.types import CallToolResult, TextContent, Tool

from server import __version__

log = logging.getLogger("axtui.llm")

BASE_URL_ENV = "AXTUI_LLM_BASE_URL"
API_KEY_ENV = "AXTUI_LLM_API_KEY"
MODEL_ENV = "AXTUI_LLM_MODEL"
SYSTEM_PROMPT_ENV = "AXTUI_LLM_SYSTEM_PROMPT"
DEFAULT_SYSTEM_PROMPT = (
    "You are an agent in an axtui session, a shared and recorded conversation of people and"
    " programs; events from programs read 'Event <type>: <data>'. The tools query_state,"
    " exec_state and list_tables, when offered, read and change the session's state: a SQLite"
    " database everyone in the session sees, where every change you make is recorded.")

MAX_ROUNDS = 8  # completions per prompt; still calling tools after that: max_turn_requests
READ_TIMEOUT = 300.0  # seconds the endpoint may stay silent, connecting or mid-stream
MCP_START_TIMEOUT = 30.0  # seconds for an MCP server to start and list its tools
TOOL_TIMEOUT = 120.0  # seconds for one tool call
SHOWN_RESULT_CHARS = 16_000  # of a tool's result in the tool_call_update (the model gets all)
FAILED = -32603  # JSON-RPC's internal error: the message says what went wrong
TOOL_KINDS: dict[str, schema.ToolKind] = {
    "query_state": "search", "list_tables": "search", "exec_state": "edit",
}
STOP_REASONS: dict[str, schema.StopReason] = {"length": "max_tokens", "content_filter": "refusal"}

Message = dict[str, Any]


# --- settings ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Settings:
    """Where the model is and how to reach it, from the ``AXTUI_LLM_*`` variables."""

    base_url: str
    api_key: str = field(repr=False)
    model: str
    system_prompt: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """The settings in ``environ``; missing ones are empty (see :meth:`problem`)."""
        return cls(
            base_url=environ.get(BASE_URL_ENV, "").strip().rstrip("/"),
            api_key=environ.get(API_KEY_ENV, "").strip(),
            model=environ.get(MODEL_ENV, "").strip(),
            system_prompt=environ.get(SYSTEM_PROMPT_ENV, DEFAULT_SYSTEM_PROMPT),
        )

    def problem(self) -> str | None:
        """Why a prompt cannot be sent with these settings, or ``None``."""
        values = {BASE_URL_ENV: self.base_url, API_KEY_ENV: self.api_key, MODEL_ENV: self.model}
        missing = [name for name, value in values.items() if not value]
        if missing:
            verb = "is" if len(missing) == 1 else "are"
            return (f"the llm agent is not configured: {', '.join(missing)} {verb} not set."
                    " Give the agent its settings under env: in the hub's config, for example"
                    f" env: {{{BASE_URL_ENV}: https://api.openai.com/v1,"
                    f' {API_KEY_ENV}: "${{OPENAI_API_KEY}}", {MODEL_ENV}: gpt-4o-mini}}')
        if not self.base_url.startswith(("http://", "https://")):
            return f"{BASE_URL_ENV} must be an http:// or https:// URL (got {self.base_url!r})"
        return None

    def scrub(self, text: str) -> str:
        """``text`` with the API key blotted out: it never reaches a log or an error."""
        return text.replace(self.api_key, "***") if self.api_key else text


# --- the completion stream -------------------------------------------------------------------

class CompletionError(Exception):
    """The endpoint refused the request, could not be reached, or sent something unusable."""


class SseParser:
    """Server-Sent Events, line by line: the ``data`` of each complete event (no I/O)."""

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: str) -> str | None:
        """Take one line; return the event's data when this line ends an event."""
        line = line.rstrip("\r\n")
        if not line:
            return self.flush()
        name, _, value = line.partition(":")
        if name == "data":
            self._data.append(value.removeprefix(" "))
        return None  # comments (":...") and the other fields (event, id, retry) are ignored

    def flush(self) -> str | None:
        """The data of an event the stream ended without closing, if any."""
        data, self._data = self._data, []
        return "\n".join(data) if data else None


_END = object()  # the reader thread is done


def _read_stream(request: urllib.request.Request, put: Callable[[object], None],
                 stop: threading.Event, scrub: Callable[[str], str]) -> None:
    """On a thread: open the request and put each line of the answer, then ``_END``."""
    try:
        with urllib.request.urlopen(request, timeout=READ_TIMEOUT) as response:
            for line in response:
                if stop.is_set():
                    return
                put(line)
    except urllib.error.HTTPError as exc:
        put(CompletionError(scrub(_http_error(exc))))
    except TimeoutError:
        put(CompletionError(f"the model endpoint sent nothing for {READ_TIMEOUT:g} s"))
    except (OSError, http.client.HTTPException, ValueError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        put(CompletionError(scrub(f"cannot reach the model endpoint {request.full_url}:"
                                  f" {reason}")))
    finally:
        put(_END)


def _http_error(exc: urllib.error.HTTPError) -> str:
    """An endpoint's error answer, with the message from its JSON body when it has one."""
    try:
        detail = exc.read(4096).decode(errors="replace").strip()
    except OSError:
        detail = ""
    with contextlib.suppress(ValueError, TypeError, KeyError):
        error = json.loads(detail)["error"]
        detail = str(error.get("message", error) if isinstance(error, dict) else error)
    text = f"the model endpoint answered HTTP {exc.code} {exc.reason}"
    return f"{text}: {detail[:500]}" if detail else text


async def stream_completion(settings: Settings, body: Message) -> AsyncIterator[Message]:
    """POST ``body`` to the chat-completions endpoint; yield each streamed chunk.

    The blocking reads run on a daemon thread of their own, not in the default executor:
    a read still blocked after a cancel then never holds up the process's exit."""
    request = urllib.request.Request(
        f"{settings.base_url}/chat/completions", data=json.dumps(body).encode(),
        method="POST", headers={
            "Authorization": f"Bearer {settings.api_key}",
            "Content-Type": "application/json", "Accept": "text/event-stream",
            "User-Agent": f"axtui-llm/{__version__}",
        })
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue()
    stop = threading.Event()

    def put(item: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens
            loop.call_soon_threadsafe(queue.put_nowait, item)

    threading.Thread(target=_read_stream, args=(request, put, stop, settings.scrub),
                     name="llm stream", daemon=True).start()
    parser, events, first = SseParser(), 0, ""
    try:
        while True:
            item = await queue.get()
            if isinstance(item, CompletionError):
                raise item
            line = "" if item is _END else cast(bytes, item).decode(errors="replace")
            first = first or line.strip()
            data = parser.flush() if item is _END else parser.feed(line)
            if data == "[DONE]":
                return
            if data is not None:
                events += 1
                yield _chunk(data, settings)
            if item is _END:
                break
    finally:
        stop.set()
    if not events:
        raise CompletionError("the model endpoint's answer has no Server-Sent Events (is"
                              f" {BASE_URL_ENV} the /v1 URL of an OpenAI-compatible API?):"
                              f" {settings.scrub(first[:200])!r}")


def _chunk(data: str, settings: Settings) -> Message:
    """One event's JSON chunk; an error the endpoint reports mid-stream is raised."""
    try:
        chunk = json.loads(data)
    except ValueError:
        chunk = None
    if not isinstance(chunk, dict):
        raise CompletionError("the model endpoint sent an event that is not a JSON object:"
                              f" {settings.scrub(data[:200])!r}")
    if "error" in chunk:
        error = chunk["error"]
        message = error.get("message", error) if isinstance(error, dict) else error
        raise CompletionError(settings.scrub(f"the model endpoint reported an error: {message}"))
    return chunk


# --- one round: a completion, possibly asking for tools --------------------------------------

@dataclass
class ToolRequest:
    """One tool call as the model streams it: the arguments arrive in pieces."""

    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass
class Round:
    """What one streamed completion said: text, tool calls and why it stopped."""

    text: list[str] = field(default_factory=list)
    calls: dict[int, ToolRequest] = field(default_factory=dict)
    finish_reason: str | None = None

    def add_tool_deltas(self, deltas: Any) -> None:
        """Merge the ``tool_calls`` pieces of one delta into the calls."""
        if not isinstance(deltas, list):
            return
        for position, delta in enumerate(deltas):
            if not isinstance(delta, dict):
                continue
            index = delta.get("index", position)
            call = self.calls.setdefault(index if isinstance(index, int) else position,
                                         ToolRequest())
            function = delta.get("function") or {}
            if isinstance(delta.get("id"), str) and not call.id:
                call.id = delta["id"]
            if isinstance(function.get("name"), str) and not call.name:
                call.name = function["name"]
            if isinstance(function.get("arguments"), str):
                call.arguments += function["arguments"]

    def message(self) -> Message:
        """This round as the assistant message of the conversation."""
        text = "".join(self.text)
        if not self.calls:
            return {"role": "assistant", "content": text}
        return {"role": "assistant", "content": text or None, "tool_calls": [
            {"id": call.id, "type": "function",
             "function": {"name": call.name, "arguments": call.arguments or "{}"}}
            for _, call in sorted(self.calls.items())]}

    def stop_reason(self) -> schema.StopReason:
        """The ACP stop reason for a round that ends the turn."""
        return STOP_REASONS.get(self.finish_reason or "", "end_turn")


@dataclass
class Turn:
    """One prompt's new messages: whole rounds, and the round being streamed."""

    settled: list[Message]
    current: Round | None = None

    def messages(self) -> list[Message]:
        """What the conversation keeps from this turn, however it ended."""
        if self.current is not None and self.current.text:
            return [*self.settled, {"role": "assistant", "content": "".join(self.current.text)}]
        return list(self.settled)


# --- tools from MCP servers ------------------------------------------------------------------

class McpTools:
    """The tools of a session's stdio MCP servers. Each server is held open by a task of its
    own (the ``mcp`` client must be entered and left in one task); they start in the
    background while the session is set up, and the first prompt waits for them."""

    def __init__(self, servers: list[schema.McpServerStdio], cwd: str) -> None:
        loop = asyncio.get_running_loop()
        self._closing = asyncio.Event()
        self._specs: list[Message] = []
        self._owners: dict[str, McpClient] = {}
        self._ready: list[asyncio.Future[None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        for server in servers:
            ready: asyncio.Future[None] = loop.create_future()
            self._ready.append(ready)
            self._tasks.append(asyncio.create_task(self._hold(server, cwd, ready),
                                                   name=f"mcp {server.name}"))

    async def _hold(self, server: schema.McpServerStdio, cwd: str,
                    ready: asyncio.Future[None]) -> None:
        params = StdioServerParameters(command=server.command, args=list(server.args),
                                       env={v.name: v.value for v in server.env}, cwd=cwd)
        try:
            async with McpClient(params) as client:
                cursor: str | None = None
                while True:
                    listing = await client.list_tools(cursor=cursor)
                    for tool in listing.tools:
                        self._offer(server.name, client, tool)
                    cursor = listing.next_cursor
                    if cursor is None:
                        break
                log.info("MCP server %s is ready (%d tools offered)", server.name,
                         len(self._specs))
                ready.set_result(None)
                await self._closing.wait()
        except Exception as exc:
            log.warning("MCP server %s (%s) is not available: %s", server.name, server.command,
                        _reason(exc))
        finally:
            if not ready.done():
                ready.set_result(None)

    def _offer(self, server: str, client: McpClient, tool: Tool) -> None:
        if tool.name in self._owners:
            log.warning("MCP server %s: tool %s is offered twice; the first one is kept",
                        server, tool.name)
            return
        self._owners[tool.name] = client
        self._specs.append({"type": "function", "function": {
            "name": tool.name, "description": tool.description or "",
            "parameters": tool.input_schema,
        }})

    async def specs(self) -> list[Message]:
        """The tools as OpenAI function specs, once the servers have started (or failed)."""
        if self._ready:
            _, late = await asyncio.wait(self._ready, timeout=MCP_START_TIMEOUT)
            if late:
                log.warning("%d MCP server(s) did not start within %g s; going on without"
                            " them", len(late), MCP_START_TIMEOUT)
        return list(self._specs)

    async def call(self, name: str, arguments: Message) -> tuple[str, bool]:
        """Run a tool: its result as text, and whether it failed."""
        client = self._owners.get(name)
        if client is None:
            return f"error: there is no tool named {name!r}", True
        try:
            result = await client.call_tool(name, arguments, read_timeout_seconds=TOOL_TIMEOUT)
        except Exception as exc:  # an MCP error, a timeout, or the server is gone
            return f"error: {_reason(exc)}", True
        return result_text(result), result.is_error

    async def close(self) -> None:
        """Stop every server; each gets a moment to exit on its own."""
        self._closing.set()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=3.0)
            for task in pending:
                task.cancel()


def _reason(exc: BaseException) -> str:
    """What went wrong, looking inside the exception groups that task groups raise."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return str(exc) or type(exc).__name__


def result_text(result: CallToolResult) -> str:
    """A tool result's text blocks, or its structured content as JSON."""
    texts = [block.text for block in result.content if isinstance(block, TextContent)]
    if not texts and result.structured_content is not None:
        return json.dumps(result.structured_content)
    return "\n".join(texts)


# --- the agent -------------------------------------------------------------------------------

@dataclass
class Conversation:
    """One ACP session: its messages so far, its tools, and its running turn."""

    messages: list[Message]
    tools: McpTools
    turn: asyncio.Task[schema.StopReason] | None = None


Update = (schema.AgentMessageChunk | schema.AgentThoughtChunk | schema.ToolCallStart
          | schema.ToolCallProgress)


class LlmAgent:
    """The agent, duck-typed for the ``acp`` router (which looks its methods up by name;
    the ones it lacks, such as ``load_session``, answer "method not found")."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sessions: dict[str, Conversation] = {}
        self._client: acp.Client | None = None

    def on_connect(self, conn: acp.Client) -> None:
        """Keep the connection to the client, for sending session updates."""
        self._client = conn

    async def initialize(self, protocol_version: int, **_: Any) -> acp.InitializeResponse:
        """Protocol version 1; no ``session/load``: the conversation lives in this process."""
        return acp.InitializeResponse(
            protocol_version=acp.PROTOCOL_VERSION, agent_capabilities=schema.AgentCapabilities(),
            agent_info=schema.Implementation(name="axtui-llm", version=__version__))

    async def new_session(self, cwd: str, mcp_servers: list[Any] | None = None,
                          **_: Any) -> acp.NewSessionResponse:
        """A new, empty conversation; its MCP servers start in the background."""
        stdio = [s for s in mcp_servers or [] if isinstance(s, schema.McpServerStdio)]
        if len(stdio) < len(mcp_servers or []):
            log.warning("only stdio MCP servers are supported; the others are skipped")
        session_id = f"llm-{uuid.uuid4().hex}"
        system = self.settings.system_prompt
        messages: list[Message] = [{"role": "system", "content": system}] if system else []
        self.sessions[session_id] = Conversation(messages, McpTools(stdio, cwd))
        return acp.NewSessionResponse(session_id=session_id)

    async def prompt(self, prompt: list[Any], session_id: str, **_: Any) -> acp.PromptResponse:
        """Run one turn: completions and tool calls until the model answers."""
        conversation = self.sessions.get(session_id)
        if conversation is None:
            raise acp.RequestError(-32002, f"unknown session {session_id}")  # not found
        if conversation.turn is not None:
            raise acp.RequestError(-32600, f"a prompt is already running in {session_id}")
        problem = self.settings.problem()
        if problem is not None:
            log.error("%s", problem)
            raise acp.RequestError(FAILED, problem)
        text = "\n".join(b.text for b in prompt if isinstance(b, schema.TextContentBlock))
        turn = Turn([{"role": "user", "content": text}])
        task = asyncio.create_task(self._run(session_id, conversation, turn))
        conversation.turn = task
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError:  # the connection is closing
            task.cancel()
            raise
        finally:
            conversation.turn = None
            conversation.messages.extend(turn.messages())
        if task.cancelled():
            return acp.PromptResponse(stop_reason="cancelled")
        exc = task.exception()
        if exc is not None:
            expected = isinstance(exc, CompletionError)  # else a bug: its traceback is logged
            log.error("the turn failed: %s", exc, exc_info=None if expected else exc)
            message = str(exc) if expected else f"the llm agent failed: {exc!r}"
            raise acp.RequestError(FAILED, self.settings.scrub(message))
        return acp.PromptResponse(stop_reason=task.result())

    async def cancel(self, session_id: str, **_: Any) -> None:
        """``session/cancel``: stop the session's running turn where it is."""
        conversation = self.sessions.get(session_id)
        if conversation is not None and conversation.turn is not None:
            conversation.turn.cancel()

    async def close(self) -> None:
        """Stop the MCP servers of every session."""
        await asyncio.gather(*(c.tools.close() for c in self.sessions.values()))

    # --- a turn ----------------------------------------------------------------------------

    async def _run(self, session_id: str, conversation: Conversation,
                   turn: Turn) -> schema.StopReason:
        tools = await conversation.tools.specs()
        for _ in range(MAX_ROUNDS):
            current = turn.current = Round()
            body: Message = {"model": self.settings.model, "stream": True,
                             "messages": [*conversation.messages, *turn.settled]}
            if tools:
                body["tools"] = tools
            await self._complete(session_id, body, current)
            if not current.calls:
                turn.settled.append(current.message())
                turn.current = None
                return current.stop_reason()
            results = [await self._use_tool(session_id, conversation.tools, call)
                       for _, call in sorted(current.calls.items())]
            turn.settled.extend([current.message(), *results])
            turn.current = None
        return "max_turn_requests"

    async def _complete(self, session_id: str, body: Message, current: Round) -> None:
        """Stream one completion into ``current``, passing its text on as it comes."""
        async for chunk in stream_completion(self.settings, body):
            choices = chunk.get("choices")
            choice = choices[0] if isinstance(choices, list) and choices else None
            if not isinstance(choice, dict):
                continue  # a usage-only chunk, for example
            delta = choice.get("delta")
            if isinstance(delta, dict):
                thought = delta.get("reasoning_content") or delta.get("reasoning")
                if isinstance(thought, str) and thought:
                    await self._send(session_id, acp.update_agent_thought_text(thought))
                text = delta.get("content")
                if isinstance(text, str) and text:
                    current.text.append(text)
                    await self._send(session_id, acp.update_agent_message_text(text))
                current.add_tool_deltas(delta.get("tool_calls"))
            if isinstance(choice.get("finish_reason"), str):
                current.finish_reason = choice["finish_reason"]

    async def _use_tool(self, session_id: str, tools: McpTools, call: ToolRequest) -> Message:
        """Report, run and settle one tool call; its result as a message for the model."""
        call.id = call.id or f"call_{uuid.uuid4().hex[:24]}"
        try:
            arguments: Any = json.loads(call.arguments or "{}")
            problem = None if isinstance(arguments, dict) else "the arguments must be an object"
        except ValueError as exc:
            arguments, problem = call.arguments, f"the arguments are not valid JSON ({exc})"
        await self._send(session_id, acp.start_tool_call(
            call.id, _title(call.name, arguments), kind=TOOL_KINDS.get(call.name, "other"),
            status="in_progress", raw_input=arguments,
        ))
        text, failed = f"error: {problem}", True
        try:
            if problem is None:
                text, failed = await tools.call(call.name, arguments)
        except asyncio.CancelledError:
            await self._send(session_id, acp.update_tool_call(
                call.id, status="failed",
                content=[acp.tool_content(acp.text_block("cancelled; the tool may have run"))]))
            raise
        shown = text if len(text) <= SHOWN_RESULT_CHARS else (
            f"{text[:SHOWN_RESULT_CHARS]}\n… ({len(text) - SHOWN_RESULT_CHARS} more characters)")
        await self._send(session_id, acp.update_tool_call(
            call.id, status="failed" if failed else "completed",
            content=[acp.tool_content(acp.text_block(shown))]))
        return {"role": "tool", "tool_call_id": call.id, "content": text}

    async def _send(self, session_id: str, update: Update) -> None:
        assert self._client is not None, "on_connect comes first"
        await self._client.session_update(session_id=session_id, update=update)


def _title(name: str, arguments: Any) -> str:
    """A tool call's title: its name, and its (first) SQL statement when it has one."""
    found = arguments if isinstance(arguments, dict) else {}
    statements = found.get("statements")
    if isinstance(statements, list) and statements and isinstance(statements[0], dict):
        found = statements[0]
    sql = " ".join(str(found.get("sql") or "").split())
    return f"{name}: {sql if len(sql) <= 80 else sql[:79] + '…'}" if sql else name


async def serve() -> None:
    """Serve one client on stdin/stdout until it closes stdin."""
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING,
                        format="axtui-llm: %(levelname)s %(message)s")
    log.setLevel(logging.INFO)
    agent = LlmAgent(Settings.from_env(os.environ))
    try:
        await acp.run_agent(cast(acp.Agent, agent))
    finally:
        await agent.close()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
