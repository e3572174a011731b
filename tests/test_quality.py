"""Project rules that are checked, not hoped for: lint, types, and a lean hub."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """Run a command in the project root, capturing its output."""
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_clean() -> None:
    """ruff finds nothing in the code, the tests and the benchmarks."""
    result = run(sys.executable, "-m", "ruff", "check", "server", "axtui", "tests", "bench")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict() -> None:
    """mypy --strict passes on the hub (server/) and the clients (axtui/)."""
    result = run(sys.executable, "-m", "mypy", "--strict", "server", "axtui")
    assert result.returncode == 0, result.stdout + result.stderr


PACKAGES = ("server", "axtui")
MAX_LINES = 600


def modules() -> dict[str, Path]:
    """Every module of the two packages, by dotted name."""
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imported(path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules ``path`` imports at module level (``TYPE_CHECKING`` included;
    imports inside functions are lazy on purpose and left out)."""
    found: set[str] = set()
    nodes = list(ast.parse(path.read_text()).body)
    while nodes:
        node = nodes.pop()
        if isinstance(node, ast.If | ast.Try):
            nodes += [*node.body, *getattr(node, "orelse", []),
                      *[h for handler in getattr(node, "handlers", []) for h in handler.body]]
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {name for name in found if name in known}


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_is_over_600_lines(package: str) -> None:
    """Modules stay small: none passes 600 lines."""
    big = {str(p.relative_to(ROOT)): n for p in (ROOT / package).rglob("*.py")
           if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert big == {}


def test_the_hub_imports_nothing_of_the_clients() -> None:
    """No module of server/ imports axtui/ (the hub does not depend on its clients)."""
    known = modules()
    back = {name: sorted(i for i in imported(path, known) if i.startswith("axtui"))
            for name, path in known.items() if name.startswith("server")}
    assert {k: v for k, v in back.items() if v} == {}


def test_no_import_cycles() -> None:
    """The modules' imports form no cycle."""
    known = modules()
    graph = {name: imported(path, known) - {name} for name, path in known.items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for dep in sorted(graph[name]):
            if state.get(dep) == 1:
                cycles.append([*path[path.index(dep):], dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_hub_does_not_import_textual() -> None:
    """Starting the hub's modules never imports Textual (the hub stays small and fast)."""
    code = ("import sys, server.app, server.hub, axtui.cli, axtui.client; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in {'textual', 'acp', 'mcp'}))")
    result = run(sys.executable, "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
