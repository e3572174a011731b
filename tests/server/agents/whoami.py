"""Answers each prompt with the user it runs as and whether it can write in its cwd; run
with the system's Python (``-I``), which any user can run."""

import os

from stub import Agent, run


def on_prompt(agent: Agent, text: str) -> str:
    try:
        with open("mine.txt", "w") as f:
            f.write("written by the agent")
        wrote = "yes"
    except OSError as exc:
        wrote = f"no ({exc.strerror})"
    return f"uid {os.getuid()} gid {os.getgid()} can write: {wrote}"


run(on_prompt)
