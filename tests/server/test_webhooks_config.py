"""Tests for the ``webhooks:`` configuration key: loading, errors naming the key, secrecy."""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from pathlib import Path

import pytest

from server.config import ConfigError, load_config
from server.webhooks import Template, WebhookConfig
from tests.conftest import HubFactory, make_config

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.yaml"
SECRET = "whsec-S3cr3t-never-shown-7f2a"
TOKENS = """
auth:
  tokens:
    - {name: alice, token: alice-token, role: participant}
"""
GITHUB = """
webhooks:
  github:
    secret: "${GITHUB_WEBHOOK_SECRET}"
    signature: github
    session: "gh-{json.repository.name}-{json.pull_request.number}"
    type: "github.{header.X-GitHub-Event}"
    idempotency: "{header.X-GitHub-Delivery}"
    agent: demo
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), {"GITHUB_WEBHOOK_SECRET": SECRET})
    assert SECRET not in str(caught.value)
    return str(caught.value)


def entry(**fields: str) -> str:
    """A webhooks: section with one hook, ci, of these fields (on top of valid ones)."""
    values = {"secret": f'"{SECRET}"', "signature": "hmac-sha256",
              "session": '"{json.session}"', "type": '"ci.{json.status}"', **fields}
    body = "".join(f"    {k}: {v}\n" for k, v in values.items() if v != "DROP")
    return "webhooks:\n  ci:\n" + body


def test_no_webhooks_by_default(tmp_path: Path) -> None:
    """Without the key (or with it empty) there are no hooks."""
    assert load_config(None, {}).webhooks == {}
    assert load_config(write(tmp_path, "webhooks:\n"), {}).webhooks == {}


def test_the_http_md_example_loads(tmp_path: Path) -> None:
    """http.md's github hook loads, its secret read from the environment."""
    config = load_config(write(tmp_path, GITHUB), {"GITHUB_WEBHOOK_SECRET": SECRET})
    hook = config.webhooks["github"]
    assert (hook.name, hook.secret, hook.signature, hook.agent) == (
        "github", SECRET, "github", "demo")
    assert hook.session == Template.parse(
        "gh-{json.repository.name}-{json.pull_request.number}", "x")
    assert hook.idempotency is not None
    assert hook.idempotency.text == "{header.X-GitHub-Delivery}"


def test_secrets_are_not_in_the_repr(tmp_path: Path) -> None:
    """Neither a hook's repr nor the whole config's shows its secret."""
    config = load_config(write(tmp_path, GITHUB), {"GITHUB_WEBHOOK_SECRET": SECRET})
    assert SECRET not in repr(config.webhooks["github"])
    assert SECRET not in repr(config)


@pytest.mark.parametrize(("text", "message"), [
    ("webhooks: [a]\n", "webhooks: must be a mapping"),
    ("webhooks:\n  ci: 3\n", "webhooks.ci: must be a mapping"),
    ("webhooks:\n  -ci: {}\n", "webhooks.-ci: bad webhook name"),
    ("webhooks:\n  " + "h" * 65 + ": {}\n", "webhooks." + "h" * 65 + ": bad webhook name"),
    (entry(secrett="x"), "webhooks.ci.secrett: unknown key (did you mean secret?)"),
    (entry(signature="DROP"), "webhooks.ci.signature: required (github, hmac-sha256 or none)"),
    (entry(signature="sha1"), "webhooks.ci.signature: must be github or hmac-sha256 or none"),
    (entry(secret="DROP"), "webhooks.ci.secret: required with signature: hmac-sha256"),
    (entry(secret='""'), "webhooks.ci.secret: must not be empty"),
    (entry(secret="12345"), "webhooks.ci.secret: must be a string (got an integer; put it in"),
    (entry(session="DROP"), "webhooks.ci.session: required"),
    (entry(type="DROP"), "webhooks.ci.type: required"),
    (entry(session='"{foo.bar}"'), "webhooks.ci.session: unknown placeholder {foo.bar}"),
    (entry(session='"{json}"'), "webhooks.ci.session: unknown placeholder {json}"),
    (entry(session='"{json..a}"'), "webhooks.ci.session: unknown placeholder {json..a}"),
    (entry(type='"ci.{header.}"'), "webhooks.ci.type: unknown placeholder {header.}"),
    (entry(session='"gh-{json.a"'), "webhooks.ci.session: unbalanced '{'"),
    (entry(session='"gh-json.a}"'), "webhooks.ci.session: unbalanced '}'"),
    (entry(idempotency='"{{json.a}}"'), "webhooks.ci.idempotency: unbalanced '{'"),
    (entry(session='"-fixed"'), "webhooks.ci.session: '-fixed' gives '-fixed', which is not"),
    (entry(type='"1ci"'), "webhooks.ci.type: '1ci' gives '1ci', which is not an event type"),
    (entry(type='"turn.{json.x}"'), "webhooks.ci.type: types starting with 'turn.' are"),
    (entry(type='"Session.Created"'), "webhooks.ci.type: 'Session.Created' gives"),
    (entry(agent="nobody"), "webhooks.ci.agent: no agent 'nobody' is configured (agents: echo,"),
    (entry(signature="none", secret="DROP"), "webhooks.ci.signature: none is only allowed in"
     " local mode"),
])
def test_config_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    """Each mistake is one error naming the file and the key, never showing the secret."""
    if "none is only" in message:
        text = TOKENS + text
    error = load_error(tmp_path, text)
    assert error.startswith(f"{tmp_path / 'config.yaml'}: {message}"), error


def test_signature_none_is_allowed_in_local_mode_without_a_secret(tmp_path: Path) -> None:
    """signature: none loads in local mode; a secret beside it is an error."""
    config = load_config(write(tmp_path, entry(signature="none", secret="DROP")), {})
    assert config.webhooks["ci"].signature == "none"
    assert config.webhooks["ci"].secret is None
    message = load_error(tmp_path, entry(signature="none"))
    assert "webhooks.ci.secret: not used with signature: none" in message


def test_the_agent_must_be_one_configured(tmp_path: Path) -> None:
    """With an agents: section, agent names one of those agents."""
    agents = "agents:\n  mine: {command: [cat]}\n"
    config = load_config(write(tmp_path, agents + entry(agent="mine")), {})
    assert config.webhooks["ci"].agent == "mine"
    message = load_error(tmp_path, agents + entry(agent="demo"))
    assert "webhooks.ci.agent: no agent 'demo' is configured (agents: mine)" in message


def test_an_unset_secret_variable_names_the_key(tmp_path: Path) -> None:
    """${GITHUB_WEBHOOK_SECRET} unset is an error naming the hook's secret key."""
    with pytest.raises(ConfigError, match=r"webhooks\.github\.secret: environment variable"
                       r" GITHUB_WEBHOOK_SECRET is not set"):
        load_config(write(tmp_path, GITHUB), {})


def test_example_config_webhooks_load_when_uncommented(tmp_path: Path) -> None:
    """The commented-out webhooks: example of config.example.yaml is valid once uncommented."""
    lines, inside = [], False
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        if re.fullmatch(r"# webhooks:", line):
            inside = True
        elif not line.strip():
            inside = False
        lines.append(line.removeprefix("# ") if inside else line)
    environ = {"GITHUB_WEBHOOK_SECRET": SECRET, "CI_WEBHOOK_SECRET": "ci-" + SECRET}
    config = load_config(write(tmp_path, "\n".join(lines)), environ)
    assert list(config.webhooks) == ["github", "ci"]
    assert config.webhooks["github"].agent == "demo"
    assert config.webhooks["ci"].signature == "hmac-sha256"
    assert config.hub.http_port == 8495


async def test_the_hub_masks_webhook_secrets_in_logs(
        tmp_path: Path, hub_factory: HubFactory, caplog: pytest.LogCaptureFixture) -> None:
    """Once the hub has started, a webhook secret logged by websockets is masked."""
    secret = "hook-secret-only-in-this-test-5d1e"
    hook = WebhookConfig("ci", secret, "hmac-sha256", Template.parse("{json.s}", "x"),
                         Template.parse("ci.{json.t}", "x"))
    config = replace(make_config(tmp_path / "hub"), webhooks={"ci": hook})
    await hub_factory(config=config)
    with caplog.at_level(logging.DEBUG, "websockets.server"):
        logging.getLogger("websockets.server").debug("> X-Axtui-Signature-Key: %s", secret)
    assert "X-Axtui-Signature-Key" in caplog.text
    assert secret not in caplog.text
