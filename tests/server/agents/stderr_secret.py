"""Attack: an agent that prints its API key (its env) and a bearer token to stderr, then
crashes mid-turn (its stderr went into turn.failed, for every viewer to see)."""

import os
import sys

from stub import Agent, run


def on_prompt(agent: Agent, text: str) -> str:
    print(f"calling the model with key {os.environ['MODEL_KEY']}", file=sys.stderr)
    print("retrying with Authorization: Bearer abcdef0123456789", file=sys.stderr, flush=True)
    os._exit(4)


run(on_prompt)
