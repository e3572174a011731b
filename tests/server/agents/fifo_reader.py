"""Attack: a FIFO in its own cwd passed to fs/read_text_file (it froze the hub's loop)."""

import os

from stub import Agent, run


def on_prompt(agent: Agent, text: str) -> str:
    path = os.path.join(os.getcwd(), "pipe")
    if not os.path.exists(path):
        os.mkfifo(path)
    response = agent.call("fs/read_text_file", {"sessionId": agent.session, "path": path})
    return json_line(response)


def json_line(response: dict[str, object]) -> str:
    error = response.get("error")
    return f"refused: {error['message']}" if isinstance(error, dict) else "read it"


run(on_prompt)
