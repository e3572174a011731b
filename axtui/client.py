"""``HubClient``: the one way axtui's clients (TUI, Slack, CLI) talk to a hub.

    async with HubClient("ws://127.0.0.1:8494/ws", token=..., kind="cli") as hub:
        session = await hub.create_session(agent="echo", title="hello")
        await hub.publish(session["sessionId"], "user.message", {"text": "hi"})
        async for event in hub.subscribe(session["sessionId"]):
            print(event["seq"], event["type"])

The client reconnects by itself (with backoff) when the connection drops, initializes
again and re-subscribes every open subscription from the last seq it received, with the
epoch it saw: a subscription's iterator continues with no gap and no duplicate. Requests
that were under way when the connection dropped fail with :class:`ConnectionLost`
(a publish with an ``idempotency_key`` is retried for you, since retrying it is safe).
Hub errors are raised as the classes of :mod:`server.protocol` (``NotFound``,
``Forbidden``, ``CannotResume``, ...), all subclasses of ``ProtocolError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import unquote

import orjson
from websockets.asyncio.client import ClientConnection, connect, unix_connect
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
)

from axtui import __version__
from axtui.backoff import Backoff
from server.jsonrpc import JsonRpcPeer, Notification
from server.local_secret import secret_for
from server.protocol import (
    PROTOCOL_VERSION,
    CannotResume,
    NotFound,
    Overloaded,
    ProtocolError,
    error_from_json,
)
from server.redact import protect_logs
from server.sandbox import UNIX_SCHEME

RETRY_OVERLOADED = 30.0  # seconds a keyed publish or a subscribe is retried on -32029
log = logging.getLogger("axtui.client")

__all__ = [
    "CannotResume",
    "ConnectionLost",
    "HubAuthError",
    "HubClient",
    "HubUnavailable",
    "ProtocolError",
    "Subscription",
]


class HubUnavailable(ConnectionError):
    """The hub cannot be reached (and, with reconnecting off, will not be retried)."""


class HubAuthError(HubUnavailable):
    """The hub refused the token: retrying will not help."""


class ConnectionLost(ConnectionError):
    """The connection dropped while a request was under way; its outcome is unknown."""


class Subscription:
    """An async iterator over a session's events, resuming across reconnects.

    ``last_seq`` is the seq of the last event received; ``epoch`` the session's epoch.
    """

    def __init__(self, client: HubClient, session_id: str, after_seq: int,
                 epoch: str | None, max_batches: int) -> None:
        self.client = client
        self.session_id = session_id
        self.last_seq = after_seq
        self.epoch = epoch
        self.head_seq: int | None = None
        self._batches: asyncio.Queue[list[dict[str, Any]] | BaseException] = asyncio.Queue(
            max_batches
        )
        self._current: list[dict[str, Any]] = []
        self._index = 0
        self.closed = False
        self.ready = asyncio.Event()  # set once the first subscribe has been answered

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> dict[str, Any]:
        while self._index >= len(self._current):
            if self.closed and self._batches.empty():
                raise StopAsyncIteration
            item = await self._batches.get()
            if isinstance(item, BaseException):
                self.closed = True
                if isinstance(item, StopAsyncIteration):
                    raise item
                raise item
            self._current, self._index = item, 0
        event = self._current[self._index]
        self._index += 1
        return event

    async def next_batch(self) -> list[dict[str, Any]]:
        """The next batch of events as the hub sent them (for consumers that render in bulk)."""
        if self._index < len(self._current):
            batch, self._current, self._index = self._current[self._index:], [], 0
            return batch
        first = await self.__anext__()
        rest, self._current, self._index = self._current[self._index:], [], 0
        return [first, *rest]

    async def _deliver(self, events: list[dict[str, Any]]) -> None:
        fresh = [e for e in events if e["seq"] > self.last_seq]
        if not fresh:
            return
        if fresh[0]["seq"] != self.last_seq + 1:
            raise ProtocolError(
                f"gap in session {self.session_id}: expected seq {self.last_seq + 1},"
                f" got {fresh[0]['seq']}"
            )
        self.last_seq = fresh[-1]["seq"]
        await self._batches.put(fresh)

    def _fail(self, exc: BaseException) -> None:
        self.client._subscriptions.pop(self.session_id, None)
        with contextlib.suppress(asyncio.QueueFull):
            self._batches.put_nowait(exc)
        self.closed = True

    async def close(self) -> None:
        """Unsubscribe and end the iterator."""
        if self.closed:
            return
        self.closed = True
        if self.client._subscriptions.get(self.session_id) is self:
            del self.client._subscriptions[self.session_id]
            with contextlib.suppress(ConnectionError, ProtocolError):
                await self.client.call("session/unsubscribe", {"sessionId": self.session_id})
        with contextlib.suppress(asyncio.QueueFull):
            self._batches.put_nowait(StopAsyncIteration())


class HubClient:
    """A connection to a hub that stays connected. Use as an async context manager."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        name: str = "axtui",
        kind: str = "cli",
        reconnect: bool = True,
        max_backoff: float = 5.0,
        open_timeout: float = 10.0,
        max_batches: int = 256,
    ) -> None:
        self.url = url
        self.token = token
        protect_logs([token])  # websockets.client logs our Authorization header at DEBUG
        self.client_info = {"name": name, "kind": kind, "version": __version__}
        self.reconnect = reconnect
        self.max_backoff = max_backoff
        self.open_timeout = open_timeout
        self.max_batches = max_batches
        self.principal: dict[str, str] = {}
        self.connected = asyncio.Event()
        self.on_notification: Callable[[str, Any], None] | None = None
        self.on_status: Callable[[str], None] | None = None
        self._ws: ClientConnection | None = None
        self._peer = JsonRpcPeer(self._send, error_from_json)
        self._subscriptions: dict[str, Subscription] = {}
        self._runner: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # re-subscriptions under way
        self._closed = False
        self._fatal: BaseException | None = None

    async def __aenter__(self) -> HubClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Connect and initialize; raises :class:`HubUnavailable` if the first try fails."""
        ws = await self._open()
        self._runner = asyncio.create_task(self._run(ws), name="hub client")

    async def close(self) -> None:
        """Close the connection; subscriptions end."""
        self._closed = True
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        if self._ws is not None:
            await self._ws.close()
        for sub in list(self._subscriptions.values()):
            sub._fail(StopAsyncIteration())

    # --- connection ------------------------------------------------------------------------

    async def _open(self) -> ClientConnection:
        # No token for a hub of this machine in local mode: its secret, read from its data
        # dir (found through the runtime dir), if we may read it.
        token = self.token or secret_for(self.url)
        if token != self.token:
            protect_logs([token])
        headers = {"Authorization": f"Bearer {token}"} if token else None
        options: dict[str, Any] = {
            "additional_headers": headers, "open_timeout": self.open_timeout, "max_size": None,
            "compression": None, "user_agent_header": f"axtui/{__version__}"}
        try:
            if self.url.startswith(UNIX_SCHEME):  # a sandboxed agent's way in, no network
                ws = await unix_connect(unquote(self.url.removeprefix(UNIX_SCHEME)),
                                        "ws://localhost/ws", **options)
            else:
                ws = await connect(self.url, **options)
        except InvalidStatus as exc:
            if exc.response.status_code == 401:
                raise HubAuthError(f"the hub at {self.url} refused the token") from None
            raise HubUnavailable(f"the hub at {self.url} answered HTTP "
                                 f"{exc.response.status_code}") from None
        except InvalidURI as exc:
            raise HubUnavailable(f"{self.url} is not a websocket URL: {exc}") from None
        except InvalidHandshake as exc:  # closed mid-handshake: a hub dying, a balancer
            raise HubUnavailable(f"the hub at {self.url} did not finish the handshake:"
                                 f" {exc}") from None
        except (OSError, TimeoutError) as exc:
            raise HubUnavailable(f"cannot reach the hub at {self.url}: {exc}") from None
        try:
            await ws.send(orjson.dumps({
                "jsonrpc": "2.0", "id": 0, "method": "initialize",
                "params": {"protocolVersion": PROTOCOL_VERSION, "clientInfo": self.client_info},
            }), text=True)
            reply = orjson.loads(await asyncio.wait_for(ws.recv(), self.open_timeout))
        except (ConnectionClosed, TimeoutError) as exc:
            raise HubUnavailable(f"the hub at {self.url} closed during initialize") from exc
        if "error" in reply:
            await ws.close()
            err = error_from_json(reply["error"])
            raise HubAuthError(err.message) if err.code == -32001 else err
        self.principal = reply["result"]["principal"]
        self._ws = ws
        self.connected.set()
        return ws

    async def _run(self, ws: ClientConnection) -> None:
        backoff = Backoff(0.1, self.max_backoff, jitter=0.5)
        while True:
            self._resubscribe()
            reason = await self._read(ws)
            self._ws = None
            self.connected.clear()
            self._peer.fail_all(ConnectionLost(f"connection to the hub lost ({reason})"))
            if self._closed or not self.reconnect:
                self._end_all(HubUnavailable(f"disconnected from the hub ({reason})"))
                return
            self._status(f"disconnected ({reason}); reconnecting")
            while True:
                try:
                    ws = await self._open()
                    break
                except HubAuthError as exc:
                    self._end_all(exc)
                    return
                except (HubUnavailable, ProtocolError) as exc:
                    log.debug("reconnect failed: %s", exc)
                    await asyncio.sleep(backoff.next())
            backoff.reset()
            self._status("reconnected")

    def _status(self, text: str) -> None:
        log.info("%s", text)
        if self.on_status is not None:
            self.on_status(text)

    async def _read(self, ws: ClientConnection) -> str:
        try:
            async for frame in ws:
                message = self._peer.receive(frame)
                if isinstance(message, Notification):
                    await self._notify(message.method, message.params)
                elif message is not None:
                    log.debug("ignored a %s request from the hub", message.method)
        except ConnectionClosed:
            pass
        code = ws.close_code
        return f"close code {code}" if code is not None else "connection dropped"

    async def _notify(self, method: str, params: dict[str, Any]) -> None:
        if method == "session/events":
            sub = self._subscriptions.get(params.get("sessionId", ""))
            if sub is not None:
                try:
                    await sub._deliver(params["events"])
                except ProtocolError as exc:
                    sub._fail(exc)
            return
        if method == "session/deleted":
            sub = self._subscriptions.get(params.get("sessionId", ""))
            if sub is not None:
                sub._fail(NotFound(f"session {sub.session_id} was deleted"))
        if self.on_notification is not None:
            self.on_notification(method, params)

    def _end_all(self, exc: BaseException) -> None:
        self._fatal = exc
        for sub in list(self._subscriptions.values()):
            sub._fail(exc)

    def _resubscribe(self) -> None:
        for sub in list(self._subscriptions.values()):
            self._spawn_subscribe(sub)

    def _spawn_subscribe(self, sub: Subscription) -> None:
        task = asyncio.create_task(self._subscribe(sub))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _subscribe(self, sub: Subscription) -> None:
        params: dict[str, Any] = {"sessionId": sub.session_id, "afterSeq": sub.last_seq}
        if sub.epoch is not None:
            params["epoch"] = sub.epoch
        backoff = Backoff(0.05, 1.0, jitter=0.5)
        deadline = asyncio.get_running_loop().time() + RETRY_OVERLOADED
        while True:
            try:
                result = await self.call("session/subscribe", params)
                break
            except ConnectionLost:
                return  # the next connection re-subscribes
            except Overloaded as exc:  # "try again": a busy hub, a cluster's Redis away
                if sub.closed or asyncio.get_running_loop().time() > deadline:
                    sub._fail(exc)
                    return
                await asyncio.sleep(backoff.next())
            except (ProtocolError, HubUnavailable) as exc:
                sub._fail(exc)
                return
        sub.epoch = result["epoch"]
        sub.head_seq = result["headSeq"]
        sub.ready.set()

    # --- requests --------------------------------------------------------------------------

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Send a request and return its result; hub errors raise ``ProtocolError`` kinds."""
        if self._ws is None:
            if self._fatal is not None or self._closed:
                raise HubUnavailable("the client is closed") from self._fatal
            await self.connected.wait()
        try:
            return await self._peer.request(method, params)
        except ConnectionClosed:
            raise ConnectionLost(f"connection lost while sending {method}") from None

    async def _send(self, frame: bytes) -> None:
        ws = self._ws
        if ws is None:  # dropped again before the waiting call got to send
            raise ConnectionLost("connection to the hub lost before the request was sent")
        await ws.send(frame, text=True)

    def subscribe(self, session_id: str, after_seq: int = 0,
                  epoch: str | None = None) -> Subscription:
        """Events with seq > ``after_seq``: the backlog, then live, across reconnects.

        Raises (from the iterator) ``CannotResume`` if the session's epoch changed, and
        ``NotFound`` if it does not exist or is deleted.
        """
        if session_id in self._subscriptions:
            raise ValueError(f"already subscribed to {session_id}")
        sub = Subscription(self, session_id, after_seq, epoch, self.max_batches)
        self._subscriptions[session_id] = sub
        if self._ws is not None:
            self._spawn_subscribe(sub)
        return sub

    async def publish(
        self,
        session_id: str,
        type: str,
        data: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        state: list[dict[str, Any]] | None = None,
        on_behalf_of: str | None = None,
    ) -> dict[str, Any]:
        """Publish an event; returns ``{seq, ts, duplicate}`` once it is durable.

        ``on_behalf_of`` names the person a bridge publishes for (a chat user's display
        name): it becomes the event's ``source.name``, and the hub records this client's
        own principal in ``source.principal``.
        """
        params: dict[str, Any] = {"sessionId": session_id, "type": type, "data": data or {}}
        if idempotency_key is not None:
            params["idempotencyKey"] = idempotency_key
        if state is not None:
            params["state"] = state
        if on_behalf_of is not None:
            params["onBehalfOf"] = on_behalf_of
        # A keyed publish is retried until it lands (stored once, whichever attempt did):
        # across reconnects, and while the hub says "try again" (-32029: overloaded, or in
        # cluster mode a session changing owner), for up to RETRY_OVERLOADED seconds.
        backoff = Backoff(0.05, 1.0, jitter=0.5)
        deadline = asyncio.get_running_loop().time() + RETRY_OVERLOADED
        while True:
            try:
                result: dict[str, Any] = await self.call("session/publish", params)
                return result
            except ConnectionLost:
                if idempotency_key is None or not self.reconnect:
                    raise
            except Overloaded:
                if (idempotency_key is None or not self.reconnect
                        or asyncio.get_running_loop().time() > deadline):
                    raise
                await asyncio.sleep(backoff.next())

    async def create_session(self, **params: Any) -> dict[str, Any]:
        """Create a session (``sessionId``, ``agent``, ``title``, ``metadata``)."""
        result = await self.call("session/create", params)
        session: dict[str, Any] = result["session"]
        return session

    async def get_session(self, session_id: str) -> dict[str, Any]:
        """A session's description."""
        result = await self.call("session/get", {"sessionId": session_id})
        session: dict[str, Any] = result["session"]
        return session

    async def list_sessions(self, agent: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """Every session, newest activity first, following the cursor."""
        params: dict[str, Any] = {"limit": 1000}
        if agent is not None:
            params["agent"] = agent
        while True:
            page = await self.call("session/list", params)
            for session in page["sessions"]:
                yield session
            if "nextCursor" not in page:
                return
            params["cursor"] = page["nextCursor"]

    async def history(self, session_id: str, **params: Any) -> dict[str, Any]:
        """``session/history`` (``afterSeq``, ``beforeSeq``, ``limit``, ``types``)."""
        result: dict[str, Any] = await self.call(
            "session/history", {"sessionId": session_id, **params}
        )
        return result

    async def query(self, session_id: str, sql: str, params: Any = None,
                    limit: int | None = None) -> dict[str, Any]:
        """Read-only SQL on a session's state: ``{columns, rows, truncated}``."""
        req: dict[str, Any] = {"sessionId": session_id, "sql": sql}
        if params is not None:
            req["params"] = params
        if limit is not None:
            req["limit"] = limit
        result: dict[str, Any] = await self.call("state/query", req)
        return result

    async def exec(self, session_id: str, statements: list[dict[str, Any]]) -> dict[str, Any]:
        """Change a session's state atomically: ``{seq, changes}``."""
        result: dict[str, Any] = await self.call(
            "state/exec", {"sessionId": session_id, "statements": statements}
        )
        return result

