"""Attack: a flood of updates as fast as the pipe takes them (25-80 % of them were lost)."""

from stub import Agent, run


def on_prompt(agent: Agent, text: str) -> str:
    count = int(text.split()[-1])
    for i in range(count):
        agent.say(f"{i} ")
    return "done"


run(on_prompt)
