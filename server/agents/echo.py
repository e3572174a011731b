"""``echo``: the bundled offline ACP agent, for trying and testing the agent runtime.

Run as ``python -m server.agents.echo``. It speaks the Agent Client Protocol, protocol
version 1: JSON-RPC 2.0, one JSON object a line, on stdin/stdout; its logs go to stderr.
It uses the standard library only (no ``acp``, no pydantic, not even asyncio: a reader
thread and one thread per running prompt) because the hub spawns it on every wake, and a
fresh process must answer ``initialize`` within a few tens of milliseconds.

Methods: ``initialize``; ``session/new`` (``cwd`` and ``mcpServers`` are accepted and
unused); ``session/load`` (replays the transcript as ``user_message_chunk`` and
``agent_message_chunk`` updates, then answers ``{}``); ``session/resume`` (answers ``{}``,
no replay); ``session/prompt``; the ``session/cancel`` notification. Other requests get
JSON-RPC error -32601, an unknown session -32002; lines that are not JSON objects are
skipped with a note on stderr.

A prompt's text (its text blocks, joined by newlines) is answered with ``echo: <text>``
and, on a second line, ``(I have seen N messages in this session)``, where N counts the
session's prompts including this one. The reply is streamed as three
``agent_message_chunk`` updates, then the prompt answers ``{"stopReason": "end_turn"}``.

Prompts that exercise the runtime (the first word decides):

``sleep <seconds>``
    waits that long before answering; a ``session/cancel`` during the wait ends the turn
    at once with ``{"stopReason": "cancelled"}``.
``crash``
    writes one line to stderr and exits with code 3, leaving the prompt unanswered.
``stderr <n>``
    writes n lines to stderr, then answers (a client that never drains stderr hangs here).
``read <path>`` / ``write <path> <text>``
    reads or writes a file through the client's ``fs/read_text_file`` /
    ``fs/write_text_file`` and answers ``read: <content>``, ``written`` or
    ``<read|write> refused: <message>``.
``permission``
    reports a pending ``tool_call``, asks the client with ``session/request_permission``
    (option ``allow``, kind allow_once, and option ``reject``, kind reject_once), marks the
    tool call completed (allowed) or failed, and answers ``permission: <optionId>`` or
    ``permission: cancelled`` in place of the ``echo:`` line. A ``session/cancel`` while
    waiting ends the turn with ``cancelled`` without waiting for the client's answer.

Transcripts live in memory. When the environment variable ``AXTUI_ECHO_STATE`` names a
directory, each session is also kept there as ``<sessionId>.json``, so that
``session/load`` and ``session/resume`` work in a new process after the previous one
stopped or crashed.

``AXTUI_ECHO_CAPABILITIES`` (``resume,load`` by default) says which ways of restoring a
session it advertises: ``load``, or nothing (empty), lets a test exercise the hub's other
ways of restoring a conversation.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import sys
import threading
from typing import Any, BinaryIO

PROTOCOL_VERSION = 1
AGENT_INFO = {"name": "axtui-echo", "version": "0.1.0"}
STATE_ENV = "AXTUI_ECHO_STATE"
CAPABILITIES_ENV = "AXTUI_ECHO_CAPABILITIES"

INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
RESOURCE_NOT_FOUND = -32002  # ACP's "resource not found"

PERMISSION_OPTIONS = [
    {"optionId": "allow", "name": "Allow", "kind": "allow_once"},
    {"optionId": "reject", "name": "Reject", "kind": "reject_once"},
]
CRASH_EXIT_CODE = 3

Message = dict[str, Any]


def log(text: str) -> None:
    """Write one line to stderr, the agent's only log."""
    sys.stderr.write(f"axtui-echo: {text}\n")
    sys.stderr.flush()


class RpcError(Exception):
    """A request that fails; it is answered with a JSON-RPC error of ``code``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Call:
    """A request sent to the client, done when its answer arrives or its turn is cancelled."""

    def __init__(self, call_id: int) -> None:
        self.id = call_id
        self.done = threading.Event()
        self.response: Message | None = None


class Wire:
    """The connection to the client: JSON lines out, and requests that await an answer."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._write_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._calls: dict[int, Call] = {}
        self._calls_lock = threading.Lock()

    def send(self, message: Message) -> None:
        """Write one message as a line; threads never interleave their lines."""
        data = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        with self._write_lock:
            try:
                self._out.write(data)
                self._out.flush()
            except (BrokenPipeError, ValueError):
                # The client closed our stdout: nobody is left to answer.
                os._exit(0)

    def respond(self, request_id: Any, result: Any) -> None:
        """Answer a request with its result."""
        self.send({"jsonrpc": "2.0", "id": request_id, "result": result})

    def fail(self, request_id: Any, code: int, message: str) -> None:
        """Answer a request with an error."""
        self.send({"jsonrpc": "2.0", "id": request_id,
                   "error": {"code": code, "message": message}})

    def update(self, session_id: str, update: Message) -> None:
        """Send one ``session/update`` notification."""
        self.send({"jsonrpc": "2.0", "method": "session/update",
                   "params": {"sessionId": session_id, "update": update}})

    def new_call(self) -> Call:
        """Register a request to the client before it is sent, so no answer is missed."""
        call = Call(next(self._ids))
        with self._calls_lock:
            self._calls[call.id] = call
        return call

    def forget(self, call: Call) -> None:
        """Stop waiting for ``call``; a late answer is then logged and dropped."""
        with self._calls_lock:
            self._calls.pop(call.id, None)

    def resolve(self, message: Message) -> None:
        """Hand a response from the client to the request that awaits it."""
        request_id = message["id"]
        with self._calls_lock:
            call = self._calls.pop(request_id, None) if isinstance(request_id, int) else None
        if call is None:
            log(f"dropping a response to no pending request: id {request_id!r}")
            return
        call.response = message
        call.done.set()


class Turn:
    """One running prompt; ``session/cancel`` sets :attr:`cancelled` and ends its waits."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()
        self.thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._call: Call | None = None

    def cancel(self) -> None:
        """Cancel the turn, waking it if it waits on the client."""
        with self._lock:
            self.cancelled.set()
            if self._call is not None:
                self._call.done.set()

    def ask(self, wire: Wire, method: str, params: Message) -> Message | None:
        """Send a request to the client and wait; ``None`` if the turn is cancelled first."""
        with self._lock:
            if self.cancelled.is_set():
                return None
            call = self._call = wire.new_call()
        wire.send({"jsonrpc": "2.0", "id": call.id, "method": method, "params": params})
        call.done.wait()
        with self._lock:
            self._call = None
        wire.forget(call)
        return call.response


def is_safe_id(session_id: str) -> bool:
    """Whether ``session_id`` can name a file in the state directory."""
    bare = session_id.replace("-", "").replace("_", "")
    return 0 < len(session_id) <= 128 and bare.isascii() and bare.isalnum()


class Transcripts:
    """Each session's messages (``{"role": "user" | "agent", "text": ...}``), in memory and,
    with a state directory, in ``<state_dir>/<sessionId>.json``."""

    def __init__(self, state_dir: str | None) -> None:
        self._dir = state_dir
        self._sessions: dict[str, list[Message]] = {}
        self._lock = threading.Lock()

    def create(self) -> str:
        """Start an empty session and return its new id."""
        session_id = "echo-" + os.urandom(12).hex()
        with self._lock:
            self._sessions[session_id] = []
            self._save(session_id)
        return session_id

    def get(self, session_id: str) -> list[Message] | None:
        """A copy of the session's messages, read from disk if this process is new to it."""
        with self._lock:
            messages = self._sessions.get(session_id)
            if messages is None:
                messages = self._load(session_id)
                if messages is None:
                    return None
                self._sessions[session_id] = messages
            return list(messages)

    def append(self, session_id: str, role: str, text: str) -> int:
        """Add a message to a known session; return how many user messages it now has."""
        with self._lock:
            messages = self._sessions[session_id]
            messages.append({"role": role, "text": text})
            self._save(session_id)
            return sum(1 for message in messages if message["role"] == "user")

    def _path(self, session_id: str) -> str | None:
        if self._dir is None or not is_safe_id(session_id):
            return None
        return os.path.join(self._dir, f"{session_id}.json")

    def _save(self, session_id: str) -> None:
        path = self._path(session_id)
        if path is None:
            return
        data = {"sessionId": session_id, "messages": self._sessions[session_id]}
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(f"{path}.tmp", "w", encoding="utf-8") as f:
                json.dump(data, f, ensure_ascii=False)
            os.replace(f"{path}.tmp", path)  # a crash never leaves half a file
        except OSError as exc:
            log(f"cannot save session {session_id} to {path}: {exc}; it stays in memory only")

    def _load(self, session_id: str) -> list[Message] | None:
        path = self._path(session_id)
        if path is None or not os.path.exists(path):
            return None
        try:
            with open(path, encoding="utf-8") as f:
                messages = json.load(f)["messages"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log(f"cannot read session {session_id} from {path}: {exc!r}")
            return None
        if not isinstance(messages, list) or not all(
            isinstance(m, dict) and m.get("role") in ("user", "agent")
            and isinstance(m.get("text"), str) for m in messages
        ):
            log(f"ignoring {path}: not a transcript written by this agent")
            return None
        return messages


def prompt_text(prompt: list[Any]) -> str:
    """The text of a prompt's text blocks; other blocks are ignored."""
    return "\n".join(
        block["text"] for block in prompt
        if isinstance(block, dict) and block.get("type") == "text"
        and isinstance(block.get("text"), str)
    )


def parse_seconds(text: str) -> float | None:
    """A non-negative, finite number of seconds, or ``None``."""
    try:
        seconds = float(text)
    except ValueError:
        return None
    return seconds if 0 <= seconds < float("inf") else None


def reply_chunks(reply: str) -> list[str]:
    """Split a two-line reply into three non-empty chunks, as a model would stream it."""
    head, _, tail = reply.partition("\n")
    middle = len(head) // 2
    return [head[:middle], head[middle:], f"\n{tail}"]


def permission_outcome(response: Message | None) -> str:
    """The option the client chose, or ``"cancelled"``."""
    if response is None:
        return "cancelled"
    result = response.get("result")
    outcome = result.get("outcome") if isinstance(result, dict) else None
    if not isinstance(outcome, dict):
        log(f"session/request_permission got no outcome: {response!r}; taken as cancelled")
        return "cancelled"
    known = {option["optionId"] for option in PERMISSION_OPTIONS}
    if outcome.get("outcome") == "selected" and outcome.get("optionId") in known:
        return str(outcome["optionId"])
    if outcome.get("outcome") != "cancelled":
        log(f"unexpected permission outcome {outcome!r}; taken as cancelled")
    return "cancelled"


def require_session_id(params: Message) -> str:
    """The request's ``sessionId``."""
    session_id = params.get("sessionId")
    if not isinstance(session_id, str):
        raise RpcError(INVALID_PARAMS, "sessionId must be a string")
    return session_id


class EchoAgent:
    """The agent's behaviour: requests in (on the reader thread), answers and updates out."""

    def __init__(self, wire: Wire, transcripts: Transcripts) -> None:
        self.wire = wire
        self.transcripts = transcripts
        self._turns: dict[str, Turn] = {}
        self._lock = threading.Lock()
        self._tool_call_ids = itertools.count(1)

    # --- routing ---------------------------------------------------------------------------

    def handle(self, message: Message) -> None:
        """Route one incoming message; messages are handled in the order they arrive."""
        method = message.get("method")
        if method is None:
            if "id" in message and ("result" in message or "error" in message):
                self.wire.resolve(message)
            else:
                log(f"skipping a message that is neither request nor response: {message!r}")
            return
        params = message.get("params")
        params = {} if params is None else params
        if "id" not in message:
            if method == "session/cancel" and isinstance(params, dict):
                self.cancel(params)
            else:
                log(f"ignoring notification {method!r}")
            return
        request_id = message["id"]
        try:
            if not isinstance(method, str) or not isinstance(params, dict):
                raise RpcError(INVALID_REQUEST, "method must be a string and params an object")
            if method == "session/prompt":
                self.start_prompt(request_id, params)  # answered later, by the turn's thread
                return
            result = self.call(method, params)
        except RpcError as exc:
            self.wire.fail(request_id, exc.code, exc.message)
        except Exception as exc:
            log(f"{method} failed: {exc!r}")
            self.wire.fail(request_id, INTERNAL_ERROR, f"{method} failed: {exc}")
        else:
            self.wire.respond(request_id, result)

    def call(self, method: str, params: Message) -> Any:
        """Run a request that is answered at once."""
        if method == "initialize":
            return self.initialize()
        if method == "session/new":
            return {"sessionId": self.transcripts.create()}
        if method == "session/load":
            return self.load_session(require_session_id(params))
        if method == "session/resume":
            self.messages(require_session_id(params))
            return {}
        raise RpcError(METHOD_NOT_FOUND, f"method not found: {method}")

    # --- session setup ---------------------------------------------------------------------

    def initialize(self) -> Message:
        """Capabilities: load and resume (see ``AXTUI_ECHO_CAPABILITIES``); text prompts."""
        offered = os.environ.get(CAPABILITIES_ENV, "resume,load").split(",")
        return {
            "protocolVersion": PROTOCOL_VERSION,
            "agentCapabilities": {
                "loadSession": "load" in offered,
                "promptCapabilities": {"image": False, "audio": False, "embeddedContext": False},
                "sessionCapabilities": {"resume": {}} if "resume" in offered else {},
            },
            "authMethods": [],
            "agentInfo": AGENT_INFO,
        }

    def messages(self, session_id: str) -> list[Message]:
        """The session's transcript; an unknown session is an error."""
        messages = self.transcripts.get(session_id)
        if messages is None:
            raise RpcError(RESOURCE_NOT_FOUND,
                           f"unknown session {session_id!r}: start one with session/new")
        return messages

    def load_session(self, session_id: str) -> Message:
        """Replay the conversation as updates, then answer (an empty LoadSessionResponse)."""
        for message in self.messages(session_id):
            kind = "user_message_chunk" if message["role"] == "user" else "agent_message_chunk"
            self.wire.update(session_id, {"sessionUpdate": kind,
                                          "content": {"type": "text", "text": message["text"]}})
        return {}

    # --- prompts ---------------------------------------------------------------------------

    def start_prompt(self, request_id: Any, params: Message) -> None:
        """Start a turn on its own thread, so the reader stays free for cancels and answers."""
        session_id = require_session_id(params)
        prompt = params.get("prompt")
        if not isinstance(prompt, list):
            raise RpcError(INVALID_PARAMS, "prompt must be a list of content blocks")
        self.messages(session_id)
        turn = Turn()
        with self._lock:
            if session_id in self._turns:
                raise RpcError(INVALID_REQUEST, f"session {session_id} already runs a prompt: "
                                                "wait for it or send session/cancel")
            self._turns[session_id] = turn
        turn.thread = threading.Thread(
            target=self._run_turn, args=(request_id, session_id, prompt_text(prompt), turn),
            name=f"turn-{session_id}", daemon=True,
        )
        turn.thread.start()

    def _run_turn(self, request_id: Any, session_id: str, text: str, turn: Turn) -> None:
        answer: Message
        try:
            answer = {"result": {"stopReason": self.prompt(session_id, text, turn)}}
        except Exception as exc:
            log(f"prompt in session {session_id} failed: {exc!r}")
            answer = {"error": {"code": INTERNAL_ERROR, "message": f"echo failed: {exc}"}}
        # The turn ends before the answer goes out: the client may send the next prompt
        # as soon as it reads the answer.
        with self._lock:
            self._turns.pop(session_id, None)
        self.wire.send({"jsonrpc": "2.0", "id": request_id, **answer})

    def prompt(self, session_id: str, text: str, turn: Turn) -> str:
        """Answer one prompt; return the stop reason."""
        count = self.transcripts.append(session_id, "user", text)
        words = text.split()
        command, arg = [*words, "", ""][:2]
        first_line = f"echo: {text}"
        if text.strip() == "crash":
            log(f"crashing on request (exit code {CRASH_EXIT_CODE})")
            os._exit(CRASH_EXIT_CODE)
        elif command == "sleep" and (seconds := parse_seconds(arg)) is not None:
            turn.cancelled.wait(seconds)
        elif command == "stderr" and arg.isdigit():
            lines = int(arg)
            for i in range(1, lines + 1):
                sys.stderr.write(f"axtui-echo: stderr line {i} of {lines}\n")
            sys.stderr.flush()
        elif text.strip() == "permission":
            first_line = f"permission: {self.ask_permission(session_id, turn)}"
        elif command in ("read", "write") and arg:
            first_line = self.use_file(session_id, turn, command, arg, text)
        if turn.cancelled.is_set():
            return "cancelled"
        reply = f"{first_line}\n(I have seen {count} messages in this session)"
        for chunk in reply_chunks(reply):
            self.wire.update(session_id, {"sessionUpdate": "agent_message_chunk",
                                          "content": {"type": "text", "text": chunk}})
        self.transcripts.append(session_id, "agent", reply)
        return "end_turn"

    def use_file(self, session_id: str, turn: Turn, command: str, path: str, text: str) -> str:
        """``read <path>`` / ``write <path> <text>`` through the client's fs methods."""
        params: Message = {"sessionId": session_id, "path": path}
        if command == "write":
            params["content"] = text.split(None, 2)[2] if len(text.split(None, 2)) > 2 else ""
        response = turn.ask(self.wire, f"fs/{command}_text_file", params) or {}
        error = response.get("error")
        if isinstance(error, dict):
            return f"{command} refused: {error.get('message')}"
        result = response.get("result") or {}
        return f"read: {result.get('content')}" if command == "read" else "written"

    def ask_permission(self, session_id: str, turn: Turn) -> str:
        """Report a tool call, ask the client to allow it, and settle it by the answer."""
        tool_call = {
            "toolCallId": f"echo-permission-{next(self._tool_call_ids)}",
            "title": "Echo asks for permission",
            "kind": "other",
            "status": "pending",
        }
        self.wire.update(session_id, {"sessionUpdate": "tool_call", **tool_call})
        response = turn.ask(self.wire, "session/request_permission", {
            "sessionId": session_id, "toolCall": tool_call, "options": PERMISSION_OPTIONS,
        })
        outcome = permission_outcome(response)
        self.wire.update(session_id, {
            "sessionUpdate": "tool_call_update", "toolCallId": tool_call["toolCallId"],
            "status": "completed" if outcome == "allow" else "failed",
        })
        return outcome

    def cancel(self, params: Message) -> None:
        """``session/cancel``: end the session's running turn, if any."""
        session_id = params.get("sessionId")
        if not isinstance(session_id, str):
            log(f"ignoring session/cancel without a sessionId: {params!r}")
            return
        with self._lock:
            turn = self._turns.get(session_id)
        if turn is not None:
            turn.cancel()

    def shutdown(self) -> None:
        """Cancel every running turn and give each a moment to answer."""
        with self._lock:
            turns = list(self._turns.values())
        for turn in turns:
            turn.cancel()
        for turn in turns:
            if turn.thread is not None:
                turn.thread.join(timeout=2.0)


def parse_line(line: bytes) -> Message | None:
    """The JSON object on ``line``, or ``None`` (with a note on stderr) for anything else."""
    text = line.strip()
    if not text:
        return None
    try:
        message = json.loads(text)
    except ValueError:
        log(f"skipping a line that is not JSON: {text[:80]!r}")
        return None
    if not isinstance(message, dict):
        log(f"skipping a line that is not a JSON object: {text[:80]!r}")
        return None
    return message


def serve(agent: EchoAgent, stdin: BinaryIO) -> None:
    """Read messages until the client closes stdin, then stop the running turns."""
    while line := stdin.readline():
        message = parse_line(line)
        if message is not None:
            agent.handle(message)
    agent.shutdown()


def main() -> int:
    """Serve one client on stdin/stdout."""
    state_dir = os.environ.get(STATE_ENV) or None
    agent = EchoAgent(Wire(sys.stdout.buffer), Transcripts(state_dir))
    with contextlib.suppress(KeyboardInterrupt):
        serve(agent, sys.stdin.buffer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
