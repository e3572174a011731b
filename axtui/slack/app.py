"""``SlackAdapter``: a Slack bot (slack_bolt over Socket Mode) that is a hub participant.

Inbound (Slack → hub): a mention in a channel, or a message in a DM, opens the thread's
session (created with the configured agent on first use) and publishes the message as
``user.message`` with idempotency key ``slack:<event_id>``; later replies in the thread
continue it. Permission buttons publish ``permission.response``.

Outbound (hub → Slack): one :class:`SessionBridge` per session shows it in its thread.
Bridges start when a thread talks to the bot, for recently active Slack sessions when the
adapter starts, and whenever the hub reports activity in a Slack session (``sessions/watch``),
so messages from the TUI or the CLI reach the thread even when nobody in Slack spoke.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import unicodedata
from collections import OrderedDict
from typing import Any

import aiohttp
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from axtui.adapters.bridge import Bridges, SessionBridge
from axtui.adapters.threads import open_session, thread_session_id
from axtui.adapters.view import MAX_CHARS
from axtui.client import HubClient, HubUnavailable
from axtui.exitcodes import ExitCode
from axtui.slack.render import PERMISSION_ACTION
from axtui.slack.thread import SlackThread
from server.config import ClientConfig, Config, SlackConfig
from server.events import Json
from server.protocol import MAX_DISPLAY_NAME_LEN, Conflict, NotFound, ProtocolError
from server.redact import protect_logs
from server.runner import LOG_FORMAT, run_until_signal

log = logging.getLogger("axtui.slack")

SLACK_API = "https://slack.com/api/"
CATCH_UP = 7 * 24 * 3600.0  # at start, attach Slack sessions active this recently (seconds)
_SUBTYPES = {None, "file_share", "thread_broadcast"}  # message subtypes that are people talking
_SEEN = 10_000  # (channel, ts) pairs remembered to drop app_mention/message doubles


class SlackSetupError(Exception):
    """The adapter cannot start: a token Slack refuses (``exit_code`` ``USAGE``), or Slack
    cannot be reached (``FAILED``)."""

    def __init__(self, message: str, exit_code: ExitCode = ExitCode.USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def web_client(config: SlackConfig) -> AsyncWebClient:
    """The Web API client: retries rate limits as Slack's Retry-After says, and brief
    server and connection failures."""
    return AsyncWebClient(
        token=config.bot_token, base_url=config.api_url or SLACK_API,
        logger=logging.getLogger("axtui.slack.web"),
        retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=5),
                        AsyncServerErrorRetryHandler(max_retry_count=2),
                        AsyncConnectionErrorRetryHandler(max_retry_count=2)])


class SlackAdapter:
    """The running adapter: :meth:`start`, then :meth:`stop`."""

    def __init__(self, slack: SlackConfig, client: ClientConfig, *,
                 edit_interval: float = 1.0, max_chars: int = MAX_CHARS,
                 catch_up: float = CATCH_UP) -> None:
        self.config = slack
        self.web = web_client(slack)
        self.hub = HubClient(client.server, token=client.token, name="axtui-slack",
                             kind="slack")
        self.edit_interval = edit_interval
        self.max_chars = max_chars
        self.catch_up = catch_up
        self.team = self.bot_user = ""
        self.bot_id: str | None = None
        self.bridges = Bridges(self._bridge)
        self._names: dict[str, str] = {}
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._handler: AsyncSocketModeHandler | None = None
        self.app = AsyncApp(client=self.web, process_before_response=True,
                            logger=logging.getLogger("axtui.slack.bolt"))
        self.app.event("app_mention")(self._on_mention)
        self.app.event("message")(self._on_message)
        self.app.action(re.compile(f"^{PERMISSION_ACTION}:"))(self._on_permission)

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Check the bot token, connect to the hub and to Slack, attach recent threads.

        Raises :class:`SlackSetupError` for a token Slack refuses, and the hub client's
        ``HubUnavailable`` when the hub cannot be reached.
        """
        protect_logs([self.config.bot_token, self.config.app_token, self.hub.token])
        try:
            auth = await self.web.auth_test()
        except SlackApiError as exc:
            raise SlackSetupError(f"Slack refused the bot token (slack.bot_token):"
                                  f" {exc.response.get('error')}") from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SlackSetupError(f"cannot reach Slack at {self.web.base_url}: {exc}",
                                  exit_code=ExitCode.FAILED) from None
        self.team, self.bot_user = str(auth["team_id"]), str(auth["user_id"])
        self.bot_id = auth.get("bot_id")
        await self.hub.start()
        self.hub.on_notification = self._on_hub_notification
        self.hub.on_status = self._on_hub_status
        await self.hub.call("sessions/watch")
        await self._check_agent()
        try:  # the Socket Mode client would retry a refused app token for ever: check it
            await self.web.apps_connections_open(app_token=self.config.app_token)
        except SlackApiError as exc:
            await self.stop()
            raise SlackSetupError(f"Slack refused the app token (slack.app_token):"
                                  f" {exc.response.get('error')}") from None
        self._handler = AsyncSocketModeHandler(self.app, self.config.app_token,
                                               logger=logging.getLogger("axtui.slack.socket"))
        await self._handler.connect_async()  # type: ignore[no-untyped-call]
        await self._attach_recent()
        log.info("the Slack adapter is running for team %s as %s", self.team, self.bot_user)

    async def run(self) -> None:
        """:meth:`start`, then run until cancelled; :meth:`stop` on the way out (also when
        cancelled while starting)."""
        try:
            await self.start()
            await asyncio.get_running_loop().create_future()  # done only when cancelled
        finally:
            await self.stop()

    async def stop(self) -> None:
        """Disconnect from Slack and the hub; bridges stop where they are."""
        if self._handler is not None:
            await self._handler.close_async()  # type: ignore[no-untyped-call]
            self._handler = None
        for task in list(self._tasks):
            task.cancel()
        await self.bridges.close()
        await self.hub.close()

    async def _check_agent(self) -> None:
        agents = [a["id"] for a in (await self.hub.call("agents/list"))["agents"]]
        if self.config.agent is not None and self.config.agent not in agents:
            log.warning("the hub has no agent named %r (it has %s): new threads will be told"
                        " so", self.config.agent, ", ".join(agents) or "none")

    async def _attach_recent(self) -> None:
        since = time.time() * 1000 - self.catch_up * 1000
        async for session in self.hub.list_sessions():
            if session["updatedAt"] < since:
                break
            self.bridges.attach(session)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_hub_status(self, text: str) -> None:
        if text == "reconnected":  # a watch lasts one connection: watch again, catch up
            self._spawn(self._rewatch())

    async def _rewatch(self) -> None:
        with contextlib.suppress(ProtocolError, ConnectionError):
            await self.hub.call("sessions/watch")
            await self._attach_recent()

    def _on_hub_notification(self, method: str, params: dict[str, Any]) -> None:
        session = params.get("session")
        if method == "session/updated" and isinstance(session, dict):
            self.bridges.attach(session)

    # --- bridges -----------------------------------------------------------------------------

    def _thread_of(self, session: dict[str, Any]) -> dict[str, str] | None:
        slack = (session.get("metadata") or {}).get("slack")
        if not isinstance(slack, dict) or slack.get("team") != self.team:
            return None
        if not all(isinstance(slack.get(k), str) for k in ("channel", "thread_ts")):
            return None
        return slack

    def _bridge(self, session: dict[str, Any]) -> SessionBridge | None:
        slack = self._thread_of(session)
        if slack is None:
            return None
        sid = session["sessionId"]
        surface = SlackThread(self.web, sid, slack["channel"], slack["thread_ts"], self.bot_id)
        return SessionBridge(self.hub, sid, surface, _own_ref,
                             edit_interval=self.edit_interval, max_chars=self.max_chars)

    # --- Slack → hub -------------------------------------------------------------------------

    async def _on_mention(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        await self._on_human(event, body, mention=True)

    async def _on_message(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        await self._on_human(event, body, mention=False)

    async def _on_human(self, event: dict[str, Any], body: dict[str, Any], *,
                        mention: bool) -> None:
        user, text = event.get("user"), str(event.get("text") or "")
        if event.get("subtype") not in _SUBTYPES or event.get("bot_id") or not user \
                or user == self.bot_user:
            return  # edits, joins, bots (this one included)
        channel, ts = str(event["channel"]), str(event["ts"])
        direct = event.get("channel_type") == "im"
        if not mention and not direct and f"<@{self.bot_user}" in text:
            return  # the app_mention event of the same message brings it
        if (channel, ts) in self._seen:
            return
        self._seen[(channel, ts)] = None
        while len(self._seen) > _SEEN:
            self._seen.popitem(last=False)
        try:
            await self._publish(event, body, user, text, direct or mention)
        except BaseException:
            self._seen.pop((channel, ts), None)  # let Slack's retry have another go
            raise

    async def _publish(self, event: dict[str, Any], body: dict[str, Any], user: str,
                       text: str, opens: bool) -> None:
        channel, ts = str(event["channel"]), str(event["ts"])
        thread_ts = str(event.get("thread_ts") or ts)
        team = str(event.get("team") or body.get("team_id") or self.team)
        sid = thread_session_id("slack", team, channel, thread_ts)
        text = re.sub(rf"<@{re.escape(self.bot_user)}(\|[^>]*)?>", "", text).strip()
        if opens:
            session = await self._open(sid, team, channel, thread_ts, text)
        elif "thread_ts" in event:
            try:
                session = await self.hub.get_session(sid)
            except NotFound:
                return  # a thread the bot is not part of
        else:
            return  # a channel message not meant for the bot
        if session is None:
            return
        name = await self._display_name(user)
        await self.hub.publish(sid, "user.message", {
            "text": text, "slack": {"team": team, "channel": channel, "ts": ts, "user": user},
        }, idempotency_key=f"slack:{body.get('event_id') or f'{channel}:{ts}'}",
            on_behalf_of=name)
        self.bridges.attach(session)

    async def _open(self, sid: str, team: str, channel: str, thread_ts: str,
                    text: str) -> dict[str, Any] | None:
        title = text.split("\n", 1)[0][:80] or "Slack thread"
        metadata = {"slack": {"team": team, "channel": channel, "thread_ts": thread_ts}}
        try:
            session, created = await open_session(self.hub, sid, agent=self.config.agent,
                                                  title=title, metadata=metadata)
        except NotFound as exc:
            agents = [a["id"] for a in (await self.hub.call("agents/list"))["agents"]]
            await SlackThread(self.web, sid, channel, thread_ts, self.bot_id).reply(
                f"⚠️ I can't start a session for this thread: {exc.message}. The hub has"
                f" {', '.join(agents) or 'no agents'}; set `slack.agent` in the adapter's"
                " config to one of them.")
            return None
        if created:
            log.info("thread %s/%s is session %s", channel, thread_ts, sid)
        return session

    async def _display_name(self, user: str) -> str:
        """The person's Slack display name, as the hub takes it for ``onBehalfOf``."""
        name = self._names.get(user)
        if name is None:
            try:
                found = (await self.web.users_info(user=user))["user"]
                profile = found.get("profile") or {}
                name = (profile.get("display_name") or profile.get("real_name")
                        or found.get("real_name") or found.get("name") or user)
            except (SlackApiError, KeyError) as exc:
                log.warning("cannot look up Slack user %s: %s", user, exc)
                return user
            name = as_display_name(str(name), user)
            self._names[user] = name
        return name

    async def _on_permission(self, ack: Any, body: dict[str, Any],
                             action: dict[str, Any]) -> None:
        await ack()
        try:
            value = json.loads(action["value"])
            sid, request_id = str(value["session"]), str(value["requestId"])
            option_id = str(value["optionId"])
        except (KeyError, TypeError, ValueError):
            log.warning("ignoring a permission button with a bad value")
            return
        user = str(body["user"]["id"])
        name = await self._display_name(user)
        try:
            await self.hub.publish(sid, "permission.response", {
                "requestId": request_id, "optionId": option_id,
            }, idempotency_key=f"slack:action:{action.get('action_ts')}:{user}",
                on_behalf_of=name)
        except (Conflict, NotFound) as exc:
            channel = str((body.get("channel") or {}).get("id"))
            message = body.get("message") or {}
            with contextlib.suppress(SlackApiError):
                await self.web.chat_postEphemeral(
                    channel=channel, user=user, text=f"Too late: {exc.message}.",
                    thread_ts=message.get("thread_ts") or message.get("ts"))


async def serve(config: Config, slack: SlackConfig) -> None:
    """Run the adapter until SIGINT or SIGTERM."""
    await run_until_signal(SlackAdapter(slack, config.client).run())


def run(config: Config) -> ExitCode:
    """``axtui slack``: run the adapter in the foreground until SIGINT or SIGTERM; returns
    the exit code (``OK`` stopped, ``USAGE`` bad config or a token Slack refuses,
    ``FAILED`` Slack unreachable, ``UNREACHABLE`` the hub unreachable)."""
    logging.basicConfig(level=config.hub.log_level.upper(), format=LOG_FORMAT)
    if config.slack is None:
        log.error("the config has no slack: section (see config.example.yaml and"
                  " docs/slack.md)")
        return ExitCode.USAGE
    protect_logs([config.client.token, config.slack.bot_token, config.slack.app_token],
                 logging.getLogger().handlers)  # every record this process prints
    try:
        asyncio.run(serve(config, config.slack))
    except SlackSetupError as exc:
        log.error("%s", exc)
        return exc.exit_code
    except HubUnavailable as exc:
        log.error("%s (client.server in the config)", exc)
        return ExitCode.UNREACHABLE
    return ExitCode.OK


def as_display_name(name: str, fallback: str) -> str:
    """``name`` made fit for ``onBehalfOf``: whitespace and control characters collapsed to
    single spaces, at most 64 characters; ``fallback`` (the user id) when nothing is left."""
    name = " ".join("".join(" " if unicodedata.category(c) == "Cc" else c
                            for c in name).split())
    if len(name) > MAX_DISPLAY_NAME_LEN:
        name = name[:MAX_DISPLAY_NAME_LEN - 1] + "…"
    return name or fallback


def _own_ref(event: Json) -> str | None:
    """The Slack ts of a message this adapter published from Slack (already in the thread)."""
    source = event.get("source") or {}
    slack = (event.get("data") or {}).get("slack")
    if source.get("client") == "slack" and str(event.get("idempotencyKey") or "").startswith(
            "slack:") and isinstance(slack, dict) and isinstance(slack.get("ts"), str):
        return str(slack["ts"])
    return None
