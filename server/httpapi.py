"""The HTTP API of http.md: REST, Server-Sent Events and webhooks, on ``hub.http_port``.

Served by aiohttp's server in the hub's event loop (bench/http_library.py measured it
against Starlette on uvicorn; docs/http.md says why). Every endpoint is a method of
protocol.md run through the same :class:`server.dispatch.Dispatcher` checks and the same
handler (:mod:`server.methods`) as on the websocket: only the framing differs. A request
is one :class:`server.caller.Caller`, authenticated by its ``Authorization: Bearer`` header
with the websocket's tokens (in local mode, the local secret).

Errors answer http.md §3: the JSON-RPC code of protocol.md §9.1 in
``{"error": {...}}`` with the status it maps to.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from aiohttp import web

from server import protocol
from server.auth import Authenticator, Principal
from server.caller import Caller
from server.config import Config
from server.dispatch import Dispatcher
from server.forward import Forwarded
from server.hookroute import HookRoute
from server.httpbase import Problem, json_response, problem_response, read_body
from server.methods import METHODS, subscribe, type_patterns
from server.metrics import Metrics
from server.probes import METRICS_TYPE, health, metrics_answer
from server.protocol import (
    InvalidParams,
    InvalidRequest,
    MethodNotFound,
    NotAuthenticated,
    Params,
    TooLarge,
)
from server.sse import RETRY, SseStream, filtered_page, sse_page
from server.typepattern import TypeFilter

log = logging.getLogger("axtui.http")

SHUTDOWN_TIMEOUT = 5.0  # seconds requests under way get when the hub stops

def _query_int(value: str | None) -> int | str | None:
    """A query value as an integer where it reads as one (else as it is, for the method's
    own check to refuse with the param's name)."""
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return value


def _types(value: str | None) -> list[str] | None:
    return None if value is None else [t.strip() for t in value.split(",")]


def _client(header: str | None) -> tuple[str, str]:
    """``X-Axtui-Client: <kind>/<name>`` as (kind, name); ``http`` for both without it."""
    if header is None:
        return "http", "http"
    kind, _, name = header.partition("/")
    try:
        return (protocol.check_display_name(kind, "X-Axtui-Client"),
                protocol.check_display_name(name or kind, "X-Axtui-Client"))
    except InvalidParams as exc:
        raise Problem(InvalidParams(f"X-Axtui-Client must be <kind>/<name>: {exc.message}",
                                    {"param": "X-Axtui-Client"})) from None


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HttpApi:
    """The HTTP front door: call :meth:`start`, then :meth:`stop`."""

    def __init__(self, config: Config, auth: Authenticator, dispatcher: Dispatcher,
                 metrics: Metrics) -> None:
        self.config = config
        self.auth = auth
        self.dispatcher = dispatcher
        self.metrics = metrics
        self.streams: dict[SseStream, Principal] = {}
        self.hooks = HookRoute(config, self.call)
        self._runner: web.AppRunner | None = None
        auth.on_revoked.append(self._close_revoked)

    # --- start and stop --------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on ``hub.host``:``hub.http_port``."""
        hub = self.config.hub
        app = web.Application(client_max_size=hub.max_frame_bytes, middlewares=[self._errors],
                              handler_args={"max_field_size": 16 * 1024})
        self._routes(app.router)
        # No access log: query strings are never logged (http.md §2), and the hub logs what
        # goes wrong itself.
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     shutdown_timeout=SHUTDOWN_TIMEOUT)
        await self._runner.setup()
        site = web.TCPSite(self._runner, hub.host, hub.http_port)
        try:
            await site.start()
        except BaseException:
            await self._runner.cleanup()
            self._runner = None
            raise
        log.info("axtui http listening on %s", self.url)

    @property
    def port(self) -> int:
        """The port it listens on (useful with ``http_port: 0``)."""
        assert self._runner is not None
        port: int = self._runner.addresses[0][1]
        return port

    @property
    def url(self) -> str:
        """``http://HOST:PORT``."""
        host = self.config.hub.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    async def stop(self) -> None:
        """End every stream, let requests under way finish (at most SHUTDOWN_TIMEOUT s)."""
        for stream in list(self.streams):
            stream.close("the hub is stopping")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _close_revoked(self, principal: Principal) -> None:
        for stream, owner in list(self.streams.items()):
            if owner is principal:
                stream.close("the token was revoked", drop=True)

    # --- routing ---------------------------------------------------------------------------

    def _routes(self, router: web.UrlDispatcher) -> None:
        call = self._endpoint
        router.add_get("/healthz", self._healthz, allow_head=False)
        router.add_get("/metrics", self._metrics, allow_head=False)
        router.add_get("/v1/agents", call("agents/list"), allow_head=False)
        router.add_post("/v1/sessions", call("session/create", body=True, status=201))
        router.add_get("/v1/sessions", call("session/list", query=("cursor", "agent"),
                                            ints=("limit",)), allow_head=False)
        sid = "/v1/sessions/{sessionId}"
        router.add_get(sid, call("session/get"), allow_head=False)
        router.add_delete(sid, call("session/delete"))
        router.add_post(sid + "/events", self._publish)
        router.add_get(sid + "/events", call("session/history", ints=("afterSeq", "beforeSeq",
                                                                      "limit"), types=True),
                       allow_head=False)
        router.add_get(sid + "/stream", self._stream, allow_head=False)
        router.add_post(sid + "/state/query", call("state/query", body=True))
        router.add_post(sid + "/state/exec", call("state/exec", body=True))
        router.add_post(sid + "/fork", call("session/fork", body=True, status=201))
        router.add_post(sid + "/cancel", call("session/cancel"))
        router.add_post(sid + "/suspend", call("session/suspend"))
        router.add_post("/v1/hooks/{name}", self.hooks.handle)

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every failure as the error body of http.md §3, aiohttp's own (404, 405, 413)
        included."""
        self.metrics.http_requests += 1
        try:
            return await handler(request)
        except Problem as problem:
            self.metrics.errors += 1
            return problem_response(problem)
        except web.HTTPException as exc:
            self.metrics.errors += 1
            return problem_response(self._http_problem(request, exc))

    def _endpoint(self, name: str, *, body: bool = False, status: int = 200,
                  query: tuple[str, ...] = (), ints: tuple[str, ...] = (),
                  types: bool = False) -> Handler:
        """The handler of an endpoint that runs method ``name`` with the path's
        ``sessionId``, the JSON ``body`` and the named query parameters as its params."""
        async def endpoint(request: web.Request) -> web.StreamResponse:
            caller = self.caller(request)
            params = await read_body(request) if body else {}
            q = request.query
            params.update({k: q[k] for k in query if k in q})
            params.update({k: _query_int(q[k]) for k in ints if k in q})
            if types and "types" in q:
                params["types"] = _types(q["types"])
            if "sessionId" in request.match_info:
                params["sessionId"] = request.match_info["sessionId"]
            return json_response(await self.call(caller, name, params), status)
        return endpoint

    def _http_problem(self, request: web.Request, exc: web.HTTPException) -> Problem:
        """aiohttp's own refusals, in the error body of http.md §3."""
        if exc.status == 405:
            allow = exc.headers.get("Allow", "")
            return Problem(MethodNotFound(f"{request.method} is not allowed on {request.path};"
                                          f" use {allow}", {"allow": allow}), 405, {"Allow": allow})
        if exc.status == 404:
            return Problem(MethodNotFound(f"no endpoint at {request.path}: see docs/http.md",
                                          {"path": request.path}))
        if exc.status == 413:
            limit = request.app._client_max_size
            return Problem(TooLarge(f"the body is over {limit} bytes (hub.max_frame_bytes)",
                                    {"limit": limit}))
        return Problem(InvalidRequest(exc.reason or f"HTTP {exc.status}"), exc.status)

    # --- running a method ------------------------------------------------------------------

    def caller(self, request: web.Request) -> Caller:
        """Who sent ``request``: its Bearer token's principal (401 without a good one)."""
        header = request.headers.get("Authorization")
        principal = (self.auth.principal_for_header(header) if header is not None
                     else self.auth.default_principal)
        if principal is None:
            raise Problem(NotAuthenticated(
                "a valid token is needed: send it as Authorization: Bearer <token>"
                + (" (in local mode, the secret in the data dir's local-token file)"
                   if self.auth.local_mode else "")))
        kind, name = _client(request.headers.get("X-Axtui-Client"))
        return Caller(principal, log, kind, name)

    async def call(self, caller: Caller, name: str, params: dict[str, Any]) -> Any:
        """Run method ``name`` for ``caller`` as the websocket would, and return the JSON
        value of its result; raises :class:`Problem`."""
        try:
            outcome = self.dispatcher.start(caller, name, params)
            # A commit's future is shared with the session's writer: never cancel it.
            result = await (asyncio.shield(outcome) if isinstance(outcome, asyncio.Future)
                            else outcome)
        except Exception as exc:
            raise Problem(self.dispatcher.error_for(name, exc)) from None
        if isinstance(result, Forwarded):  # the owner's answer (cluster mode)
            return result.value
        return METHODS[name].shape(result)

    # --- endpoints of their own ------------------------------------------------------------

    async def _healthz(self, request: web.Request) -> web.StreamResponse:
        status, text = health(self.metrics)
        return web.Response(status=status, text=text)

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        status, text = metrics_answer(self.auth, self.metrics,
                                      request.headers.get("Authorization"))
        if status is HTTPStatus.UNAUTHORIZED:
            return web.Response(status=status, text=text,
                                headers={"WWW-Authenticate": 'Bearer realm="axtui"'})
        response = web.Response(status=status, text=text)
        if status is HTTPStatus.OK:
            response.headers["Content-Type"] = METRICS_TYPE
        return response

    async def _publish(self, request: web.Request) -> web.StreamResponse:
        """``POST .../events``: ``session/publish``; ``Idempotency-Key`` is the body's key."""
        caller = self.caller(request)
        params = await read_body(request)
        key = request.headers.get("Idempotency-Key")
        if key is not None:
            if params.get("idempotencyKey", key) != key:
                raise Problem(InvalidParams(
                    "the Idempotency-Key header and the body's idempotencyKey differ",
                    {"param": "idempotencyKey"}))
            params["idempotencyKey"] = key
        params["sessionId"] = request.match_info["sessionId"]
        return json_response(await self.call(caller, "session/publish", params))

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        """``GET .../stream``: the session's events as Server-Sent Events (http.md §5)."""
        caller = self.caller(request)
        q = request.query
        last_id = request.headers.get("Last-Event-ID")
        params: dict[str, Any] = {
            "sessionId": request.match_info["sessionId"],
            "afterSeq": (_query_int(last_id.strip()) if last_id is not None
                         else _query_int(q.get("afterSeq", "0"))),
            "epoch": q.get("epoch"), "types": _types(q.get("types")),
        }
        hub = self.config.hub
        try:
            self.dispatcher.check(caller, "session/subscribe", params)
            p = Params(params)
            patterns = type_patterns(p)
            encode = filtered_page(TypeFilter.of(patterns)) if patterns else sse_page
            stream = SseStream(self.metrics, hub.max_lag_bytes, encode)
            if request.transport is not None:
                stream.on_drop = request.transport.abort
            sub = await subscribe(self.dispatcher.context, caller, stream, p.session_id(),
                                  p.integer("afterSeq", 0, lo=0), p.string("epoch", None))
        except Exception as exc:
            raise Problem(self.dispatcher.error_for("session/subscribe", exc)) from None
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # proxies such as nginx: do not buffer the stream
        })
        assert caller.principal is not None
        self.streams[stream] = caller.principal
        self.metrics.sse_streams = len(self.streams)
        try:
            await response.prepare(request)
            await response.write(RETRY)
            sub.start()
            await stream.run(response.write)
        except (ConnectionError, asyncio.CancelledError):
            pass  # the reader went away (or the hub stops): it resumes with Last-Event-ID
        finally:
            sub.stop()
            caller.subscriptions.clear()
            self.streams.pop(stream, None)
            self.metrics.sse_streams = len(self.streams)
        if stream.reason:
            log.info("ended an SSE stream of %s: %s", sub.session.id, stream.reason)
        return response
