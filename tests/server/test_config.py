"""Tests for server/config.py: loading, interpolation, validation and secrecy."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import platformdirs
import pytest

from server.config import (
    AgentConfig,
    ClientConfig,
    Config,
    ConfigError,
    HubConfig,
    SlackConfig,
    TokenConfig,
    bundled_agents,
    load_config,
)
from server.configvalues import interpolate, is_loopback, parse_duration, parse_size
from server.protocol import Role

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.yaml"
SECRET = "s3cr3t-Value-never-shown"
TOKENS = """
auth:
  tokens:
    - {name: alice, token: alice-token, role: participant}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ or {})
    return str(caught.value)


# --- defaults ------------------------------------------------------------------------------

def test_defaults_without_a_file() -> None:
    """No path gives the documented defaults, local mode and the bundled agents."""
    config = load_config(None, {})
    assert config.hub == HubConfig()
    assert config.hub.host == "127.0.0.1"
    assert config.hub.port == 8494
    assert config.hub.data_dir == platformdirs.user_data_path("axtui")
    assert config.hub.durability == "full"
    assert (config.hub.max_event_bytes, config.hub.max_lag_bytes) == (1 << 20, 4 << 20)
    assert config.hub.max_frame_bytes == 4 << 20
    assert (config.hub.initialize_timeout, config.hub.session_idle_close) == (10.0, 60.0)
    assert (config.hub.query_timeout, config.hub.max_inflight) == (5.0, 1024)
    assert (config.hub.max_queue, config.hub.log_level) == (10000, "info")
    assert config.tokens == ()
    assert config.local_mode
    assert config.agents == bundled_agents()
    assert config.client == ClientConfig()
    assert config.client.server == "ws://127.0.0.1:8494/ws"
    assert config.client.token is None
    assert config.slack is None
    assert config.source is None


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    """An empty file (or only comments) is the default configuration, with its source."""
    path = write(tmp_path, "# nothing here\n")
    config = load_config(path, {})
    assert config.hub == HubConfig()
    assert config.agents == bundled_agents()
    assert config.source == path


def test_empty_sections_give_defaults(tmp_path: Path) -> None:
    """Sections present but null or empty fall back to their defaults."""
    config = load_config(write(tmp_path, "hub:\nauth: {tokens: []}\nagents: {}\nclient:\n"), {})
    assert config.hub == HubConfig()
    assert config.local_mode
    assert config.agents == bundled_agents()


def test_bundled_agents() -> None:
    """echo, demo and llm run as modules of this Python with short descriptions."""
    agents = bundled_agents()
    assert list(agents) == ["echo", "demo", "llm"]
    for agent_id, agent in agents.items():
        assert agent.id == agent_id
        assert agent.command == (sys.executable, "-m", f"server.agents.{agent_id}")
        assert agent.idle_timeout == 300.0
        assert agent.protocol == "acp"
        assert agent.description
    assert agents["echo"].description == "Answers with what it got (offline)"


# --- a full file -----------------------------------------------------------------------------

FULL = """
hub:
  host: 0.0.0.0
  port: 9000
  data_dir: ~/axtui-data
  durability: normal
  max_event_bytes: 512KiB
  max_lag_bytes: 8MiB
  max_frame_bytes: 2MB
  initialize_timeout: 2.5s
  session_idle_close: 5m
  query_timeout: 250ms
  max_inflight: 16
  max_queue: 100
  log_level: DEBUG
auth:
  tokens:
    - {name: alice, token: "${ALICE_TOKEN}", role: participant}
    - {name: bot, token: bot-token, role: viewer}
    - {name: ops, token: ops-token, role: admin}
agents:
  demo:
    description: Offline demo agent
    command: ["python", "-m", "server.agents.demo"]
    protocol: acp
    idle_timeout: 30s
    freeze_after: 5s
    turn_timeout: 1h
    wake_on: ["user.message", "ci.*"]
    cwd: "."
    env: {LANG: C.UTF-8, WORKERS: 4, DEBUG: true}
    retry_interrupted: true
    context: {sql: "SELECT id FROM tickets"}
  my.llm_2:
    command: "python -m server.agents.llm --flag 'two words'"
    env: {AXTUI_LLM_BASE_URL: "${BASE:-http://localhost:1234/v1}", AXTUI_LLM_API_KEY: "${KEY}"}
client:
  server: wss://hub.example.com/ws
  token: "${ALICE_TOKEN}"
slack:
  bot_token: xoxb-1
  app_token: xapp-1
  agent: demo
  api_url: http://127.0.0.1:9999/api
"""


def test_full_valid_file(tmp_path: Path) -> None:
    """Every key is read, converted to its unit and type, and interpolated."""
    config = load_config(write(tmp_path, FULL), {"ALICE_TOKEN": "alice-token", "KEY": "k"})
    hub = config.hub
    assert (hub.host, hub.port, hub.durability, hub.log_level) == ("0.0.0.0", 9000, "normal",
                                                                    "debug")
    assert hub.data_dir == Path("~/axtui-data").expanduser()
    assert (hub.max_event_bytes, hub.max_lag_bytes, hub.max_frame_bytes) == (
        512 * 1024, 8 * 1024 * 1024, 2_000_000)
    assert (hub.initialize_timeout, hub.session_idle_close, hub.query_timeout) == (2.5, 300, 0.25)
    assert (hub.max_inflight, hub.max_queue) == (16, 100)
    assert config.tokens == (
        TokenConfig("alice", "alice-token", Role.PARTICIPANT),
        TokenConfig("bot", "bot-token", Role.VIEWER),
        TokenConfig("ops", "ops-token", Role.ADMIN),
    )
    assert not config.local_mode
    assert list(config.agents) == ["demo", "my.llm_2"]
    assert config.agents["demo"] == AgentConfig(
        id="demo", command=("python", "-m", "server.agents.demo"),
        description="Offline demo agent", protocol="acp", idle_timeout=30.0, freeze_after=5.0,
        turn_timeout=3600.0, wake_on=("user.message", "ci.*"), cwd=".",
        env={"LANG": "C.UTF-8", "WORKERS": "4", "DEBUG": "true"}, retry_interrupted=True,
        context_sql="SELECT id FROM tickets",
    )
    llm = config.agents["my.llm_2"]
    assert llm.command == ("python", "-m", "server.agents.llm", "--flag", "two words")
    assert llm.env == {"AXTUI_LLM_BASE_URL": "http://localhost:1234/v1", "AXTUI_LLM_API_KEY": "k"}
    assert (llm.idle_timeout, llm.freeze_after, llm.wake_on) == (300.0, None, ("user.message",))
    assert config.client == ClientConfig("wss://hub.example.com/ws", "alice-token")
    assert config.slack == SlackConfig("xoxb-1", "xapp-1", "demo", "http://127.0.0.1:9999/api")


# --- interpolation ---------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("${A}", "alpha"),
    ("x-${A}-y", "x-alpha-y"),
    ("${MISSING:-fallback}", "fallback"),
    ("${EMPTY:-fallback}", "fallback"),
    ("${EMPTY}", ""),
    ("${A:-unused}", "alpha"),
    ("${MISSING:-}", ""),
    ("$$", "$"),
    ("$${A}", "${A}"),
    ("cost $5 and $HOME", "cost $5 and $HOME"),
    ("${A}${B}", "alphabeta"),
])
def test_interpolate(text: str, expected: str) -> None:
    """${VAR}, ${VAR:-default} (unset or empty) and $$ are replaced; a lone $ stays."""
    assert interpolate(text, {"A": "alpha", "B": "beta", "EMPTY": ""}) == expected


@pytest.mark.parametrize("text", ["${MISSING}", "a ${MISSING} b"])
def test_interpolate_unset_names_the_variable(text: str) -> None:
    """An unset ${VAR} without a default is an error naming VAR."""
    with pytest.raises(ValueError, match="MISSING is not set"):
        interpolate(text, {})


@pytest.mark.parametrize("text", ["${}", "${1A}", "${A", "${A:=x}"])
def test_interpolate_malformed_reference(text: str) -> None:
    """A ${ that is not a valid reference is an error, not left in place."""
    with pytest.raises(ValueError, match="malformed"):
        interpolate(text, {"A": "alpha"})


def test_interpolation_in_the_file(tmp_path: Path) -> None:
    """Values in the file are interpolated; $$ stays a literal $; numbers come from strings."""
    path = write(tmp_path, 'hub: {port: "${PORT}", query_timeout: "${QT:-2s}"}\n'
                           'agents: {a: {command: "echo $$HOME", retry_interrupted: "${R}"}}\n')
    config = load_config(path, {"PORT": "9001", "R": "yes"})
    assert config.hub.port == 9001
    assert config.hub.query_timeout == 2.0
    assert config.agents["a"].command == ("echo", "$HOME")
    assert config.agents["a"].retry_interrupted is True


def test_interpolated_values_cannot_inject_yaml(tmp_path: Path) -> None:
    """A variable's value stays one string even if it looks like YAML."""
    path = write(tmp_path, TOKENS + 'agents: {a: {command: x, description: "${D}"}}\n')
    config = load_config(path, {"D": "x\nhub: {host: 0.0.0.0}\n- [1"})
    assert config.agents["a"].description == "x\nhub: {host: 0.0.0.0}\n- [1"
    assert config.hub.host == "127.0.0.1"


def test_unset_variable_names_the_variable_and_key(tmp_path: Path) -> None:
    """An unset ${VAR} names the file, the key path and the variable."""
    path = write(tmp_path, TOKENS.replace("alice-token", "'${ALICE_TOKEN}'"))
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    message = str(caught.value)
    assert message.startswith(f"{path}: auth.tokens[0].token: ")
    assert "ALICE_TOKEN is not set" in message


def test_environ_defaults_to_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an environ argument, variables come from os.environ."""
    monkeypatch.setenv("AXTUI_TEST_PORT", "9123")
    assert load_config(write(tmp_path, "hub: {port: '${AXTUI_TEST_PORT}'}\n")).hub.port == 9123


# --- durations, sizes, loopback --------------------------------------------------------------

@pytest.mark.parametrize(("value", "seconds"), [
    ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("250ms", 0.25), ("1.5s", 1.5),
    (7, 7.0), (0.5, 0.5), (0, 0.0), ("12", 12.0), (" 2 m ", 120.0),
])
def test_parse_duration(value: object, seconds: float) -> None:
    """Durations with units, or bare numbers of seconds, become seconds."""
    assert parse_duration(value, "k") == seconds


@pytest.mark.parametrize("value", ["-1s", -1, "abc", "5 days", "", None, True, [1], "1e3s",
                                   float("nan"), float("inf")])
def test_parse_duration_rejects(value: object) -> None:
    """Anything else (negative, unitless words, booleans) is refused, naming the key."""
    with pytest.raises(ValueError, match=r"^hub\.x: must be a non-negative duration"):
        parse_duration(value, "hub.x")


@pytest.mark.parametrize(("value", "size"), [
    (100, 100), ("100B", 100), ("64KB", 64_000), ("512KiB", 524_288), ("1MB", 1_000_000),
    ("1MiB", 1 << 20), ("4MiB", 4 << 20), ("1GiB", 1 << 30), ("1.5KiB", 1536), ("4mib", 4 << 20),
])
def test_parse_size(value: object, size: int) -> None:
    """Sizes as integers or with B/KB/KiB/MB/MiB/GB/GiB become bytes."""
    assert parse_size(value, "k") == size


@pytest.mark.parametrize("value", ["4 MiBs", "-1", -5, 0, "0B", "1.5B", "big", None, False,
                                   "1TB"])
def test_parse_size_rejects(value: object) -> None:
    """Anything else (zero, negative, fractions of a byte, unknown units) is refused."""
    with pytest.raises(ValueError, match=r"^hub\.y: must be a positive whole number of bytes"):
        parse_size(value, "hub.y")


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("LocalHost", True), ("::ffff:127.0.0.1", True),
    ("0.0.0.0", False), ("::", False), ("192.168.1.2", False), ("example.com", False),
    ("", False), ("128.0.0.1", False),
])
def test_is_loopback(host: str, loopback: bool) -> None:
    """Only 127.0.0.0/8, ::1 and localhost count as loopback."""
    assert is_loopback(host) is loopback


# --- validation errors -----------------------------------------------------------------------

VALID_AGENT = "agents:\n  a:\n    command: x\n"


@pytest.mark.parametrize(("text", "key", "words"), [
    ("hub: {port: abc}", "hub.port", "must be an integer between 0 and 65535 (got 'abc')"),
    ("hub: {port: 70000}", "hub.port", "between 0 and 65535"),
    ("hub: {port: -1}", "hub.port", "between 0 and 65535"),
    ("hub: {port: true}", "hub.port", "integer"),
    ("hub: {host: ''}", "hub.host", "must not be empty"),
    ("hub: {host: 12}", "hub.host", "must be a string"),
    ("hub: {data_dir: [a]}", "hub.data_dir", "must be a string"),
    ("hub: {durability: fast}", "hub.durability", "must be full or normal"),
    ("hub: {log_level: loud}", "hub.log_level", "debug or info or warning or error"),
    ("hub: {max_event_bytes: 1TB}", "hub.max_event_bytes", "bytes"),
    ("hub: {max_lag_bytes: -4}", "hub.max_lag_bytes", "bytes"),
    ("hub: {max_frame_bytes: lots}", "hub.max_frame_bytes", "bytes"),
    ("hub: {initialize_timeout: soon}", "hub.initialize_timeout", "duration"),
    ("hub: {session_idle_close: -1m}", "hub.session_idle_close", "duration"),
    ("hub: {query_timeout: [1]}", "hub.query_timeout", "duration"),
    ("hub: {max_inflight: 0}", "hub.max_inflight", "integer"),
    ("hub: {max_queue: many}", "hub.max_queue", "integer"),
    ("hub: [1, 2]", "hub", "must be a mapping"),
    ("auth: {tokens: {name: a}}", "auth.tokens", "must be a list"),
    ("auth: {tokens: [{name: a, token: t, role: king}]}", "auth.tokens[0].role", "unknown role"),
    ("auth: {tokens: [{name: a, token: t}]}", "auth.tokens[0].role", "required"),
    ("auth: {tokens: [{token: t, role: admin}]}", "auth.tokens[0].name", "required"),
    ("auth: {tokens: [{name: a, token: '', role: admin}]}", "auth.tokens[0].token", "empty"),
    ("auth: {tokens: [{name: a, token: '  ', role: admin}]}", "auth.tokens[0].token", "empty"),
    ("auth: {tokens: [{name: a, role: admin}]}", "auth.tokens[0].token", "required"),
    ("auth: {tokens: [{name: a, token: t1, role: admin}, {name: a, token: t2, role: viewer}]}",
     "auth.tokens[1].name", "unique"),
    ("auth: {tokens: [{name: a, token: t1, role: admin}, {name: b, token: t1, role: viewer}]}",
     "auth.tokens[1].token", "auth.tokens[0].token"),
    ("auth: {tokens: [nope]}", "auth.tokens[0]", "must be a mapping"),
    ("agents: {a: {description: x}}", "agents.a.command", "required"),
    ("agents: {a: {command: []}}", "agents.a.command", "must not be empty"),
    ("agents: {a: {command: ''}}", "agents.a.command", "must not be empty"),
    ("agents: {a: {command: [python, 3]}}", "agents.a.command", "list of strings"),
    ("agents: {a: {command: \"echo 'unclosed\"}}", "agents.a.command", "cannot split"),
    ("agents: {-bad: {command: x}}", "agents.-bad", "bad agent id"),
    ("agents: {'a b': {command: x}}", "agents.a b", "bad agent id"),
    (f"agents: {{{'a' * 65}: {{command: x}}}}", f"agents.{'a' * 65}", "bad agent id"),
    ("agents: {a: {command: x, protocol: stdio}}", "agents.a.protocol", "must be acp"),
    ("agents: {a: {command: x, idle_timeout: forever}}", "agents.a.idle_timeout", "duration"),
    ("agents: {a: {command: x, freeze_after: -5s}}", "agents.a.freeze_after", "duration"),
    ("agents: {a: {command: x, turn_timeout: x}}", "agents.a.turn_timeout", "duration"),
    ("agents: {a: {command: x, wake_on: []}}", "agents.a.wake_on", "non-empty list"),
    ("agents: {a: {command: x, wake_on: [ok, 3]}}", "agents.a.wake_on[1]", "must be a string"),
    ("agents: {a: {command: x, cwd: [x]}}", "agents.a.cwd", "must be a string"),
    ("agents: {a: {command: x, env: [A]}}", "agents.a.env", "must be a mapping"),
    ("agents: {a: {command: x, env: {A: [1]}}}", "agents.a.env.A", "string or a number"),
    ("agents: {a: {command: x, retry_interrupted: maybe}}", "agents.a.retry_interrupted",
     "true or false"),
    ("agents: {a: {command: x, context: {sql: 3}}}", "agents.a.context.sql", "string"),
    ("agents: {a: {command: x, env: 3}}", "agents.a.env", "must be a mapping"),
    ("agents: {a: {command: x, description: 3}}", "agents.a.description", "must be a string"),
    ("agents: {a: x}", "agents.a", "must be a mapping"),
    ("client: {server: http://x}", "client.server", "ws:// or wss://"),
    ("client: {token: [1]}", "client.token", "must be a string"),
    ("slack: {app_token: x}", "slack.bot_token", "required"),
    ("slack: {bot_token: x}", "slack.app_token", "required"),
    ("slack: {bot_token: x, app_token: x, agent: [1]}", "slack.agent", "must be a string"),
    ("slack: 3", "slack", "must be a mapping"),
])
def test_validation_errors_name_file_and_key(tmp_path: Path, text: str, key: str,
                                             words: str) -> None:
    """Each bad value is one ConfigError starting with the file and the key path."""
    message = load_error(tmp_path, text)
    assert message.startswith(f"{tmp_path / 'config.yaml'}: {key}: "), message
    assert words in message


@pytest.mark.parametrize(("text", "key", "hint"), [
    ("hub: {prot: 1}", "hub.prot", "did you mean port?"),
    ("hub: {data_directory: x}", "hub.data_directory", "did you mean data_dir?"),
    ("agent: {}", "agent", "did you mean agents?"),
    (VALID_AGENT + "    idle_timout: 3s\n", "agents.a.idle_timout", "did you mean idle_timeout?"),
    (VALID_AGENT + "    context: {sq: x}\n", "agents.a.context.sq", "did you mean sql?"),
    ("auth: {tokens: [{name: a, tokn: x, role: admin}]}", "auth.tokens[0].tokn",
     "did you mean token?"),
    ("auth: {token: []}", "auth.token", "did you mean tokens?"),
    ("client: {url: x}", "client.url", "known keys: server, token"),
    ("slack: {bot_tokn: x}", "slack.bot_tokn", "did you mean bot_token?"),
])
def test_unknown_key_with_suggestion(tmp_path: Path, text: str, key: str, hint: str) -> None:
    """An unknown key anywhere is refused, with the closest known key (or the known keys)."""
    message = load_error(tmp_path, text)
    assert message == f"{tmp_path / 'config.yaml'}: {key}: unknown key ({hint})"


def test_missing_file(tmp_path: Path) -> None:
    """A missing file is refused with its path."""
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"nope\.yaml: no such file$"):
        load_config(path, {})


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    """A YAML syntax error names the file and the line, without quoting the content."""
    message = load_error(tmp_path, f"hub:\n  port: 1\n  host: [{SECRET}\n")
    assert message.startswith(f"{tmp_path / 'config.yaml'}: line ")
    assert "invalid YAML" in message
    assert SECRET not in message


def test_yaml_error_line_number(tmp_path: Path) -> None:
    """The line reported is the line of the problem (1-based)."""
    message = load_error(tmp_path, "hub:\n  port: 1\n bad: : x\n")
    assert re.search(r": line 3, column \d+: invalid YAML", message), message


@pytest.mark.parametrize("text", ["[1, 2]", "just a string", "42"])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    """A file whose top level is not a mapping is refused."""
    assert "the top level: must be a mapping" in load_error(tmp_path, text)


def test_configured_agents_replace_the_bundled_ones(tmp_path: Path) -> None:
    """With agents configured, exactly those agents exist, commands split like a shell."""
    config = load_config(write(tmp_path, "agents: {mine: {command: 'my-agent --acp'}}"), {})
    assert list(config.agents) == ["mine"]
    assert config.agents["mine"].command == ("my-agent", "--acp")


# --- secrets ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    f"auth: {{tokens: [{{name: a, token: {SECRET}, role: king}}]}}",
    f"auth: {{tokens: [{{name: a, token: {SECRET}, role: admin}},"
    f" {{name: b, token: {SECRET}, role: admin}}]}}",
    f"auth: {{tokens: [{{name: a, token: {SECRET}, role: admin, extra: 1}}]}}",
    "auth: {tokens: [{name: a, token: 123456789, role: admin}]}",
    f"slack: {{bot_token: {SECRET}, app_token: [{SECRET}]}}",
    "client: {token: 123456789}",
    f"client: {{token: {SECRET}}}\nhub: {{host: 0.0.0.0}}",
    f"auth: {{tokens: [{{name: a, token: '{SECRET}${{X}}', role: admin}}]}}",
])
def test_token_values_never_in_error_messages(tmp_path: Path, text: str) -> None:
    """Errors about tokens name the key, never the token's value."""
    message = load_error(tmp_path, text)
    assert SECRET not in message
    assert "123456789" not in message


def test_token_values_never_in_repr(tmp_path: Path) -> None:
    """repr() of the configuration shows no token values."""
    path = write(tmp_path, f"""
auth: {{tokens: [{{name: alice, token: {SECRET}-1, role: admin}}]}}
client: {{token: {SECRET}-2}}
slack: {{bot_token: {SECRET}-3, app_token: {SECRET}-4}}
agents: {{a: {{command: x, env: {{API_KEY: {SECRET}-5}}}}}}
""")
    config = load_config(path, {})
    for shown in (repr(config), str(config), repr(config.tokens[0]), repr(config.client),
                  repr(config.slack), repr(config.agents["a"])):
        assert SECRET not in shown
    assert "alice" in repr(config.tokens[0])


# --- local mode and the host ----------------------------------------------------------------

@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.com"])
def test_local_mode_refuses_a_non_loopback_host(tmp_path: Path, host: str) -> None:
    """Without auth.tokens, a non-loopback host is refused with a clear message."""
    message = load_error(tmp_path, f"hub: {{host: '{host}'}}\n")
    assert message == (
        f"{tmp_path / 'config.yaml'}: hub.host: {host} is not a loopback address; without"
        " auth.tokens the hub only listens on loopback. Configure auth.tokens or use 127.0.0.1."
    )


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.5"])
def test_local_mode_accepts_loopback_hosts(tmp_path: Path, host: str) -> None:
    """Without auth.tokens, loopback hosts are fine."""
    config = load_config(write(tmp_path, f"hub: {{host: '{host}'}}\n"), {})
    assert config.local_mode
    assert config.hub.host == host


def test_tokens_allow_any_host(tmp_path: Path) -> None:
    """With auth.tokens configured the hub may listen on 0.0.0.0."""
    config = load_config(write(tmp_path, TOKENS + "hub: {host: 0.0.0.0}\n"), {})
    assert not config.local_mode
    assert config.hub.host == "0.0.0.0"


# --- with_overrides -------------------------------------------------------------------------

def test_with_overrides_applies_values(tmp_path: Path) -> None:
    """Overrides replace host, port and data_dir (with ~ expanded); the rest is kept."""
    config = load_config(write(tmp_path, "hub: {max_queue: 5}\n"), {})
    changed = config.with_overrides(host="::1", port=0, data_dir=Path("~/d"))
    assert (changed.hub.host, changed.hub.port) == ("::1", 0)
    assert changed.hub.data_dir == Path("~/d").expanduser()
    assert changed.hub.max_queue == 5
    assert config.hub.port == 8494
    assert config.with_overrides() == config


def test_with_overrides_revalidates_the_host(tmp_path: Path) -> None:
    """A non-loopback host override in local mode is refused, naming the file."""
    path = write(tmp_path, "")
    with pytest.raises(ConfigError, match=r"hub\.host: 0\.0\.0\.0 is not a loopback") as caught:
        load_config(path, {}).with_overrides(host="0.0.0.0")
    assert str(caught.value).startswith(f"{path}: ")
    with pytest.raises(ConfigError, match=r"^<no config file>: hub\.host"):
        load_config(None, {}).with_overrides(host="10.0.0.1")


def test_with_overrides_allows_any_host_with_tokens(tmp_path: Path) -> None:
    """With tokens configured, a non-loopback host override is accepted."""
    config = load_config(write(tmp_path, TOKENS), {}).with_overrides(host="0.0.0.0")
    assert config.hub.host == "0.0.0.0"


@pytest.mark.parametrize("port", [-1, 65536])
def test_with_overrides_revalidates_the_port(port: int) -> None:
    """A port override out of range is refused."""
    with pytest.raises(ConfigError, match=r"hub\.port: must be an integer between 0 and 65535"):
        Config(hub=HubConfig()).with_overrides(port=port)


# --- config.example.yaml ----------------------------------------------------------------------

def test_example_config_loads() -> None:
    """config.example.yaml loads with no variables set: local mode, bundled agents."""
    config = load_config(EXAMPLE, {})
    assert config.local_mode
    assert config.hub == HubConfig()
    assert config.agents == bundled_agents()
    assert config.client == ClientConfig()
    assert config.slack is None


def test_example_config_commented_sections_load(tmp_path: Path) -> None:
    """The commented-out auth, agents and slack examples are valid once uncommented."""
    lines, inside = [], False
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        if re.fullmatch(r"# (auth|agents|slack):", line):
            inside = True
        elif not line.strip():
            inside = False
        lines.append(line.removeprefix("# ") if inside else line)
    environ = {name: f"value-of-{name}" for name in (
        "ALICE_TOKEN", "CI_TOKEN", "OPS_TOKEN", "OPENAI_API_KEY", "HOME",
        "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN")}
    config = load_config(write(tmp_path, "\n".join(lines)), environ)
    assert [token.name for token in config.tokens] == ["alice", "ci", "ops"]
    assert list(config.agents) == ["demo", "llm"]
    assert config.agents["demo"].wake_on == ("user.message", "ci.*")
    assert config.agents["llm"].env["AXTUI_LLM_BASE_URL"] == "https://api.openai.com/v1"
    assert config.slack is not None
    assert config.slack.agent == "demo"
