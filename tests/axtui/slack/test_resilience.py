"""The Slack adapter under restarts, retries, rate limits and failures."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from axtui.cli import main
from axtui.client import HubClient
from axtui.slack.app import SlackAdapter, SlackSetupError
from axtui.slack.render import mrkdwn
from server.config import ClientConfig, SlackConfig, TokenConfig
from server.hub import Hub
from server.protocol import Role
from tests.axtui.slack.conftest import AdapterFactory
from tests.axtui.slack.fake_slack import BOT_USER, FakeSlack
from tests.axtui.slack.test_threads import permission_card, replied, session_of
from tests.conftest import HubFactory, make_config, restart
from tests.server.agent_helpers import echo_agent


def keys(slack: FakeSlack, channel: str, thread_ts: str) -> list[str]:
    """The item keys of the bot's messages in a thread, in order."""
    return [m["metadata"]["event_payload"]["key"] for m in slack.bot_messages(channel, thread_ts)
            if "metadata" in m]


async def wait_events(hub: HubClient, sid: str, event_type: str, count: int = 1) -> list[Any]:
    """Follow the session until ``count`` events of ``event_type`` were seen."""
    seen: list[Any] = []
    sub = hub.subscribe(sid)
    try:
        async for event in sub:
            if event["type"] == event_type:
                seen.append(event)
                if len(seen) == count:
                    return seen
    finally:
        await sub.close()
    raise AssertionError(f"the subscription to {sid} ended")


async def test_restart_mid_stream_posts_nothing_twice_and_misses_nothing(
        slack: FakeSlack, hub_factory: HubFactory, adapters: AdapterFactory) -> None:
    """An adapter stopped while an agent message streams: the next one completes that same
    Slack message in place, posts what happened meanwhile once, and repeats nothing."""
    hub = await hub_factory()  # the bundled agents; demo streams its answer in chunks
    first = await adapters(hub, agent="demo", edit_interval=1.0)  # edits lag behind posts
    root = await slack.say(f"<@{BOT_USER}> export times out")
    sid = session_of("C1", root["ts"])
    card = await slack.wait_for(permission_card(slack, "C1", root["ts"]))
    async with HubClient(hub.url, kind="tui") as tui:
        request = (await tui.history(sid, types=["permission.request"]))["events"][0]
        await tui.publish(sid, "permission.response",
                          {"requestId": request["data"]["requestId"], "optionId": "allow"})
        streaming = (await slack.wait_for(lambda: [
            m for m in slack.bot_messages("C1", root["ts"])
            if m["metadata"]["event_payload"]["key"].startswith("msg:")]))[0]
        await first.stop()  # mid-stream: the message is posted, its later chunks are not
        assert not streaming["metadata"]["event_payload"]["done"]
        final = (await wait_events(tui, sid, "agent.message"))[0]["data"]["text"]
        assert mrkdwn(final) != streaming["text"]
        await tui.publish(sid, "user.message", {"text": "while the bot was away"})
        await wait_events(tui, sid, "permission.request", count=2)

    await adapters(hub, agent="demo")
    await slack.wait_for(lambda: streaming["metadata"]["event_payload"]["done"])
    await slack.wait_for(lambda: len([m for m in slack.bot_messages("C1", root["ts"])
                                      if m.get("blocks")]) == 2)  # the second card
    assert streaming["text"] == mrkdwn(final)
    found = keys(slack, "C1", root["ts"])
    assert len(found) == len(set(found)), found  # nothing posted twice
    assert sum(k.startswith("msg:") for k in found) == 1
    shown = [m["text"] for m in slack.bot_messages("C1", root["ts"])
             if m["text"].startswith("*local* via tui")]
    assert shown == ["*local* via tui:\n>while the bot was away"]
    assert card["metadata"]["event_payload"]["done"]


async def test_retried_event_is_stored_once(
        slack: FakeSlack, echo_hub: Hub, adapters: AdapterFactory) -> None:
    """Slack's retry of an event, even to a restarted adapter, stores nothing new."""
    first = await adapters(echo_hub)
    root = await slack.say(f"<@{BOT_USER}> once")
    await slack.wait_for(replied(slack, "C1", root["ts"], "(I have seen 1 messages"))
    await first.stop()
    await adapters(echo_hub)
    mention = next(e for e in slack.envelopes if e["payload"]["event_id"] == root["event_ids"][1])
    retry = await slack.send_event(mention["payload"]["event"], event_id=root["event_ids"][1],
                                   retry_attempt=1)
    await slack.wait_for(lambda: [e for e in slack.envelopes if e["payload"].get("event_id")
                                  == retry and e["retry_attempt"] == 1
                                  and e["envelope_id"] in slack.acks])
    async with HubClient(echo_hub.url, kind="test") as hub:
        users = (await hub.history(session_of("C1", root["ts"]),
                                   types=["user.message"]))["events"]
    assert [u["idempotencyKey"] for u in users] == [f"slack:{root['event_ids'][1]}"]


async def test_rate_limit_is_retried(
        slack: FakeSlack, echo_hub: Hub, adapters: AdapterFactory) -> None:
    """A 429 from Slack is retried after Retry-After, and the message is posted once."""
    await adapters(echo_hub)
    slack.fail_next("chat.postMessage", status=429, retry_after=1)
    root = await slack.say(f"<@{BOT_USER}> slow down")
    await slack.wait_for(replied(slack, "C1", root["ts"], "(I have seen 1 messages"))
    posts = slack.calls_to("chat.postMessage")
    assert [c.status for c in posts[:2]] == [429, 200]
    assert posts[0].params["metadata"] == posts[1].params["metadata"]
    found = keys(slack, "C1", root["ts"])
    assert len(found) == len(set(found))


async def test_missing_agent_gets_a_clear_reply(
        slack: FakeSlack, echo_hub: Hub, adapters: AdapterFactory) -> None:
    """A thread for an agent the hub does not have is told so, and no session is made."""
    adapter = await adapters(echo_hub, agent="nope")
    root = await slack.say(f"<@{BOT_USER}> hello")
    reply = await slack.wait_for(lambda: slack.bot_messages("C1", root["ts"]))
    assert "no agent named 'nope'" in reply[0]["text"]
    assert "echo" in reply[0]["text"]
    assert [s async for s in adapter.hub.list_sessions()] == []


async def test_hub_restart_is_survived(
        slack: FakeSlack, echo_hub: Hub, hub_factory: HubFactory,
        adapters: AdapterFactory) -> None:
    """After the hub restarts, the adapter reconnects and the thread carries on."""
    await adapters(echo_hub)
    root = await slack.say(f"<@{BOT_USER}> before")
    await slack.wait_for(replied(slack, "C1", root["ts"], "(I have seen 1 messages"))
    await restart(hub_factory, echo_hub)
    await slack.say("after", thread_ts=root["ts"])
    await slack.wait_for(replied(slack, "C1", root["ts"], "(I have seen 2 messages"))
    found = keys(slack, "C1", root["ts"])
    assert len(found) == len(set(found))


async def test_tokens_never_appear_in_logs(
        caplog: pytest.LogCaptureFixture, hub_factory: HubFactory, tmp_path: Path) -> None:
    """With DEBUG logging everywhere (slack_sdk, bolt and the in-process hub's websockets
    server included), no token is logged."""
    secrets = {"bot": "xoxb-SECRET-b0t-7e57", "app": "xapp-SECRET-a99-7e57",
               "hub": "hub-SECRET-70k3n-7e57"}
    caplog.set_level(logging.DEBUG)
    config = make_config(tmp_path / "hub", agents={"echo": echo_agent(tmp_path)})
    config = replace(config, tokens=(TokenConfig("slackbot", secrets["hub"],
                                                 Role.PARTICIPANT),))
    hub = await hub_factory(config=config)
    slack = FakeSlack(bot_token=secrets["bot"], app_token=secrets["app"])
    await slack.start()
    adapter = SlackAdapter(SlackConfig(secrets["bot"], secrets["app"], "echo", slack.api_url),
                           ClientConfig(hub.url, secrets["hub"]), edit_interval=0.05)
    try:
        await adapter.start()
        root = await slack.say(f"<@{BOT_USER}> permission")
        card = await slack.wait_for(permission_card(slack, "C1", root["ts"]))
        await slack.click("C1", card["ts"], "allow")
        await slack.wait_for(replied(slack, "C1", root["ts"], "permission: allow"))
    finally:
        await adapter.stop()
        await slack.stop()
    assert any(r.name.startswith("axtui.slack.web") and r.levelno == logging.DEBUG
               for r in caplog.records)  # slack_sdk did log its requests
    logged = "\n".join(caplog.handler.format(r) for r in caplog.records)
    assert "Authorization: Bearer (redacted)" in logged  # websockets did log the header
    for name, secret in secrets.items():
        assert secret not in logged, f"the {name} token was logged"


@pytest.mark.parametrize("key", ["bot_token", "app_token"])
async def test_bad_token_is_refused_clearly(slack: FakeSlack, echo_hub: Hub, key: str) -> None:
    """A token Slack refuses stops the adapter with a message naming the key."""
    config = replace(SlackConfig(slack.bot_token, slack.app_token, "echo", slack.api_url),
                     **{key: "xoxx-wrong"})
    adapter = SlackAdapter(config, ClientConfig(echo_hub.url))
    with pytest.raises(SlackSetupError, match=rf"\(slack.{key}\): invalid_auth"):
        await adapter.start()
    await adapter.stop()


def test_cli_without_a_slack_section_exits_2(tmp_path: Path) -> None:
    """`axtui slack` with a config that has no slack: section exits 2 and says why."""
    config = tmp_path / "axtui.yaml"
    config.write_text("client: {server: 'ws://127.0.0.1:9/ws'}\n")
    result = CliRunner().invoke(main, ["slack", "--config", str(config)])
    assert result.exit_code == 2
