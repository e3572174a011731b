"""Tokens and roles: viewer, participant, admin; header or initialize; local mode."""

from __future__ import annotations

import pytest
from websockets.exceptions import InvalidStatus

from server.hub import Hub
from tests.conftest import HubFactory, RawFactory


@pytest.fixture
async def token_hub(hub_factory: HubFactory) -> Hub:
    """A hub with a viewer, a participant and an admin token."""
    return await hub_factory(tokens=True)


async def test_token_in_initialize_sets_principal(token_hub: Hub, raw_factory: RawFactory) -> None:
    """A token in params.token authenticates as its name and role."""
    raw = await raw_factory(token_hub, initialize=False)
    result = await raw.initialize(token="participant-token")
    assert result["principal"] == {"name": "paul", "role": "participant"}


async def test_bearer_header_wins_over_params(token_hub: Hub, raw_factory: RawFactory) -> None:
    """With both, the Authorization header decides who the client is."""
    raw = await raw_factory(token_hub, headers={"Authorization": "Bearer viewer-token"},
                            initialize=False)
    result = await raw.initialize(token="admin-token")
    assert result["principal"] == {"name": "vera", "role": "viewer"}


async def test_wrong_header_token_refused_with_401(token_hub: Hub, raw_factory: RawFactory) -> None:
    """A bad Bearer token refuses the upgrade with HTTP 401."""
    with pytest.raises(InvalidStatus) as info:
        await raw_factory(token_hub, headers={"Authorization": "Bearer nope"}, initialize=False)
    assert info.value.response.status_code == 401


async def test_viewer_reads_but_cannot_publish(token_hub: Hub, raw_factory: RawFactory) -> None:
    """A viewer may subscribe, read history and query state, but not publish or create."""
    admin = await raw_factory(token_hub, initialize=False)
    await admin.initialize(token="admin-token")
    await admin.call("session/create", {"sessionId": "v"})
    viewer = await raw_factory(token_hub, initialize=False)
    await viewer.initialize(token="viewer-token")
    assert (await viewer.call("session/history", {"sessionId": "v"}))["headSeq"] == 1
    await viewer.call("session/subscribe", {"sessionId": "v"})
    await viewer.call("state/query", {"sessionId": "v", "sql": "SELECT 1"})
    for method, params in [
        ("session/publish", {"sessionId": "v", "type": "note"}),
        ("session/create", {}),
        ("state/exec", {"sessionId": "v", "statements": [{"sql": "CREATE TABLE t (x)"}]}),
        ("session/fork", {"sessionId": "v"}),
        ("session/cancel", {"sessionId": "v"}),
    ]:
        err = await viewer.error(method, params)
        assert err["code"] == -32003, method
        assert err["data"] == {"role": "viewer", "needed": "participant"}
    assert (await admin.call("session/get", {"sessionId": "v"}))["session"]["headSeq"] == 1


async def test_participant_cannot_delete_or_suspend(token_hub: Hub,
                                                    raw_factory: RawFactory) -> None:
    """A participant publishes and creates, but delete and suspend need admin."""
    raw = await raw_factory(token_hub, initialize=False)
    await raw.initialize(token="participant-token")
    await raw.call("session/create", {"sessionId": "p"})
    await raw.call("session/publish", {"sessionId": "p", "type": "note"})
    for method in ("session/delete", "session/suspend"):
        err = await raw.error(method, {"sessionId": "p"})
        assert err["code"] == -32003
    admin = await raw_factory(token_hub, initialize=False)
    await admin.initialize(token="admin-token")
    assert await admin.call("session/delete", {"sessionId": "p"}) == {}


async def test_source_names_the_token(token_hub: Hub, raw_factory: RawFactory) -> None:
    """Published events carry the token's name and the client's kind as source."""
    raw = await raw_factory(token_hub, initialize=False)
    await raw.initialize(token="participant-token", kind="slack")
    await raw.call("session/create", {"sessionId": "src"})
    await raw.call("session/publish", {"sessionId": "src", "type": "user.message",
                                       "data": {"text": "hi"}})
    events = (await raw.call("session/history", {"sessionId": "src"}))["events"]
    assert events[-1]["source"] == {"kind": "client", "name": "paul", "client": "slack"}


async def test_local_mode_everyone_is_local_admin(hub: Hub, raw_factory: RawFactory) -> None:
    """Without tokens every client is admin named local, whatever it sends."""
    raw = await raw_factory(hub, headers={"Authorization": "Bearer anything"}, initialize=False)
    result = await raw.initialize(token="whatever")
    assert result["principal"] == {"name": "local", "role": "admin"}
