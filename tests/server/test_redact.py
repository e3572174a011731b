"""No token in any log: the redaction helper, and a hub logging at DEBUG."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from websockets.frames import Frame, Opcode

from axtui.client import HubClient
from server.app import setup_logging
from server.config import Config, TokenConfig
from server.protocol import Role
from server.redact import REDACTED, Redactor, redact
from tests.conftest import HubFactory, RawFactory, make_config

SECRETS = {"header": "hdr-SECRET-4f9c2a7d1e8b3c6a5f0e9d2c7b4a1f8e",
           "initialize": "ini-SECRET-0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e",
           "wrong": "wrong-SECRET-9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b"}


@pytest.mark.parametrize(("text", "secret"), [
    ("> Authorization: Bearer abc.DEF-123", "abc.DEF-123"),
    ('{"protocolVersion":1,"token":"tok-123"}', "tok-123"),
    ("{'token': 'tok-123', 'x': 1}", "tok-123"),
    ("GET /ws?token=tok-123&x=1", "tok-123"),
    ("bot_token=xoxb-1-2-abc and xapp-1-A0-99", "xoxb-1-2-abc"),
    ("refused xapp-1-A0-99 again", "xapp-1-A0-99"),
])
def test_redact_masks_credential_shapes(text: str, secret: str) -> None:
    """Bearer credentials, token key/values and Slack tokens are masked."""
    masked = redact(text)
    assert secret not in masked and REDACTED in masked


def test_redact_leaves_ordinary_text_and_masks_known_secrets() -> None:
    """Words about tokens are left alone; a secret given verbatim is masked anywhere."""
    for text in ("a valid token is needed: pass it as params.token", "max_tokens: 5",
                 "bad token", "refused the bot token (slack.bot_token): invalid_auth"):
        assert redact(text) == text
    assert redact("the key is s3cr3t!", ["s3cr3t!"]) == f"the key is {REDACTED}"


def test_a_frame_is_masked_before_it_is_shortened(caplog: pytest.LogCaptureFixture) -> None:
    """A long frame that websockets elides in its log loses the token whole, not just the
    part before the cut."""
    token = SECRETS["initialize"]
    frame = Frame(Opcode.TEXT, (
        '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":1,'
        f'"clientInfo":{{"name":"raw","kind":"test"}},"token":"{token}"}}}}').encode())
    assert token[-12:] in str(frame)  # websockets' elided form keeps the token's tail
    logger = logging.getLogger("tests.redact.frame")
    logger.addFilter(Redactor())
    with caplog.at_level(logging.DEBUG, logger.name):
        logger.debug("< %s", frame)
    assert token[-12:] not in caplog.text and token[:12] not in caplog.text
    assert "TEXT" in caplog.text


@pytest.fixture
def hub_logging() -> Iterator[None]:
    """Put the loggers setup_logging changes back as they were."""
    names = ("axtui", "websockets.server")
    saved = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).level) for n in names}
    yield
    for name, (handlers, level) in saved.items():
        logger = logging.getLogger(name)
        for handler in logger.handlers:
            if handler not in handlers:
                handler.close()
        logger.handlers[:] = handlers
        logger.setLevel(level)


def debug_config(tmp_path: Path) -> Config:
    """A token-mode hub config at log_level debug with distinctive tokens."""
    config = make_config(tmp_path / "hub", log_level="debug")
    return replace(config, tokens=(
        TokenConfig("hdr", SECRETS["header"], Role.PARTICIPANT),
        TokenConfig("ini", SECRETS["initialize"], Role.PARTICIPANT)))


async def talk(hub_url: str, raw_factory: RawFactory, hub: object) -> None:
    """A header-token client, an initialize-token client and a wrong header token."""
    async with HubClient(hub_url, token=SECRETS["header"], kind="test") as client:
        await client.call("ping")
    raw = await raw_factory(hub, initialize=False)
    await raw.initialize(token=SECRETS["initialize"])
    await raw.call("ping")
    with pytest.raises(Exception, match="401"):
        await raw_factory(hub, headers={"Authorization": f"Bearer {SECRETS['wrong']}"})


def assert_clean(text: str) -> None:
    """None of the test's tokens, nor a long piece of one, is in ``text``."""
    for name, secret in SECRETS.items():
        assert secret not in text, f"the {name} token was logged"
        assert secret[-16:] not in text, f"the end of the {name} token was logged"


async def test_hub_at_debug_logs_no_token(
        caplog: pytest.LogCaptureFixture, hub_factory: HubFactory, raw_factory: RawFactory,
        tmp_path: Path, hub_logging: None) -> None:
    """With every logger at DEBUG (websockets' header and frame dumps included), neither
    caplog nor hub.log holds a token sent in a header, in initialize, or a wrong one."""
    config = debug_config(tmp_path)
    setup_logging(config)
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, "websockets.server")  # past the hub's own INFO cap
    hub = await hub_factory(config=config)
    await talk(hub.url, raw_factory, hub)
    await hub.stop()
    logged = caplog.text
    assert "Authorization: Bearer (redacted)" in logged  # the headers were logged, masked
    assert '"token":"(redacted)"' in logged  # so was the initialize frame
    assert_clean(logged)
    hub_log = (config.hub.data_dir / "logs" / "hub.log").read_text()
    assert "Authorization: Bearer (redacted)" in hub_log
    assert_clean(hub_log)


async def test_hub_log_at_debug_has_connections_not_frames(
        hub_factory: HubFactory, raw_factory: RawFactory, tmp_path: Path,
        hub_logging: None) -> None:
    """setup_logging at debug puts websockets' connection lines in hub.log but not its
    header and frame dumps (which would copy every session's data into the log)."""
    config = debug_config(tmp_path)
    setup_logging(config)
    hub = await hub_factory(config=config)
    await talk(hub.url, raw_factory, hub)
    await hub.stop()
    hub_log = (config.hub.data_dir / "logs" / "hub.log").read_text()
    assert "websockets.server: connection open" in hub_log
    assert "TEXT '" not in hub_log and "Authorization" not in hub_log
    assert_clean(hub_log)
