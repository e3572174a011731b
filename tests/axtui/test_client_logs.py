"""HubClient never logs its token, even with websockets' client logger at DEBUG."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest

from axtui.client import HubClient
from server.config import TokenConfig
from server.protocol import Role
from tests.conftest import HubFactory, make_config

TOKEN = "cli-SECRET-7d3f1b9e5a2c8d4f6b0e1a3c5d7f9b2e"


async def test_client_at_debug_logs_no_token(
        caplog: pytest.LogCaptureFixture, hub_factory: HubFactory, tmp_path: Path) -> None:
    """Every logger at DEBUG: the client's handshake (its Authorization header) is logged
    with the token masked, and the token is nowhere in the captured log."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, "websockets.client")
    config = replace(make_config(tmp_path / "hub"),
                     tokens=(TokenConfig("cli", TOKEN, Role.PARTICIPANT),))
    hub = await hub_factory(config=config)
    async with HubClient(hub.url, token=TOKEN, kind="cli") as client:
        session = await client.create_session()
        await client.publish(session["sessionId"], "user.message", {"text": "hi"})
    records = [r for r in caplog.records if r.name == "websockets.client"]
    assert any("Authorization: Bearer (redacted)" in r.getMessage() for r in records)
    assert TOKEN not in caplog.text
    assert TOKEN[-16:] not in caplog.text
