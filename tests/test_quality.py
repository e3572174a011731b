"""Project rules that are checked, not hoped for: lint, types, and a lean hub."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """Run a command in the project root, capturing its output."""
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_clean() -> None:
    """ruff finds nothing in the code, the tests and the benchmarks."""
    result = run(sys.executable, "-m", "ruff", "check", "server", "axtui", "tests", "bench")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_on_the_hub() -> None:
    """mypy --strict passes on server/."""
    result = run(sys.executable, "-m", "mypy", "--strict", "server")
    assert result.returncode == 0, result.stdout + result.stderr


def test_hub_does_not_import_textual() -> None:
    """Starting the hub's modules never imports Textual (the hub stays small and fast)."""
    code = ("import sys, server.app, server.hub, axtui.cli, axtui.client; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in {'textual', 'acp', 'mcp'}))")
    result = run(sys.executable, "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
