"""Session errors against a real hub: -32004 (not found, delete races), -32009 (conflicts)
and -32010 (cannot resume)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from server.hub import Hub
from tests.conftest import Raw
from tests.server.raw_helpers import (
    CANNOT_RESUME,
    CONFLICT,
    NOT_FOUND,
    assert_error,
    close_leaked_database_threads,
    collect,
    create,
    database_threads,
    head,
    request,
    tree,
)

# --- -32004 ------------------------------------------------------------------------------

SESSION_METHODS = [
    pytest.param("session/get", {}, id="get"),
    pytest.param("session/delete", {}, id="delete"),
    pytest.param("session/subscribe", {}, id="subscribe"),
    pytest.param("session/unsubscribe", {}, id="unsubscribe"),
    pytest.param("session/publish", {"type": "note"}, id="publish"),
    pytest.param("session/history", {}, id="history"),
    pytest.param("session/cancel", {}, id="cancel"),
    pytest.param("session/suspend", {}, id="suspend"),
    pytest.param("session/fork", {}, id="fork"),
    pytest.param("state/query", {"sql": "SELECT 1"}, id="query"),
    pytest.param("state/exec", {"statements": [{"sql": "CREATE TABLE t(a)"}]}, id="exec"),
]


@pytest.mark.parametrize(("method", "extra"), SESSION_METHODS)
async def test_unknown_session_is_not_found(
    hub: Hub, raw: Raw, tmp_path: Path, method: str, extra: dict[str, Any]
) -> None:
    """Every method taking a sessionId gets -32004 for a session that does not exist."""
    await create(raw)
    before = tree(tmp_path)
    err = assert_error(await raw.request(method, {"sessionId": "ghost", **extra}), NOT_FOUND)
    assert "ghost" in err["message"]
    assert tree(tmp_path) == before
    assert not (hub.config.hub.data_dir / "sessions" / "ghost.db").exists()
    assert await head(raw) == 1


async def test_deleted_session_is_not_found(raw: Raw) -> None:
    """After session/delete the session answers -32004 like one that never existed."""
    await create(raw)
    assert await raw.call("session/delete", {"sessionId": "s"}) == {}
    assert_error(await raw.request("session/get", {"sessionId": "s"}), NOT_FOUND)
    assert_error(await raw.request("session/delete", {"sessionId": "s"}), NOT_FOUND)


@pytest.mark.parametrize(("method", "extra"), [
    pytest.param("session/history", {}, id="history"),
    pytest.param("session/publish", {"type": "note"}, id="publish"),
    pytest.param("state/query", {"sql": "SELECT 1"}, id="query"),
    pytest.param("session/subscribe", {}, id="subscribe"),
])
async def test_request_racing_delete_does_not_resurrect_the_session(
    hub: Hub, raw: Raw, method: str, extra: dict[str, Any]
) -> None:
    """A request right behind session/delete gets a result or -32004; the session stays gone."""
    before = database_threads()
    try:
        await create(raw)
        await raw.call("session/publish", {"sessionId": "s", "type": "note"})
        await raw.send(request("delete", "session/delete", {"sessionId": "s"}))
        await raw.send(request("racer", method, {"sessionId": "s", **extra}))
        got = await collect(raw, ["delete", "racer"])
        assert got["delete"].get("result") == {}, got["delete"]
        if "error" in got["racer"]:
            assert_error(got["racer"], NOT_FOUND)
        assert_error(await raw.request("session/get", {"sessionId": "s"}), NOT_FOUND)
        sessions_dir = hub.config.hub.data_dir / "sessions"
        assert sorted(p.name for p in sessions_dir.iterdir()) == []
        await create(raw)  # the id is free again
        await raw.call("session/subscribe", {"sessionId": "s"})
        assert [e["seq"] for e in await raw.events("s", 1)] == [1]
        assert await raw.call("ping") == {}
    finally:
        await asyncio.wait_for(hub.stop(), 10)
        leaked = await close_leaked_database_threads(before)
    assert leaked == 0, f"{leaked} session database connection(s) still open after stop()"


async def test_unknown_agent_is_not_found(raw: Raw) -> None:
    """session/create with an agent that is not configured gets -32004; no session is made."""
    err = assert_error(
        await raw.request("session/create", {"sessionId": "s", "agent": "no-such-agent"}),
        NOT_FOUND,
    )
    assert "no-such-agent" in err["message"]
    assert_error(await raw.request("session/get", {"sessionId": "s"}), NOT_FOUND)
    assert (await raw.call("session/list"))["sessions"] == []


# --- -32009 ------------------------------------------------------------------------------

async def test_existing_session_id_is_conflict(raw: Raw) -> None:
    """Creating (or forking into) an id that exists gets -32009; the session is unchanged."""
    first = await create(raw, title="first")
    await create(raw, "other")
    assert_error(await raw.request("session/create", {"sessionId": "s", "title": "x"}), CONFLICT)
    assert_error(
        await raw.request("session/fork", {"sessionId": "other", "newSessionId": "s"}), CONFLICT
    )
    session = (await raw.call("session/get", {"sessionId": "s"}))["session"]
    assert session["epoch"] == first["epoch"]
    assert session["title"] == "first"
    assert session["headSeq"] == 1


async def test_concurrent_creates_of_one_id_conflict(raw: Raw) -> None:
    """Of several creates of one id sent at once, exactly one succeeds; the others get -32009."""
    ids = [f"c{i}" for i in range(5)]
    for rid in ids:
        await raw.send(request(rid, "session/create", {"sessionId": "s"}))
    got = await collect(raw, ids)
    assert sum("result" in m for m in got.values()) == 1
    for msg in got.values():
        if "error" in msg:
            assert_error(msg, CONFLICT)
    assert await head(raw) == 1


async def test_permission_response_without_open_request_is_conflict(raw: Raw) -> None:
    """A permission.response for a request that was never made gets -32009; nothing is stored."""
    await create(raw)
    data = {"requestId": "never-asked", "optionId": "allow"}
    err = assert_error(
        await raw.request("session/publish", {"sessionId": "s", "type": "permission.response",
                                              "data": data}),
        CONFLICT,
    )
    assert "never-asked" in err["message"]
    cancelled = {"requestId": "never-asked", "outcome": "cancelled"}
    assert_error(
        await raw.request("session/publish", {"sessionId": "s", "type": "permission.response",
                                              "data": cancelled}),
        CONFLICT,
    )
    assert await head(raw) == 1


# --- -32010 ------------------------------------------------------------------------------

async def test_after_seq_ahead_of_head_cannot_resume(raw: Raw) -> None:
    """Subscribing with afterSeq greater than headSeq gets -32010; afterSeq == head works."""
    await create(raw)
    assert_error(await raw.request("session/subscribe", {"sessionId": "s", "afterSeq": 2}),
                 CANNOT_RESUME)
    assert_error(await raw.request("session/subscribe", {"sessionId": "s", "afterSeq": 10**15}),
                 CANNOT_RESUME)
    result = await raw.call("session/subscribe", {"sessionId": "s", "afterSeq": 1})
    assert result["headSeq"] == 1


@pytest.mark.parametrize("wrong", [
    pytest.param(lambda epoch: "0" * 16, id="zeros"),
    pytest.param(lambda epoch: "", id="empty"),
    pytest.param(lambda epoch: epoch.upper() + "x", id="altered"),
])
async def test_wrong_epoch_cannot_resume(raw: Raw, wrong: Callable[[str], str]) -> None:
    """Subscribing with an epoch that is not the session's gets -32010; the right one works."""
    session = await create(raw)
    epoch = wrong(session["epoch"])
    err = assert_error(
        await raw.request("session/subscribe", {"sessionId": "s", "epoch": epoch}), CANNOT_RESUME
    )
    assert err["data"]["epoch"] == session["epoch"]
    result = await raw.call("session/subscribe", {"sessionId": "s", "epoch": session["epoch"]})
    assert result["epoch"] == session["epoch"]


async def test_recreated_session_has_a_new_epoch(raw: Raw) -> None:
    """A session deleted and created again under the same id refuses the old epoch."""
    old = await create(raw)
    await raw.call("session/delete", {"sessionId": "s"})
    new = await create(raw)
    assert new["epoch"] != old["epoch"]
    assert_error(await raw.request("session/subscribe", {"sessionId": "s", "epoch": old["epoch"],
                                                         "afterSeq": 1}), CANNOT_RESUME)
