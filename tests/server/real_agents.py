"""The four real ACP agents from npm, for ``test_real_agents.py``: install and recipes.

Each recipe is what docs/agents.md §3 tells a user to write in ``agents:``, with the model
settings pointed at the fake model server of ``fake_models.py`` instead of a real API.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from server.config import AgentConfig, SandboxConfig

# Pinned: the versions docs/agents.md was tested with (npm view <package> version).
PACKAGES = {
    "opencode-ai": "1.18.33",
    "@zed-industries/codex-acp": "0.16.0",
    "@zed-industries/claude-agent-acp": "0.23.1",
    "@google/gemini-cli": "0.61.0",
}
INSTALL_TIMEOUT = 600.0


def cache_dir() -> Path:
    """Where the pinned packages are installed: outside the repo, one per set of versions."""
    pins = json.dumps(PACKAGES, sort_keys=True).encode()
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "axtui-tests" / "npm-agents" / hashlib.sha256(pins).hexdigest()[:12]


@dataclass(frozen=True)
class Installed:
    """The installed packages: ``prefix`` (holding ``node_modules``), and how long it took."""

    prefix: Path
    seconds: float

    @property
    def modules(self) -> Path:
        """The ``node_modules`` directory."""
        return self.prefix / "node_modules"


def install() -> Installed | str:
    """Install :data:`PACKAGES` once (``npm install --prefix``); a reason to skip, or them."""
    prefix = cache_dir()
    done = prefix / ".installed"
    if done.exists():
        return Installed(prefix, 0.0)
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        return "npm and node are needed to install the real agents"
    prefix.mkdir(parents=True, exist_ok=True)
    specs = [f"{name}@{version}" for name, version in PACKAGES.items()]
    start = time.monotonic()
    try:
        # --ignore-scripts: the optional native modules of gemini-cli would build or
        # download from GitHub; the one script needed, opencode-ai's, is run below.
        result = subprocess.run(
            [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund",
             "--ignore-scripts", "--loglevel", "error", *specs],
            capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        return f"npm install did not finish within {INSTALL_TIMEOUT:.0f} s"
    if result.returncode == 0:  # opencode-ai's own script links its platform's binary
        opencode = prefix / "node_modules" / "opencode-ai"
        result = subprocess.run([shutil.which("node") or "node", "postinstall.mjs"],
                                cwd=opencode, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        return "npm install failed (no registry?): " + " | ".join(tail)
    done.write_text(json.dumps(PACKAGES))
    return Installed(prefix, time.monotonic() - start)


@dataclass(frozen=True)
class Recipe:
    """One real agent: its ``agents:`` entry, and what the tests expect of it."""

    id: str
    make: Callable[[Installed, str, Path], AgentConfig]  # (installed, fake url, home)
    mcp_name: str  # how the agent names a state tool ({} the tool) to the model
    resume_modes: tuple[str, ...]  # what the hub may report after a suspend
    # Gemini CLI 0.61 cannot create a file through the client's fs/* (it takes the hub's
    # "No such file" error for a failure, not for a missing file): it may only overwrite.
    overwrites_only: bool = False


def _node(script: Path) -> tuple[str, ...]:
    node = shutil.which("node")
    assert node is not None
    return (node, str(script))


def _base_env(home: Path) -> dict[str, str]:
    return {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_DATA_HOME": str(home / ".local/share"), "XDG_CACHE_HOME": str(home / ".cache"),
            "XDG_STATE_HOME": str(home / ".local/state")}


def opencode(installed: Installed, url: str, home: Path) -> AgentConfig:
    """OpenCode: an OpenAI-compatible provider given in ``OPENCODE_CONFIG_CONTENT``."""
    config = {
        "$schema": "https://opencode.ai/config.json",
        "provider": {"fake": {
            "npm": "@ai-sdk/openai-compatible", "name": "Fake",
            "options": {"baseURL": f"{url}/v1", "apiKey": "fake-key"},
            "models": {"fake-model": {"name": "Fake model", "tool_call": True}}}},
        "model": "fake/fake-model", "small_model": "fake/fake-model",
        "permission": {"edit": "ask", "bash": "ask"},
        "autoupdate": False, "share": "disabled",
    }
    env = {**_base_env(home), "OPENCODE_CONFIG_CONTENT": json.dumps(config),
           "OPENCODE_DISABLE_MODELS_FETCH": "1", "OPENCODE_DISABLE_AUTOUPDATE": "1",
           "OPENCODE_DISABLE_DEFAULT_PLUGINS": "1", "OPENCODE_DISABLE_LSP_DOWNLOAD": "1"}
    return AgentConfig(id="opencode", command=(str(installed.modules / ".bin/opencode"), "acp"),
                       env=env, sandbox=SandboxConfig(writable=(str(home),)))


def codex(installed: Installed, url: str, home: Path) -> AgentConfig:
    """Codex through Zed's adapter: a model provider in ``$CODEX_HOME/config.toml``.

    The command is the platform's real binary, not the npm launcher ``codex-acp``.
    """
    codex_home = home / ".codex"
    codex_home.mkdir(parents=True, exist_ok=True)
    (codex_home / "config.toml").write_text(
        'model = "fake-model"\n'
        'model_provider = "fake"\n'
        'approval_policy = "untrusted"\n'
        'sandbox_mode = "workspace-write"\n'
        "[model_providers.fake]\n"
        'name = "Fake"\n'
        f'base_url = "{url}/v1"\n'
        'env_key = "FAKE_API_KEY"\n'
        'wire_api = "responses"\n')
    [binary] = installed.modules.glob("@zed-industries/codex-acp-*/bin/codex-acp")
    env = {**_base_env(home), "CODEX_HOME": str(codex_home), "FAKE_API_KEY": "fake-key"}
    return AgentConfig(id="codex", command=(str(binary),), env=env,
                       sandbox=SandboxConfig(writable=(str(home),)))


def claude(installed: Installed, url: str, home: Path) -> AgentConfig:
    """Claude Code through Zed's adapter: ``ANTHROPIC_BASE_URL`` and a key."""
    env = {**_base_env(home), "ANTHROPIC_BASE_URL": url, "ANTHROPIC_API_KEY": "fake-key",
           "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_AUTOUPDATER": "1"}
    script = installed.modules / "@zed-industries/claude-agent-acp/dist/index.js"
    return AgentConfig(id="claude", command=_node(script), env=env,
                       sandbox=SandboxConfig(writable=(str(home),)))


def gemini(installed: Installed, url: str, home: Path) -> AgentConfig:
    """Gemini CLI: ``GOOGLE_GEMINI_BASE_URL`` and a key; no relaunch of itself."""
    settings = home / ".gemini" / "settings.json"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(json.dumps({
        "security": {"auth": {"selectedType": "gemini-api-key"}},
        "general": {"disableAutoUpdate": True, "disableUpdateNag": True},
        "privacy": {"usageStatisticsEnabled": False}, "telemetry": {"enabled": False}}))
    env = {**_base_env(home), "GEMINI_API_KEY": "fake-key", "GOOGLE_GEMINI_BASE_URL": url,
           "GEMINI_CLI_NO_RELAUNCH": "true", "GEMINI_CLI_TRUST_WORKSPACE": "true"}
    script = installed.modules / "@google/gemini-cli/bundle/gemini.js"
    return AgentConfig(id="gemini", command=(*_node(script), "--acp"), env=env,
                       sandbox=SandboxConfig(writable=(str(home),)))


RECIPES = {
    "opencode": Recipe("opencode", opencode, "axtui-state_{}", ("resume",)),
    "codex": Recipe("codex", codex, "mcp__axtui_state.{}", ("resume",)),
    "claude": Recipe("claude", claude, "mcp__axtui-state__{}", ("resume",)),
    # Gemini's session/load mostly fails ("No previous sessions found": the loading process
    # has rewritten the session's file by then) and the hub falls back to new.
    "gemini": Recipe("gemini", gemini, "mcp_axtui-state_{}", ("load", "new"),
                     overwrites_only=True),
}
