"""`axtui export` and `axtui import` against real hubs, and the hub's `session/import`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from axtui.client import HubClient
from server.hub import Hub
from tests.axtui.conftest import CliRun
from tests.conftest import HubFactory, RawFactory
from tests.server.agent_helpers import agent_hub, echo_agent

KEPT = ("seq", "ts", "type", "source", "data", "turnId", "idempotencyKey", "state")


def kept(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What an import keeps of each event (everything but the id)."""
    return [{k: e.get(k) for k in KEPT} for e in events]


async def rich_session(hub: Hub) -> list[dict[str, Any]]:
    """A session with an echo turn, a permission answered, state from exec and a publish;
    returns its events."""
    async with HubClient(hub.url) as client:
        await client.create_session(sessionId="orig", agent="echo", title="CSV",
                                    metadata={"ticket": 42})
        sub = client.subscribe("orig")
        await client.publish("orig", "user.message", {"text": "permission"})
        async for event in sub:
            if event["type"] == "permission.request":
                await client.publish("orig", "permission.response", {
                    "requestId": event["data"]["requestId"], "optionId": "allow"})
            if event["type"] == "turn.completed":
                break
        await sub.close()
        await client.exec("orig", [{"sql": "CREATE TABLE t (x INTEGER, y TEXT)"}])
        await client.publish("orig", "ci.build", {"n": 1}, idempotency_key="ci-1",
                             state=[{"sql": "INSERT INTO t VALUES (?, ?)", "params": [1, "a"]}])
        events: list[dict[str, Any]] = (await client.history("orig", limit=5000))["events"]
        return events


async def test_export_import_round_trip(hub_factory: HubFactory, tmp_path: Path,
                                        cli_run: CliRun) -> None:
    """Exported to a file and imported into another hub: a new epoch, the same events (new
    ids) and the same state; the exported id is kept when free."""
    first = await agent_hub(hub_factory, echo_agent(tmp_path))
    events = await rich_session(first)
    path = tmp_path / "orig.jsonl"
    exported = await cli_run("export", "orig", "-o", str(path), "--server", first.url)
    assert exported.exit_code == 0, exported.output
    assert f"exported {len(events)} events" in exported.stderr
    lines = path.read_text().splitlines()
    header = orjson.loads(lines[0])
    assert header["axtuiExport"] == 1 and header["session"]["sessionId"] == "orig"
    assert [orjson.loads(line) for line in lines[1:]] == events

    second = await agent_hub(hub_factory, echo_agent(tmp_path))
    imported = await cli_run("import", str(path), "--server", second.url)
    assert imported.exit_code == 0, imported.output
    assert imported.stdout.strip() == "orig"
    async with HubClient(second.url) as client:
        session = await client.get_session("orig")
        copied = (await client.history("orig", limit=5000))["events"]
        rows = (await client.query("orig", "SELECT x, y FROM t"))["rows"]
        again = await client.publish("orig", "ci.build", {"n": 1}, idempotency_key="ci-1")
    assert session["epoch"] != header["session"]["epoch"]
    assert (session["title"], session["agent"], session["metadata"]) == ("CSV", "echo",
                                                                         {"ticket": 42})
    assert kept(copied) == kept(events)
    assert not {e["id"] for e in copied} & {e["id"] for e in events}
    assert rows == [[1, "a"]]
    assert again["duplicate"]  # idempotency keys came along


async def test_import_on_the_same_hub_gets_a_new_id(cli_hub: Hub, tmp_path: Path,
                                                    cli_run: CliRun) -> None:
    """Imported where the exported id is taken: the hub makes a new id; events match."""
    events = await rich_session(cli_hub)
    path = tmp_path / "orig.jsonl"
    await cli_run("export", "orig", "-o", str(path), "--server", cli_hub.url)
    result = await cli_run("import", str(path), "--json", "--server", cli_hub.url)
    assert result.exit_code == 0, result.output
    session = orjson.loads(result.stdout)
    assert session["sessionId"] != "orig" and session["headSeq"] == len(events)
    async with HubClient(cli_hub.url) as client:
        copied = (await client.history(session["sessionId"], limit=5000))["events"]
    assert kept(copied) == kept(events)


async def test_export_db_needs_no_hub(hub_factory: HubFactory, tmp_path: Path,
                                      cli_run: CliRun) -> None:
    """`axtui export --db FILE` writes the same file as the hub would (header aside)."""
    hub = await agent_hub(hub_factory, echo_agent(tmp_path))
    await rich_session(hub)
    from_hub = await cli_run("export", "orig", "--server", hub.url)
    await hub.stop()
    db = hub.config.hub.data_dir / "sessions" / "orig.db"
    from_db = await cli_run("export", "--db", str(db))
    assert from_db.exit_code == 0, from_db.output
    hub_lines, db_lines = from_hub.stdout.splitlines(), from_db.stdout.splitlines()
    assert db_lines[1 : len(hub_lines)] == hub_lines[1:]
    assert orjson.loads(db_lines[0])["session"]["sessionId"] == "orig"


async def test_import_refuses_a_bad_file_by_line_and_stores_nothing(
    hub: Hub, tmp_path: Path, cli_run: CliRun
) -> None:
    """A bad line (JSON, seq, type, header) is named with its line number; exit 2; no session."""
    good = [{"axtuiExport": 1, "session": {"sessionId": "x", "title": "t"}},
            {"seq": 1, "id": "a", "ts": 1, "type": "session.created",
             "source": {"kind": "client", "name": "n"}, "data": {}},
            {"seq": 2, "id": "b", "ts": 2, "type": "note", "source": {"kind": "client",
                                                                      "name": "n"}, "data": {}}]
    cases = {
        "not json": ([*good[:2], "{oops"], ":3: not valid JSON"),
        "gap": ([*good[:2], {**good[2], "seq": 3}], ":3: seq must be 2"),
        "bad type": ([*good[:2], {**good[2], "type": "Bad Type"}], ":3: bad type"),
        "no header": (good[1:], ":1: not an axtui export header"),
        "first not created": ([good[0], {**good[2], "seq": 1}], ":2: the first event must"),
    }
    for name, (lines, expected) in cases.items():
        path = tmp_path / f"{name}.jsonl"
        path.write_text("\n".join(x if isinstance(x, str) else orjson.dumps(x).decode()
                                  for x in lines))
        result = await cli_run("import", str(path), "--server", hub.url)
        assert result.exit_code == 2, (name, result.output)
        assert expected in result.stderr and result.stderr.count("\n") == 1, (name, result.stderr)
    async with HubClient(hub.url) as client:
        assert [s async for s in client.list_sessions()] == []


async def test_import_sql_that_fails_stores_nothing(hub: Hub, tmp_path: Path,
                                                    cli_run: CliRun) -> None:
    """Recorded statements that fail to rebuild: exit 1 with SQLite's message, no session."""
    lines = [{"axtuiExport": 1, "session": {"sessionId": "x"}},
             {"seq": 1, "id": "a", "ts": 1, "type": "session.created",
              "source": {"kind": "client", "name": "n"}, "data": {}},
             {"seq": 2, "id": "b", "ts": 2, "type": "state.changed",
              "source": {"kind": "client", "name": "n"},
              "data": {"statements": [{"sql": "INSERT INTO nowhere VALUES (1)"}], "changes": 1}}]
    path = tmp_path / "bad-sql.jsonl"
    path.write_text("\n".join(orjson.dumps(x).decode() for x in lines) + "\n")
    result = await cli_run("import", str(path), "--server", hub.url)
    assert result.exit_code == 1
    assert "no such table: nowhere" in result.stderr and result.stderr.count("\n") == 1
    async with HubClient(hub.url) as client:
        assert [s async for s in client.list_sessions()] == []
    assert list((hub.config.hub.data_dir / "sessions").iterdir()) == []


async def test_session_import_is_admin_only_and_checks_events(
    hub_factory: HubFactory, raw_factory: RawFactory
) -> None:
    """session/import: a participant gets -32003; a bad event -32602 naming its index."""
    hub = await hub_factory(tokens=True)
    paul = await raw_factory(hub, headers={"Authorization": "Bearer participant-token"},
                             initialize=False)
    await paul.initialize()
    denied = await paul.error("session/import", {"events": []})
    assert denied["code"] == -32003
    ada = await raw_factory(hub, headers={"Authorization": "Bearer admin-token"},
                            initialize=False)
    await ada.initialize()
    created = {"seq": 1, "ts": 1, "type": "session.created",
               "source": {"kind": "hub", "name": "hub"}, "data": {}}
    bad = await ada.error("session/import", {"events": [created, {**created, "seq": 5}]})
    assert bad["code"] == -32602 and bad["data"]["index"] == 1
    assert "events[1]: seq must be 2" in bad["message"]
    ok = await ada.call("session/import", {"newSessionId": "imp", "events": [created]})
    assert ok["session"]["sessionId"] == "imp" and ok["session"]["headSeq"] == 1
