"""The Slack adapter end to end: threads are sessions, and the thread shows the session."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from axtui.client import HubClient
from axtui.slack.app import as_display_name
from server.config import TokenConfig
from server.hub import Hub
from server.protocol import Conflict, Role
from tests.axtui.slack.conftest import AdapterFactory
from tests.axtui.slack.fake_slack import BOT_USER, TEAM, FakeSlack
from tests.conftest import HubFactory, make_config
from tests.server.agent_helpers import echo_agent


def session_of(channel: str, thread_ts: str) -> str:
    """The session id the adapter gives a thread."""
    return f"slack-{TEAM}-{channel}-{thread_ts}"


def texts(slack: FakeSlack, channel: str, thread_ts: str) -> list[str]:
    """The text of the bot's messages in a thread."""
    return [m["text"] for m in slack.bot_messages(channel, thread_ts)]


def replied(slack: FakeSlack, channel: str, thread_ts: str, needle: str) -> Any:
    """A predicate: some bot message in the thread contains ``needle``."""
    return lambda: [m for m in slack.bot_messages(channel, thread_ts) if needle in m["text"]]


async def test_mention_creates_session_and_streams_reply(
        slack: FakeSlack, echo_hub: Hub, adapters: AdapterFactory) -> None:
    """A mention makes a session with the agent, publishes the message, and the reply
    streams into one message in the thread, marked done."""
    await adapters(echo_hub)
    root = await slack.say(f"<@{BOT_USER}> hello there")
    reply = (await slack.wait_for(replied(slack, "C1", root["ts"], "(I have seen 1 messages")))[0]
    await slack.wait_for(lambda: reply["metadata"]["event_payload"]["done"])
    sid = session_of("C1", root["ts"])
    async with HubClient(echo_hub.url, kind="test") as hub:
        session = await hub.get_session(sid)
        users = (await hub.history(sid, types=["user.message"]))["events"]
        agent = (await hub.history(sid, types=["agent.message"]))["events"]
    assert session["agent"] == "echo"
    assert session["metadata"] == {"slack": {"team": TEAM, "channel": "C1",
                                             "thread_ts": root["ts"]}}
    assert len(users) == 1  # app_mention and message of one message: published once
    assert users[0]["data"]["text"] == "hello there"
    assert users[0]["source"] == {"kind": "client", "name": "Alice", "client": "slack",
                                  "principal": "local"}
    assert "author" not in users[0]["data"]
    assert users[0]["idempotencyKey"] in {f"slack:{e}" for e in root["event_ids"]}
    replies = [m for m in slack.bot_messages("C1", root["ts"])
               if m["metadata"]["event_payload"]["key"].startswith("msg:")]
    assert len(replies) == 1
    assert replies[0]["text"] == agent[0]["data"]["text"]
    await slack.wait_for(lambda: "white_check_mark" in (
        slack.thread("C1", root["ts"])[0].get("reactions_set") or []))


async def test_thread_reply_continues_the_session(
        slack: FakeSlack, echo_hub: Hub, adapters: AdapterFactory) -> None:
    """A reply in the thread, without a mention, is the next user.message of the session."""
    await adapters(echo_hub)
    root = await slack.say(f"<@{BOT_USER}> first")
    await slack.wait_for(replied(slack, "C1", root["ts"], "(I have seen 1 messages"))
    await slack.say("second", thread_ts=root["ts"], user="U2")
    await slack.wait_for(replied(slack, "C1", root["ts"], "(I have seen 2 messages"))
    async with HubClient(echo_hub.url, kind="test") as hub:
        users = (await hub.history(session_of("C1", root["ts"]),
                                   types=["user.message"]))["events"]
    assert [(e["data"]["text"], e["source"]["name"]) for e in users] == [
        ("first", "Alice"), ("second", "Bob")]


async def test_channel_chatter_and_subtypes_are_ignored(
        slack: FakeSlack, echo_hub: Hub, adapters: AdapterFactory) -> None:
    """Channel messages outside the bot's threads, joins and edits publish nothing."""
    adapter = await adapters(echo_hub)
    await slack.say("just chatting")
    other = await slack.say("a thread the bot is not in")
    await slack.say("reply there", thread_ts=other["ts"])
    join = await slack.send_event({"type": "message", "subtype": "channel_join", "user": "U2",
                                   "text": "<@U2> has joined", "channel": "C1",
                                   "ts": "1.000001", "channel_type": "channel"})
    root = await slack.say(f"<@{BOT_USER}> hi")
    await slack.wait_for(replied(slack, "C1", root["ts"], "(I have seen 1 messages"))
    sessions = [s async for s in adapter.hub.list_sessions()]
    assert [s["sessionId"] for s in sessions] == [session_of("C1", root["ts"])]
    assert join  # delivered, acknowledged, and ignored
    await slack.wait_for(lambda: all(e["envelope_id"] in slack.acks for e in slack.envelopes
                                     if e["payload"].get("event_id") == join))


async def test_message_from_another_client_appears_in_the_thread(
        slack: FakeSlack, echo_hub: Hub, adapters: AdapterFactory) -> None:
    """A user.message sent from the TUI shows in the thread with who sent it and from where,
    and the agent's answer to it follows."""
    await adapters(echo_hub)
    root = await slack.say(f"<@{BOT_USER}> start")
    await slack.wait_for(replied(slack, "C1", root["ts"], "(I have seen 1 messages"))
    async with HubClient(echo_hub.url, kind="tui") as tui:
        await tui.publish(session_of("C1", root["ts"]), "user.message", {"text": "from tui"})
    await slack.wait_for(replied(slack, "C1", root["ts"], "(I have seen 2 messages"))
    shown = [t for t in texts(slack, "C1", root["ts"]) if "via tui" in t]
    assert shown == ["*local* via tui:\n>from tui"]
    # The reply to the TUI's message follows it in the thread.
    order = texts(slack, "C1", root["ts"])
    assert order.index(shown[0]) < next(i for i, t in enumerate(order) if "2 messages" in t)


def permission_card(slack: FakeSlack, channel: str, thread_ts: str) -> Any:
    """A predicate: the thread's permission card, once it has buttons."""
    def find() -> Any:
        for m in slack.bot_messages(channel, thread_ts):
            if any(b["type"] == "actions" for b in m.get("blocks") or []):
                return m
        return None
    return find


async def test_permission_answered_by_button(
        slack: FakeSlack, echo_hub: Hub, adapters: AdapterFactory) -> None:
    """A permission request becomes buttons; a click publishes permission.response as the
    Slack user (source.name), the card then says who answered, and so does the hub's
    -32009 to anyone answering later."""
    await adapters(echo_hub)
    root = await slack.say(f"<@{BOT_USER}> permission")
    card = await slack.wait_for(permission_card(slack, "C1", root["ts"]))
    envelope = await slack.click("C1", card["ts"], "allow", user="U2")
    await slack.wait_for(lambda: envelope in slack.acks)
    await slack.wait_for(replied(slack, "C1", root["ts"], "permission: allow"))
    await slack.wait_for(lambda: "answered by Bob via slack" in json_of(card["blocks"]))
    assert not any(b["type"] == "actions" for b in card["blocks"])
    async with HubClient(echo_hub.url, kind="tui") as hub:
        sid = session_of("C1", root["ts"])
        answers = (await hub.history(sid, types=["permission.response"]))["events"]
        with pytest.raises(Conflict, match="already answered by Bob via slack"):
            await hub.publish(sid, "permission.response", answers[0]["data"])
    assert [(a["data"], a["source"]) for a in answers] == [
        ({"requestId": answers[0]["data"]["requestId"], "optionId": "allow"},
         {"kind": "client", "name": "Bob", "client": "slack", "principal": "local"})]


async def test_permission_answered_elsewhere_updates_the_buttons(
        slack: FakeSlack, echo_hub: Hub, adapters: AdapterFactory) -> None:
    """Answered from the TUI first, the card's buttons give way to "answered by X via tui",
    and a late click is told it was too late."""
    await adapters(echo_hub)
    root = await slack.say(f"<@{BOT_USER}> permission")
    card = await slack.wait_for(permission_card(slack, "C1", root["ts"]))
    sid = session_of("C1", root["ts"])
    async with HubClient(echo_hub.url, kind="tui") as tui:
        request = (await tui.history(sid, types=["permission.request"]))["events"][0]
        await tui.publish(sid, "permission.response",
                          {"requestId": request["data"]["requestId"], "optionId": "reject"})
    await slack.wait_for(lambda: "answered by local via tui" in json_of(card["blocks"]))
    assert not any(b["type"] == "actions" for b in card["blocks"])
    await slack.wait_for(replied(slack, "C1", root["ts"], "permission: reject"))
    await slack.click("C1", card["ts"], "allow", blocks=card_with_buttons(slack, card["ts"]))
    late = await slack.wait_for(lambda: slack.ephemeral)
    assert late[0]["user"] == "U1"
    assert "already answered by local via tui" in late[0]["text"]


def json_of(value: Any) -> str:
    """``value`` as JSON text, to search in."""
    import json
    return json.dumps(value)


def card_with_buttons(slack: FakeSlack, ts: str) -> Any:
    """The blocks a permission card had when it was first posted."""
    post = next(c for c in slack.calls_to("chat.postMessage")
                if c.response.get("ts") == ts)
    return post.params["blocks"]


async def test_on_a_token_hub_the_principal_is_the_adapters_token(
        slack: FakeSlack, hub_factory: HubFactory, adapters: AdapterFactory,
        tmp_path: Path) -> None:
    """With hub tokens, a Slack message is stored under the Slack user's name, and the
    adapter's token name is kept as source.principal (the audit trail)."""
    config = replace(make_config(tmp_path / "hub", agents={"echo": echo_agent(tmp_path)}),
                     tokens=(TokenConfig("slackbot", "slack-hub-token", Role.PARTICIPANT),
                             TokenConfig("ops", "ops-token", Role.ADMIN)))
    hub = await hub_factory(config=config)
    await adapters(hub, hub_token="slack-hub-token")
    root = await slack.say(f"<@{BOT_USER}> hello", user="U2")
    await slack.wait_for(replied(slack, "C1", root["ts"], "(I have seen 1 messages"))
    async with HubClient(hub.url, token="ops-token", kind="test") as ops:
        users = (await ops.history(session_of("C1", root["ts"]),
                                   types=["user.message"]))["events"]
    assert [u["source"] for u in users] == [
        {"kind": "client", "name": "Bob", "client": "slack", "principal": "slackbot"}]


def test_slack_names_are_made_fit_for_the_hub() -> None:
    """Long Slack names are cut to 64 characters, control characters and runs of blanks
    become one space, and an empty name falls back to the user id."""
    assert as_display_name("Ada  Lovelace\n(she/her)", "U1") == "Ada Lovelace (she/her)"
    long = as_display_name("x" * 80, "U1")
    assert len(long) == 64 and long.endswith("…")
    assert as_display_name(" \t", "U9") == "U9"
