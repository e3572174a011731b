"""Local mode's secret: made at the first start (0600), needed by every client, found by
local clients on their own, and never sent to another hub."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest

from axtui.client import HubAuthError, HubClient
from axtui.headless import resolve_target
from server import local_secret
from server.config import load_config
from server.hub import Hub
from server.protocol import CloseCode
from tests.conftest import HubFactory, RawFactory, restart


async def test_a_client_without_the_secret_is_refused(hub: Hub,
                                                      raw_factory: RawFactory) -> None:
    """No token in local mode: initialize fails with -32001 and the connection closes 4401."""
    raw = await raw_factory(hub, secret=False, initialize=False)
    reply = await raw.request("initialize", {"protocolVersion": 1, "clientInfo": {}})
    assert reply["error"]["code"] == -32001
    assert await raw.closed() == CloseCode.UNAUTHENTICATED


async def test_a_wrong_secret_is_refused_at_the_handshake(hub: Hub,
                                                          raw_factory: RawFactory) -> None:
    """A Bearer header that is not the secret gets HTTP 401, as a bad token does."""
    with pytest.raises(Exception, match="HTTP 401"):
        await raw_factory(hub, headers={"Authorization": "Bearer guess"})


async def test_the_secret_as_params_token_is_admin(hub: Hub, raw_factory: RawFactory) -> None:
    """The secret in ``params.token`` (no header) makes the client the local admin."""
    raw = await raw_factory(hub, secret=False, initialize=False)
    secret = local_secret.read_secret(hub.config.hub.data_dir)
    result = await raw.initialize(token=secret)
    assert result["principal"] == {"name": "local", "role": "admin"}


async def test_the_secret_is_private_and_kept(hub_factory: HubFactory, hub: Hub) -> None:
    """``data_dir/local-token`` is mode 0600 and the same after a restart."""
    path = hub.config.hub.data_dir / local_secret.TOKEN_FILE
    before = path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(before.strip()) >= 40
    await restart(hub_factory, hub)
    assert path.read_text() == before


def test_concurrent_first_starts_agree(tmp_path: Path) -> None:
    """Two hubs making the secret at once end with one secret, whole, and no stray file."""
    async def both() -> list[str]:
        return await asyncio.gather(*(asyncio.to_thread(local_secret.ensure_secret, tmp_path)
                                      for _ in range(8)))

    secrets = asyncio.run(both())
    assert len(set(secrets)) == 1
    assert [p.name for p in tmp_path.iterdir()] == [local_secret.TOKEN_FILE]


async def test_a_local_client_finds_the_secret_by_itself(hub: Hub) -> None:
    """HubClient with no token on a local hub's URL presents its secret (runtime dir)."""
    async with HubClient(hub.url, kind="test") as client:
        assert client.principal == {"name": "local", "role": "admin"}


async def test_commands_find_it_through_the_configured_data_dir(
    hub: Hub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without the runtime dir, a command finds the secret in the config's data dir."""
    monkeypatch.setattr(local_secret, "runtime_dir", lambda: tmp_path / "no-runtime")
    with pytest.raises(HubAuthError):
        await HubClient(hub.url, kind="test", reconnect=False).start()
    config = load_config(None).with_overrides(data_dir=hub.config.hub.data_dir)
    target = resolve_target(config, hub.url, None)
    async with HubClient(target.url, token=target.token, kind="test") as client:
        assert client.principal["role"] == "admin"


async def test_the_secret_goes_to_no_other_hub(hub_factory: HubFactory) -> None:
    """Another loopback port, a remote host, or a stopped hub: no secret is offered."""
    first, second = await hub_factory(), await hub_factory()
    mine = local_secret.read_secret(first.config.hub.data_dir)
    assert local_secret.secret_for(first.url) == mine
    assert local_secret.secret_for(second.url) not in (None, mine)
    remote = first.url.replace("127.0.0.1", "example.com")
    assert local_secret.secret_for(remote, [first.config.hub.data_dir]) is None
    url = first.url
    await first.stop()
    assert local_secret.secret_for(url, [first.config.hub.data_dir]) is None


async def test_token_mode_has_no_local_secret(hub_factory: HubFactory) -> None:
    """With tokens configured no local secret is made: the tokens decide."""
    hub = await hub_factory(tokens=True)
    assert local_secret.read_secret(hub.config.hub.data_dir) is None
