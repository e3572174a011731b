"""The hub's YAML configuration: loading, ``${ENV}`` interpolation and validation.

:func:`load_config` reads one YAML file, replaces ``${VAR}`` references in its string
values, checks every key and turns the result into frozen dataclasses. Anything wrong is
one :class:`ConfigError` whose message names the file and the key path, for example
``config.yaml: hub.port: must be an integer between 0 and 65535 (got 'abc')``. Secret
values (tokens) never appear in an error message or a ``repr``.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
import shlex
import sys
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import platformdirs
import yaml

from server.protocol import Role

_MIB = 1024 * 1024
_NO_FILE = "<no config file>"
_AGENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_REFERENCE = re.compile(
    r"\$(?:(?P<dollar>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}"
    r"|(?P<bad>\{))"
)
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?", re.IGNORECASE)
_DURATION_UNITS: dict[str | None, float] = {"MS": 0.001, "S": 1, "M": 60, "H": 3600, None: 1}
_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([KMG]i?B|B)?", re.IGNORECASE)
_SIZE_UNITS: dict[str | None, float] = {"B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3,
               "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3, None: 1}
_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


class ConfigError(Exception):
    """A configuration that cannot be used; the message names the file and the key."""


# --- value parsers (raise ValueError "key: what is wrong") ------------------------------

def _scaled(value: object, pattern: re.Pattern[str], units: Mapping[str | None, float]) -> float:
    """A bare number, or a number and a unit from ``units``; NaN when it is neither."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and (match := pattern.fullmatch(value.strip())):
        return float(match[1]) * units[match[2] and match[2].upper()]
    return math.nan


def parse_duration(value: object, key: str) -> float:
    """Seconds from ``30s``, ``5m``, ``1h``, ``250ms``, ``1.5s`` or a bare number of seconds."""
    seconds = _scaled(value, _DURATION, _DURATION_UNITS)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{key}: must be a non-negative duration such as 30s, 5m, 1h or 250ms,"
                         f" or a number of seconds (got {value!r})")
    return seconds


def parse_size(value: object, key: str) -> int:
    """A positive number of bytes from an integer or ``4MiB``, ``512KiB``, ``1MB``, ``100B``."""
    size = _scaled(value, _SIZE, _SIZE_UNITS)
    if not math.isfinite(size) or size < 1 or not size.is_integer():
        raise ValueError(f"{key}: must be a positive whole number of bytes, or a size such as"
                         f" 4MiB, 512KiB, 1MB or 100B (got {value!r})")
    return int(size)


def interpolate(text: str, environ: Mapping[str, str]) -> str:
    """``text`` with ``${VAR}`` and ``${VAR:-default}`` replaced from ``environ``; ``$$`` is ``$``.

    As in the shell, the default is used when the variable is unset or empty. An unset
    variable without a default raises :class:`ValueError` naming the variable.
    """

    def substitute(match: re.Match[str]) -> str:
        if match["dollar"]:
            return "$"
        if match["bad"]:
            raise ValueError("malformed ${...} reference (use ${NAME} or ${NAME:-default};"
                             " write $$ for a literal $)")
        name, default = match["name"], match["default"]
        value = environ.get(name)
        if default is not None and not value:
            return default
        if value is None:
            raise ValueError(f"environment variable {name} is not set"
                             f" (set it, or write ${{{name}:-default}})")
        return value

    return _REFERENCE.sub(substitute, text)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or an address in 127.0.0.0/8 or ``::1``."""
    name = host.strip().removeprefix("[").removesuffix("]")
    if name.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


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
    source: Path | None = None

    @property
    def local_mode(self) -> bool:
        """No tokens are configured: loopback only, and every client is an admin."""
        return not self.tokens

    def with_overrides(self, *, host: str | None = None, port: int | None = None,
                       data_dir: Path | None = None) -> Config:
        """A copy with command-line overrides applied, checked like the file was."""
        changes: dict[str, Any] = {}
        try:
            if host is not None:
                changes["host"] = _nonempty(host, "hub.host")
            if port is not None:
                changes["port"] = _int(port, "hub.port", 0, 65535)
            if data_dir is not None:
                changes["data_dir"] = Path(data_dir).expanduser()
            config = replace(self, hub=replace(self.hub, **changes))
            _check_exposure(config)
        except ValueError as exc:
            raise ConfigError(f"{self.source or _NO_FILE}: {exc}") from None
        return config


# --- checks, one per kind of value --------------------------------------------------------

_Check = Callable[[object, str], Any]


def _kind(value: object) -> str:
    names = {type(None): "null", bool: "a boolean", int: "an integer", float: "a number",
             str: "a string", list: "a list", dict: "a mapping"}
    return names.get(type(value), type(value).__name__)


def _section(raw: object, key: str, known: Collection[str] | None) -> dict[str, Any]:
    """``raw`` as a mapping with string keys, all in ``known`` (any when None); null is {}."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValueError(f"{key or 'the top level'}: must be a mapping (got {_kind(raw)})")
    for name in raw:
        path = f"{key}.{name}" if key else str(name)
        if not isinstance(name, str):
            raise ValueError(f"{path}: keys must be strings (put it in quotes)")
        if known is not None and name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {close[0]}?" if close else "known keys: " + ", ".join(known)
            raise ValueError(f"{path}: unknown key ({hint})")
    return raw


def _fields(raw: object, key: str, checks: Mapping[str, _Check],
            required: Collection[str] = ()) -> dict[str, Any]:
    section = _section(raw, key, checks)
    for name in required:
        if section.get(name) is None:
            raise ValueError(f"{key}.{name}: required")
    return {name: checks[name](value, f"{key}.{name}") for name, value in section.items()}


def _str(value: object, key: str) -> str:
    if not isinstance(value, str):  # the type only: the value may be a secret
        hint = "; put it in quotes" if isinstance(value, int | float) else ""
        raise ValueError(f"{key}: must be a string (got {_kind(value)}{hint})")
    return value


def _nonempty(value: object, key: str) -> str:
    if not _str(value, key).strip():
        raise ValueError(f"{key}: must not be empty")
    return str(value)


def _opt_str(value: object, key: str) -> str | None:
    return None if value is None or value == "" else _str(value, key)


def _int(value: object, key: str, low: int, high: int) -> int:
    if isinstance(value, str) and re.fullmatch(r"[0-9]+", value.strip()):
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{key}: must be an integer between {low} and {high} (got {value!r})")
    return value


def _bool(value: object, key: str) -> bool:
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    if not isinstance(value, bool):
        raise ValueError(f"{key}: must be true or false (got {value!r})")
    return value


def _choice(*choices: str) -> _Check:
    def check(value: object, key: str) -> str:
        if not isinstance(value, str) or value.lower() not in choices:
            raise ValueError(f"{key}: must be {' or '.join(choices)} (got {value!r})")
        return value.lower()
    return check


def _ws_url(value: object, key: str) -> str:
    if not _str(value, key).startswith(("ws://", "wss://")):
        raise ValueError(f"{key}: must be a ws:// or wss:// URL (got {value!r})")
    return str(value)


def _command(value: object, key: str) -> tuple[str, ...]:
    try:
        words = shlex.split(value) if isinstance(value, str) else value
    except ValueError as exc:
        raise ValueError(f"{key}: cannot split the command ({exc})") from None
    if not isinstance(words, list) or not all(isinstance(word, str) for word in words):
        raise ValueError(f"{key}: must be a string or a list of strings")
    if not words:
        raise ValueError(f"{key}: must not be empty")
    return tuple(words)


def _event_types(value: object, key: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise ValueError(f"{key}: must be a non-empty list of event types (globs allowed)")
    return tuple(_nonempty(item, f"{key}[{index}]") for index, item in enumerate(items))


def _env(value: object, key: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for name, item in _section(value, key, None).items():
        if not isinstance(item, str | int | float):
            raise ValueError(f"{key}.{name}: must be a string or a number (got {_kind(item)})")
        env[name] = str(item).lower() if isinstance(item, bool) else str(item)
    return env


def _sandbox(value: object, key: str) -> SandboxConfig | None:
    if value == "none":
        return None
    if not isinstance(value, dict):
        raise ValueError(f"{key}: must be none or a mapping such as {{network: false}}"
                         f" (got {value!r})")
    return SandboxConfig(**_fields(value, key, {"network": _bool, "writable": _paths}))


def _paths(value: object, key: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise ValueError(f"{key}: must be a list of paths")
    return tuple(_nonempty(item, f"{key}[{index}]") for index, item in enumerate(items))


def _role(value: object, key: str) -> Role:
    try:
        return Role.parse(_str(value, key))
    except ValueError as exc:
        raise ValueError(f"{key}: {exc}") from None


_HUB: dict[str, _Check] = {
    "host": _nonempty, "port": lambda v, k: _int(v, k, 0, 65535),
    "data_dir": lambda v, k: Path(_nonempty(v, k)).expanduser(),
    "durability": _choice("full", "normal"), "max_event_bytes": parse_size,
    "max_lag_bytes": parse_size, "max_frame_bytes": parse_size,
    "initialize_timeout": parse_duration, "session_idle_close": parse_duration,
    "query_timeout": parse_duration, "max_inflight": lambda v, k: _int(v, k, 1, 2**31 - 1),
    "max_queue": lambda v, k: _int(v, k, 1, 2**31 - 1),
    "max_value_bytes": parse_size, "max_result_bytes": parse_size,
    "max_open_sessions": lambda v, k: _int(v, k, 1, 2**31 - 1),
    "max_connection_sessions": lambda v, k: _int(v, k, 1, 2**31 - 1),
    "commit_budget": parse_duration, "agent_user": _opt_str,
    "log_level": _choice("debug", "info", "warning", "error"),
}
_TOKEN: dict[str, _Check] = {"name": _nonempty, "token": _nonempty, "role": _role}
_AGENT: dict[str, _Check] = {
    "description": _str, "command": _command, "protocol": _choice("acp"),
    "idle_timeout": parse_duration,
    "freeze_after": lambda v, k: None if v is None else parse_duration(v, k),
    "turn_timeout": parse_duration, "wake_on": _event_types, "cwd": _opt_str, "env": _env,
    "retry_interrupted": _bool,
    "context": lambda v, k: _opt_str(_section(v, k, ("sql",)).get("sql"), f"{k}.sql"),
    "sandbox": _sandbox,
}
_CLIENT: dict[str, _Check] = {"server": _ws_url, "token": _opt_str}
_SLACK: dict[str, _Check] = {"bot_token": _nonempty, "app_token": _nonempty,
                             "agent": _opt_str, "api_url": _opt_str}
_TUI: dict[str, _Check] = {"theme": _opt_str}
_TOP = ("hub", "auth", "agents", "client", "slack", "tui")


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
    items = _section(raw, "auth", ("tokens",)).get("tokens") or []
    if not isinstance(items, list):
        raise ValueError("auth.tokens: must be a list of {name, token, role}")
    tokens: list[TokenConfig] = []
    for index, item in enumerate(items):
        key = f"auth.tokens[{index}]"
        token = TokenConfig(**_fields(item, key, _TOKEN, required=_TOKEN))
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
    if not _AGENT_ID.fullmatch(agent_id):
        raise ValueError(f"{key}: bad agent id; use up to 64 letters, digits, '.', '_' or '-',"
                         " starting with a letter or digit")
    values = _fields(raw, key, _AGENT, required=("command",))
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
    host = config.hub.host
    if config.local_mode and not is_loopback(host):
        raise ValueError(f"hub.host: {host} is not a loopback address; without auth.tokens the"
                         " hub only listens on loopback. Configure auth.tokens or use 127.0.0.1.")


def _build(data: object, source: Path | None, environ: Mapping[str, str]) -> Config:
    top = _interpolate_tree(_section(data, "", _TOP), "", environ)
    agents = _section(top.get("agents"), "agents", None)
    slack = top.get("slack")
    config = Config(
        hub=HubConfig(**_fields(top.get("hub"), "hub", _HUB)),
        tokens=(tokens := _tokens(top.get("auth"))),
        agents=_hiding(source, {aid: _agent(aid, spec) for aid, spec in agents.items()}
                       or bundled_agents(None if tokens else environ)),
        client=ClientConfig(**_fields(top.get("client"), "client", _CLIENT)),
        slack=None if slack is None else SlackConfig(
            **_fields(slack, "slack", _SLACK, required=("bot_token", "app_token"))),
        tui=TuiConfig(**_fields(top.get("tui"), "tui", _TUI)),
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
