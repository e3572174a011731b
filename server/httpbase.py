"""What every HTTP endpoint shares: the error body of http.md §3 and the JSON body."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from server import protocol
from server.protocol import InvalidRequest, ProtocolError

JSON_TYPE = "application/json"

# http.md §3: the status each JSON-RPC error code answers.
STATUS: dict[int, int] = {
    -32700: 400, -32600: 400, -32602: 400, -32601: 404, -32001: 401, -32003: 403,
    -32004: 404, -32009: 409, -32010: 409, -32013: 413, -32029: 429, -32603: 500,
}


class Problem(Exception):
    """A request that fails with ``error`` (a :class:`ProtocolError`), optionally under a
    status other than the one its code maps to (405, 415, 422)."""

    def __init__(self, error: ProtocolError, status: int | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.status = status or STATUS.get(error.code, 500)
        self.headers = dict(headers or {})


def json_response(value: Any, status: int = 200,
                  headers: Mapping[str, str] | None = None) -> web.Response:
    """``value`` as a JSON response (pre-encoded fragments of events and rows included)."""
    return web.Response(body=orjson.dumps(value), status=status, headers=headers,
                        content_type=JSON_TYPE, charset="utf-8")


def problem_response(problem: Problem) -> web.Response:
    """The error body of http.md §3, with the headers its status needs."""
    headers = dict(problem.headers)
    if problem.status == 401:
        headers.setdefault("WWW-Authenticate", 'Bearer realm="axtui"')
    elif problem.status == 429:
        headers.setdefault("Retry-After", "1")
    return json_response({"error": problem.error.to_json()}, problem.status, headers)


async def read_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object (``{}`` for no body); 415 for a body that is not
    ``application/json``, 400 for one that is not a JSON object, 413 past the size limit."""
    raw = await request.read()
    if not raw:
        return {}
    if request.content_type != JSON_TYPE:
        raise Problem(InvalidRequest(
            f"the body must be {JSON_TYPE}, not {request.content_type or 'untyped'}"), 415)
    try:
        value = protocol.loads(raw)
    except ProtocolError as exc:
        raise Problem(exc) from None
    if not isinstance(value, dict):
        raise Problem(InvalidRequest("the body must be a JSON object"))
    return value
