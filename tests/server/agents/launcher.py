"""A launcher like npm's codex-acp and gemini: it runs the real agent (the bundled echo
agent) as a child that inherits its stdin, stdout and stderr, and exits with its status."""

import subprocess
import sys

child = subprocess.Popen([sys.executable, "-m", "server.agents.echo"])
with open("child.pid", "w") as f:
    f.write(str(child.pid))
sys.exit(child.wait() % 256)
