"""The smallest ACP agent (standard library only), for the misbehaving test agents here.

``run(on_prompt)`` answers ``initialize`` and ``session/new`` and calls
``on_prompt(agent, text)`` for each prompt, in a thread of its own; what it returns is
sent as one message chunk and the prompt is answered ``end_turn``. The agent can call the
client (``agent.call``) and send updates (``agent.update``) meanwhile. Each script puts
what the test needs to see (pids, tokens) in files in its working directory.
"""

from __future__ import annotations

import itertools
import json
import sys
import threading
from collections.abc import Callable
from typing import Any


class Agent:
    """The wire to the client: JSON lines on stdout, answers matched to calls."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ids = itertools.count(1)
        self.waiting: dict[int, tuple[threading.Event, list[Any]]] = {}
        self.session = "stub"
        self.mcp_env: dict[str, str] = {}

    def send(self, message: dict[str, Any]) -> None:
        """One JSON-RPC message, as one line."""
        line = json.dumps({"jsonrpc": "2.0", **message}) + "\n"
        with self.lock:
            sys.stdout.write(line)
            sys.stdout.flush()

    def update(self, update: dict[str, Any]) -> None:
        """A ``session/update`` notification."""
        self.send({"method": "session/update",
                   "params": {"sessionId": self.session, "update": update}})

    def say(self, text: str, message_id: str | None = None) -> None:
        """One agent message chunk."""
        update: dict[str, Any] = {"sessionUpdate": "agent_message_chunk",
                                  "content": {"type": "text", "text": text}}
        if message_id is not None:
            update["messageId"] = message_id
        self.update(update)

    def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """Call the client; its whole response (``result`` or ``error``)."""
        call_id = next(self.ids)
        done: tuple[threading.Event, list[Any]] = (threading.Event(), [])
        self.waiting[call_id] = done
        self.send({"id": call_id, "method": method, "params": params})
        done[0].wait()
        response: dict[str, Any] = done[1][0]
        return response


def run(on_prompt: Callable[[Agent, str], str]) -> None:
    """Serve the client on stdin and stdout until stdin ends."""
    agent = Agent()

    def prompt(msg: dict[str, Any]) -> None:
        text = "".join(b.get("text", "") for b in msg["params"]["prompt"])
        reply = on_prompt(agent, text)
        agent.say(reply)
        agent.send({"id": msg["id"], "result": {"stopReason": "end_turn"}})

    for line in sys.stdin:
        msg = json.loads(line)
        method = msg.get("method")
        if method is None:
            waiting = agent.waiting.pop(msg.get("id"), None)
            if waiting is not None:
                waiting[1].append(msg)
                waiting[0].set()
        elif method == "initialize":
            agent.send({"id": msg["id"], "result": {"protocolVersion": 1,
                                                    "agentCapabilities": {}}})
        elif method == "session/new":
            for server in msg["params"].get("mcpServers") or []:
                agent.mcp_env = {e["name"]: e["value"] for e in server.get("env", [])}
            agent.send({"id": msg["id"], "result": {"sessionId": agent.session}})
        elif method == "session/prompt":
            threading.Thread(target=prompt, args=(msg,), daemon=True).start()
        elif "id" in msg:
            agent.send({"id": msg["id"], "error": {"code": -32601, "message": "no"}})
