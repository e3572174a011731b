"""``onBehalfOf`` on ``session/publish``: a bridge publishes as the person, the hub keeps
who really published in ``source.principal``."""

from __future__ import annotations

import io
from typing import Any

import pytest

from axtui.render import EventPrinter
from server.hub import Hub
from tests.conftest import HubFactory, Raw, RawFactory, restart
from tests.server.test_permissions import open_request


async def bridge(hub_factory: HubFactory, raw_factory: RawFactory) -> tuple[Hub, Raw]:
    """A token-mode hub, and a participant (``paul``) connected as a Slack bridge with a
    session ``s``."""
    hub = await hub_factory(tokens=True)
    raw = await raw_factory(hub, initialize=False)
    await raw.initialize(token="participant-token", kind="slack")
    await raw.call("session/create", {"sessionId": "s"})
    return hub, raw


async def events(raw: Raw, sid: str = "s", types: list[str] | None = None) -> list[Any]:
    """The session's stored events (of ``types``)."""
    params: dict[str, Any] = {"sessionId": sid}
    if types is not None:
        params["types"] = types
    found: list[Any] = (await raw.call("session/history", params))["events"]
    return found


async def test_name_is_the_person_and_principal_the_token(
        hub_factory: HubFactory, raw_factory: RawFactory) -> None:
    """The stored (and delivered) event's source.name is the onBehalfOf name, and
    source.principal the publishing token's name."""
    _, raw = await bridge(hub_factory, raw_factory)
    await raw.call("session/subscribe", {"sessionId": "s"})
    await raw.call("session/publish", {"sessionId": "s", "type": "user.message",
                                       "data": {"text": "hi"}, "onBehalfOf": "Bob Ödegaard"})
    expected = {"kind": "client", "name": "Bob Ödegaard", "client": "slack",
                "principal": "paul"}
    delivered = await raw.events("s", 2)
    assert delivered[1]["source"] == expected
    assert (await events(raw, types=["user.message"]))[0]["source"] == expected


async def test_without_it_the_source_is_unchanged(
        hub_factory: HubFactory, raw_factory: RawFactory) -> None:
    """A publish without onBehalfOf stores the principal as the name and no principal key."""
    _, raw = await bridge(hub_factory, raw_factory)
    await raw.call("session/publish", {"sessionId": "s", "type": "ci.note", "data": {},
                                       "onBehalfOf": None})
    assert (await events(raw, types=["ci.note"]))[0]["source"] == {
        "kind": "client", "name": "paul", "client": "slack"}


@pytest.mark.parametrize("value", ["", " \t ", "x" * 65, "Bob\nAlice", "a\x1b[31m", 42,
                                   ["Bob"]])
async def test_bad_names_are_refused_and_store_nothing(
        hub_factory: HubFactory, raw_factory: RawFactory, value: object) -> None:
    """A name that is empty, blank, over 64 characters, has control characters or is not a
    string gets -32602 naming the param, and nothing is stored."""
    _, raw = await bridge(hub_factory, raw_factory)
    err = await raw.error("session/publish", {"sessionId": "s", "type": "user.message",
                                              "data": {"text": "hi"}, "onBehalfOf": value})
    assert err["code"] == -32602
    assert err["data"] == {"param": "onBehalfOf"}
    assert "onBehalfOf must be a display name" in err["message"]
    assert (await raw.call("session/get", {"sessionId": "s"}))["session"]["headSeq"] == 1


async def test_sixty_four_characters_and_emoji_are_fine(
        hub_factory: HubFactory, raw_factory: RawFactory) -> None:
    """A 64-character name, and one with an emoji sequence, are accepted as sent."""
    _, raw = await bridge(hub_factory, raw_factory)
    for name in ("x" * 64, "Zoë 👩‍💻"):
        await raw.call("session/publish", {"sessionId": "s", "type": "user.message",
                                           "data": {"text": "hi"}, "onBehalfOf": name})
    names = [e["source"]["name"] for e in await events(raw, types=["user.message"])]
    assert names == ["x" * 64, "Zoë 👩‍💻"]


async def test_viewers_still_cannot_publish(
        hub_factory: HubFactory, raw_factory: RawFactory) -> None:
    """onBehalfOf gives no rights: a viewer's publish is still -32003."""
    hub, _ = await bridge(hub_factory, raw_factory)
    viewer = await raw_factory(hub, initialize=False)
    await viewer.initialize(token="viewer-token")
    err = await viewer.error("session/publish", {"sessionId": "s", "type": "user.message",
                                                 "data": {"text": "hi"}, "onBehalfOf": "Bob"})
    assert err["code"] == -32003


async def test_idempotent_retry_keeps_the_first_event(
        hub_factory: HubFactory, raw_factory: RawFactory) -> None:
    """A retry with the same key (even naming someone else) is a duplicate of the original,
    which keeps its name."""
    _, raw = await bridge(hub_factory, raw_factory)
    publish = {"sessionId": "s", "type": "user.message", "data": {"text": "hi"},
               "idempotencyKey": "slack:Ev1", "onBehalfOf": "Bob"}
    first = await raw.call("session/publish", publish)
    again = await raw.call("session/publish", {**publish, "onBehalfOf": "Eve"})
    assert again == {**first, "duplicate": True}
    stored = await events(raw, types=["user.message"])
    assert [(e["source"]["name"], e["idempotencyKey"]) for e in stored] == [("Bob", "slack:Ev1")]


async def test_with_state_both_are_recorded(
        hub_factory: HubFactory, raw_factory: RawFactory) -> None:
    """onBehalfOf and state together: the statements run and are recorded on the event, whose
    source names the person."""
    _, raw = await bridge(hub_factory, raw_factory)
    state = [{"sql": "CREATE TABLE votes (who TEXT)"},
             {"sql": "INSERT INTO votes VALUES (?)", "params": ["Bob"]}]
    await raw.call("session/publish", {"sessionId": "s", "type": "poll.vote", "data": {},
                                       "state": state, "onBehalfOf": "Bob"})
    event = (await events(raw, types=["poll.vote"]))[0]
    assert event["state"] == state
    assert (event["source"]["name"], event["source"]["principal"]) == ("Bob", "paul")
    rows = await raw.call("state/query", {"sessionId": "s", "sql": "SELECT who FROM votes"})
    assert rows["rows"] == [["Bob"]]


async def test_second_answer_is_told_the_person_who_answered(
        hub_factory: HubFactory, raw_factory: RawFactory) -> None:
    """A permission answered on someone's behalf wins; a later answer (also after a hub
    restart) gets -32009 naming that person, with the principal in answeredBy."""
    hub, raw = await bridge(hub_factory, raw_factory)
    await open_request(hub, raw, "p")
    answer = {"sessionId": "p", "type": "permission.response",
              "data": {"requestId": "perm-1", "optionId": "allow"}}
    await raw.call("session/publish", {**answer, "onBehalfOf": "Bob"})
    by = {"kind": "client", "name": "Bob", "client": "slack", "principal": "paul"}
    for attempt in range(2):
        tui = await raw_factory(hub, initialize=False)
        await tui.initialize(token="admin-token", kind="tui")
        err = await tui.error("session/publish", answer)
        assert err["code"] == -32009
        assert err["message"] == "permission request perm-1 was already answered by Bob via slack"
        assert err["data"]["answeredBy"] == by
        if attempt == 0:
            hub = await restart(hub_factory, hub)
    stored = await events(tui, "p", ["permission.response"])
    assert [e["source"] for e in stored] == [by]


async def test_local_mode_records_local_as_principal(hub: Hub, raw: Raw) -> None:
    """In local mode (everyone is ``local``) onBehalfOf works the same way."""
    await raw.call("session/create", {"sessionId": "l"})
    await raw.call("session/publish", {"sessionId": "l", "type": "user.message",
                                       "data": {"text": "hi"}, "onBehalfOf": "Bob"})
    event = (await events(raw, "l", ["user.message"]))[0]
    assert (event["source"]["name"], event["source"]["principal"]) == ("Bob", "local")


def test_replay_shows_the_person_and_who_sent_it() -> None:
    """The headless pretty form names the person in the source column and ends the line
    with the principal that published it."""
    out = io.StringIO()
    printer = EventPrinter(jsonl=False, file=out)
    printer.print({"seq": 7, "ts": 0, "type": "user.message", "data": {"text": "hi"},
                   "source": {"kind": "client", "name": "Bob", "client": "slack",
                              "principal": "slackbot"}})
    printer.print({"seq": 8, "ts": 0, "type": "user.message", "data": {"text": "yo"},
                   "source": {"kind": "client", "name": "paul", "client": "tui"}})
    first, second = out.getvalue().splitlines()
    assert "Bob/slack" in first and first.endswith("hi (sent by slackbot)")
    assert "paul/tui" in second and second.endswith("yo")
