"""A fake model server on 127.0.0.1 for the real agents of ``test_real_agents.py``.

It speaks the wire protocols those agents use, streaming as the real APIs do:

- OpenAI chat completions (``POST …/chat/completions``, SSE ``data:`` chunks, ``[DONE]``);
- OpenAI Responses (``POST …/responses``, SSE ``event:``/``data:`` pairs up to
  ``response.completed``);
- Anthropic Messages (``POST …/v1/messages``, SSE ``message_start`` … ``message_stop``);
- Gemini (``POST …/models/<model>:streamGenerateContent?alt=sse`` and ``:generateContent``).

It answers deterministically. Every answer is :data:`REPLY`, except when the newest user
text holds :data:`WRITE_TRIGGER` followed by an absolute path and the request offers a tool
that writes files: then it calls that tool to write :data:`WRITTEN` there, and once the
tool's result comes back it answers :data:`DONE`. Every request is recorded (path and
body) so that tests can see what the agent sent: the conversation, the tools offered.
"""

from __future__ import annotations

import json
import re
import shlex
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

REPLY = "Hello from the fake model."
DONE = "The fake model wrote the file."
WRITTEN = "written by the fake model\n"
WRITE_TRIGGER = "PLEASE-WRITE"
_PATH = re.compile(WRITE_TRIGGER + r"\s+(/\S+)")


@dataclass
class Recorded:
    """One request the fake received."""

    path: str
    body: dict[str, Any]

    @property
    def text(self) -> str:
        """The whole body as JSON text (to look for a word anywhere in it)."""
        return json.dumps(self.body)


@dataclass
class Decision:
    """What to answer: some text, or a call of ``tool`` with ``args``."""

    text: str = REPLY
    tool: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    custom: bool = False  # a Responses "custom" (freeform) tool: args["input"] is the text


def _patch(path: str) -> str:
    body = "".join(f"+{line}\n" for line in WRITTEN.splitlines())
    return f"*** Begin Patch\n*** Add File: {path}\n{body}*** End Patch\n"


def decide(user_text: str, after_tool: bool, tools: Iterable[str],
           custom_tools: Iterable[str] = ()) -> Decision:
    """The answer to a request whose newest user text is ``user_text``.

    ``after_tool``: the request ends with a tool's result. ``tools``: the names of the
    tools it offers (``custom_tools``: those of them that take free text).
    """
    if after_tool:
        return Decision(text=DONE)
    # A hub waking an agent that lost its conversation sends the transcript first, then
    # "Now: <the prompt>": only the prompt counts.
    match = _PATH.search(user_text.rpartition("Now: ")[2])
    names, custom = set(tools), set(custom_tools)
    if match is None:
        return Decision()
    path = match.group(1)
    for name in ("write", "Write", "write_file"):  # OpenCode, Claude Code, Gemini CLI
        if name in names:
            key = "filePath" if name == "write" else "file_path"
            return Decision(tool=name, args={key: path, "content": WRITTEN})
    if "apply_patch" in names:  # Codex
        return Decision(tool="apply_patch", args={"input": _patch(path)},
                        custom="apply_patch" in custom)
    for name in ("shell", "exec_command"):
        if name in names:
            lines = " ".join(shlex.quote(line) for line in WRITTEN.splitlines())
            script = f"printf '%s\\n' {lines} > {shlex.quote(path)}"
            key = "command" if name == "shell" else "cmd"
            value: Any = ["bash", "-lc", script] if name == "shell" else script
            return Decision(tool=name, args={key: value})
    return Decision()


def _texts(content: Any) -> str:
    """The text of a message's content: a string, or a list of parts with ``text``."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(_texts(p.get("text", p.get("content", ""))) for p in content
                         if isinstance(p, dict))
    return ""


class FakeModels:
    """The server: ``await start()``, then point agents at :attr:`url`; ``requests`` grows."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        """Listen on a free loopback port; return the base URL (no trailing slash)."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()

    def bodies(self, kind: str) -> list[Recorded]:
        """The recorded requests whose path contains ``kind``."""
        return [r for r in self.requests if kind in r.path]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if request.method != "POST":
            if path.rstrip("/").endswith("/models"):
                return web.json_response({"object": "list", "data": [
                    {"id": "fake-model", "object": "model", "owned_by": "fake"}]})
            return web.json_response({}, status=404)
        try:
            body = await request.json()
        except ValueError:
            body = {}
        self.requests.append(Recorded(path + ("?" + request.query_string
                                             if request.query_string else ""), body))
        if path.endswith("/chat/completions"):
            return await _openai_chat(request, body)
        if path.endswith("/responses"):
            return await _openai_responses(request, body)
        if path.endswith("/messages/count_tokens"):
            return web.json_response({"input_tokens": 10})
        if path.endswith("/messages"):
            return await _anthropic(request, body)
        if ":streamGenerateContent" in path or ":generateContent" in path:
            return await _gemini(request, body, stream=":stream" in path)
        if ":countTokens" in path:
            return web.json_response({"totalTokens": 10})
        return web.json_response({"error": {"message": f"fake: no {path}"}}, status=404)


async def _sse(request: web.Request, frames: AsyncIterator[str] | list[str]) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache"})
    await response.prepare(request)
    for frame in frames if isinstance(frames, list) else [f async for f in frames]:
        await response.write(frame.encode())
    await response.write_eof()
    return response


def _data(obj: Any) -> str:
    return f"data: {json.dumps(obj)}\n\n"


def _event(name: str, obj: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps({'type': name, **obj})}\n\n"


# --- OpenAI chat completions -------------------------------------------------------------

def _chat_decision(body: dict[str, Any]) -> Decision:
    messages = body.get("messages") or []
    users = [m for m in messages if m.get("role") == "user"]
    after_tool = bool(messages) and messages[-1].get("role") == "tool"
    tools = [t.get("function", {}).get("name", "") for t in body.get("tools") or []]
    return decide(_texts(users[-1].get("content")) if users else "", after_tool, tools)


async def _openai_chat(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    d = _chat_decision(body)
    cid, model = f"chatcmpl-{uuid.uuid4().hex[:12]}", body.get("model", "fake-model")
    base = {"id": cid, "object": "chat.completion.chunk", "created": 0, "model": model}
    usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    call = None
    if d.tool is not None:
        call = {"id": f"call_{uuid.uuid4().hex[:8]}", "type": "function",
                "function": {"name": d.tool, "arguments": json.dumps(d.args)}}
    if not body.get("stream"):
        message: dict[str, Any] = {"role": "assistant", "content": None if call else d.text}
        if call:
            message["tool_calls"] = [call]
        return web.json_response({**base, "object": "chat.completion", "usage": usage,
                                  "choices": [{"index": 0, "message": message,
                                               "finish_reason": "tool_calls" if call
                                               else "stop"}]})
    frames = [_data({**base, "choices": [{"index": 0, "delta": {"role": "assistant",
                                                                  "content": ""}}]})]
    if call:
        frames.append(_data({**base, "choices": [{"index": 0, "delta": {
            "tool_calls": [{"index": 0, **call}]}}]}))
    else:
        half = len(d.text) // 2
        frames += [_data({**base, "choices": [{"index": 0, "delta": {"content": part}}]})
                   for part in (d.text[:half], d.text[half:])]
    frames.append(_data({**base, "choices": [{"index": 0, "delta": {},
                                              "finish_reason": "tool_calls" if call
                                              else "stop"}]}))
    frames.append(_data({**base, "choices": [], "usage": usage}))
    frames.append("data: [DONE]\n\n")
    return await _sse(request, frames)


# --- OpenAI Responses ---------------------------------------------------------------------

def _responses_decision(body: dict[str, Any]) -> Decision:
    items = body.get("input") or []
    if isinstance(items, str):
        items = [{"type": "message", "role": "user", "content": items}]
    users = [i for i in items if i.get("role") == "user"]
    after_tool = bool(items) and str(items[-1].get("type", "")).endswith("_output")
    tools = [t.get("name", t.get("type", "")) for t in body.get("tools") or []]
    custom = [t.get("name", "") for t in body.get("tools") or [] if t.get("type") == "custom"]
    return decide(_texts(users[-1].get("content")) if users else "", after_tool, tools, custom)


async def _openai_responses(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    d = _responses_decision(body)
    rid = f"resp_{uuid.uuid4().hex[:12]}"
    usage = {"input_tokens": 10, "input_tokens_details": {"cached_tokens": 0},
             "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 0},
             "total_tokens": 15}
    response = {"id": rid, "object": "response", "status": "in_progress",
                "model": body.get("model", "fake-model"), "output": []}
    frames = [_event("response.created", {"response": response})]
    if d.tool is not None:
        call_id = f"call_{uuid.uuid4().hex[:8]}"
        item: dict[str, Any]
        if d.custom:
            item = {"type": "custom_tool_call", "id": f"ctc_{call_id}", "call_id": call_id,
                    "name": d.tool, "input": d.args["input"], "status": "completed"}
        else:
            item = {"type": "function_call", "id": f"fc_{call_id}", "call_id": call_id,
                    "name": d.tool, "arguments": json.dumps(d.args), "status": "completed"}
    else:
        item = {"type": "message", "id": f"msg_{uuid.uuid4().hex[:8]}", "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": d.text, "annotations": []}]}
    frames.append(_event("response.output_item.added", {"output_index": 0, "item": item}))
    if d.tool is None:
        half = len(d.text) // 2
        frames += [_event("response.output_text.delta", {
            "item_id": item["id"], "output_index": 0, "content_index": 0, "delta": part})
            for part in (d.text[:half], d.text[half:])]
    frames.append(_event("response.output_item.done", {"output_index": 0, "item": item}))
    frames.append(_event("response.completed", {"response": {
        **response, "status": "completed", "output": [item], "usage": usage}}))
    return await _sse(request, frames)


# --- Anthropic Messages -------------------------------------------------------------------

def _anthropic_decision(body: dict[str, Any]) -> Decision:
    messages = body.get("messages") or []
    last = messages[-1] if messages else {}
    content = last.get("content")
    after_tool = isinstance(content, list) and any(
        isinstance(p, dict) and p.get("type") == "tool_result" for p in content)
    users = [m for m in messages if m.get("role") == "user"]
    tools = [t.get("name", "") for t in body.get("tools") or []]
    text = _texts(users[-1].get("content")) if users else ""
    return decide(text, after_tool, tools)


async def _anthropic(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    d = _anthropic_decision(body)
    mid, model = f"msg_{uuid.uuid4().hex[:12]}", body.get("model", "fake-model")
    stop = "tool_use" if d.tool else "end_turn"
    block: dict[str, Any]
    if d.tool is not None:
        block = {"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:12]}", "name": d.tool,
                 "input": d.args}
    else:
        block = {"type": "text", "text": d.text}
    usage = {"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": 0,
             "cache_read_input_tokens": 0}
    message = {"id": mid, "type": "message", "role": "assistant", "model": model,
               "content": [], "stop_reason": None, "stop_sequence": None, "usage": usage}
    if not body.get("stream"):
        return web.json_response({**message, "content": [block], "stop_reason": stop})
    frames = [_event("message_start", {"message": message})]
    if d.tool is not None:
        frames.append(_event("content_block_start", {"index": 0, "content_block": {
            **block, "input": {}}}))
        frames.append(_event("content_block_delta", {"index": 0, "delta": {
            "type": "input_json_delta", "partial_json": json.dumps(d.args)}}))
    else:
        frames.append(_event("content_block_start", {"index": 0, "content_block": {
            "type": "text", "text": ""}}))
        half = len(d.text) // 2
        frames += [_event("content_block_delta", {"index": 0, "delta": {
            "type": "text_delta", "text": part}}) for part in (d.text[:half], d.text[half:])]
    frames.append(_event("content_block_stop", {"index": 0}))
    frames.append(_event("message_delta", {"delta": {"stop_reason": stop,
                                                     "stop_sequence": None},
                                           "usage": {"output_tokens": 5}}))
    frames.append(_event("message_stop", {}))
    return await _sse(request, frames)


# --- Gemini -------------------------------------------------------------------------------

def _gemini_decision(body: dict[str, Any]) -> Decision:
    contents = body.get("contents") or []
    last = contents[-1] if contents else {}
    parts = last.get("parts") or []
    after_tool = any("functionResponse" in p for p in parts)
    users = [c for c in contents if c.get("role", "user") == "user"
             and any("text" in p for p in c.get("parts") or [])]
    text = "\n".join(p.get("text", "") for p in users[-1].get("parts") or []) if users else ""
    tools = [f.get("name", "") for t in body.get("tools") or []
             for f in t.get("functionDeclarations") or []]
    return decide(text, after_tool, tools)


async def _gemini(request: web.Request, body: dict[str, Any], stream: bool) -> web.StreamResponse:
    config = body.get("generationConfig") or {}
    if config.get("responseMimeType") == "application/json":  # the CLI's own checks
        part: dict[str, Any] = {"text": json.dumps(
            {"reasoning": "The fake model has finished.", "next_speaker": "user",
             "complexity_reasoning": "simple", "complexity_score": 1,
             "model_choice": "flash"})}
        d = Decision()
    else:
        d = _gemini_decision(body)
        part = ({"functionCall": {"name": d.tool, "args": d.args}} if d.tool is not None
                else {"text": d.text})
    usage = {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15}
    chunk: dict[str, Any] = {"candidates": [{"content": {"role": "model", "parts": [part]},
                             "finishReason": "STOP", "index": 0}],
             "usageMetadata": usage, "modelVersion": "fake-model"}
    if not stream:
        return web.json_response(chunk)
    if "text" in part and d.tool is None and len(part["text"]) > 1:
        half = len(part["text"]) // 2
        first = {"candidates": [{"content": {"role": "model", "parts": [
            {"text": part["text"][:half]}]}, "index": 0}], "modelVersion": "fake-model"}
        rest = {**chunk, "candidates": [{**chunk["candidates"][0], "content": {
            "role": "model", "parts": [{"text": part["text"][half:]}]}}]}
        return await _sse(request, [_data(first), _data(rest)])
    return await _sse(request, [_data(chunk)])
