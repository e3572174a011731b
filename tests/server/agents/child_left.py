"""Attack: a child in the agent's process group that would outlive the agent (it did, when
the agent exited and when the hub was killed with SIGKILL)."""

import os
import subprocess
import sys

from stub import Agent, run


def on_prompt(agent: Agent, text: str) -> str:
    if text.endswith("exit"):
        os._exit(0)  # between turns, once the answer is out: the hub sees an exit
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    with open("child.pid", "w") as f:
        f.write(str(child.pid))
    return f"child {child.pid} started"


run(on_prompt)
