"""Attack: a helper that leaves the agent's process group and keeps its stdout open, then
the agent dies mid-turn (its death was seen only at the end of its output: never)."""

import os
import subprocess
import sys

from stub import Agent, run


def on_prompt(agent: Agent, text: str) -> str:
    helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                              start_new_session=True)  # stdout: the agent's, inherited
    with open("helper.pid", "w") as f:
        f.write(str(helper.pid))
    agent.say("about to die")
    os._exit(3)


run(on_prompt)
