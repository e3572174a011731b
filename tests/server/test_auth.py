"""The handshake, tokens and roles against a real hub: initialize, -32001 with 4401 and
4408, Bearer headers, viewer, participant and admin, local mode."""

from __future__ import annotations

from typing import Any

import pytest
from websockets.exceptions import InvalidStatus

from server.hub import Hub
from tests.conftest import HubFactory, Raw, RawFactory
from tests.server.raw_helpers import (
    FORBIDDEN,
    INVALID_PARAMS,
    INVALID_REQUEST,
    NOT_AUTHENTICATED,
    assert_error,
    create,
    head,
    token_conn,
)

CLIENT_INFO = {"name": "t", "kind": "t", "version": "0"}


@pytest.fixture
async def token_hub(hub_factory: HubFactory) -> Hub:
    """A hub with a viewer, a participant and an admin token."""
    return await hub_factory(tokens=True)


# --- initialize --------------------------------------------------------------------------

@pytest.mark.parametrize("version", [
    pytest.param(2, id="2"),
    pytest.param(0, id="0"),
    pytest.param("1", id="string-1"),
    pytest.param(None, id="null"),
    pytest.param(True, id="true"),
    pytest.param([1], id="array"),
])
async def test_other_protocol_version_is_refused_with_supported_list(
    raw_factory: RawFactory, version: Any
) -> None:
    """initialize with protocolVersion other than 1 gets -32602 with data {"supported": [1]}."""
    raw = await raw_factory(initialize=False)
    params = {"protocolVersion": version, "clientInfo": CLIENT_INFO}
    err = assert_error(await raw.request("initialize", params), INVALID_PARAMS)
    assert err["data"] == {"supported": [1]}
    assert (await raw.initialize())["protocolVersion"] == 1


async def test_initialize_twice_is_invalid_request(raw: Raw) -> None:
    """A second initialize on the same connection is refused; the connection stays usable."""
    params = {"protocolVersion": 1, "clientInfo": CLIENT_INFO}
    assert_error(await raw.request("initialize", params), INVALID_REQUEST)
    assert await raw.call("ping") == {}


async def test_requests_before_initialize_get_not_authenticated_then_4401(
    raw_factory: RawFactory,
) -> None:
    """Each method before initialize gets -32001; the third closes the connection with 4401."""
    raw = await raw_factory(initialize=False)
    assert_error(await raw.request("ping"), NOT_AUTHENTICATED)
    assert_error(await raw.request("session/list"), NOT_AUTHENTICATED)
    assert_error(await raw.request("no/such/method"), NOT_AUTHENTICATED)
    assert await raw.closed() == 4401


async def test_two_requests_before_initialize_leave_the_connection_usable(
    raw_factory: RawFactory,
) -> None:
    """Two -32001 errors do not close the connection: initialize still succeeds."""
    raw = await raw_factory(initialize=False)
    assert_error(await raw.request("ping"), NOT_AUTHENTICATED)
    assert_error(await raw.request("ping"), NOT_AUTHENTICATED)
    await raw.initialize()
    assert await raw.call("ping") == {}


async def test_no_initialize_in_time_closes_4408(
    hub_factory: HubFactory, raw_factory: RawFactory
) -> None:
    """A connection that sends no initialize within hub.initialize_timeout is closed with 4408."""
    hub = await hub_factory(initialize_timeout=0.5)
    silent = await raw_factory(target=hub, initialize=False)
    chatty = await raw_factory(target=hub, initialize=False)
    assert_error(await chatty.request("ping"), NOT_AUTHENTICATED)
    initialized = await raw_factory(target=hub)
    assert await silent.closed(timeout=5) == 4408
    assert await chatty.closed(timeout=5) == 4408
    assert await initialized.call("ping") == {}


# --- tokens ------------------------------------------------------------------------------

async def test_token_in_initialize_sets_principal(token_hub: Hub, raw_factory: RawFactory) -> None:
    """A token in params.token authenticates as its name and role."""
    raw = await raw_factory(token_hub, initialize=False)
    result = await raw.initialize(token="participant-token")
    assert result["principal"] == {"name": "paul", "role": "participant"}


@pytest.mark.parametrize("token", [
    pytest.param("wrong-token", id="wrong"),
    pytest.param("", id="empty"),
    pytest.param(None, id="missing"),
    pytest.param("viewer-token ", id="trailing-space"),
])
async def test_bad_token_in_initialize_gets_not_authenticated_then_4401(
    token_hub: Hub, raw_factory: RawFactory, token: str | None
) -> None:
    """A bad or missing params.token gets -32001, then the hub closes with 4401."""
    raw = await raw_factory(target=token_hub, initialize=False)
    params: dict[str, Any] = {"protocolVersion": 1, "clientInfo": CLIENT_INFO}
    if token is not None:
        params["token"] = token
    assert_error(await raw.request("initialize", params), NOT_AUTHENTICATED)
    assert await raw.closed() == 4401


@pytest.mark.parametrize("header", [
    pytest.param("Bearer nope", id="unknown-token"),
    pytest.param("Bearer ", id="empty-bearer"),
    pytest.param("Basic dmVyYTp4", id="basic"),
    pytest.param("admin-token", id="no-scheme"),
])
async def test_bad_bearer_header_refuses_the_upgrade_with_401(
    token_hub: Hub, raw_factory: RawFactory, header: str
) -> None:
    """A bad Authorization header makes the upgrade fail with HTTP 401."""
    with pytest.raises(InvalidStatus) as exc_info:
        await raw_factory(target=token_hub, headers={"Authorization": header}, initialize=False)
    assert exc_info.value.response.status_code == 401
    good = await token_conn(raw_factory, token_hub, "viewer-token")
    assert await good.call("ping") == {}


@pytest.mark.parametrize("params_token", ["admin-token", "wrong-token"])
async def test_header_token_wins_over_params_token(
    token_hub: Hub, raw_factory: RawFactory, params_token: str
) -> None:
    """With both a Bearer header and params.token, the header's principal is used."""
    admin = await token_conn(raw_factory, token_hub, "admin-token")
    await create(admin)
    raw = await raw_factory(
        target=token_hub, headers={"Authorization": "Bearer viewer-token"}, initialize=False
    )
    result = await raw.initialize(params_token)
    assert result["principal"] == {"name": "vera", "role": "viewer"}
    assert_error(
        await raw.request("session/publish", {"sessionId": "s", "type": "note"}), FORBIDDEN
    )
    assert await head(admin) == 1


# --- roles -------------------------------------------------------------------------------

async def test_viewer_reads(token_hub: Hub, raw_factory: RawFactory) -> None:
    """A viewer may list sessions, read history, subscribe and query state."""
    admin = await token_conn(raw_factory, token_hub, "admin-token")
    await create(admin)
    viewer = await token_conn(raw_factory, token_hub, "viewer-token")
    assert (await viewer.call("session/history", {"sessionId": "s"}))["headSeq"] == 1
    await viewer.call("session/subscribe", {"sessionId": "s"})
    rows = await viewer.call("state/query", {"sessionId": "s", "sql": "SELECT 1"})
    assert rows["rows"] == [[1]]
    assert [s["sessionId"] for s in (await viewer.call("session/list"))["sessions"]] == ["s"]


@pytest.mark.parametrize(("method", "params", "needed"), [
    pytest.param("session/publish",
                 {"sessionId": "s", "type": "user.message", "data": {"text": "hi"}},
                 "participant", id="publish-user-message"),
    pytest.param("session/publish", {"sessionId": "s", "type": "note"}, "participant",
                 id="publish-note"),
    pytest.param("session/create", {"sessionId": "v"}, "participant", id="create"),
    pytest.param("session/create", {}, "participant", id="create-without-id"),
    pytest.param("session/fork", {"sessionId": "s", "newSessionId": "v"}, "participant",
                 id="fork-into"),
    pytest.param("session/fork", {"sessionId": "s"}, "participant", id="fork"),
    pytest.param("state/exec", {"sessionId": "s", "statements": [{"sql": "CREATE TABLE t(a)"}]},
                 "participant", id="exec"),
    pytest.param("session/cancel", {"sessionId": "s"}, "participant", id="cancel"),
    pytest.param("session/delete", {"sessionId": "s"}, "admin", id="delete"),
    pytest.param("session/suspend", {"sessionId": "s"}, "admin", id="suspend"),
])
async def test_viewer_cannot_change_anything(
    token_hub: Hub, raw_factory: RawFactory, method: str, params: dict[str, Any], needed: str
) -> None:
    """A viewer gets -32003 naming the role needed for any change; nothing is stored."""
    admin = await token_conn(raw_factory, token_hub, "admin-token")
    await create(admin)
    viewer = await token_conn(raw_factory, token_hub, "viewer-token")
    err = assert_error(await viewer.request(method, params), FORBIDDEN)
    assert err["data"] == {"role": "viewer", "needed": needed}
    assert await head(viewer) == 1
    assert [s["sessionId"] for s in (await viewer.call("session/list"))["sessions"]] == ["s"]
    assert (await admin.call("session/get", {"sessionId": "s"}))["session"]["headSeq"] == 1


@pytest.mark.parametrize("method", ["session/delete", "session/suspend"])
async def test_participant_cannot_delete_or_suspend(
    token_hub: Hub, raw_factory: RawFactory, method: str
) -> None:
    """A participant publishes and creates, but delete and suspend need admin."""
    participant = await token_conn(raw_factory, token_hub, "participant-token")
    await create(participant)
    err = assert_error(await participant.request(method, {"sessionId": "s"}), FORBIDDEN)
    assert err["data"] == {"role": "participant", "needed": "admin"}
    assert await head(participant) == 1
    published = await participant.call("session/publish", {"sessionId": "s", "type": "note"})
    assert published["seq"] == 2
    admin = await token_conn(raw_factory, token_hub, "admin-token")
    assert await admin.call("session/delete", {"sessionId": "s"}) == {}


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
    """Without tokens every client that shows the data dir's secret is admin named local
    (tests/server/test_local_secret.py: and one that does not, nobody)."""
    raw = await raw_factory(hub, initialize=False)
    result = await raw.initialize(token="whatever")
    assert result["principal"] == {"name": "local", "role": "admin"}
