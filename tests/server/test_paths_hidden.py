"""No answer shows a client where the hub keeps its files: error messages name the session,
and the introspection pragma that lists database files is refused."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from server.redact import hide_paths
from tests.conftest import HubFactory, Raw, RawFactory, restart
from tests.server.raw_helpers import FORBIDDEN, assert_error, create, query


def test_hide_paths_names_the_session_instead_of_its_file(tmp_path: Path) -> None:
    """A session file's path (absolute or as configured, with -wal too) becomes its session."""
    data = tmp_path / "data"
    text = (f"{data}/sessions/s-1.db is not an axtui session file;"
            f" {data.resolve()}/sessions/x.y_z.db-wal too; and {data}/hub.db")
    assert hide_paths(text, data) == ("session s-1 is not an axtui session file;"
                                      " session x.y_z too; and the hub's data dir")


def test_hide_paths_with_a_relative_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             ) -> None:
    """A relative data dir is hidden in both forms; ordinary words are left alone."""
    monkeypatch.chdir(tmp_path)
    data = Path("data")
    text = (f"data must be an object; data/sessions/p.db is damaged;"
            f" {tmp_path}/data/sessions/q.db too")
    assert hide_paths(text, data) == (
        "data must be an object; session p is damaged; session q too")
    assert hide_paths("metadata/x and data", data) == "metadata/x and data"


async def damaged(hub_factory: HubFactory, raw_factory: RawFactory,
                  data_dir: Path | None = None) -> tuple[Raw, Path]:
    """A hub whose session ``p``'s file was overwritten with garbage while it was stopped;
    a connection to it and the hub's data dir."""
    hub = await hub_factory(data_dir=data_dir)
    raw = await raw_factory(hub)
    await create(raw, "p")
    await create(raw, "q")
    await raw.ws.close()
    hub = await restart(hub_factory, hub)
    (hub.config.hub.data_dir / "sessions" / "p.db").write_bytes(b"not a database" * 500)
    return await raw_factory(hub), hub.config.hub.data_dir


@pytest.mark.parametrize("method", ["session/history", "session/subscribe", "state/query"])
async def test_a_damaged_file_error_names_the_session_not_its_path(
    hub_factory: HubFactory, raw_factory: RawFactory, method: str,
) -> None:
    """The error for a session whose file is damaged does not hold the data dir's path."""
    raw, data_dir = await damaged(hub_factory, raw_factory)
    params = {"sessionId": "p", **({"sql": "SELECT 1"} if method == "state/query" else {})}
    msg = await raw.request(method, params)
    assert "error" in msg, msg
    text = orjson.dumps(msg).decode()
    assert str(data_dir) not in text and str(data_dir.resolve()) not in text
    assert "/sessions/" not in text
    assert await raw.call("session/get", {"sessionId": "q"})  # the other session is fine


async def test_a_relative_data_dir_is_hidden_too(
    hub_factory: HubFactory, raw_factory: RawFactory, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With a relative data dir the answer holds neither the relative nor the full path."""
    monkeypatch.chdir(tmp_path)
    raw, _ = await damaged(hub_factory, raw_factory, Path("rel-data"))
    msg = await raw.request("session/history", {"sessionId": "p"})
    assert "error" in msg, msg
    text = orjson.dumps(msg).decode()
    assert "rel-data" not in text and str(tmp_path) not in text


async def test_pragma_database_list_is_refused(hub_factory: HubFactory, raw: Raw) -> None:
    """PRAGMA database_list (which shows the session file's path) gets -32003."""
    await create(raw, "s")
    err = assert_error(await query(raw, "PRAGMA database_list"), FORBIDDEN)
    assert "database_list" in err["message"]
    err = assert_error(await query(raw, "PRAGMA main.database_list"), FORBIDDEN)
    assert "/" not in orjson.dumps(err).decode().replace("state/", "")
    assert (await raw.call("state/query", {"sessionId": "s", "sql": "PRAGMA table_list"}))["rows"]


async def test_an_unexpected_error_with_a_path_names_the_session(
    hub_factory: HubFactory, raw_factory: RawFactory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whatever failure text holds a session file's path, the client sees the session."""
    hub = await hub_factory()
    raw = await raw_factory(hub)
    await create(raw, "p")
    path = hub.config.hub.data_dir / "sessions" / "p.db"

    async def failing_get(session_id: str) -> None:
        raise OSError(f"[Errno 5] Input/output error: '{path}'")

    # An I/O error cannot be caused on demand here: the registry's lookup raises one.
    monkeypatch.setattr(hub.sessions, "get", failing_get)
    err = await raw.error("session/history", {"sessionId": "p"})
    assert err["code"] == -32603
    assert "session p" in err["message"] and str(hub.config.hub.data_dir) not in err["message"]
