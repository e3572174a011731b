"""A fake OpenAI-compatible chat-completions server for tests: scripted, streaming, recording.

``async with FakeOpenAI(api_key) as fake:`` listens on 127.0.0.1 (a free port) and serves
``POST /v1/chat/completions`` with ``stream: true`` over minimal HTTP/1.1 (one request a
connection, the answer in chunked transfer encoding, as OpenAI sends it). It refuses a
request without ``Authorization: Bearer <api_key>`` (HTTP 401), records every accepted
request in :attr:`FakeOpenAI.requests`, and answers each with the next reply of its
script (:meth:`FakeOpenAI.reply`):

- :class:`Text`: the chunks, one Server-Sent Event each, then ``data: [DONE]``;
- :class:`ToolCall`: optional text, then one tool call whose JSON arguments arrive in
  pieces, finish reason ``tool_calls`` (the script's next reply answers the follow-up);
- :class:`Hold`: some chunks, then nothing until the test calls ``release()``;
- :class:`Failure`: an HTTP error status with an OpenAI-style JSON error body.

A request with no reply left in the script gets HTTP 500 saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

PATH = "/v1/chat/completions"


@dataclass
class Text:
    """A streamed answer: one event per chunk."""

    chunks: list[str]
    finish_reason: str = "stop"


@dataclass
class ToolCall:
    """The model calls one tool (after streaming ``text``, if any)."""

    name: str
    arguments: dict[str, Any]
    text: str = ""
    call_id: str = "call_fake_1"


@dataclass
class Hold:
    """Stream ``chunks``, then hang until :meth:`release` (the answer then ends normally)."""

    chunks: list[str]
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def release(self) -> None:
        """Let the answer finish."""
        self.released.set()


@dataclass
class Failure:
    """An HTTP error answer with ``{"error": {"message": ...}}``."""

    status: int
    message: str


Reply = Text | ToolCall | Hold | Failure


@dataclass
class Request:
    """One request the fake accepted."""

    headers: dict[str, str]  # names in lower case
    body: dict[str, Any]


class FakeOpenAI:
    """The server; see the module docstring."""

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.requests: list[Request] = []
        self.refused = 0  # requests without the right key
        self._script: deque[Reply] = deque()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def reply(self, *replies: Reply) -> None:
        """Add replies to the script, answered in order, one per request."""
        self._script.extend(replies)

    @property
    def url(self) -> str:
        """The base URL to configure (``.../v1``)."""
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    async def __aenter__(self) -> FakeOpenAI:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    # --- one connection ------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            await self._answer(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away, for example after a cancel
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        method, path, _ = (await reader.readline()).decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        raw = await reader.readexactly(int(headers.get("content-length", "0")))
        if (method, path) != ("POST", PATH):
            return await self._error(writer, 404, f"no route for {method} {path}")
        if headers.get("authorization") != f"Bearer {self.api_key}":
            self.refused += 1
            return await self._error(writer, 401, "Incorrect API key provided")
        body = json.loads(raw)
        self.requests.append(Request(headers, body))
        if body.get("stream") is not True:
            return await self._error(writer, 400, "this fake only answers stream: true")
        if not self._script:
            return await self._error(writer, 500, "the fake has no scripted reply left")
        reply = self._script.popleft()
        if isinstance(reply, Failure):
            return await self._error(writer, reply.status, reply.message)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n"
                     b"Connection: close\r\n\r\n")
        await self._send(writer, b": a comment, as some servers send to keep the line open\n\n")
        model = str(body.get("model", ""))
        await self._event(writer, model, {"role": "assistant", "content": ""})
        finish = "stop"
        if isinstance(reply, ToolCall):
            finish = "tool_calls"
            if reply.text:
                await self._event(writer, model, {"content": reply.text})
            arguments = json.dumps(reply.arguments)
            third = max(1, len(arguments) // 3)
            pieces = [arguments[:third], arguments[third:2 * third], arguments[2 * third:]]
            await self._event(writer, model, {"tool_calls": [{
                "index": 0, "id": reply.call_id, "type": "function",
                "function": {"name": reply.name, "arguments": ""}}]})
            for piece in pieces:
                await self._event(writer, model, {"tool_calls": [{
                    "index": 0, "function": {"arguments": piece}}]})
        else:
            for chunk in reply.chunks:
                await self._event(writer, model, {"content": chunk})
            if isinstance(reply, Hold):
                await reply.released.wait()
            else:
                finish = reply.finish_reason
        await self._event(writer, model, {}, finish)
        await self._send(writer, b"data: [DONE]\n\n")
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async def _event(self, writer: asyncio.StreamWriter, model: str, delta: dict[str, Any],
                     finish_reason: str | None = None) -> None:
        chunk = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0,
                 "model": model,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
        await self._send(writer, f"data: {json.dumps(chunk)}\n\n".encode())

    async def _send(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        """One piece of the body, as one HTTP chunk."""
        writer.write(b"%x\r\n%s\r\n" % (len(data), data))
        await writer.drain()

    async def _error(self, writer: asyncio.StreamWriter, status: int, message: str) -> None:
        body = json.dumps({"error": {"message": message, "type": "fake_error"}}).encode()
        reasons = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
                   500: "Internal Server Error"}
        writer.write(f"HTTP/1.1 {status} {reasons.get(status, 'Error')}\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                     "Connection: close\r\n\r\n".encode() + body)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
