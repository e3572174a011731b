"""Helpers for tests of the HTTP API (http.md) against a real hub: a JSON client and an
SSE reader over real sockets, with aiohttp's client.

The error codes are written out as http.md gives them (see tests/server/raw_helpers.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from server.hub import Hub
from tests.conftest import local_headers


@dataclass
class Answer:
    """One HTTP answer: its status, headers and decoded JSON body (``None`` if not JSON)."""

    status: int
    headers: Mapping[str, str]
    body: Any
    raw: bytes = b""

    @property
    def code(self) -> int:
        """The JSON-RPC code of an error body."""
        code: int = self.body["error"]["code"]
        return code

    @property
    def data(self) -> dict[str, Any]:
        """The ``data`` of an error body."""
        data: dict[str, Any] = self.body["error"].get("data") or {}
        return data


def auth_headers(hub: Hub, token: str | None = None) -> dict[str, str]:
    """The Authorization header for ``hub``: ``token``, else (local mode) the local secret."""
    if token is not None:
        return {"Authorization": f"Bearer {token}"}
    return local_headers(hub) if hub.auth.local_mode else {}


class Http:
    """A JSON client of one hub's HTTP API, authenticated as ``token`` (or locally)."""

    def __init__(self, hub: Hub, session: aiohttp.ClientSession,
                 token: str | None = None) -> None:
        assert hub.http is not None, "the hub serves no HTTP API"
        self.hub = hub
        self.url = hub.http.url
        self.session = session
        self.headers = auth_headers(hub, token)

    async def request(self, method: str, path: str, body: Any = None, *,
                      raw: bytes | None = None, headers: Mapping[str, str] | None = None,
                      auth: bool = True, timeout: float = 10.0) -> Answer:
        """Send one request (``body`` as JSON, or ``raw`` bytes as they are)."""
        sent = {**(self.headers if auth else {}), **(headers or {})}
        data: bytes | None = raw
        if body is not None:
            data = orjson.dumps(body)
            sent.setdefault("Content-Type", "application/json")
        async with self.session.request(method, self.url + path, data=data, headers=sent,
                                        timeout=aiohttp.ClientTimeout(total=timeout)) as r:
            content = await r.read()
            try:
                decoded = orjson.loads(content) if content else None
            except orjson.JSONDecodeError:
                decoded = None
            return Answer(r.status, r.headers, decoded, content)

    async def get(self, path: str, **kwargs: Any) -> Answer:
        """GET ``path``."""
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, body: Any = None, **kwargs: Any) -> Answer:
        """POST ``body`` to ``path``."""
        return await self.request("POST", path, body, **kwargs)

    async def ok(self, method: str, path: str, body: Any = None, status: int = 200,
                 **kwargs: Any) -> Any:
        """A request that must answer ``status``; its body."""
        answer = await self.request(method, path, body, **kwargs)
        assert answer.status == status, (answer.status, answer.body)
        return answer.body

    async def create(self, sid: str, **params: Any) -> dict[str, Any]:
        """Create session ``sid``; its Session object."""
        body = await self.ok("POST", "/v1/sessions", {"sessionId": sid, **params}, 201)
        session: dict[str, Any] = body["session"]
        return session

    async def publish(self, sid: str, type_: str = "note", **params: Any) -> dict[str, Any]:
        """Publish an event; the answer's body."""
        answer: dict[str, Any] = await self.ok("POST", f"/v1/sessions/{sid}/events",
                                               {"type": type_, **params})
        return answer

    async def history(self, sid: str, query: str = "") -> dict[str, Any]:
        """``GET .../events?query``."""
        body: dict[str, Any] = await self.ok("GET", f"/v1/sessions/{sid}/events{query}")
        return body

    async def events(self, sid: str) -> list[dict[str, Any]]:
        """Every stored event of ``sid``."""
        events: list[dict[str, Any]] = (await self.history(sid, "?limit=5000"))["events"]
        return events


@asynccontextmanager
async def http_client(hub: Hub, token: str | None = None) -> AsyncIterator[Http]:
    """An :class:`Http` client of ``hub`` with its own connection pool."""
    async with aiohttp.ClientSession() as session:
        yield Http(hub, session, token)


@dataclass
class Message:
    """One SSE message: its ``id:`` and its ``data:`` lines joined."""

    id: str | None
    data: str

    @property
    def event(self) -> dict[str, Any]:
        """The event its data holds."""
        event: dict[str, Any] = orjson.loads(self.data)
        return event


@dataclass
class SseReader:
    """An open SSE stream, parsed line by line (messages, comments and ``retry:``)."""

    response: aiohttp.ClientResponse
    comments: list[str] = field(default_factory=list)
    retry: str | None = None
    ended: bool = False

    async def next(self, timeout: float = 10.0) -> Message | None:
        """The next message, or ``None`` when the stream ends."""
        ident: str | None = None
        data: list[str] = []
        async with asyncio.timeout(timeout):
            while True:
                line = await self.response.content.readline()
                if not line:
                    self.ended = True
                    return None
                text = line.decode().rstrip("\r\n")
                if not text:
                    if data:
                        return Message(ident, "\n".join(data))
                    continue
                name, _, value = text.partition(":")
                value = value.removeprefix(" ")
                if name == "":
                    self.comments.append(value)
                elif name == "id":
                    ident = value
                elif name == "data":
                    data.append(value)
                elif name == "retry":
                    self.retry = value
                else:
                    raise AssertionError(f"an SSE field that http.md does not send: {text!r}")

    async def take(self, count: int, timeout: float = 10.0) -> list[Message]:
        """The next ``count`` messages (fails if the stream ends first)."""
        out: list[Message] = []
        async with asyncio.timeout(timeout):
            while len(out) < count:
                message = await self.next(timeout)
                assert message is not None, f"the stream ended after {len(out)} of {count}"
                out.append(message)
        return out

    async def rest(self, timeout: float = 10.0) -> list[Message]:
        """Every message until the stream ends."""
        out: list[Message] = []
        async with asyncio.timeout(timeout):
            while (message := await self.next(timeout)) is not None:
                out.append(message)
        return out


@asynccontextmanager
async def sse(http: Http, sid: str, query: str = "",
              headers: Mapping[str, str] | None = None,
              read_bufsize: int = 2**16) -> AsyncIterator[SseReader]:
    """Open ``GET /v1/sessions/{sid}/stream?query`` (which must answer 200)."""
    async with http.session.get(
        f"{http.url}/v1/sessions/{sid}/stream{query}", headers={**http.headers, **(headers or {})},
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=5), read_bufsize=read_bufsize,
    ) as response:
        assert response.status == 200, (response.status, await response.read())
        yield SseReader(response)
