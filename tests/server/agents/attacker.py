"""An ACP agent written to misbehave: each prompt is an attack on the hub, and the answer
says what it got.

Standard library only. A prompt's first word picks the attack, the rest is its target:

``read <path>``
    reads the file (``/proc/<hub pid>/environ``, the config, another session's file);
    answers ``read: <content>`` or ``blocked: <error>``.
``pids``
    answers ``pids: <the process ids it can see in /proc>``.
``connect <ws url>``
    opens the hub's websocket without a token and sends ``initialize``; answers
    ``connect: <the hub's answer>`` or ``blocked: <error>``.
``env``
    answers ``env: <its environment's variable names>``.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def attack(text: str) -> str:
    """Run the attack ``text`` names; what it got, as one line of text."""
    word, _, target = text.strip().splitlines()[-1].partition(" ")  # after any transcript
    try:
        if word == "read":
            with open(target, "rb") as file:
                return "read: " + file.read(4096).decode(errors="replace")
        if word == "pids":
            return "pids: " + " ".join(sorted(n for n in os.listdir("/proc") if n.isdigit()))
        if word == "connect":
            return "connect: " + connect(target)
        if word == "env":
            return "env: " + " ".join(sorted(os.environ))
    except Exception as exc:  # every failure is the answer: the attack was stopped
        return f"blocked: {type(exc).__name__}: {exc}"
    return f"unknown attack {word!r}"


def connect(url: str) -> str:
    """``initialize`` without a token on the hub at ``url``; the hub's answer."""
    from websockets.sync.client import connect as ws_connect

    requests = [("initialize", {"protocolVersion": 1,
                                "clientInfo": {"name": "attacker", "kind": "cli"}}),
                ("session/list", {})]
    answers = []
    with ws_connect(url, open_timeout=5) as ws:
        for request_id, (method, params) in enumerate(requests, 1):
            try:
                ws.send(json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method,
                                    "params": params}))
                answers.append(str(ws.recv(timeout=5)))
            except Exception:  # the hub closed the connection after refusing it
                answers.append(f"closed {getattr(ws, 'close_code', None)}")
                break
    return " ".join(answers)


def send(message: dict[str, Any]) -> None:
    """One JSON-RPC message on stdout."""
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> None:
    """Answer ACP requests on stdin until it closes."""
    for line in sys.stdin:
        msg = json.loads(line)
        method, rid, params = msg.get("method"), msg.get("id"), msg.get("params") or {}
        if method == "initialize":
            send({"jsonrpc": "2.0", "id": rid, "result": {
                "protocolVersion": 1, "agentCapabilities": {}}})
        elif method == "session/new":
            send({"jsonrpc": "2.0", "id": rid, "result": {"sessionId": "attack"}})
        elif method == "session/prompt":
            text = "\n".join(b.get("text", "") for b in params.get("prompt", []))
            send({"jsonrpc": "2.0", "method": "session/update", "params": {
                "sessionId": params.get("sessionId"), "update": {
                    "sessionUpdate": "agent_message_chunk",
                    "content": {"type": "text", "text": attack(text)}}}})
            send({"jsonrpc": "2.0", "id": rid, "result": {"stopReason": "end_turn"}})
        elif rid is not None:
            send({"jsonrpc": "2.0", "id": rid,
                  "error": {"code": -32601, "message": f"no method {method}"}})


if __name__ == "__main__":
    main()
