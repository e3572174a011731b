"""The hub's YAML configuration: loading, ``${ENV}`` interpolation and validation.

:func:`load_config` reads one YAML file, replaces ``${VAR}`` references in its string
values, checks every key and turns the result into frozen dataclasses. Anything wrong is
one :class:`ConfigError` whose message names the file and the key path, for example
``config.yaml: hub.port: must be an integer between 0 and 65535 (got 'abc')``. Secret
values (tokens) never appear in an error message or a ``repr``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import platformdirs
import yaml

from server.clusterconfig import ClusterConfig, parse_cluster, redis_url
from server.configvalues import (
    AGENT_ID,
    Check,
    boolean,
    choice,
    command,
    env_vars,
    event_types,
    fields,
    integer,
    interpolate,
    is_loopback,
    nonempty,
    opt_str,
    parse_duration,
    parse_size,
    paths,
    section,
    string,
    ws_url,
)
from server.protocol import Role
from server.webhooks import WebhookConfig, parse_webhooks

_MIB = 1024 * 1024
_NO_FILE = "<no config file>"
class ConfigError(Exception):
    """A configuration that cannot be used; the message names the file and the key."""


# --- the configuration --------------------------------------------------------------------

@dataclass(frozen=True)
class TokenConfig:
    """A bearer token a client presents, and the role it grants."""

    name: str
    token: str = field(repr=False)
    role: Role


@dataclass(frozen=True)
class SandboxConfig:
    """How an agent's process is confined (:mod:`server.sandbox`).

    ``writable``: paths it may write besides its workspace (``~`` expanded), for agents
    that keep their own state under ``HOME``. ``hidden``: files it must not see besides the
    data dir, set by the loader (the config file, whose path is on the hub's command line).
    """

    network: bool = True
    writable: tuple[str, ...] = ()
    hidden: tuple[str, ...] = field(default=(), compare=False)  # not the user's choice


@dataclass(frozen=True)
class AgentConfig:
    """One agent the hub can start: the command, its ACP details and its lifecycle timers."""

    id: str
    command: tuple[str, ...]
    description: str = ""
    protocol: str = "acp"
    idle_timeout: float = 300.0
    freeze_after: float | None = None
    turn_timeout: float = 1800.0
    wake_on: tuple[str, ...] = ("user.message",)
    cwd: str | None = None
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    retry_interrupted: bool = False
    context_sql: str | None = None
    sandbox: SandboxConfig | None = field(default_factory=SandboxConfig)  # None: sandbox: none


@dataclass(frozen=True)
class HubConfig:
    """Where the hub listens, where it keeps its data, and its limits (seconds, bytes)."""

    host: str = "127.0.0.1"
    port: int = 8494
    http_port: int | None = 8495  # the HTTP API (http.md); None: off, 0: a free port
    data_dir: Path = field(default_factory=lambda: platformdirs.user_data_path("axtui"))
    durability: str = "full"
    max_event_bytes: int = _MIB
    max_lag_bytes: int = 4 * _MIB
    max_frame_bytes: int = 4 * _MIB
    initialize_timeout: float = 10.0
    session_idle_close: float = 60.0
    query_timeout: float = 5.0
    max_inflight: int = 1024
    max_queue: int = 10000
    max_value_bytes: int = _MIB  # largest value a state/query may produce (SQLITE_LIMIT_LENGTH)
    max_result_bytes: int = 4 * _MIB  # largest state/query answer or history page
    max_open_sessions: int = 500  # open session files (least recently used closed first)
    max_connection_sessions: int = 100  # sessions one connection may keep open
    commit_budget: float = 0.25  # client SQL time per group commit, so the log moves on
    agent_user: str | None = None  # who agents run as when the hub is root (default nobody)
    log_level: str = "info"


@dataclass(frozen=True)
class ClientConfig:
    """How the ``axtui`` client commands reach a hub."""

    server: str = "ws://127.0.0.1:8494/ws"
    token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class TuiConfig:
    """The terminal UI's preferences (``theme``: a Textual theme's name; None: the last
    one chosen in the TUI, else its default)."""

    theme: str | None = None


@dataclass(frozen=True)
class SlackConfig:
    """The Slack adapter's tokens, the agent it talks to, and an optional API URL."""

    bot_token: str = field(repr=False)
    app_token: str = field(repr=False)
    agent: str | None = None
    api_url: str | None = None


def bundled_agents(environ: Mapping[str, str] | None = None) -> dict[str, AgentConfig]:
    """The agents shipped with axtui, available when no ``agents:`` are configured.

    The ``AXTUI_LLM_*`` variables of ``environ`` (the hub's own, in local mode) become the
    ``llm`` agent's ``env``, so ``AXTUI_LLM_BASE_URL=... axtui up`` needs no config file;
    nothing else of it reaches any agent.
    """
    described = {"echo": "Answers with what it got (offline)",
                 "demo": "Offline demo: plan, tools, permission, state",
                 "llm": "Any OpenAI-compatible chat endpoint"}
    llm_env = {k: v for k, v in (environ or {}).items() if k.startswith("AXTUI_LLM_")}
    return {name: AgentConfig(name, (sys.executable, "-m", f"server.agents.{name}"), text,
                              env=llm_env if name == "llm" else {})
            for name, text in described.items()}


@dataclass(frozen=True)
class Config:
    """The whole configuration; ``source`` is the file it came from, if any."""

    hub: HubConfig
    tokens: tuple[TokenConfig, ...] = ()
    agents: Mapping[str, AgentConfig] = field(default_factory=bundled_agents)
    client: ClientConfig = field(default_factory=ClientConfig)
    slack: SlackConfig | None = None
    tui: TuiConfig = field(default_factory=TuiConfig)
    webhooks: Mapping[str, WebhookConfig] = field(default_factory=dict)  # http.md §6
    cluster: ClusterConfig | None = None  # cluster.md: None is single-node mode
    source: Path | None = None

    @property
    def local_mode(self) -> bool:
        """No tokens are configured: loopback only, and every client is an admin."""
        return not self.tokens

    def with_overrides(self, *, host: str | None = None, port: int | None = None,
                       data_dir: Path | None = None, http_port: int | None = None,
                       cluster: str | None = None) -> Config:
        """A copy with command-line overrides applied, checked like the file was
        (``cluster``: the Redis URL of ``--cluster``)."""
        changes: dict[str, Any] = {}
        config = self
        try:
            if cluster is not None:
                config = replace(config, cluster=(
                    replace(self.cluster, redis=redis_url(cluster, "--cluster"))
                    if self.cluster is not None else parse_cluster(None, os.environ, cluster)))
            if host is not None:
                changes["host"] = nonempty(host, "hub.host")
            if port is not None:
                changes["port"] = integer(port, "hub.port", 0, 65535)
            if http_port is not None:
                changes["http_port"] = integer(http_port, "hub.http_port", 0, 65535)
            if data_dir is not None:
                changes["data_dir"] = Path(data_dir).expanduser()
            config = replace(config, hub=replace(self.hub, **changes))
            _check_exposure(config)
        except ValueError as exc:
            raise ConfigError(f"{self.source or _NO_FILE}: {exc}") from None
        return config


def _sandbox(value: object, key: str) -> SandboxConfig | None:
    if value == "none":
        return None
    if not isinstance(value, dict):
        raise ValueError(f"{key}: must be none or a mapping such as {{network: false}}"
                         f" (got {value!r})")
    return SandboxConfig(**fields(value, key, {"network": boolean, "writable": paths}))


def _role(value: object, key: str) -> Role:
    try:
        return Role.parse(string(value, key))
    except ValueError as exc:
        raise ValueError(f"{key}: {exc}") from None


_HUB: dict[str, Check] = {
    "host": nonempty, "port": lambda v, k: integer(v, k, 0, 65535),
    "http_port": lambda v, k: None if v is None else integer(v, k, 0, 65535),
    "data_dir": lambda v, k: Path(nonempty(v, k)).expanduser(),
    "durability": choice("full", "normal"), "max_event_bytes": parse_size,
    "max_lag_bytes": parse_size, "max_frame_bytes": parse_size,
    "initialize_timeout": parse_duration, "session_idle_close": parse_duration,
    "query_timeout": parse_duration, "max_inflight": lambda v, k: integer(v, k, 1, 2**31 - 1),
    "max_queue": lambda v, k: integer(v, k, 1, 2**31 - 1),
    "max_value_bytes": parse_size, "max_result_bytes": parse_size,
    "max_open_sessions": lambda v, k: integer(v, k, 1, 2**31 - 1),
    "max_connection_sessions": lambda v, k: integer(v, k, 1, 2**31 - 1),
    "commit_budget": parse_duration, "agent_user": opt_str,
    "log_level": choice("debug", "info", "warning", "error"),
}
_TOKEN: dict[str, Check] = {"name": nonempty, "token": nonempty, "role": _role}
_AGENT: dict[str, Check] = {
    "description": string, "command": command, "protocol": choice("acp"),
    "idle_timeout": parse_duration,
    "freeze_after": lambda v, k: None if v is None else parse_duration(v, k),
    "turn_timeout": parse_duration, "wake_on": event_types, "cwd": opt_str, "env": env_vars,
    "retry_interrupted": boolean,
    "context": lambda v, k: opt_str(section(v, k, ("sql",)).get("sql"), f"{k}.sql"),
    "sandbox": _sandbox,
}
_CLIENT: dict[str, Check] = {"server": ws_url, "token": opt_str}
_SLACK: dict[str, Check] = {"bot_token": nonempty, "app_token": nonempty,
                             "agent": opt_str, "api_url": opt_str}
_TUI: dict[str, Check] = {"theme": opt_str}
_TOP = ("hub", "auth", "agents", "client", "slack", "tui", "webhooks", "cluster")


# --- loading -------------------------------------------------------------------------------

def _interpolate_tree(node: object, key: str, environ: Mapping[str, str]) -> Any:
    """Interpolate every string value after parsing, so a variable cannot inject YAML."""
    if isinstance(node, dict):
        return {name: _interpolate_tree(value, f"{key}.{name}" if key else str(name), environ)
                for name, value in node.items()}
    if isinstance(node, list):
        return [_interpolate_tree(item, f"{key}[{i}]", environ) for i, item in enumerate(node)]
    if isinstance(node, str):
        try:
            return interpolate(node, environ)
        except ValueError as exc:
            raise ValueError(f"{key}: {exc}") from None
    return node


def _tokens(raw: object) -> tuple[TokenConfig, ...]:
    items = section(raw, "auth", ("tokens",)).get("tokens") or []
    if not isinstance(items, list):
        raise ValueError("auth.tokens: must be a list of {name, token, role}")
    tokens: list[TokenConfig] = []
    for index, item in enumerate(items):
        key = f"auth.tokens[{index}]"
        token = TokenConfig(**fields(item, key, _TOKEN, required=_TOKEN))
        for other_index, other in enumerate(tokens):
            if token.name == other.name:
                raise ValueError(f"{key}.name: {token.name!r} is already used by"
                                 f" auth.tokens[{other_index}]; token names must be unique")
            if token.token == other.token:
                raise ValueError(f"{key}.token: same value as auth.tokens[{other_index}].token;"
                                 " every token must be different")
        tokens.append(token)
    return tuple(tokens)


def _agent(agent_id: str, raw: object) -> AgentConfig:
    key = f"agents.{agent_id}"
    if not AGENT_ID.fullmatch(agent_id):
        raise ValueError(f"{key}: bad agent id; use up to 64 letters, digits, '.', '_' or '-',"
                         " starting with a letter or digit")
    values = fields(raw, key, _AGENT, required=("command",))
    if "context" in values:
        values["context_sql"] = values.pop("context")
    return AgentConfig(id=agent_id, **values)


def _hiding(source: Path | None, agents: dict[str, AgentConfig]) -> dict[str, AgentConfig]:
    """The agents with the config file (tokens in clear) hidden from their sandbox."""
    if source is None:
        return agents
    hidden = (str(Path(source).resolve()),)
    return {aid: replace(a, sandbox=a.sandbox and replace(a.sandbox, hidden=hidden))
            for aid, a in agents.items()}


def _check_exposure(config: Config) -> None:
    if config.cluster is not None and config.local_mode:
        raise ValueError("cluster: needs auth.tokens (every replica has its own data dir, so"
                         " local mode's secret would differ from one replica to the next)")
    host = config.hub.host
    if config.local_mode and not is_loopback(host):
        raise ValueError(f"hub.host: {host} is not a loopback address; without auth.tokens the"
                         " hub only listens on loopback. Configure auth.tokens or use 127.0.0.1.")


def _build(data: object, source: Path | None, environ: Mapping[str, str]) -> Config:
    top = _interpolate_tree(section(data, "", _TOP), "", environ)
    agents = section(top.get("agents"), "agents", None)
    slack = top.get("slack")
    config = Config(
        hub=HubConfig(**fields(top.get("hub"), "hub", _HUB)),
        tokens=(tokens := _tokens(top.get("auth"))),
        agents=(known := _hiding(source, {aid: _agent(aid, spec) for aid, spec in agents.items()}
                                 or bundled_agents(None if tokens else environ))),
        client=ClientConfig(**fields(top.get("client"), "client", _CLIENT)),
        slack=None if slack is None else SlackConfig(
            **fields(slack, "slack", _SLACK, required=("bot_token", "app_token"))),
        tui=TuiConfig(**fields(top.get("tui"), "tui", _TUI)),
        webhooks=parse_webhooks(top.get("webhooks"), local_mode=not tokens, agents=known),
        cluster=parse_cluster(top.get("cluster"), environ),
        source=source,
    )
    _check_exposure(config)
    return config


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """The configuration in ``path`` (the defaults when None), with ``${VAR}`` from ``environ``.

    ``environ`` defaults to ``os.environ``. Raises :class:`ConfigError` naming the file and
    the key of the first problem found.
    """
    data: object = None
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the file ({exc})") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
            problem = getattr(exc, "problem", None) or "not valid YAML"
            raise ConfigError(f"{path}: {where}invalid YAML: {problem}") from None
    try:
        return _build(data, path, os.environ if environ is None else environ)
    except ValueError as exc:
        raise ConfigError(f"{path or _NO_FILE}: {exc}") from None
