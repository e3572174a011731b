"""A local fake of Slack for the adapter's tests: the Web API over HTTP and Socket Mode
over a websocket, on 127.0.0.1 with a random port, spoken to by the real slack_sdk and
slack_bolt code through the configured API URL.

It keeps channels' messages (with metadata, blocks and reactions), answers the Web API
methods the adapter uses, checks tokens, can answer a call with HTTP 429 once, and plays
Slack's side of Socket Mode: ``hello``, ``events_api`` and ``interactive`` envelopes, acks.
Like Slack, it sends the app a ``message`` event for the bot's own posts and a
``message_changed`` for its edits. Every call is recorded; :meth:`FakeSlack.wait_for`
waits until a predicate over the recorded state holds.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import WSMsgType, web

T = TypeVar("T")

TEAM, BOT_USER, BOT_ID, APP_ID = "T0FAKE", "UBOT", "BBOT", "A0FAKE"
USERS = {"U1": "Alice", "U2": "Bob"}


@dataclass
class Call:
    """One Web API request as the fake saw it, and the HTTP status it answered."""

    method: str
    params: dict[str, Any]
    status: int = 200
    response: dict[str, Any] = field(default_factory=dict)


class FakeSlack:
    """The fake; ``await start()``, then point the adapter at :attr:`api_url`."""

    def __init__(self, bot_token: str = "xoxb-fake-bot", app_token: str = "xapp-fake-app",
                 echo_bot_events: bool = True) -> None:
        self.bot_token = bot_token
        self.app_token = app_token
        self.echo_bot_events = echo_bot_events
        self.calls: list[Call] = []
        self.messages: dict[str, list[dict[str, Any]]] = {}
        self.acks: dict[str, dict[str, Any]] = {}
        self.envelopes: list[dict[str, Any]] = []
        self.ephemeral: list[dict[str, Any]] = []
        self._failures: dict[str, list[tuple[int, int]]] = {}
        self._sockets: list[web.WebSocketResponse] = []
        self._changed = asyncio.Condition()
        self._ts = itertools.count(int(time.time()) * 1_000_000)
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on 127.0.0.1, on a free port."""
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_get("/link", self._socket)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        """Close the sockets and stop listening."""
        for ws in list(self._sockets):
            await ws.close()
        for task in list(self._tasks):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_url(self) -> str:
        """What the adapter's ``slack.api_url`` must be."""
        return f"http://127.0.0.1:{self.port}/api/"

    # --- what tests use -------------------------------------------------------------------

    async def wait_for(self, predicate: Callable[[], T], timeout: float = 15.0) -> T:
        """Wait until ``predicate()`` is truthy (checked after every change); return it."""
        async with asyncio.timeout(timeout), self._changed:
            while not (result := predicate()):
                await self._changed.wait()
            return result

    def fail_next(self, method: str, status: int = 429, retry_after: int = 1) -> None:
        """Answer the next call of ``method`` with ``status`` (and ``Retry-After``)."""
        self._failures.setdefault(method, []).append((status, retry_after))

    def thread(self, channel: str, thread_ts: str) -> list[dict[str, Any]]:
        """The thread's messages, root first, in order."""
        return [m for m in self.messages.get(channel, [])
                if m["ts"] == thread_ts or m.get("thread_ts") == thread_ts]

    def bot_messages(self, channel: str, thread_ts: str) -> list[dict[str, Any]]:
        """The bot's messages in a thread."""
        return [m for m in self.thread(channel, thread_ts) if m.get("bot_id") == BOT_ID]

    def calls_to(self, method: str) -> list[Call]:
        """The recorded calls of one Web API method."""
        return [c for c in self.calls if c.method == method]

    async def say(self, text: str, *, user: str = "U1", channel: str = "C1",
                  thread_ts: str | None = None, direct: bool = False) -> dict[str, Any]:
        """A person writes a message: stored, then sent as a ``message`` event and, when
        it mentions the bot outside a DM, an ``app_mention`` event (as Slack does).
        Returns the message, with ``event_ids`` of the events sent."""
        ts = self._next_ts()
        message: dict[str, Any] = {"type": "message", "user": user, "text": text, "ts": ts,
                                   "team": TEAM}
        if thread_ts is not None:
            message["thread_ts"] = thread_ts
        self.messages.setdefault(channel, []).append(message)
        event = {**message, "channel": channel, "event_ts": ts,
                 "channel_type": "im" if direct else "channel"}
        ids = [await self.send_event(event)]
        if f"<@{BOT_USER}>" in text and not direct:
            mention = {k: v for k, v in event.items() if k != "channel_type"}
            ids.append(await self.send_event({**mention, "type": "app_mention"}))
        await self._bump()
        return {**message, "channel": channel, "event_ids": ids}

    async def send_event(self, event: dict[str, Any], event_id: str | None = None,
                         retry_attempt: int = 0) -> str:
        """Send an ``events_api`` envelope; returns its event id."""
        event_id = event_id or f"Ev{uuid.uuid4().hex[:10].upper()}"
        await self._send({
            "envelope_id": str(uuid.uuid4()), "type": "events_api",
            "accepts_response_payload": False, "retry_attempt": retry_attempt,
            "retry_reason": "timeout" if retry_attempt else "",
            "payload": {
                "token": "verification-token", "team_id": TEAM, "api_app_id": APP_ID,
                "event": event, "type": "event_callback", "event_id": event_id,
                "event_time": int(time.time()),
                "authorizations": [{"enterprise_id": None, "team_id": TEAM,
                                    "user_id": BOT_USER, "is_bot": True,
                                    "is_enterprise_install": False}],
                "is_ext_shared_channel": False,
            }})
        return event_id

    async def click(self, channel: str, ts: str, option_id: str, user: str = "U1",
                    blocks: list[dict[str, Any]] | None = None) -> str:
        """A person clicks the permission button for ``option_id`` on message ``ts`` (as it
        is now, or as ``blocks`` showed it on a screen not yet refreshed); returns the
        envelope id (its ack lands in :attr:`acks`)."""
        message = next(m for m in self.messages[channel] if m["ts"] == ts)
        button, block_id = next(
            (e, b.get("block_id")) for b in blocks or message.get("blocks") or []
            if b.get("type") == "actions" for e in b["elements"]
            if e["action_id"].endswith(f":{option_id}"))
        envelope_id = str(uuid.uuid4())
        await self._send({
            "envelope_id": envelope_id, "type": "interactive",
            "accepts_response_payload": False,
            "payload": {
                "type": "block_actions", "api_app_id": APP_ID, "token": "verification-token",
                "user": {"id": user, "username": USERS[user].lower(), "team_id": TEAM},
                "team": {"id": TEAM, "domain": "fake"},
                "container": {"type": "message", "message_ts": ts, "channel_id": channel,
                              "is_ephemeral": False},
                "trigger_id": f"{time.time()}.trigger", "channel": {"id": channel},
                "message": message, "state": {"values": {}},
                "response_url": f"http://127.0.0.1:{self.port}/api/response",
                "actions": [{**button, "block_id": block_id,
                             "action_ts": f"{time.time():.6f}"}],
            }})
        return envelope_id

    async def disconnect(self) -> None:
        """Ask every connected app to reconnect, as Slack does now and then."""
        for ws in list(self._sockets):
            await ws.send_str(json.dumps({"type": "disconnect", "reason": "refresh_requested"}))

    # --- Socket Mode ----------------------------------------------------------------------

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_str(json.dumps({"type": "hello", "num_connections": len(self._sockets),
                                      "connection_info": {"app_id": APP_ID}}))
        await self._bump()
        try:
            async for frame in ws:
                if frame.type == WSMsgType.TEXT:
                    ack = json.loads(frame.data)
                    self.acks[ack.get("envelope_id", "")] = ack
                    await self._bump()
        finally:
            self._sockets.remove(ws)
            await self._bump()
        return ws

    async def _send(self, envelope: dict[str, Any]) -> None:
        await self.wait_for(lambda: any(not ws.closed for ws in self._sockets))
        ws = next(ws for ws in reversed(self._sockets) if not ws.closed)
        self.envelopes.append(envelope)
        await ws.send_str(json.dumps(envelope))

    def _send_later(self, event: dict[str, Any]) -> None:
        if not self.echo_bot_events or not any(not ws.closed for ws in self._sockets):
            return
        task = asyncio.create_task(self.send_event(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- the Web API ----------------------------------------------------------------------

    def _next_ts(self) -> str:
        value = next(self._ts)
        return f"{value // 1_000_000}.{value % 1_000_000:06d}"

    async def _bump(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params: dict[str, Any] = dict(request.query)
        if request.method == "POST" and request.can_read_body:
            if request.content_type == "application/json":
                params.update(await request.json())
            else:
                params.update(dict(await request.post()))
        call = Call(method, params)
        self.calls.append(call)
        try:
            failures = self._failures.get(method)
            if failures:
                call.status, retry_after = failures.pop(0)
                call.response = {"ok": False, "error": "ratelimited"}
                return web.json_response(call.response, status=call.status,
                                         headers={"Retry-After": str(retry_after)})
            wanted = self.app_token if method == "apps.connections.open" else self.bot_token
            if request.headers.get("Authorization") != f"Bearer {wanted}":
                call.response = {"ok": False, "error": "invalid_auth"}
            else:
                handler = getattr(self, "_" + method.replace(".", "_"), None)
                call.response = handler(params) if handler else {"ok": False,
                                                                  "error": "unknown_method"}
            return web.json_response(call.response)
        finally:
            await self._bump()

    def _auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "url": "https://fake.slack.com/", "team": "Fake", "user": "axtui",
                "team_id": TEAM, "user_id": BOT_USER, "bot_id": BOT_ID,
                "is_enterprise_install": False}

    def _apps_connections_open(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "url": f"ws://127.0.0.1:{self.port}/link?ticket={uuid.uuid4()}"}

    def _find(self, channel: str, ts: str) -> dict[str, Any] | None:
        return next((m for m in self.messages.get(channel, []) if m["ts"] == ts), None)

    def _chat_postMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = params["channel"]
        message: dict[str, Any] = {"type": "message", "user": BOT_USER, "bot_id": BOT_ID,
                                   "app_id": APP_ID, "text": params.get("text", ""),
                                   "ts": self._next_ts(), "team": TEAM}
        for key in ("thread_ts", "blocks", "metadata"):
            value = params.get(key)
            if isinstance(value, str) and key != "thread_ts":
                value = json.loads(value)
            if value:
                message[key] = value
        self.messages.setdefault(channel, []).append(message)
        self._send_later({**message, "channel": channel, "event_ts": message["ts"],
                          "channel_type": "channel"})
        return {"ok": True, "channel": channel, "ts": message["ts"], "message": message}

    def _chat_update(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = params["channel"]
        message = self._find(channel, params["ts"])
        if message is None:
            return {"ok": False, "error": "message_not_found"}
        previous = dict(message)
        message["text"] = params.get("text", message["text"])
        for key in ("blocks", "metadata"):
            value = params.get(key)
            if isinstance(value, str):
                value = json.loads(value)
            if value is not None:
                message[key] = value
            if key == "blocks" and value == []:
                message.pop("blocks", None)
        message["edited"] = {"user": BOT_USER, "ts": self._next_ts()}
        self._send_later({"type": "message", "subtype": "message_changed", "hidden": True,
                          "channel": channel, "ts": self._next_ts(), "message": dict(message),
                          "previous_message": previous, "channel_type": "channel"})
        return {"ok": True, "channel": channel, "ts": message["ts"], "text": message["text"]}

    def _chat_postEphemeral(self, params: dict[str, Any]) -> dict[str, Any]:
        self.ephemeral.append(params)
        return {"ok": True, "message_ts": self._next_ts()}

    def _conversations_replies(self, params: dict[str, Any]) -> dict[str, Any]:
        thread = self.thread(params["channel"], params["ts"])
        if not thread:
            return {"ok": False, "error": "thread_not_found"}
        with_metadata = str(params.get("include_all_metadata")).lower() in ("true", "1")
        messages = [m if with_metadata else {k: v for k, v in m.items() if k != "metadata"}
                    for m in thread]
        return {"ok": True, "messages": messages, "has_more": False,
                "response_metadata": {"next_cursor": ""}}

    def _reactions_add(self, params: dict[str, Any]) -> dict[str, Any]:
        message = self._find(params["channel"], params["timestamp"])
        if message is None:
            return {"ok": False, "error": "message_not_found"}
        names = message.setdefault("reactions_set", [])
        if params["name"] in names:
            return {"ok": False, "error": "already_reacted"}
        names.append(params["name"])
        return {"ok": True}

    def _reactions_remove(self, params: dict[str, Any]) -> dict[str, Any]:
        message = self._find(params["channel"], params["timestamp"])
        if message is None:
            return {"ok": False, "error": "message_not_found"}
        names = message.setdefault("reactions_set", [])
        if params["name"] not in names:
            return {"ok": False, "error": "no_reaction"}
        names.remove(params["name"])
        return {"ok": True}

    def _users_info(self, params: dict[str, Any]) -> dict[str, Any]:
        user = params.get("user", "")
        if user not in USERS:
            return {"ok": False, "error": "user_not_found"}
        name = USERS[user]
        return {"ok": True, "user": {"id": user, "name": name.lower(), "real_name": name,
                                     "profile": {"display_name": name, "real_name": name}}}
